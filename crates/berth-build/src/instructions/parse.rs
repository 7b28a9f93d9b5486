//! Parser nodes → typed instructions, and the split into global ARGs and stages.

use super::flags::{FlagKind, Flags};
use super::*;
use crate::parser::{self, Args, Node};

/// Parses Dockerfile text into global ARGs and stages, validating every
/// instruction. Nothing is expanded yet.
pub fn parse_dockerfile(text: &str) -> Result<ParsedDockerfile, ParseError> {
    let df = parser::parse(text)?;
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &df.nodes {
        let instruction = instruction_from_node(node)?;
        match &instruction.kind {
            InstructionKind::From(from) => {
                if let Some(name) = &from.stage_name
                    && let Some(prev) = stages
                        .iter()
                        .find(|s| s.from.stage_name.as_ref() == Some(name))
                {
                    return Err(ParseError::in_instruction(
                        instruction.line,
                        instruction.end_line,
                        "FROM",
                        format!(
                            "duplicate stage name {name:?} (first used on line {}): give this stage another name",
                            prev.line
                        ),
                    ));
                }
                stages.push(Stage {
                    index: stages.len(),
                    from: from.clone(),
                    line: instruction.line,
                    instructions: Vec::new(),
                });
            }
            _ => match stages.last_mut() {
                Some(stage) => stage.instructions.push(instruction),
                None if matches!(instruction.kind, InstructionKind::Arg { .. }) => {
                    global_args.push(instruction)
                }
                None => {
                    return Err(ParseError::in_instruction(
                        instruction.line,
                        instruction.end_line,
                        instruction.keyword(),
                        "no build stage yet: only ARG may come before the first FROM; add a FROM above this line",
                    ));
                }
            },
        }
    }
    if stages.is_empty() {
        let last = df.nodes.last().map_or(1, |n| n.end_line);
        return Err(ParseError::at_line(
            last,
            "the Dockerfile has no FROM: start a build stage with FROM <image>",
        ));
    }
    Ok(ParsedDockerfile {
        directives: df.directives,
        global_args,
        stages,
        warnings: df.warnings,
    })
}

/// Parses one ONBUILD trigger expression (as stored in an image config, e.g.
/// `RUN make`) into an instruction.
pub fn parse_trigger(expression: &str) -> Result<Instruction, ParseError> {
    let df = parser::parse(expression)?;
    let node = df
        .nodes
        .first()
        .ok_or_else(|| ParseError::at_line(1, "empty ONBUILD trigger"))?;
    let instruction = instruction_from_node(node)?;
    check_trigger(&instruction)?;
    Ok(instruction)
}

fn check_trigger(trigger: &Instruction) -> Result<(), ParseError> {
    let keyword = trigger.keyword();
    if matches!(keyword, "ONBUILD" | "FROM" | "MAINTAINER") {
        let message = if keyword == "ONBUILD" {
            "ONBUILD ONBUILD is not allowed: use a single ONBUILD".to_string()
        } else {
            format!("{keyword} is not allowed as an ONBUILD trigger")
        };
        return Err(ParseError::in_instruction(
            trigger.line,
            trigger.end_line,
            "ONBUILD",
            message,
        ));
    }
    Ok(())
}

const KEYWORDS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Parses a Go-style duration (`30s`, `1m30s`, `500ms`, `1.5h`, `0`) into nanoseconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || format!("invalid duration {text:?}: use a number with a unit, like 30s or 1m30s");
    if text == "0" {
        return Ok(0);
    }
    let mut rest = text;
    let mut total: f64 = 0.0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_end == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += number * factor;
        rest = &rest[unit_end..];
    }
    Ok(total as u64)
}

fn is_valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// Checks `80`, `80/tcp`, `8000-8010/udp`.
pub(crate) fn validate_port(port: &str) -> Result<(), String> {
    let bad = || format!("invalid port {port:?}: use <port>[-<port>][/tcp|/udp|/sctp]");
    let (range, proto) = match port.split_once('/') {
        Some((r, p)) => (r, Some(p)),
        None => (port, None),
    };
    if let Some(p) = proto
        && !matches!(p.to_ascii_lowercase().as_str(), "tcp" | "udp" | "sctp")
    {
        return Err(bad());
    }
    let (start, end) = range.split_once('-').unwrap_or((range, range));
    let start: u16 = start.parse().map_err(|_| bad())?;
    let end: u16 = end.parse().map_err(|_| bad())?;
    if start > end {
        return Err(bad());
    }
    Ok(())
}

