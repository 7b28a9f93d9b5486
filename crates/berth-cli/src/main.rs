//! `berth`: a docker-compatible command line client for `berthd`.
//!
//! It talks only HTTP (the Docker Engine API) to the daemon found through `-H`, `BERTH_HOST`,
//! `DOCKER_HOST` or the default socket. Exit codes follow the docker CLI: 125 for flag and
//! daemon errors on run/create (and, as the network-and-storage issue asks, on network and
//! volume create), the container's own code for `run`/`start -a`/`wait`, 1 for other failures.

mod autostart;
mod client;
mod commands;
mod optparse;
mod opts;
mod output;
mod reference;
mod template;
mod timefmt;

use std::io::Write;
use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::autostart::Autostart;
use crate::client::{Client, DEFAULT_HOST};
use crate::commands::{Cmd, Ctx, StatusError};

/// A self-sufficient runtime for containers
#[derive(Parser, Debug)]
#[command(
    name = "berth",
    disable_version_flag = true,
    disable_help_subcommand = true,
    override_usage = "berth [OPTIONS] COMMAND"
)]
struct Cli {
    /// Location of client config files
    #[arg(long, value_name = "string")]
    config: Option<PathBuf>,
    /// Enable debug mode
    #[arg(short = 'D', long)]
    debug: bool,
    /// Daemon socket to connect to
    #[arg(short = 'H', long, value_name = "list")]
    host: Vec<String>,
    /// Set the logging level ("debug", "info", "warn", "error", "fatal")
    #[arg(
        short = 'l',
        long = "log-level",
        value_name = "string",
        default_value = "info"
    )]
    log_level: String,
    /// Do not start berthd automatically when the default socket does not answer
    #[arg(long = "no-autostart")]
    no_autostart: bool,
    /// Print version information and quit
    #[arg(short = 'v', long)]
    version: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

/// `berth version 0.1.0, build <sha>`.
fn version_line() -> String {
    let build = option_env!("BERTH_GIT_SHA").unwrap_or("unknown");
    format!("berth version {}, build {build}", env!("CARGO_PKG_VERSION"))
}

/// Which host to talk to, and whether it was chosen explicitly.
fn resolve_host(flags: &[String]) -> (String, bool) {
    if let Some(h) = flags.last() {
        return (h.clone(), true);
    }
    for var in ["BERTH_HOST", "DOCKER_HOST"] {
        if let Ok(h) = std::env::var(var)
            && !h.is_empty()
        {
            return (h, true);
        }
    }
    (DEFAULT_HOST.to_string(), false)
}

fn docker_config_dir(flag: Option<PathBuf>) -> PathBuf {
    if let Some(p) = flag {
        return p;
    }
    if let Some(p) = std::env::var_os("DOCKER_CONFIG") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".docker")
}

