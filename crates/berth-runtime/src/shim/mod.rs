//! `berth-shim`: the per-container supervisor.
//!
//! `berth-shim run ...` creates one container, then serves its control socket until a
//! `Delete` request.
//! The shim is single threaded and runs no async runtime: libcontainer forks, and a small
//! resident set matters with one shim per container.

mod exec;
mod io;
mod runtime;
mod server;

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::unistd::{ForkResult, fork, setsid};

use crate::error::ErrorKind;
use crate::protocol::{RunArgs, parse_run_args};

/// What the shim writes to its stdout (a pipe to the spawner) once, before detaching it:
/// `ok <shim pid>` or `error <json {kind, message}>`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct StartupError {
    pub kind: ErrorKind,
    pub message: String,
}

fn report(fd: &mut File, line: &str) {
    // The spawner may have gone; nothing useful can be done about a failed report.
    let _ = fd.write_all(line.as_bytes());
    let _ = fd.write_all(b"\n");
}

fn report_error(fd: &mut File, kind: ErrorKind, message: &str) {
    let json = serde_json::to_string(&StartupError {
        kind,
        message: message.to_string(),
    })
    .unwrap_or_else(|_| String::from("{}"));
    report(fd, &format!("error {json}"));
}

/// Entry point of the `berth-shim` binary; returns the process exit code.
pub fn main() -> i32 {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match args.first().and_then(|a| a.to_str()) {
        Some("run") => run(&args[1..]),
        _ => {
            eprintln!(
                "usage: berth-shim run --id ID --bundle DIR --state-dir DIR --log-path FILE [--log-max-size N] [--log-max-file N] [--tty] [--stdin] [--runtime libcontainer|PATH]"
            );
            2
        }
    }
}

fn run(args: &[OsString]) -> i32 {
    // fd 1 is the report pipe from the spawner; keep a copy of it before stdio is detached.
    let mut report_fd = match nix::unistd::dup(1) {
        // SAFETY: `fd` was just returned by dup and is owned by nobody else.
        Ok(fd) => File::from(unsafe { OwnedFd::from_raw_fd(fd) }),
        Err(e) => {
            eprintln!("berth-shim: dup stdout: {e}");
            return 1;
        }
    };
    let opts = match parse_run_args(args) {
        Ok(o) => o,
        Err(e) => {
            report_error(
                &mut report_fd,
                ErrorKind::Other,
                &format!("berth-shim: {e}"),
            );
            return 2;
        }
    };
    // Detach from the spawner: new session, then fork so the shim is not a session leader
    // (it can never reacquire a controlling terminal) and is reparented to init.
    if let Err(e) = setsid() {
        report_error(
            &mut report_fd,
            ErrorKind::Other,
            &format!("berth-shim: setsid: {e}"),
        );
        return 1;
    }
    // SAFETY: the process is single threaded at this point, so fork is sound.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => return 0,
        Ok(ForkResult::Child) => {}
        Err(e) => {
            report_error(
                &mut report_fd,
                ErrorKind::Other,
                &format!("berth-shim: fork: {e}"),
            );
            return 1;
        }
    }
    if let Err(e) = detach_stdio(&opts.state_dir) {
        report_error(
            &mut report_fd,
            ErrorKind::Other,
            &format!("berth-shim: redirect stdio: {e}"),
        );
        return 1;
    }
    let _ = nix::fcntl::fcntl(
        report_fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    match server::Shim::create(&opts) {
        Ok(mut shim) => {
            report(&mut report_fd, &format!("ok {}", std::process::id()));
            drop(report_fd);
            shim.serve()
        }
        Err(e) => {
            report_error(&mut report_fd, e.kind, &e.message);
            1
        }
    }
}

/// Points stdin and stdout at /dev/null and stderr at `<state-dir>/shim.log`, so a panic
/// of a detached shim still leaves a trace.
fn detach_stdio(state_dir: &std::path::Path) -> std::io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    std::fs::create_dir_all(state_dir)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state_dir.join("shim.log"))?;
    nix::unistd::dup2(null.as_raw_fd(), 0)?;
    nix::unistd::dup2(null.as_raw_fd(), 1)?;
    nix::unistd::dup2(log.as_raw_fd(), 2)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_run_args() {
        let a = parse_run_args(&os(&[
            "--id",
            "c1",
            "--bundle",
            "/b",
            "--state-dir",
            "/s",
            "--log-path",
            "/l/c.log",
            "--log-max-size",
            "1000",
            "--log-max-file",
            "3",
            "--tty",
            "--runtime",
            "/usr/sbin/runc",
        ]))
        .unwrap();
        assert_eq!(a.id, "c1");
        assert_eq!(a.log_max_size, Some(1000));
        assert_eq!(a.log_max_file, 3);
        assert!(a.tty && !a.stdin);
        assert_eq!(a.runtime, Some(std::path::PathBuf::from("/usr/sbin/runc")));
        let a = parse_run_args(&os(&[
            "--id",
            "c1",
            "--bundle",
            "/b",
            "--state-dir",
            "/s",
            "--log-path",
            "/l",
            "--runtime",
            "libcontainer",
        ]))
        .unwrap();
        assert_eq!(a.runtime, None);
        assert!(parse_run_args(&os(&["--id", "c1"])).is_err());
        assert!(parse_run_args(&os(&["--bogus"])).is_err());
    }

    #[test]
    fn run_args_round_trip_through_the_command_line() {
        let args = RunArgs {
            id: "c2".into(),
            bundle: "/b".into(),
            state_dir: "/s".into(),
            log_path: "/l/c.log".into(),
            log_max_size: Some(10),
            log_max_file: 2,
            tty: false,
            stdin: true,
            runtime: Some("/usr/sbin/runc".into()),
        };
        let argv = args.to_args();
        assert_eq!(argv[0], "run");
        assert_eq!(parse_run_args(&argv[1..]).unwrap(), args);
    }
}
