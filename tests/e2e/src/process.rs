//! Running a child process with a deadline, capturing its output.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a command may run when the caller does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(90);

/// Runs `cmd` to completion, feeding it `stdin` (or /dev/null) and capturing stdout and stderr.
///
/// Panics when the command cannot be started or does not finish within `timeout`; the child is
/// killed first (by its own handle, so only the process this function started).
pub fn run_with_timeout(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    let shown = describe(&cmd);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{shown}`: {e}"));

    let stdin_writer = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("stdin was requested as a pipe");
        let bytes = bytes.to_vec();
        // A child that exits early closes the pipe: EPIPE is not our failure.
        thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        })
    });
    let stdout_rx = drain(child.stdout.take().expect("stdout was requested as a pipe"));
    let stderr_rx = drain(child.stderr.take().expect("stderr was requested as a pipe"));

    let deadline = Instant::now() + timeout;
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let out = collect(&stdout_rx, Duration::from_secs(2));
                let err = collect(&stderr_rx, Duration::from_secs(2));
                panic!(
                    "`{shown}` did not finish within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&err)
                );
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("cannot wait for `{shown}`: {e}"),
        }
    };
    if let Some(writer) = stdin_writer {
        let _ = writer.join();
    }
    // A grandchild that inherited the pipes could keep them open forever; do not wait on it.
    let stdout = collect(&stdout_rx, Duration::from_secs(10));
    let stderr = collect(&stderr_rx, Duration::from_secs(10));
    let output = Output {
        status,
        stdout,
        stderr,
    };
    log_command(&shown, &output);
    output
}

/// A printable form of a command line, for diagnostics.
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains([' ', '\'', '"', '$', '{']) {
            format!("'{}'", a.replace('\'', "'\\''"))
        } else {
            a.into_owned()
        }
    }));
    parts.join(" ")
}

fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

fn collect(rx: &mpsc::Receiver<Vec<u8>>, wait: Duration) -> Vec<u8> {
    rx.recv_timeout(wait).unwrap_or_default()
}

/// Prints the command and what it produced; libtest shows this for failing tests only.
fn log_command(shown: &str, output: &Output) {
    const LIMIT: usize = 4000;
    let clip = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        if text.len() > LIMIT {
            let mut end = LIMIT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}… ({} bytes)", &text[..end], bytes.len())
        } else {
            text.into_owned()
        }
    };
    eprintln!(
        "$ {shown}\n  -> {}\n  stdout: {}\n  stderr: {}",
        output.status,
        clip(&output.stdout).trim_end(),
        clip(&output.stderr).trim_end()
    );
}

/// Convenience accessors and assertions on a finished command.
pub trait OutputExt {
    /// Stdout as (lossy) UTF-8.
    fn stdout_text(&self) -> String;
    /// Stderr as (lossy) UTF-8.
    fn stderr_text(&self) -> String;
    /// The exit code, or `128 + signal` when the process was killed by a signal.
    fn exit_code(&self) -> i32;
    /// Panics with the full output unless the command exited 0; returns trimmed stdout.
    fn ok(&self, what: &str) -> String;
    /// Panics with the full output unless the command exited with `code`.
    fn expect_code(&self, code: i32, what: &str) -> &Self;
    /// Panics with the full output if the command exited 0.
    fn expect_failure(&self, what: &str) -> &Self;
}

impl OutputExt for Output {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    fn exit_code(&self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        match (self.status.code(), self.status.signal()) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => -1,
        }
    }

    fn ok(&self, what: &str) -> String {
        assert!(
            self.status.success(),
            "{what}: expected success, got {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.stdout_text(),
            self.stderr_text()
        );
        self.stdout_text().trim().to_string()
    }

    fn expect_code(&self, code: i32, what: &str) -> &Self {
        assert_eq!(
            self.exit_code(),
            code,
            "{what}: unexpected exit code\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout_text(),
            self.stderr_text()
        );
        self
    }

    fn expect_failure(&self, what: &str) -> &Self {
        assert!(
            !self.status.success(),
            "{what}: expected failure, but it exited 0\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout_text(),
            self.stderr_text()
        );
        self
    }
}