const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL", "PIPE",
    "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN",
    "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
];

/// Checks a STOPSIGNAL value: a signal number, a name (with or without SIG) or `SIGRTMIN+n`.
pub(crate) fn validate_signal(signal: &str) -> Result<(), String> {
    if let Ok(n) = signal.parse::<u32>() {
        return if (1..=64).contains(&n) {
            Ok(())
        } else {
            Err(format!("invalid signal number {n}"))
        };
    }
    let upper = signal.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if SIGNALS.contains(&name) || name.starts_with("RTMIN") || name.starts_with("RTMAX") {
        return Ok(());
    }
    Err(format!(
        "unknown signal {signal:?}: use a name like SIGTERM or a number"
    ))
}

fn validate_chmod(mode: &str) -> Result<(), String> {
    if mode.contains('$') {
        return Ok(());
    }
    let octal =
        !mode.is_empty() && mode.len() <= 4 && mode.chars().all(|c| ('0'..='7').contains(&c));
    let symbolic = !mode.is_empty() && mode.chars().all(|c| "ugoa+-=rwxXst,".contains(c));
    if octal || symbolic {
        Ok(())
    } else {
        Err(format!(
            "invalid --chmod value {mode:?}: use an octal mode like 0755 or u+x"
        ))
    }
}

fn command_from(args: &Args) -> Option<Command> {
    match args {
        Args::Json(v) => Some(Command::Exec(v.clone())),
        Args::Text(t) => Some(Command::Shell(t.clone())),
        _ => None,
    }
}

fn list_from(args: &Args) -> (Vec<String>, bool) {
    match args {
        Args::Json(v) => (v.clone(), true),
        Args::Words(v) => (v.clone(), false),
        Args::Text(t) => (vec![t.clone()], false),
        _ => (Vec::new(), false),
    }
}

fn text_from(args: &Args) -> Option<String> {
    match args {
        Args::Text(t) => Some(t.clone()),
        _ => None,
    }
}