/// The command words of a usage line (`Usage: berth container rm <CONTAINER>...` →
/// `berth container rm`).
fn command_path(usage: &str) -> String {
    usage
        .trim_start_matches("Usage:")
        .split_whitespace()
        .take_while(|w| !w.starts_with(['[', '<']) && w.chars().any(|c| c.is_ascii_lowercase()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Finds the (sub)command an argument list addresses (bin names set along the way), for
/// errors that clap reports without usage or flag details.
fn locate(root: &clap::Command, argv: &[String]) -> clap::Command {
    let mut cmd = root.clone();
    for word in argv.iter().skip(1) {
        let next = cmd
            .get_subcommands()
            .find(|c| c.get_name() == word || c.get_all_aliases().any(|a| a == word))
            .cloned();
        match next {
            Some(c) => {
                let name = format!(
                    "{} {}",
                    cmd.get_bin_name().unwrap_or(cmd.get_name()),
                    c.get_name()
                );
                cmd = c.bin_name(name);
            }
            None if cmd.has_subcommands() => continue,
            None => break,
        }
    }
    cmd
}

/// docker's flag spelling in errors: `-m, --memory` (or just `--cpus`).
fn flag_display(cmd: &clap::Command, long: &str) -> String {
    let name = long.trim_start_matches('-');
    match cmd.get_arguments().find(|a| a.get_long() == Some(name)) {
        Some(a) => match a.get_short() {
            Some(c) => format!("-{c}, --{name}"),
            None => format!("--{name}"),
        },
        None => long.to_string(),
    }
}

/// How many positional arguments the command at `path` accepts, as docker words it.
fn arity_phrase(root: &clap::Command, path: &str) -> String {
    let mut cmd = root;
    for word in path.split_whitespace().skip(1) {
        match cmd.find_subcommand(word) {
            Some(c) => cmd = c,
            None => break,
        }
    }
    let mut min = 0usize;
    let mut max = Some(0usize);
    for arg in cmd.get_positionals() {
        let range = arg.get_num_args().unwrap_or_default();
        if arg.is_required_set() {
            min += range.min_values().max(1);
        }
        max = match (max, range.max_values()) {
            (Some(m), n) if n != usize::MAX => Some(m + n),
            _ => None,
        };
    }
    let plural = |n: usize| if n == 1 { "argument" } else { "arguments" };
    match max {
        Some(0) => "accepts no arguments".to_string(),
        Some(m) if m == min => format!("requires {min} {}", plural(min)),
        Some(m) => format!("requires at least {min} and at most {m} {}", plural(m)),
        None => format!("requires at least {min} {}", plural(min)),
    }
}

/// Prints a clap error the docker way and returns the exit code: 125 for bad flags and
/// values, 1 for wrong argument counts and unknown commands, 0 for help output.
fn clap_exit(err: clap::Error, root: &clap::Command) -> i32 {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let ctx = |kind| match err.get(kind) {
        Some(ContextValue::String(s)) => s.clone(),
        Some(ContextValue::StyledStr(s)) => s.to_string(),
        Some(ContextValue::Strings(v)) => v.join(" "),
        _ => String::new(),
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut located = locate(&root.clone().bin_name("berth"), &argv);
    let mut usage = ctx(ContextKind::Usage);
    if usage.is_empty() {
        usage = located.render_usage().to_string();
    }
    let path = command_path(&usage);
    let usage_line = usage.trim_start_matches("Usage:").trim().to_string();
    let (message, code) = match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            return 0;
        }
        ErrorKind::UnknownArgument => {
            let arg = ctx(ContextKind::InvalidArg);
            if let Some(long) = arg.strip_prefix("--") {
                let name = long.split('=').next().unwrap_or(long);
                (
                    format!(
                        "unknown flag: --{name}\n\nUsage:  {usage_line}\n\nRun '{path} --help' for more information"
                    ),
                    125,
                )
            } else if let Some(short) = arg.strip_prefix('-') {
                let c = short.chars().next().unwrap_or('-');
                (
                    format!(
                        "unknown shorthand flag: '{c}' in {arg}\n\nUsage:  {usage_line}\n\nRun '{path} --help' for more information"
                    ),
                    125,
                )
            } else {
                (
                    format!(
                        "berth: '{path}' {}\n\nUsage:  {usage_line}\n\nRun '{path} --help' for more information",
                        arity_phrase(root, &path)
                    ),
                    1,
                )
            }
        }
        ErrorKind::InvalidSubcommand => {
            let sub = ctx(ContextKind::InvalidSubcommand);
            let parent = if path.is_empty() {
                "berth".to_string()
            } else {
                path.clone()
            };
            (
                format!(
                    "berth: unknown command: {parent} {sub}\n\nRun '{parent} --help' for more information"
                ),
                1,
            )
        }
        ErrorKind::MissingRequiredArgument
        | ErrorKind::TooFewValues
        | ErrorKind::WrongNumberOfValues => (
            format!(
                "berth: '{path}' {}\n\nUsage:  {usage_line}\n\nSee '{path} --help' for more information",
                arity_phrase(root, &path)
            ),
            1,
        ),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => {
            let arg = ctx(ContextKind::InvalidArg);
            let flag = flag_display(&located, arg.split([' ', '=']).next().unwrap_or(&arg));
            let value = ctx(ContextKind::InvalidValue);
            if value.is_empty() && err.kind() == ErrorKind::InvalidValue {
                (
                    format!(
                        "flag needs an argument: {flag}\n\nUsage:  {usage_line}\n\nRun '{path} --help' for more information"
                    ),
                    125,
                )
            } else {
                let reason = std::error::Error::source(&err)
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| {
                        let valid = ctx(ContextKind::ValidValue);
                        format!("valid values are {valid}")
                    });
                (
                    format!(
                        "invalid argument \"{value}\" for \"{flag}\" flag: {reason}\n\nUsage:  {usage_line}\n\nRun '{path} --help' for more information"
                    ),
                    125,
                )
            }
        }
        _ => {
            let _ = err.print();
            return 125;
        }
    };
    eprintln!("{message}");
    code
}

fn run() -> i32 {
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return clap_exit(e, &Cli::command()),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => return clap_exit(e, &Cli::command()),
    };
    if cli.version {
        println!("{}", version_line());
        return 0;
    }
    let Some(command) = cli.command else {
        let _ = Cli::command().print_help();
        return 0;
    };
    if !matches!(
        cli.log_level.as_str(),
        "debug" | "info" | "warn" | "error" | "fatal" | "panic" | "trace"
    ) {
        eprintln!("Unable to parse logging level: {}", cli.log_level);
        return 1;
    }
    if let Cmd::Completion(args) = &command {
        return match commands::completion::run(args, Cli::command()) {
            Ok(()) => 0,
            Err(e) => report(&e),
        };
    }
    let (host, explicit) = resolve_host(&cli.host);
    let autostart = if explicit {
        None
    } else {
        Autostart::for_default_host(cli.no_autostart)
    };
    let client = match Client::new(&host, autostart) {
        Ok(c) => c,
        Err(e) => return report(&e),
    };
    let ctx = Ctx {
        client,
        docker_config: docker_config_dir(cli.config),
        debug: cli.debug,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("starting the async runtime: {e}");
            return 1;
        }
    };
    let result = runtime.block_on(commands::dispatch(&ctx, command));
    // Background tasks (a stdin reader blocked on a terminal, a dropped wait connection)
    // must not hold the process open.
    runtime.shutdown_background();
    match result {
        Ok(()) => 0,
        Err(e) => report(&e),
    }
}

