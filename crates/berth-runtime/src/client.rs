//! Async client of `berth-shim`, used by the daemon.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Mutex;

use crate::error::{ErrorKind, Result, RuntimeError};
use crate::protocol::{
    EXIT_FILE_NAME, ExecSpec, ExecState, ExitStatus, FRAME_HEADER_LEN, PROTOCOL_VERSION, Request,
    Response, RunArgs, SOCKET_NAME, STREAM_EXIT, ShimState, decode_frame_header,
};
use crate::shim::StartupError;

/// How long `spawn` waits for the shim to report that the container is created.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest response line accepted from a shim.
const MAX_LINE: u64 = 1 << 20;

/// Options of a new shim: the shim binary and its `run` arguments.
#[derive(Debug, Clone)]
pub struct ShimOptions {
    /// Path of the `berth-shim` binary.
    pub shim_binary: PathBuf,
    /// What the shim is told to run.
    pub run: RunArgs,
}

struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Conn {
    async fn open(state_dir: &Path) -> Result<(Conn, i32)> {
        let path = state_dir.join(SOCKET_NAME);
        // sun_path holds 108 bytes; a deep state dir would not fit. Connecting through the
        // directory's descriptor keeps the socket path short whatever the exec root is.
        let dir = std::fs::File::open(state_dir).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => RuntimeError::ShimNotRunning(state_dir.to_path_buf()),
            _ => RuntimeError::io(format!("open {}", state_dir.display()), e),
        })?;
        let short = PathBuf::from(format!("/proc/self/fd/{}/{SOCKET_NAME}", dir.as_raw_fd()));
        let connected = UnixStream::connect(&short).await;
        drop(dir);
        let stream = connected.map_err(|e| match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                RuntimeError::ShimNotRunning(state_dir.to_path_buf())
            }
            _ => RuntimeError::io(format!("connect {}", path.display()), e),
        })?;
        let (r, w) = stream.into_split();
        let mut conn = Conn {
            reader: BufReader::new(r),
            writer: w,
        };
        match conn
            .call(&Request::Hello {
                version: PROTOCOL_VERSION,
            })
            .await?
        {
            Response::Hello { version, shim_pid } if version == PROTOCOL_VERSION => {
                Ok((conn, shim_pid))
            }
            Response::Hello { version, .. } => Err(RuntimeError::Protocol(format!(
                "shim speaks protocol version {version}, expected {PROTOCOL_VERSION}"
            ))),
            other => Err(RuntimeError::Protocol(format!(
                "unexpected answer to hello: {other:?}"
            ))),
        }
    }

    async fn call(&mut self, req: &Request) -> Result<Response> {
        let mut line =
            serde_json::to_vec(req).map_err(|e| RuntimeError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .await
            .map_err(|e| RuntimeError::io("send request to shim", e))?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> Result<Response> {
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| RuntimeError::io("read response from shim", e))?;
        if n == 0 {
            return Err(RuntimeError::Protocol("shim closed the connection".into()));
        }
        let resp: Response = serde_json::from_slice(&line)
            .map_err(|e| RuntimeError::Protocol(format!("decode shim response: {e}")))?;
        match resp {
            Response::Error { kind, message } => Err(RuntimeError::Shim { kind, message }),
            r => Ok(r),
        }
    }
}

fn expect_ok(resp: Response) -> Result<()> {
    match resp {
        Response::Ok => Ok(()),
        other => Err(RuntimeError::Protocol(format!(
            "expected ok, got {other:?}"
        ))),
    }
}

/// A connection to one container's shim.
pub struct ShimClient {
    state_dir: PathBuf,
    shim_pid: i32,
    conn: Mutex<Conn>,
}

impl std::fmt::Debug for ShimClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShimClient")
            .field("state_dir", &self.state_dir)
            .field("shim_pid", &self.shim_pid)
            .finish()
    }
}

