//! The shim control protocol: newline-delimited JSON on `<state-dir>/shim.sock`.
//!
//! A connection starts with [`Request::Hello`] answered by [`Response::Hello`]; after that
//! every request line gets one response line. `Attach` switches the connection to a framed
//! byte stream after its `Ok` response (see [`encode_frame_header`]), and so does an `Exec`
//! that is not detached after its `ExecStarted` response (ending with a [`STREAM_EXIT`]
//! frame). New requests are added as new enum variants; an older shim answers an unknown
//! request with an `Error` response instead of dropping the connection.

use std::ffi::OsString;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::ErrorKind;
use crate::spec::ProcessUser;

/// Version of the protocol spoken by this crate.
pub const PROTOCOL_VERSION: u32 = 1;

/// How a shim's error answer to a request it does not know begins.
pub const UNSUPPORTED_REQUEST: &str = "unsupported or malformed request";

/// Name of the control socket inside the state directory.
pub const SOCKET_NAME: &str = "shim.sock";
/// Name of the exit status file inside the state directory.
pub const EXIT_FILE_NAME: &str = "exit.json";

/// Stream id of stdout frames (and of everything when a tty is used).
pub const STREAM_STDOUT: u8 = 1;
/// Stream id of stderr frames.
pub const STREAM_STDERR: u8 = 2;
/// Stream id of the last frame of an exec stream; its 4-byte big-endian payload is the
/// exit code.
pub const STREAM_EXIT: u8 = 3;
/// Size of a frame header: stream id (u8) + payload length (u32, big endian).
pub const FRAME_HEADER_LEN: usize = 5;

/// A request from a client to the shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Request {
    /// First message of every connection.
    Hello {
        /// Protocol version of the client.
        version: u32,
    },
    /// Start the created container.
    Start,
    /// Report the container's state.
    State,
    /// Send a signal to the container's process.
    Kill {
        /// Signal number.
        signal: i32,
    },
    /// Answer once the process has exited and its output has been drained.
    Wait,
    /// Resize the container's terminal.
    Resize {
        /// Rows.
        height: u16,
        /// Columns.
        width: u16,
    },
    /// Close the container's stdin.
    CloseStdin,
    /// Switch this connection to the framed attach stream.
    Attach {
        /// Forward bytes from the client to the container's stdin.
        stdin: bool,
        /// Send stdout frames.
        stdout: bool,
        /// Send stderr frames.
        stderr: bool,
    },
    /// Destroy the container and stop the shim.
    Delete,
    /// Start a process inside the running container. Answered by `ExecStarted`; unless
    /// `detach` is set, the connection then switches to the framed exec stream (output
    /// frames, then one [`STREAM_EXIT`] frame; client bytes are the process's stdin).
    Exec {
        /// What to run.
        spec: ExecSpec,
        /// Discard the output and keep the connection in request mode.
        detach: bool,
    },
    /// Report an exec's state.
    ExecState {
        /// The exec's id.
        exec_id: String,
    },
    /// Answer with the exec's `ExecState` once it has finished (at once if it has): the
    /// exit of a detached exec, without polling `ExecState`.
    WaitExec {
        /// The exec's id.
        exec_id: String,
    },
    /// Resize an exec's terminal.
    ResizeExec {
        /// The exec's id.
        exec_id: String,
        /// Rows.
        height: u16,
        /// Columns.
        width: u16,
    },
}

/// A process to start inside a running container (`docker exec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// Id chosen by the caller; unique among the shim's execs.
    pub exec_id: String,
    /// Command and arguments.
    pub args: Vec<String>,
    /// `KEY=value` entries merged over the container's environment (these win; a bare
    /// `KEY` removes the variable), like docker.
    pub env: Vec<String>,
    /// Working directory; empty = the container's.
    pub cwd: String,
    /// The user to run as.
    pub user: ProcessUser,
    /// Give the process a terminal.
    pub tty: bool,
    /// Forward the client's bytes to the process's stdin.
    pub stdin: bool,
    /// All capabilities (clamped to the shim's bounding set) instead of the container's.
    pub privileged: bool,
}

