//! Build planning: stages as a DAG, pruned to what the target needs.
//!
//! Edges come from `FROM <stage>`, `COPY --from=<stage>` and
//! `RUN --mount=from=<stage>`. Global ARGs (before the first FROM) are
//! evaluated here with the build args and the automatic platform args, since
//! FROM lines may use them; stage ARGs are resolved by the executor with
//! [`ArgContext::resolve`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::error::ParseError;
use crate::expand::Lexer;
use crate::instructions::{ArgDecl, InstructionKind, ParsedDockerfile, Stage};

/// An OS/architecture pair such as `linux/amd64` or `linux/arm/v7`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Platform {
    /// Operating system (`linux`).
    pub os: String,
    /// Architecture in OCI spelling (`amd64`, `arm64`).
    pub arch: String,
    /// Variant (`v7`), if any.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this process runs on.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            arch: arch.to_string(),
            variant: None,
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(text: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Platform {
                    os: os.to_string(),
                    arch: arch.to_string(),
                    variant: Some(variant.to_string()),
                })
            }
            _ => Err(format!(
                "invalid platform {text:?}: use os/arch[/variant], like linux/amd64"
            )),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// What a build is asked to do besides the Dockerfile.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// `--build-arg name=value` pairs.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: the stage to build (default: the last one).
    pub target: Option<String>,
    /// The platform the build runs on.
    pub build_platform: Platform,
    /// The platform the image is for.
    pub target_platform: Platform,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            build_args: BTreeMap::new(),
            target: None,
            build_platform: Platform::host(),
            target_platform: Platform::host(),
        }
    }
}