impl ShimClient {
    /// Spawns a shim that creates the container (not started) and connects to it.
    ///
    /// Exec failures found at create time come back as [`RuntimeError::Shim`] with kind
    /// [`ErrorKind::NotFound`] or [`ErrorKind::NotExecutable`].
    pub async fn spawn(opts: &ShimOptions) -> Result<ShimClient> {
        let mut cmd = tokio::process::Command::new(&opts.shim_binary);
        cmd.args(opts.run.to_args());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().map_err(|e| {
            RuntimeError::io(format!("spawn shim {}", opts.shim_binary.display()), e)
        })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| RuntimeError::Protocol("shim stdout was not captured".into()))?;
        let mut line = String::new();
        let read =
            tokio::time::timeout(SPAWN_TIMEOUT, BufReader::new(stdout).read_line(&mut line)).await;
        // The spawned process only forks the shim and exits.
        let _ = child.wait().await;
        match read {
            Err(_) => {
                return Err(RuntimeError::Protocol(format!(
                    "shim for container {} did not report within {SPAWN_TIMEOUT:?}",
                    opts.run.id
                )));
            }
            Ok(Err(e)) => return Err(RuntimeError::io("read shim report", e)),
            Ok(Ok(_)) => {}
        }
        let line = line.trim_end();
        if let Some(pid) = line.strip_prefix("ok ") {
            pid.parse::<i32>()
                .map_err(|_| RuntimeError::Protocol(format!("bad shim report {line:?}")))?;
            return ShimClient::connect(&opts.run.state_dir).await;
        }
        if let Some(json) = line.strip_prefix("error ") {
            let e: StartupError = serde_json::from_str(json).map_err(|e| {
                RuntimeError::Protocol(format!("bad shim error report {json:?}: {e}"))
            })?;
            return Err(RuntimeError::Shim {
                kind: e.kind,
                message: e.message,
            });
        }
        Err(RuntimeError::Shim {
            kind: ErrorKind::Other,
            message: format!("shim for container {} exited without a report", opts.run.id),
        })
    }

    /// Connects to the shim serving `state_dir` (e.g. after a daemon restart).
    pub async fn connect(state_dir: &Path) -> Result<ShimClient> {
        let (conn, shim_pid) = Conn::open(state_dir).await?;
        Ok(ShimClient {
            state_dir: state_dir.to_path_buf(),
            shim_pid,
            conn: Mutex::new(conn),
        })
    }

    /// Pid of the shim process.
    pub fn shim_pid(&self) -> i32 {
        self.shim_pid
    }

    /// State directory of this shim.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    async fn call(&self, req: Request) -> Result<Response> {
        self.conn.lock().await.call(&req).await
    }

    /// Starts the created container.
    pub async fn start(&self) -> Result<()> {
        expect_ok(self.call(Request::Start).await?)
    }

    /// The container's state.
    pub async fn state(&self) -> Result<ShimState> {
        match self.call(Request::State).await? {
            Response::State(s) => Ok(s),
            other => Err(RuntimeError::Protocol(format!(
                "expected state, got {other:?}"
            ))),
        }
    }

    /// Sends `signal` to the container's process.
    pub async fn kill(&self, signal: i32) -> Result<()> {
        expect_ok(self.call(Request::Kill { signal }).await?)
    }

    /// Waits (on its own connection) until the process exited and its output is drained.
    pub async fn wait(&self) -> Result<ExitStatus> {
        let (mut conn, _) = Conn::open(&self.state_dir).await?;
        match conn.call(&Request::Wait).await? {
            Response::Exit(e) => Ok(e),
            other => Err(RuntimeError::Protocol(format!(
                "expected exit, got {other:?}"
            ))),
        }
    }

    /// Resizes the container's terminal.
    pub async fn resize(&self, height: u16, width: u16) -> Result<()> {
        expect_ok(self.call(Request::Resize { height, width }).await?)
    }

    /// Closes the container's stdin.
    pub async fn close_stdin(&self) -> Result<()> {
        expect_ok(self.call(Request::CloseStdin).await?)
    }

    /// Attaches to the container's stdio on a new connection.
    pub async fn attach(&self, stdin: bool, stdout: bool, stderr: bool) -> Result<AttachStream> {
        let (mut conn, _) = Conn::open(&self.state_dir).await?;
        expect_ok(
            conn.call(&Request::Attach {
                stdin,
                stdout,
                stderr,
            })
            .await?,
        )?;
        Ok(StdioStream::new(conn, 0))
    }

    /// Starts a process in the running container and streams its stdio on a new connection.
    ///
    /// Failures to start come back as [`RuntimeError::Shim`]: kind [`ErrorKind::NotFound`]
    /// or [`ErrorKind::NotExecutable`] (with docker's messages) when the executable cannot
    /// be run, [`ErrorKind::InvalidState`] when the container is not running or the exec id
    /// is taken.
    pub async fn exec(&self, spec: &ExecSpec) -> Result<ExecStream> {
        let (mut conn, _) = Conn::open(&self.state_dir).await?;
        let pid = exec_started(
            conn.call(&Request::Exec {
                spec: spec.clone(),
                detach: false,
            })
            .await?,
        )?;
        Ok(StdioStream::new(conn, pid))
    }

    /// Starts a process in the running container with its output discarded; returns its
    /// host pid. The shim records its exit code for [`ShimClient::exec_state`].
    pub async fn exec_detached(&self, spec: &ExecSpec) -> Result<i32> {
        exec_started(
            self.call(Request::Exec {
                spec: spec.clone(),
                detach: true,
            })
            .await?,
        )
    }

    /// The state of an exec (running ones and the last 256 finished ones are known).
    pub async fn exec_state(&self, exec_id: &str) -> Result<ExecState> {
        match self
            .call(Request::ExecState {
                exec_id: exec_id.to_string(),
            })
            .await?
        {
            Response::ExecState(s) => Ok(s),
            other => Err(RuntimeError::Protocol(format!(
                "expected exec state, got {other:?}"
            ))),
        }
    }

    /// Waits (on its own connection) until an exec has finished; its final state. A shim
    /// older than this request answers [`RuntimeError::Shim`] with a message starting
    /// with [`crate::protocol::UNSUPPORTED_REQUEST`].
    pub async fn wait_exec(&self, exec_id: &str) -> Result<ExecState> {
        let (mut conn, _) = Conn::open(&self.state_dir).await?;
        match conn
            .call(&Request::WaitExec {
                exec_id: exec_id.to_string(),
            })
            .await?
        {
            Response::ExecState(s) => Ok(s),
            other => Err(RuntimeError::Protocol(format!(
                "expected exec state, got {other:?}"
            ))),
        }
    }

    /// Resizes an exec's terminal.
    pub async fn resize_exec(&self, exec_id: &str, height: u16, width: u16) -> Result<()> {
        expect_ok(
            self.call(Request::ResizeExec {
                exec_id: exec_id.to_string(),
                height,
                width,
            })
            .await?,
        )
    }

    /// Destroys the container (killing it if it runs); the shim exits afterwards.
    pub async fn delete(&self) -> Result<()> {
        expect_ok(self.call(Request::Delete).await?)
    }
}