fn instruction_from_node(node: &Node) -> Result<Instruction, ParseError> {
    let keyword = node.instruction.to_ascii_uppercase();
    let fail = |message: String| {
        ParseError::in_instruction(node.start_line, node.end_line, &node.instruction, message)
    };
    let flags = |allowed: &[(&'static str, FlagKind)]| {
        Flags::parse(&node.flags, allowed, &keyword).map_err(fail)
    };
    let needs_args = || fail("requires at least one argument".to_string());
    let kind = match node.instruction.as_str() {
        "from" => {
            let f = flags(&[("platform", FlagKind::Single)])?;
            let (words, _) = list_from(&node.args);
            let stage_name = match words.as_slice() {
                [_] => None,
                [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
                    let name = name.to_ascii_lowercase();
                    if !is_valid_stage_name(&name) {
                        return Err(fail(format!(
                            "invalid stage name {name:?}: start with a letter and use only letters, digits, '-', '_' and '.'"
                        )));
                    }
                    Some(name)
                }
                _ => {
                    return Err(fail(
                        "expected FROM [--platform=<platform>] <image> [AS <name>]".into(),
                    ));
                }
            };
            InstructionKind::From(FromInstr {
                image: words[0].clone(),
                stage_name,
                platform: f.single("platform"),
            })
        }
        "run" => {
            let f = flags(&[
                ("mount", FlagKind::Repeated),
                ("network", FlagKind::Single),
                ("security", FlagKind::Single),
            ])?;
            let command = command_from(&node.args).ok_or_else(needs_args)?;
            let mount_specs = f.repeated("mount");
            let identity = |v: &str| Ok(v.to_string());
            let mounts = mount_specs
                .iter()
                .map(|spec| RunMount::parse(spec, &identity, true))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail(format!("--mount: {e}")))?;
            let network = match f.single("network").as_deref() {
                None => None,
                Some("default") => Some(RunNetwork::Default),
                Some("none") => Some(RunNetwork::None),
                Some("host") => Some(RunNetwork::Host),
                Some(other) => {
                    return Err(fail(format!(
                        "unsupported network mode {other:?}: use default, none or host"
                    )));
                }
            };
            let security = match f.single("security").as_deref() {
                None => None,
                Some("sandbox") => Some(RunSecurity::Sandbox),
                Some("insecure") => Some(RunSecurity::Insecure),
                Some(other) => {
                    return Err(fail(format!(
                        "unsupported security mode {other:?}: use sandbox or insecure"
                    )));
                }
            };
            InstructionKind::Run(RunInstr {
                command,
                heredocs: node.heredocs.clone(),
                mounts,
                mount_specs,
                network,
                security,
            })
        }
        "cmd" | "entrypoint" => {
            flags(&[])?;
            let command = command_from(&node.args).ok_or_else(needs_args)?;
            if node.instruction == "cmd" {
                InstructionKind::Cmd { command }
            } else {
                InstructionKind::Entrypoint { command }
            }
        }
        "env" | "label" => {
            flags(&[])?;
            let Args::KeyValues { pairs, .. } = &node.args else {
                return Err(fail(format!(
                    "requires at least one name=value argument, like {keyword} name=value"
                )));
            };
            let pairs: Vec<KeyValue> = pairs
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect();
            if let Some(blank) = pairs.iter().find(|kv| kv.key.is_empty()) {
                return Err(fail(format!(
                    "names can not be blank (in \"={}\"): write name=value",
                    blank.value
                )));
            }
            if node.instruction == "env" {
                InstructionKind::Env { vars: pairs }
            } else {
                InstructionKind::Label { labels: pairs }
            }
        }
        "maintainer" => {
            flags(&[])?;
            InstructionKind::Maintainer {
                name: text_from(&node.args).ok_or_else(needs_args)?,
            }
        }
        "expose" => {
            flags(&[])?;
            let (ports, _) = list_from(&node.args);
            if ports.is_empty() {
                return Err(needs_args());
            }
            for port in ports.iter().filter(|p| !p.contains('$')) {
                validate_port(port).map_err(fail)?;
            }
            InstructionKind::Expose { ports }
        }
        "add" | "copy" => file_instruction(node, &keyword, &fail)?,
        "volume" => {
            flags(&[])?;
            let (paths, _) = list_from(&node.args);
            if paths.is_empty() {
                return Err(needs_args());
            }
            if paths.iter().any(|p| p.trim().is_empty()) {
                return Err(fail("a volume path can not be an empty string".into()));
            }
            InstructionKind::Volume { paths }
        }
        "user" | "workdir" | "stopsignal" => {
            flags(&[])?;
            let value = text_from(&node.args)
                .ok_or_else(|| fail("requires exactly one argument".to_string()))?;
            match node.instruction.as_str() {
                "user" => InstructionKind::User { user: value },
                "workdir" => InstructionKind::Workdir { path: value },
                _ => {
                    if !value.contains('$') {
                        validate_signal(&value).map_err(fail)?;
                    }
                    InstructionKind::Stopsignal { signal: value }
                }
            }
        }
        "arg" => {
            flags(&[])?;
            let (words, _) = list_from(&node.args);
            if words.is_empty() {
                return Err(fail(
                    "requires at least one argument, like ARG <name>[=<default>]".into(),
                ));
            }
            let mut args = Vec::with_capacity(words.len());
            for word in words {
                let (name, default) = match word.split_once('=') {
                    Some((n, d)) => (n.to_string(), Some(d.to_string())),
                    None => (word.clone(), None),
                };
                if name.is_empty() {
                    return Err(fail(format!(
                        "names can not be blank (in {word:?}): write ARG name=value"
                    )));
                }
                args.push(ArgDecl { name, default });
            }
            InstructionKind::Arg { args }
        }
        "onbuild" => {
            flags(&[])?;
            let Args::Trigger(child) = &node.args else {
                return Err(fail(
                    "requires an instruction to run later, like ONBUILD RUN make".into(),
                ));
            };
            let trigger = instruction_from_node(child)?;
            check_trigger(&trigger)?;
            let mut expression = child.original.clone();
            for doc in &child.heredocs {
                expression.push('\n');
                expression.push_str(&doc.content);
                expression.push_str(&doc.name);
            }
            InstructionKind::Onbuild {
                expression,
                trigger: Box::new(trigger),
            }
        }
        "healthcheck" => healthcheck(node, &fail)?,
        "shell" => {
            flags(&[])?;
            match &node.args {
                Args::Json(v) if !v.is_empty() => InstructionKind::Shell { shell: v.clone() },
                Args::Json(_) => {
                    return Err(fail(
                        "needs at least the shell program, like SHELL [\"/bin/sh\", \"-c\"]".into(),
                    ));
                }
                _ => {
                    return Err(fail(
                        "requires the arguments in JSON form, like SHELL [\"/bin/bash\", \"-c\"]"
                            .into(),
                    ));
                }
            }
        }
        _ => {
            let suggestion = KEYWORDS
                .iter()
                .map(|k| (edit_distance(&keyword, k), k))
                .filter(|(d, _)| *d <= 2)
                .min()
                .map(|(_, k)| format!(" (did you mean {k}?)"))
                .unwrap_or_default();
            return Err(fail(format!("unknown instruction {keyword}{suggestion}")));
        }
    };
    Ok(Instruction {
        line: node.start_line,
        end_line: node.end_line,
        original: node.original.clone(),
        kind,
    })
}

