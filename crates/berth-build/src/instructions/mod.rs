//! Typed instructions with parsed flags, built from parser nodes.
//!
//! [`parse_dockerfile`] turns Dockerfile text into global ARGs and stages;
//! [`Instruction::expand`] applies variable substitution to the instructions
//! that Docker expands and leaves the others alone.

mod flags;
mod mount;
mod parse;

pub use mount::{CacheSharing, MountKind, RunMount};
pub use parse::{parse_dockerfile, parse_duration, parse_trigger};

use serde::Serialize;

use crate::error::ParseError;
use crate::expand::{Lexer, Vars};
use crate::parser::{Directives, Heredoc, Warning};

/// The exec form (`["a","b"]`) or the shell form (`a b`) of a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "form", content = "value", rename_all = "lowercase")]
pub enum Command {
    /// Run directly, without a shell.
    Exec(Vec<String>),
    /// Run through the stage's SHELL (default `/bin/sh -c`).
    Shell(String),
}

impl Command {
    /// The argv Docker stores or runs: exec form as is, shell form appended to `shell`.
    pub fn to_argv(&self, shell: &[String]) -> Vec<String> {
        match self {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => shell
                .iter()
                .cloned()
                .chain(std::iter::once(s.clone()))
                .collect(),
        }
    }
}

/// One `name=value` of ENV or LABEL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    /// The name.
    pub key: String,
    /// The value.
    pub value: String,
}

/// One name declared by ARG, with its default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDecl {
    /// The argument name.
    pub name: String,
    /// The default value (`ARG name=default`), if any.
    pub default: Option<String>,
}

/// `FROM [--platform=p] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FromInstr {
    /// The image reference, a stage name or `scratch`.
    pub image: String,
    /// The stage name given with AS, lower-cased.
    pub stage_name: Option<String>,
    /// The `--platform` value.
    pub platform: Option<String>,
}

/// `--network` of RUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunNetwork {
    /// The default build network.
    Default,
    /// No network.
    None,
    /// The host's network namespace.
    Host,
}

/// `--security` of RUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunSecurity {
    /// The default confinement.
    Sandbox,
    /// All capabilities, like `--privileged`.
    Insecure,
}

/// `RUN [--mount=...] [--network=...] [--security=...] command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunInstr {
    /// The command.
    pub command: Command,
    /// Heredocs used by a shell-form command.
    pub heredocs: Vec<Heredoc>,
    /// Mounts, parsed.
    pub mounts: Vec<RunMount>,
    /// The `--mount` values as written, re-parsed after expansion.
    #[serde(skip)]
    pub mount_specs: Vec<String>,
    /// Network mode, when given.
    pub network: Option<RunNetwork>,
    /// Security mode, when given.
    pub security: Option<RunSecurity>,
}

/// A COPY or ADD source: a path (or URL) or an inline heredoc file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum CopySource {
    /// A path in the context (or a stage), possibly with wildcards, or a URL for ADD.
    Path {
        /// The path as written (after expansion).
        path: String,
    },
    /// A file created from a heredoc, named after its delimiter.
    Heredoc(Heredoc),
}

/// What COPY and ADD share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileArgs {
    /// The sources.
    pub sources: Vec<CopySource>,
    /// The destination.
    pub dest: String,
    /// `--chown=user[:group]`.
    pub chown: Option<String>,
    /// `--chmod=mode`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
    /// Whether the JSON form was used.
    pub json_form: bool,
}

/// `COPY [--from=stage|image] [--parents] ... src... dest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyInstr {
    /// Sources, destination and shared flags.
    #[serde(flatten)]
    pub files: FileArgs,
    /// `--from` (a stage name or index, or an image).
    pub from: Option<String>,
    /// `--parents`.
    pub parents: bool,
}

/// `ADD [--checksum=...] [--keep-git-dir] ... src... dest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddInstr {
    /// Sources, destination and shared flags.
    #[serde(flatten)]
    pub files: FileArgs,
    /// `--checksum` for a single HTTP(S) source.
    pub checksum: Option<String>,
    /// `--keep-git-dir` for a git source.
    pub keep_git_dir: bool,
}

/// The test of a HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "command", rename_all = "UPPERCASE")]
pub enum HealthTest {
    /// `HEALTHCHECK NONE`: disable any inherited check.
    None,
    /// `HEALTHCHECK CMD ...`.
    Cmd(Command),
}

/// `HEALTHCHECK [options] CMD command` or `HEALTHCHECK NONE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthcheckInstr {
    /// The test.
    pub test: HealthTest,
    /// `--interval` in nanoseconds.
    pub interval_ns: Option<u64>,
    /// `--timeout` in nanoseconds.
    pub timeout_ns: Option<u64>,
    /// `--start-period` in nanoseconds.
    pub start_period_ns: Option<u64>,
    /// `--start-interval` in nanoseconds.
    pub start_interval_ns: Option<u64>,
    /// `--retries`.
    pub retries: Option<u32>,
}