/// Args that may be passed with `--build-arg` without an ARG line; they reach
/// RUN's environment but never the image history or the cache key.
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// The platform args the builder defines by itself.
pub fn automatic_platform_args(build: &Platform, target: &Platform) -> BTreeMap<String, String> {
    let mut args = BTreeMap::new();
    for (prefix, p) in [("BUILD", build), ("TARGET", target)] {
        args.insert(format!("{prefix}PLATFORM"), p.to_string());
        args.insert(format!("{prefix}OS"), p.os.clone());
        args.insert(format!("{prefix}ARCH"), p.arch.clone());
        args.insert(
            format!("{prefix}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        );
    }
    args
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum StageBase {
    /// `FROM scratch`: an empty filesystem.
    Scratch,
    /// An image reference, resolved by the backend.
    Image(String),
    /// The result of another stage (by index).
    Stage(usize),
}

/// Where a `COPY --from` or `RUN --mount from=` reads from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum SourceRef {
    /// Another stage, by index.
    Stage(usize),
    /// An image pulled for its files.
    Image(String),
}

/// A stage as planned.
#[derive(Debug, Clone)]
pub struct PlannedStage {
    /// Index in the Dockerfile.
    pub index: usize,
    /// The parsed stage (instructions unexpanded).
    pub stage: Stage,
    /// The base, with global ARGs expanded.
    pub base: StageBase,
    /// `FROM --platform`, expanded and parsed, or the target platform.
    pub platform: Platform,
    /// Stages this one needs first.
    pub deps: BTreeSet<usize>,
    /// Per instruction index: the resolved `--from` of COPY or of each RUN mount (in mount order).
    pub sources: BTreeMap<usize, Vec<Option<SourceRef>>>,
}

impl PlannedStage {
    /// The stage name, or its index as a string.
    pub fn display_name(&self) -> String {
        self.stage
            .from
            .stage_name
            .clone()
            .unwrap_or_else(|| self.index.to_string())
    }
}

/// Resolves ARG values inside stages.
#[derive(Debug, Clone)]
pub struct ArgContext {
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// Values of global ARGs that ended up set.
    pub globals: BTreeMap<String, String>,
    /// Automatic platform args.
    pub automatic: BTreeMap<String, String>,
}

impl ArgContext {
    /// The value of a stage `ARG` (its default already expanded): a build arg
    /// wins, then the stage default, then the global value, then the
    /// automatic platform value. `None` leaves the name unset.
    pub fn resolve(&self, decl: &ArgDecl) -> Option<String> {
        self.build_args
            .get(&decl.name)
            .cloned()
            .or_else(|| decl.default.clone())
            .or_else(|| self.globals.get(&decl.name).cloned())
            .or_else(|| self.automatic.get(&decl.name).cloned())
    }

    /// Proxy args passed as build args, which RUN sees without an ARG line.
    pub fn proxy_env(&self) -> Vec<(String, String)> {
        PROXY_ARGS
            .iter()
            .filter_map(|k| self.build_args.get(*k).map(|v| (k.to_string(), v.clone())))
            .collect()
    }
}

/// A validated build plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Every stage of the Dockerfile, planned.
    pub stages: Vec<PlannedStage>,
    /// The index of the target stage.
    pub target: usize,
    /// The stages to build, dependencies first.
    pub order: Vec<usize>,
    /// The escape character of the Dockerfile.
    pub escape: char,
    /// How stage ARGs get their values.
    pub args: ArgContext,
    /// Build args no ARG consumed (Docker warns about them).
    pub unused_build_args: Vec<String>,
}

/// Why a plan could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// `--target` names no stage.
    #[error("target stage {0:?} could not be found: use one of the names given with FROM ... AS")]
    TargetNotFound(String),
    /// Stages depend on each other in a loop.
    #[error("circular dependency between build stages: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// A stage refers to itself.
    #[error("dockerfile line {line}: stage {stage:?} can not use itself as a source")]
    SelfReference {
        /// Line of the reference.
        line: usize,
        /// The stage.
        stage: String,
    },
    /// A FROM expanded to nothing.
    #[error(
        "dockerfile line {line}: FROM: base name {raw:?} expands to an empty string: set the build arg it uses"
    )]
    BlankBase {
        /// Line of the FROM.
        line: usize,
        /// The text before expansion.
        raw: String,
    },
    /// `--platform` did not parse.
    #[error("dockerfile line {line}: FROM: {message}")]
    BadPlatform {
        /// Line of the FROM.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An expansion failed.
    #[error(transparent)]
    Expand(#[from] ParseError),
}

/// Makes the plan: evaluates global ARGs, resolves bases and `--from`
/// references, checks for cycles and keeps only the stages the target needs.
pub fn plan(parsed: &ParsedDockerfile, options: &BuildOptions) -> Result<Plan, PlanError> {
    let lexer = Lexer::new(parsed.directives.escape);
    let automatic = automatic_platform_args(&options.build_platform, &options.target_platform);
    let mut globals: BTreeMap<String, String> = BTreeMap::new();
    let mut declared: BTreeSet<String> = BTreeSet::new();
    for instruction in &parsed.global_args {
        let mut scope = automatic.clone();
        scope.extend(globals.clone());
        let InstructionKind::Arg { args } = instruction.expand(&lexer, &scope)?.kind else {
            continue;
        };
        for decl in args {
            declared.insert(decl.name.clone());
            let value = options.build_args.get(&decl.name).cloned().or(decl.default);
            if let Some(value) = value {
                globals.insert(decl.name, value);
            }
        }
    }
    let mut from_scope = automatic.clone();
    from_scope.extend(globals.clone());
    let args = ArgContext {
        build_args: options.build_args.clone(),
        globals,
        automatic,
    };

    let names: BTreeMap<String, usize> = parsed
        .stages
        .iter()
        .filter_map(|s| s.from.stage_name.clone().map(|n| (n, s.index)))
        .collect();
    let lookup =
        |reference: &str| -> Option<usize> { names.get(&reference.to_ascii_lowercase()).copied() };

    let mut stages = Vec::with_capacity(parsed.stages.len());
    for stage in &parsed.stages {
        let expanded_image = lexer
            .expand_word(&stage.from.image, &from_scope)
            .map_err(|e| {
                ParseError::in_instruction(stage.line, stage.line, "FROM", e.to_string())
            })?;
        if expanded_image.is_empty() {
            return Err(PlanError::BlankBase {
                line: stage.line,
                raw: stage.from.image.clone(),
            });
        }
        let base = if expanded_image.eq_ignore_ascii_case("scratch") {
            StageBase::Scratch
        } else {
            match lookup(&expanded_image) {
                Some(i) if i == stage.index => {
                    return Err(PlanError::SelfReference {
                        line: stage.line,
                        stage: expanded_image,
                    });
                }
                Some(i) => StageBase::Stage(i),
                None => StageBase::Image(expanded_image),
            }
        };
        let platform = match &stage.from.platform {
            None => options.target_platform.clone(),
            Some(raw) => {
                let text = lexer.expand_word(raw, &from_scope).map_err(|e| {
                    ParseError::in_instruction(stage.line, stage.line, "FROM", e.to_string())
                })?;
                Platform::parse(&text).map_err(|message| PlanError::BadPlatform {
                    line: stage.line,
                    message,
                })?
            }
        };
        let mut planned = PlannedStage {
            index: stage.index,
            stage: stage.clone(),
            base: base.clone(),
            platform,
            deps: BTreeSet::new(),
            sources: BTreeMap::new(),
        };
        if let StageBase::Stage(i) = base {
            planned.deps.insert(i);
        }
        resolve_sources(
            &mut planned,
            &lexer,
            &args,
            &lookup,
            parsed.stages.len(),
            &mut declared,
        )?;
        stages.push(planned);
    }

    let target = match &options.target {
        None => stages.len() - 1,
        Some(name) => match lookup(name) {
            Some(i) => i,
            None => match name.parse::<usize>() {
                Ok(i) if i < stages.len() => i,
                _ => return Err(PlanError::TargetNotFound(name.clone())),
            },
        },
    };
    let order = topological_order(&stages, target)?;
    let unused_build_args = options
        .build_args
        .keys()
        .filter(|k| !declared.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
        .cloned()
        .collect();
    Ok(Plan {
        stages,
        target,
        order,
        escape: parsed.directives.escape,
        args,
        unused_build_args,
    })
}

/// Resolves `COPY --from` and `RUN --mount from=` of one stage, adding edges.
///
/// References are expanded with the global args and the stage's own ARG
/// defaults and ENV values seen so far (the base image's ENV is not known yet).
fn resolve_sources(
    planned: &mut PlannedStage,
    lexer: &Lexer,
    args: &ArgContext,
    lookup: &dyn Fn(&str) -> Option<usize>,
    stage_count: usize,
    declared: &mut BTreeSet<String>,
) -> Result<(), PlanError> {
    let mut scope: BTreeMap<String, String> = BTreeMap::new();
    let instructions = planned.stage.instructions.clone();
    for (position, instruction) in instructions.iter().enumerate() {
        let mut refs: Vec<(Option<String>, usize)> = Vec::new();
        match &instruction.kind {
            InstructionKind::Arg { args: decls } => {
                for decl in decls {
                    declared.insert(decl.name.clone());
                    let default = decl
                        .default
                        .as_deref()
                        .and_then(|d| lexer.expand_word(d, &scope).ok());
                    let expanded = ArgDecl {
                        name: decl.name.clone(),
                        default,
                    };
                    if let Some(v) = args.resolve(&expanded) {
                        scope.insert(decl.name.clone(), v);
                    }
                }
            }
            InstructionKind::Env { vars } => {
                for kv in vars {
                    if let Ok(v) = lexer.expand_word(&kv.value, &scope) {
                        scope.insert(kv.key.clone(), v);
                    }
                }
            }
            InstructionKind::Copy(copy) => refs.push((copy.from.clone(), instruction.line)),
            InstructionKind::Run(run) => {
                for mount in &run.mounts {
                    refs.push((mount.from.clone(), instruction.line));
                }
            }
            _ => {}
        }
        if !matches!(
            instruction.kind,
            InstructionKind::Copy(_) | InstructionKind::Run(_)
        ) {
            continue;
        }
        let mut resolved = Vec::with_capacity(refs.len());
        for (reference, line) in refs {
            let Some(reference) = reference else {
                resolved.push(None);
                continue;
            };
            let text = lexer.expand_word(&reference, &scope).map_err(|e| {
                ParseError::in_instruction(line, line, instruction.keyword(), e.to_string())
            })?;
            let source = if let Some(i) = lookup(&text) {
                SourceRef::Stage(i)
            } else if let Ok(i) = text.parse::<usize>() {
                if i >= stage_count {
                    return Err(PlanError::Expand(ParseError::in_instruction(
                        line,
                        line,
                        instruction.keyword(),
                        format!(
                            "--from={i}: there are only {stage_count} stages (indexes start at 0)"
                        ),
                    )));
                }
                SourceRef::Stage(i)
            } else {
                SourceRef::Image(text)
            };
            if source == SourceRef::Stage(planned.index) {
                return Err(PlanError::SelfReference {
                    line,
                    stage: planned.display_name(),
                });
            }
            if let SourceRef::Stage(i) = source {
                planned.deps.insert(i);
            }
            resolved.push(Some(source));
        }
        planned.sources.insert(position, resolved);
    }
    Ok(())
}

/// Depth-first from the target: reports a cycle, else the needed stages with dependencies first.
fn topological_order(stages: &[PlannedStage], target: usize) -> Result<Vec<usize>, PlanError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Visiting,
        Done,
    }
    fn visit(
        i: usize,
        stages: &[PlannedStage],
        marks: &mut [Mark],
        path: &mut Vec<usize>,
        order: &mut Vec<usize>,
    ) -> Result<(), PlanError> {
        match marks[i] {
            Mark::Done => return Ok(()),
            Mark::Visiting => {
                let start = path.iter().position(|&p| p == i).unwrap_or(0);
                let mut cycle: Vec<String> = path[start..]
                    .iter()
                    .map(|&p| stages[p].display_name())
                    .collect();
                cycle.push(stages[i].display_name());
                return Err(PlanError::Cycle(cycle));
            }
            Mark::New => {}
        }
        marks[i] = Mark::Visiting;
        path.push(i);
        for &dep in &stages[i].deps {
            visit(dep, stages, marks, path, order)?;
        }
        path.pop();
        marks[i] = Mark::Done;
        order.push(i);
        Ok(())
    }
    let mut marks = vec![Mark::New; stages.len()];
    let mut order = Vec::new();
    visit(target, stages, &mut marks, &mut Vec::new(), &mut order)?;
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instructions::parse_dockerfile;

    fn plan_text(text: &str, options: &BuildOptions) -> Result<Plan, PlanError> {
        plan(&parse_dockerfile(text).unwrap(), options)
    }

    const MULTI: &str = "\
ARG GO=1.22
FROM golang:${GO} AS build
RUN go build
FROM alpine AS tools
RUN apk add tool
FROM build AS test
RUN go test
FROM scratch AS final
COPY --from=build /out /app
RUN --mount=type=bind,from=tools,target=/t true
";

    #[test]
    fn prunes_to_what_the_target_needs() {
        let p = plan_text(MULTI, &BuildOptions::default()).unwrap();
        assert_eq!(p.target, 3);
        assert_eq!(p.order, vec![0, 1, 3]);
        assert_eq!(p.stages[0].base, StageBase::Image("golang:1.22".into()));
        assert_eq!(p.stages[3].base, StageBase::Scratch);
        assert_eq!(p.stages[3].deps, BTreeSet::from([0, 1]));
        let options = BuildOptions {
            target: Some("test".into()),
            ..Default::default()
        };
        let p = plan_text(MULTI, &options).unwrap();
        assert_eq!(p.order, vec![0, 2]);
        assert_eq!(p.stages[2].base, StageBase::Stage(0));
    }

    #[test]
    fn unknown_target_is_an_error() {
        let options = BuildOptions {
            target: Some("nope".into()),
            ..Default::default()
        };
        assert_eq!(
            plan_text(MULTI, &options).unwrap_err(),
            PlanError::TargetNotFound("nope".into())
        );
    }

    #[test]
    fn cycles_are_reported() {
        let text = "FROM alpine AS a\nCOPY --from=b /x /x\nFROM alpine AS b\nCOPY --from=a /y /y\n";
        let err = plan_text(text, &BuildOptions::default()).unwrap_err();
        assert!(matches!(&err, PlanError::Cycle(c) if c.len() == 3), "{err}");
        let err = plan_text(
            "FROM alpine AS a\nCOPY --from=a /x /x\n",
            &BuildOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, PlanError::SelfReference { line: 2, .. }));
        let err = plan_text("FROM b AS a\nFROM a AS b\n", &BuildOptions::default()).unwrap_err();
        assert!(matches!(err, PlanError::Cycle(_)));
    }

    #[test]
    fn build_args_override_global_defaults_and_unused_are_reported() {
        let mut options = BuildOptions::default();
        options.build_args.insert("GO".into(), "1.21".into());
        options.build_args.insert("UNUSED".into(), "x".into());
        options
            .build_args
            .insert("HTTP_PROXY".into(), "http://proxy:3128".into());
        let p = plan_text(MULTI, &options).unwrap();
        assert_eq!(p.stages[0].base, StageBase::Image("golang:1.21".into()));
        assert_eq!(p.unused_build_args, vec!["UNUSED".to_string()]);
        assert_eq!(
            p.args.proxy_env(),
            vec![("HTTP_PROXY".into(), "http://proxy:3128".into())]
        );
    }

    #[test]
    fn platform_args_in_from_and_stage_arg_resolution() {
        let options = BuildOptions {
            build_platform: Platform::parse("linux/amd64").unwrap(),
            target_platform: Platform::parse("linux/arm64").unwrap(),
            ..Default::default()
        };
        let text = "ARG V=1\nFROM --platform=$BUILDPLATFORM alpine:$TARGETARCH\nARG V\nARG TARGETOS\nARG W=2\n";
        let p = plan_text(text, &options).unwrap();
        assert_eq!(p.stages[0].base, StageBase::Image("alpine:arm64".into()));
        assert_eq!(p.stages[0].platform.to_string(), "linux/amd64");
        let decl = |name: &str, default: Option<&str>| ArgDecl {
            name: name.into(),
            default: default.map(str::to_string),
        };
        assert_eq!(p.args.resolve(&decl("V", None)).as_deref(), Some("1"));
        assert_eq!(
            p.args.resolve(&decl("TARGETOS", None)).as_deref(),
            Some("linux")
        );
        assert_eq!(p.args.resolve(&decl("W", Some("2"))).as_deref(), Some("2"));
        assert_eq!(p.args.resolve(&decl("NOPE", None)), None);
    }

    #[test]
    fn copy_from_index_and_image() {
        let text =
            "FROM alpine\nFROM busybox\nCOPY --from=0 /a /a\nCOPY --from=nginx:latest /b /b\n";
        let p = plan_text(text, &BuildOptions::default()).unwrap();
        assert_eq!(p.order, vec![0, 1]);
        assert_eq!(p.stages[1].sources[&0], vec![Some(SourceRef::Stage(0))]);
        assert_eq!(
            p.stages[1].sources[&1],
            vec![Some(SourceRef::Image("nginx:latest".into()))]
        );
        let err = plan_text(
            "FROM alpine\nCOPY --from=5 /a /a\n",
            &BuildOptions::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("only 1 stages"), "{err}");
    }

    #[test]
    fn blank_base_is_an_error() {
        let err = plan_text("ARG IMG\nFROM $IMG\n", &BuildOptions::default()).unwrap_err();
        assert!(matches!(err, PlanError::BlankBase { line: 2, .. }));
    }
}