fn exec_started(resp: Response) -> Result<i32> {
    match resp {
        Response::ExecStarted { pid } => Ok(pid),
        other => Err(RuntimeError::Protocol(format!(
            "expected exec started, got {other:?}"
        ))),
    }
}

/// Reads one frame; `None` at a clean end of the stream.
async fn read_frame(reader: &mut BufReader<OwnedReadHalf>) -> Result<Option<(u8, Bytes)>> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(RuntimeError::io("read frame from shim", e)),
    }
    let (stream, len) = decode_frame_header(&header);
    let mut payload = vec![0u8; len];
    reader
        .read_exact(&mut payload)
        .await
        .map_err(|e| RuntimeError::io("read frame payload from shim", e))?;
    Ok(Some((stream, Bytes::from(payload))))
}

/// Reads `<state_dir>/exit.json`, if the container has exited.
pub fn read_exit_file(state_dir: &Path) -> Option<ExitStatus> {
    let data = std::fs::read(state_dir.join(EXIT_FILE_NAME)).ok()?;
    serde_json::from_slice(&data).ok()
}

/// A connection carrying a process's stdio (an attach to the container's process, or an
/// exec): decoded output frames, a stdin writer, and for execs the exit code the shim sends
/// as the last frame.
#[derive(Debug)]
pub struct StdioStream {
    pid: i32,
    output: StdioOutput,
    input: StdioInput,
}

/// An attach to the container's main process.
pub type AttachStream = StdioStream;
/// A started exec.
pub type ExecStream = StdioStream;

impl StdioStream {
    fn new(conn: Conn, pid: i32) -> StdioStream {
        StdioStream {
            pid,
            output: StdioOutput {
                reader: conn.reader,
                exit_code: None,
                ended: false,
            },
            input: StdioInput {
                writer: conn.writer,
            },
        }
    }

    /// Host pid of an exec's process (0 for an attach).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The next output frame `(stream id, bytes)` (1 stdout, 2 stderr; everything is 1 with
    /// a tty); `None` once the process exited and all its output was delivered.
    pub async fn next_frame(&mut self) -> Result<Option<(u8, Bytes)>> {
        self.output.next_frame().await
    }

    /// An exec's exit code (128 + signal for a death by signal), once `next_frame` returned
    /// `None`; `None` for an attach, or if the shim went away without reporting one.
    pub fn exit_code(&self) -> Option<i32> {
        self.output.exit_code
    }

    /// Splits into the output and the stdin halves.
    pub fn into_split(self) -> (StdioOutput, StdioInput) {
        (self.output, self.input)
    }
}

impl AsyncWrite for StdioStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.input).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.input).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.input).poll_shutdown(cx)
    }
}

/// The output half: frames from the shim, then (for an exec) the exit code.
#[derive(Debug)]
pub struct StdioOutput {
    reader: BufReader<OwnedReadHalf>,
    exit_code: Option<i32>,
    ended: bool,
}

impl StdioOutput {
    /// The next output frame `(stream id, bytes)`; `None` at the end of the stream.
    pub async fn next_frame(&mut self) -> Result<Option<(u8, Bytes)>> {
        if self.ended {
            return Ok(None);
        }
        match read_frame(&mut self.reader).await? {
            Some((STREAM_EXIT, payload)) => {
                let code: [u8; 4] = payload.as_ref().try_into().map_err(|_| {
                    RuntimeError::Protocol(format!(
                        "exit frame of {} bytes, expected 4",
                        payload.len()
                    ))
                })?;
                self.exit_code = Some(i32::from_be_bytes(code));
                self.ended = true;
                Ok(None)
            }
            Some(frame) => Ok(Some(frame)),
            None => {
                self.ended = true;
                Ok(None)
            }
        }
    }

    /// The exit code, once `next_frame` returned `None` (see [`StdioStream::exit_code`]).
    pub fn exit_code(&self) -> Option<i32> {
        self.exit_code
    }
}

/// The stdin half; shutting it down closes the process's stdin (when the attach or exec
/// asked for stdin; with a tty an EOF character is sent instead).
#[derive(Debug)]
pub struct StdioInput {
    writer: OwnedWriteHalf,
}

impl AsyncWrite for StdioInput {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_shutdown(cx)
    }
}