/// Prints an error as the docker CLI does and returns its exit code.
fn report(err: &anyhow::Error) -> i32 {
    let broken_pipe = err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        // Our reader went away (`berth ps | head`): exit quietly with the status a process
        // killed by SIGPIPE reports, as the Go CLI does.
        return 128 + libc::SIGPIPE;
    }
    if let Some(status) = err.downcast_ref::<StatusError>() {
        if let Some(msg) = &status.message {
            eprintln!("{msg}");
        }
        return status.code;
    }
    eprintln!("{err:#}");
    1
}

fn main() {
    let code = run();
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parse_errors_map_to_docker_exit_codes() {
        let code = |args: &[&str]| {
            let e = Cli::command().try_get_matches_from(args).unwrap_err();
            clap_exit(e, &Cli::command())
        };
        assert_eq!(code(&["berth", "run", "--bogus", "x"]), 125);
        assert_eq!(code(&["berth", "run", "-m", "12q", "x"]), 125);
        assert_eq!(code(&["berth", "ps", "--format"]), 125);
        assert_eq!(code(&["berth", "rm"]), 1);
        assert_eq!(code(&["berth", "ps", "extra"]), 1);
        assert_eq!(code(&["berth", "frobnicate"]), 1);
    }

    #[test]
    fn usage_paths_and_arity() {
        let root = Cli::command();
        assert_eq!(
            command_path("Usage: berth container rm <CONTAINER>..."),
            "berth container rm"
        );
        assert_eq!(
            command_path("Usage: berth run [OPTIONS] IMAGE [COMMAND] [ARG...]"),
            "berth run"
        );
        assert_eq!(
            arity_phrase(&root, "berth rm"),
            "requires at least 1 argument"
        );
        assert_eq!(arity_phrase(&root, "berth rename"), "requires 2 arguments");
        assert_eq!(
            arity_phrase(&root, "berth port"),
            "requires at least 1 and at most 2 arguments"
        );
        assert_eq!(arity_phrase(&root, "berth ps"), "accepts no arguments");
        let argv: Vec<String> = ["berth", "-H", "x", "container", "ls", "--bogus"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut ls = locate(&root.clone().bin_name("berth"), &argv);
        assert_eq!(
            ls.render_usage().to_string(),
            "Usage: berth container ls [OPTIONS]"
        );
        assert_eq!(flag_display(&ls, "--last"), "-n, --last");
        assert_eq!(flag_display(&ls, "--format"), "--format");
    }

    #[test]
    fn completion_scripts_cover_the_command_tree() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "berth", &mut out);
            let text = String::from_utf8(out).unwrap();
            for word in ["run", "ps", "images", "container", "no-autostart"] {
                assert!(text.contains(word), "{shell:?} script lacks {word}");
            }
        }
    }

    #[test]
    fn broken_pipe_exits_quietly_like_sigpipe() {
        let e = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert_eq!(report(&e), 141);
        let e = anyhow::Error::new(StatusError {
            code: 7,
            message: None,
        });
        assert_eq!(report(&e), 7);
    }

    #[test]
    fn global_flags_precede_the_command() {
        let m = Cli::command()
            .try_get_matches_from([
                "berth",
                "-H",
                "unix:///tmp/x.sock",
                "--no-autostart",
                "ps",
                "-a",
            ])
            .unwrap();
        let cli = Cli::from_arg_matches(&m).unwrap();
        assert_eq!(cli.host, vec!["unix:///tmp/x.sock".to_string()]);
        assert!(cli.no_autostart);
        assert_eq!(
            resolve_host(&cli.host),
            ("unix:///tmp/x.sock".to_string(), true)
        );
        // `-l` after `run` is the container label flag, not the log level.
        let m = Cli::command()
            .try_get_matches_from(["berth", "run", "-l", "a=b", "-h", "h", "img"])
            .unwrap();
        assert!(Cli::from_arg_matches(&m).is_ok());
        assert!(version_line().starts_with("berth version 0.1.0, build "));
    }
}