/// State of one exec as the shim sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecState {
    /// Host pid of the exec's process.
    pub pid: i32,
    /// The process runs (or its output is still being drained).
    pub running: bool,
    /// Exit code once finished; 128 + signal for a death by signal.
    pub exit_code: Option<i32>,
}

/// Lifecycle status of the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, not started yet.
    Created,
    /// The process runs.
    Running,
    /// The process has exited.
    Stopped,
}

/// How the container's process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code; 128 + signal for a death by signal (like Docker).
    pub code: i32,
    /// The signal that killed the process, if any.
    pub signal: Option<i32>,
    /// The container's cgroup saw an OOM kill.
    pub oom_killed: bool,
    /// When the exit was observed (RFC 3339 with nanoseconds).
    pub finished_at: String,
}

/// State of the container as the shim sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimState {
    /// Host pid of the container's process (0 if unknown).
    pub pid: i32,
    /// Lifecycle status.
    pub status: Status,
    /// Exit status once stopped.
    pub exit: Option<ExitStatus>,
}

/// A response from the shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Response {
    /// Answer to `Hello`.
    Hello {
        /// Protocol version of the shim.
        version: u32,
        /// Pid of the shim.
        shim_pid: i32,
    },
    /// The request succeeded.
    Ok,
    /// Answer to `State`.
    State(ShimState),
    /// Answer to `Wait`.
    Exit(ExitStatus),
    /// Answer to `Exec`: the process runs.
    ExecStarted {
        /// Host pid of the exec's process.
        pid: i32,
    },
    /// Answer to `ExecState` and `WaitExec`.
    ExecState(ExecState),
    /// The request failed.
    Error {
        /// Classification.
        kind: ErrorKind,
        /// Human readable message.
        message: String,
    },
}

/// Encodes the header of an attach frame carrying `len` bytes of `stream`.
pub fn encode_frame_header(stream: u8, len: usize) -> [u8; FRAME_HEADER_LEN] {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [stream, len[0], len[1], len[2], len[3]]
}

/// Decodes an attach frame header into (stream, payload length).
pub fn decode_frame_header(h: &[u8; FRAME_HEADER_LEN]) -> (u8, usize) {
    (h[0], u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize)
}

/// The `berth-shim run` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunArgs {
    /// Container id.
    pub id: String,
    /// OCI bundle directory (holds config.json).
    pub bundle: PathBuf,
    /// Directory for the socket, exit.json and the runtime's state.
    pub state_dir: PathBuf,
    /// json-file log path.
    pub log_path: PathBuf,
    /// Rotate the log at this size in bytes.
    pub log_max_size: Option<u64>,
    /// Number of log files to keep.
    pub log_max_file: u32,
    /// The container has a terminal.
    pub tty: bool,
    /// Keep the container's stdin open.
    pub stdin: bool,
    /// `None` = linked libcontainer; otherwise the path of an OCI runtime binary (runc).
    pub runtime: Option<PathBuf>,
}