/// What an instruction says, with its flags parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "instruction", rename_all = "lowercase")]
pub enum InstructionKind {
    /// FROM.
    From(FromInstr),
    /// RUN.
    Run(RunInstr),
    /// CMD.
    Cmd {
        /// The default command.
        command: Command,
    },
    /// ENTRYPOINT.
    Entrypoint {
        /// The entrypoint.
        command: Command,
    },
    /// LABEL.
    Label {
        /// Labels in order.
        labels: Vec<KeyValue>,
    },
    /// MAINTAINER (deprecated; becomes the image author).
    Maintainer {
        /// The author.
        name: String,
    },
    /// EXPOSE.
    Expose {
        /// Ports as written (`80`, `53/udp`, `8000-8010/tcp`).
        ports: Vec<String>,
    },
    /// ENV.
    Env {
        /// Variables in order.
        vars: Vec<KeyValue>,
    },
    /// ADD.
    Add(AddInstr),
    /// COPY.
    Copy(CopyInstr),
    /// VOLUME.
    Volume {
        /// Mount points.
        paths: Vec<String>,
    },
    /// USER.
    User {
        /// `user[:group]`.
        user: String,
    },
    /// WORKDIR.
    Workdir {
        /// The directory.
        path: String,
    },
    /// ARG.
    Arg {
        /// The declared names.
        args: Vec<ArgDecl>,
    },
    /// ONBUILD.
    Onbuild {
        /// The trigger text stored in the image (`RUN make`).
        expression: String,
        /// The trigger parsed, to reject invalid triggers early.
        trigger: Box<Instruction>,
    },
    /// STOPSIGNAL.
    Stopsignal {
        /// The signal name or number.
        signal: String,
    },
    /// HEALTHCHECK.
    Healthcheck(HealthcheckInstr),
    /// SHELL.
    Shell {
        /// The shell argv.
        shell: Vec<String>,
    },
}

/// An instruction and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instruction {
    /// First line (1-based).
    pub line: usize,
    /// Last line (1-based).
    pub end_line: usize,
    /// The instruction text as written (continuations joined).
    #[serde(skip)]
    pub original: String,
    /// What it says.
    #[serde(flatten)]
    pub kind: InstructionKind,
}

/// One build stage: its FROM and the instructions up to the next FROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Position of the stage in the Dockerfile (0-based), usable as `--from=<index>`.
    pub index: usize,
    /// The FROM instruction (unexpanded).
    pub from: FromInstr,
    /// Line of the FROM.
    pub line: usize,
    /// The instructions after FROM.
    pub instructions: Vec<Instruction>,
}

/// A Dockerfile parsed into global ARGs and stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedDockerfile {
    /// Parser directives.
    pub directives: Directives,
    /// ARG instructions before the first FROM.
    pub global_args: Vec<Instruction>,
    /// The stages in order.
    pub stages: Vec<Stage>,
    /// Non-fatal findings of the parser.
    pub warnings: Vec<Warning>,
}