fn file_instruction(
    node: &Node,
    keyword: &str,
    fail: &dyn Fn(String) -> ParseError,
) -> Result<InstructionKind, ParseError> {
    let is_copy = node.instruction == "copy";
    let allowed: &[(&str, FlagKind)] = if is_copy {
        &[
            ("from", FlagKind::Single),
            ("chown", FlagKind::Single),
            ("chmod", FlagKind::Single),
            ("link", FlagKind::Bool),
            ("parents", FlagKind::Bool),
            ("exclude", FlagKind::Repeated),
        ]
    } else {
        &[
            ("chown", FlagKind::Single),
            ("chmod", FlagKind::Single),
            ("link", FlagKind::Bool),
            ("exclude", FlagKind::Repeated),
            ("checksum", FlagKind::Single),
            ("keep-git-dir", FlagKind::Bool),
        ]
    };
    let f = Flags::parse(&node.flags, allowed, keyword).map_err(fail)?;
    let (mut words, json_form) = list_from(&node.args);
    if words.len() < 2 {
        return Err(fail(format!(
            "requires at least two arguments, the source(s) and the destination, like {keyword} app.py /app/"
        )));
    }
    let dest = words.pop().unwrap_or_default();
    let mut sources = Vec::with_capacity(words.len());
    for word in words {
        let marker = if json_form {
            None
        } else {
            crate::parser::heredoc_name(&word)
        };
        match marker.and_then(|name| node.heredocs.iter().find(|d| d.name == name)) {
            Some(doc) => sources.push(CopySource::Heredoc(doc.clone())),
            None => sources.push(CopySource::Path { path: word }),
        }
    }
    if let Some(mode) = f.single("chmod") {
        validate_chmod(&mode).map_err(fail)?;
    }
    let files = FileArgs {
        sources,
        dest,
        chown: f.single("chown"),
        chmod: f.single("chmod"),
        link: f.bool("link"),
        excludes: f.repeated("exclude"),
        json_form,
    };
    if is_copy {
        return Ok(InstructionKind::Copy(CopyInstr {
            files,
            from: f.single("from"),
            parents: f.bool("parents"),
        }));
    }
    let checksum = f.single("checksum");
    if checksum.is_some() {
        let remote = |p: &str| {
            p.starts_with("http://")
                || p.starts_with("https://")
                || p.starts_with("git@")
                || p.contains('$')
        };
        let single_remote =
            matches!(files.sources.as_slice(), [CopySource::Path { path }] if remote(path));
        if !single_remote {
            return Err(fail(
                "--checksum needs exactly one http(s) or git source".into(),
            ));
        }
    }
    Ok(InstructionKind::Add(AddInstr {
        files,
        checksum,
        keep_git_dir: f.bool("keep-git-dir"),
    }))
}