/// Parses `berth-shim run` arguments (after the `run` word).
pub fn parse_run_args(args: &[OsString]) -> Result<RunArgs, String> {
    let mut id = None;
    let mut bundle = None;
    let mut state_dir = None;
    let mut log_path = None;
    let mut log_max_size = None;
    let mut log_max_file = 1;
    let mut tty = false;
    let mut stdin = false;
    let mut runtime = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let name = arg
            .to_str()
            .ok_or_else(|| format!("invalid argument {arg:?}"))?;
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("missing value for {name}"))
        };
        match name {
            "--id" => id = Some(value()?.to_string_lossy().into_owned()),
            "--bundle" => bundle = Some(PathBuf::from(value()?)),
            "--state-dir" => state_dir = Some(PathBuf::from(value()?)),
            "--log-path" => log_path = Some(PathBuf::from(value()?)),
            "--log-max-size" => {
                let v = value()?;
                log_max_size = Some(
                    v.to_string_lossy()
                        .parse()
                        .map_err(|_| format!("invalid --log-max-size {v:?}"))?,
                );
            }
            "--log-max-file" => {
                let v = value()?;
                log_max_file = v
                    .to_string_lossy()
                    .parse()
                    .map_err(|_| format!("invalid --log-max-file {v:?}"))?;
            }
            "--tty" => tty = true,
            "--stdin" => stdin = true,
            "--runtime" => {
                let v = PathBuf::from(value()?);
                runtime = (v.as_os_str() != "libcontainer").then_some(v);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let absolute = |p: PathBuf, what: &str| -> Result<PathBuf, String> {
        std::path::absolute(&p).map_err(|e| format!("{what} {}: {e}", p.display()))
    };
    Ok(RunArgs {
        id: id.ok_or("missing --id")?,
        bundle: absolute(bundle.ok_or("missing --bundle")?, "bundle")?,
        state_dir: absolute(state_dir.ok_or("missing --state-dir")?, "state dir")?,
        log_path: absolute(log_path.ok_or("missing --log-path")?, "log path")?,
        log_max_size,
        log_max_file,
        tty,
        stdin,
        runtime,
    })
}

impl RunArgs {
    /// The `berth-shim run` arguments that [`parse_run_args`] reads back.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = vec!["run".into()];
        let mut push = |flag: &str, value: OsString| {
            out.push(flag.into());
            out.push(value);
        };
        push("--id", self.id.clone().into());
        push("--bundle", self.bundle.clone().into());
        push("--state-dir", self.state_dir.clone().into());
        push("--log-path", self.log_path.clone().into());
        if let Some(size) = self.log_max_size {
            push("--log-max-size", size.to_string().into());
        }
        if self.log_max_file > 1 {
            push("--log-max-file", self.log_max_file.to_string().into());
        }
        if let Some(rt) = &self.runtime {
            push("--runtime", rt.clone().into());
        }
        if self.tty {
            out.push("--tty".into());
        }
        if self.stdin {
            out.push("--stdin".into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format() {
        let r = serde_json::to_string(&Request::Kill { signal: 15 }).unwrap();
        assert_eq!(r, r#"{"type":"Kill","signal":15}"#);
        let back: Request = serde_json::from_str(r#"{"type":"Start"}"#).unwrap();
        assert_eq!(back, Request::Start);
        assert!(serde_json::from_str::<Request>(r#"{"type":"Checkpoint"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"type":"Exec","args":[]}"#).is_err());
    }

    #[test]
    fn state_response_roundtrip() {
        let resp = Response::State(ShimState {
            pid: 42,
            status: Status::Stopped,
            exit: Some(ExitStatus {
                code: 143,
                signal: Some(15),
                oom_killed: false,
                finished_at: "2024-01-01T00:00:00.000000001Z".into(),
            }),
        });
        let line = serde_json::to_string(&resp).unwrap();
        assert!(line.contains(r#""status":"stopped""#), "{line}");
        assert_eq!(serde_json::from_str::<Response>(&line).unwrap(), resp);
    }

    #[test]
    fn exec_request_roundtrip() {
        let req = Request::Exec {
            spec: ExecSpec {
                exec_id: "e1".into(),
                args: vec!["sh".into(), "-c".into(), "true".into()],
                env: vec!["A=b".into()],
                cwd: String::new(),
                user: ProcessUser {
                    uid: 1000,
                    gid: 1000,
                    additional_gids: vec![10],
                },
                tty: false,
                stdin: true,
                privileged: false,
            },
            detach: false,
        };
        let line = serde_json::to_string(&req).unwrap();
        assert!(
            line.starts_with(r#"{"type":"Exec","spec":{"exec_id":"e1""#),
            "{line}"
        );
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), req);
        let resp = Response::ExecState(ExecState {
            pid: 7,
            running: false,
            exit_code: Some(5),
        });
        let line = serde_json::to_string(&resp).unwrap();
        assert_eq!(serde_json::from_str::<Response>(&line).unwrap(), resp);
    }

    #[test]
    fn frame_header_roundtrip() {
        let h = encode_frame_header(STREAM_STDERR, 70000);
        assert_eq!(decode_frame_header(&h), (STREAM_STDERR, 70000));
    }
}