impl Instruction {
    /// The upper-case keyword (`COPY`).
    pub fn keyword(&self) -> &'static str {
        match &self.kind {
            InstructionKind::From(_) => "FROM",
            InstructionKind::Run(_) => "RUN",
            InstructionKind::Cmd { .. } => "CMD",
            InstructionKind::Entrypoint { .. } => "ENTRYPOINT",
            InstructionKind::Label { .. } => "LABEL",
            InstructionKind::Maintainer { .. } => "MAINTAINER",
            InstructionKind::Expose { .. } => "EXPOSE",
            InstructionKind::Env { .. } => "ENV",
            InstructionKind::Add(_) => "ADD",
            InstructionKind::Copy(_) => "COPY",
            InstructionKind::Volume { .. } => "VOLUME",
            InstructionKind::User { .. } => "USER",
            InstructionKind::Workdir { .. } => "WORKDIR",
            InstructionKind::Arg { .. } => "ARG",
            InstructionKind::Onbuild { .. } => "ONBUILD",
            InstructionKind::Stopsignal { .. } => "STOPSIGNAL",
            InstructionKind::Healthcheck(_) => "HEALTHCHECK",
            InstructionKind::Shell { .. } => "SHELL",
        }
    }

    /// The canonical JSON of what the instruction says (no line numbers),
    /// used in cache keys.
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(&self.kind).unwrap_or_default()
    }

    /// Returns a copy with variables substituted where Docker substitutes them
    /// (ADD, COPY, ENV, EXPOSE, FROM, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR,
    /// ARG defaults, RUN `--mount` values); RUN/CMD/ENTRYPOINT/SHELL/HEALTHCHECK
    /// commands, MAINTAINER and ONBUILD triggers are returned unchanged.
    pub fn expand(&self, lexer: &Lexer, vars: &dyn Vars) -> Result<Instruction, ParseError> {
        let fail = |message: String| {
            ParseError::in_instruction(self.line, self.end_line, self.keyword(), message)
        };
        let word = |w: &str| lexer.expand_word(w, vars).map_err(|e| fail(e.to_string()));
        let opt = |w: &Option<String>| w.as_deref().map(word).transpose();
        let kind = match &self.kind {
            InstructionKind::From(f) => InstructionKind::From(FromInstr {
                image: word(&f.image)?,
                stage_name: f.stage_name.clone(),
                platform: opt(&f.platform)?,
            }),
            InstructionKind::Run(r) => {
                let expand_value = |v: &str| lexer.expand_word(v, vars).map_err(|e| e.to_string());
                let mounts = r
                    .mount_specs
                    .iter()
                    .map(|spec| RunMount::parse(spec, &expand_value, false))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(fail)?;
                InstructionKind::Run(RunInstr {
                    mounts,
                    ..r.clone()
                })
            }
            InstructionKind::Label { labels } => InstructionKind::Label {
                labels: expand_pairs(labels, &word, &fail, "LABEL")?,
            },
            InstructionKind::Env { vars: pairs } => InstructionKind::Env {
                vars: expand_pairs(pairs, &word, &fail, "ENV")?,
            },
            InstructionKind::Expose { ports } => {
                let mut out = Vec::new();
                for p in ports {
                    out.extend(
                        lexer
                            .expand_words(p, vars)
                            .map_err(|e| fail(e.to_string()))?,
                    );
                }
                InstructionKind::Expose { ports: out }
            }
            InstructionKind::Add(a) => InstructionKind::Add(AddInstr {
                files: expand_files(&a.files, vars, &word, &fail)?,
                checksum: opt(&a.checksum)?,
                keep_git_dir: a.keep_git_dir,
            }),
            InstructionKind::Copy(c) => InstructionKind::Copy(CopyInstr {
                files: expand_files(&c.files, vars, &word, &fail)?,
                from: opt(&c.from)?,
                parents: c.parents,
            }),
            InstructionKind::Volume { paths } => {
                let mut out = Vec::with_capacity(paths.len());
                for p in paths {
                    let v = word(p)?;
                    if v.trim().is_empty() {
                        return Err(fail(format!(
                            "{p:?} expands to an empty path: give each volume a path"
                        )));
                    }
                    out.push(v);
                }
                InstructionKind::Volume { paths: out }
            }
            InstructionKind::User { user } => InstructionKind::User { user: word(user)? },
            InstructionKind::Workdir { path } => InstructionKind::Workdir { path: word(path)? },
            InstructionKind::Stopsignal { signal } => InstructionKind::Stopsignal {
                signal: word(signal)?,
            },
            InstructionKind::Arg { args } => InstructionKind::Arg {
                args: args
                    .iter()
                    .map(|a| {
                        Ok(ArgDecl {
                            name: a.name.clone(),
                            default: opt(&a.default)?,
                        })
                    })
                    .collect::<Result<_, ParseError>>()?,
            },
            other => other.clone(),
        };
        Ok(Instruction {
            line: self.line,
            end_line: self.end_line,
            original: self.original.clone(),
            kind,
        })
    }
}

fn expand_pairs(
    pairs: &[KeyValue],
    word: &dyn Fn(&str) -> Result<String, ParseError>,
    fail: &dyn Fn(String) -> ParseError,
    keyword: &str,
) -> Result<Vec<KeyValue>, ParseError> {
    pairs
        .iter()
        .map(|kv| {
            let key = word(&kv.key)?;
            if key.is_empty() {
                return Err(fail(format!(
                    "{keyword} names can not be blank: give each value a name"
                )));
            }
            Ok(KeyValue {
                key,
                value: word(&kv.value)?,
            })
        })
        .collect()
}

fn expand_files(
    files: &FileArgs,
    vars: &dyn Vars,
    word: &dyn Fn(&str) -> Result<String, ParseError>,
    fail: &dyn Fn(String) -> ParseError,
) -> Result<FileArgs, ParseError> {
    let body_lexer = Lexer::variables_only('\\');
    let sources = files
        .sources
        .iter()
        .map(|s| match s {
            CopySource::Path { path } => Ok(CopySource::Path { path: word(path)? }),
            CopySource::Heredoc(doc) if doc.expand => {
                let content = body_lexer
                    .expand_word(&doc.content, vars)
                    .map_err(|e| fail(e.to_string()))?;
                Ok(CopySource::Heredoc(Heredoc {
                    content,
                    ..doc.clone()
                }))
            }
            CopySource::Heredoc(doc) => Ok(CopySource::Heredoc(doc.clone())),
        })
        .collect::<Result<Vec<_>, ParseError>>()?;
    Ok(FileArgs {
        sources,
        dest: word(&files.dest)?,
        chown: files.chown.as_deref().map(word).transpose()?,
        chmod: files.chmod.as_deref().map(word).transpose()?,
        link: files.link,
        excludes: files
            .excludes
            .iter()
            .map(|e| word(e))
            .collect::<Result<_, _>>()?,
        json_form: files.json_form,
    })
}