fn healthcheck(
    node: &Node,
    fail: &dyn Fn(String) -> ParseError,
) -> Result<InstructionKind, ParseError> {
    let f = Flags::parse(
        &node.flags,
        &[
            ("interval", FlagKind::Single),
            ("timeout", FlagKind::Single),
            ("start-period", FlagKind::Single),
            ("start-interval", FlagKind::Single),
            ("retries", FlagKind::Single),
        ],
        "HEALTHCHECK",
    )
    .map_err(fail)?;
    let Args::Health { kind, command } = &node.args else {
        return Err(fail("requires CMD <command> or NONE".into()));
    };
    let test = match kind.to_ascii_uppercase().as_str() {
        "NONE" => {
            if !matches!(**command, Args::Empty) {
                return Err(fail(
                    "NONE takes no arguments: remove what follows NONE".into(),
                ));
            }
            HealthTest::None
        }
        "CMD" => HealthTest::Cmd(
            command_from(command).ok_or_else(|| fail("CMD needs a command to run".into()))?,
        ),
        other => return Err(fail(format!("unknown type {other:?}: use CMD or NONE"))),
    };
    let duration = |name: &str| -> Result<Option<u64>, ParseError> {
        let Some(text) = f.single(name) else {
            return Ok(None);
        };
        let ns = parse_duration(&text).map_err(|e| fail(format!("--{name}: {e}")))?;
        if ns != 0 && ns < 1_000_000 {
            return Err(fail(format!(
                "--{name} must be at least 1ms (or 0 for the default)"
            )));
        }
        Ok(Some(ns))
    };
    let retries = match f.single("retries") {
        None => None,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n < 0 => return Err(fail("--retries can not be negative".into())),
            Ok(n) => {
                Some(u32::try_from(n).map_err(|_| fail(format!("--retries {n} is too large")))?)
            }
            Err(_) => {
                return Err(fail(format!(
                    "--retries takes a whole number, not {text:?}"
                )));
            }
        },
    };
    Ok(InstructionKind::Healthcheck(HealthcheckInstr {
        test,
        interval_ns: duration("interval")?,
        timeout_ns: duration("timeout")?,
        start_period_ns: duration("start-period")?,
        start_interval_ns: duration("start-interval")?,
        retries,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), 30_000_000_000);
        assert_eq!(parse_duration("1m30s").unwrap(), 90_000_000_000);
        assert_eq!(parse_duration("1.5h").unwrap(), 5_400_000_000_000);
        assert_eq!(parse_duration("250ms").unwrap(), 250_000_000);
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn ports_and_signals() {
        assert!(validate_port("8000-8010/udp").is_ok());
        assert!(validate_port("80/http").is_err());
        assert!(validate_signal("SIGQUIT").is_ok());
        assert!(validate_signal("winch").is_ok());
        assert!(validate_signal("9").is_ok());
        assert!(validate_signal("SIGNOPE").is_err());
    }

    #[test]
    fn unknown_instruction_suggests() {
        let err = parse_dockerfile("FROM a\nCOPPY a b\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("did you mean COPY?"), "{err}");
    }

    #[test]
    fn stages_and_global_args() {
        let p = parse_dockerfile("ARG V=1\nFROM a:$V AS Build\nRUN x\nFROM build\n").unwrap();
        assert_eq!(p.global_args.len(), 1);
        assert_eq!(p.stages.len(), 2);
        assert_eq!(p.stages[0].from.stage_name.as_deref(), Some("build"));
        assert_eq!(p.stages[0].instructions.len(), 1);
    }

    #[test]
    fn expansion_only_where_docker_expands() {
        let p = parse_dockerfile(
            "FROM a\nENV D=/srv\nWORKDIR $D/app\nRUN echo $D\nCOPY --chown=$U:$U a $D/\nCMD echo $D\n",
        )
        .unwrap();
        let vars: Vec<(String, String)> =
            vec![("D".into(), "/srv".into()), ("U".into(), "app".into())];
        let lexer = Lexer::new('\\');
        let ins = &p.stages[0].instructions;
        let workdir = ins[1].expand(&lexer, &vars).unwrap();
        assert_eq!(
            workdir.kind,
            InstructionKind::Workdir {
                path: "/srv/app".into()
            }
        );
        let run = ins[2].expand(&lexer, &vars).unwrap();
        assert_eq!(run.kind, ins[2].kind);
        let InstructionKind::Copy(copy) = ins[3].expand(&lexer, &vars).unwrap().kind else {
            panic!("not a copy")
        };
        assert_eq!(copy.files.chown.as_deref(), Some("app:app"));
        assert_eq!(copy.files.dest, "/srv/");
        let cmd = ins[4].expand(&lexer, &vars).unwrap();
        assert_eq!(cmd.kind, ins[4].kind);
    }
}
