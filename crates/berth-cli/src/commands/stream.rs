//! Interactive plumbing for attach, run and exec: the hijacked stream pump (stdcopy frames or
//! raw TTY bytes), stdin forwarding with half-close at EOF, raw terminal mode, TTY resizing
//! on SIGWINCH and the signal proxy.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow};
use berth_api::stdcopy::{Decoder, StdStream};
use hyper::Method;
use nix::sys::termios::{self, SetArg, Termios};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{SignalKind, signal};

use crate::client::{Client, Hijacked};

/// Which local streams are connected to the hijacked connection.
#[derive(Debug, Clone, Copy)]
pub struct Streams {
    /// Forward local stdin.
    pub stdin: bool,
    /// Print the remote stdout.
    pub stdout: bool,
    /// Print the remote stderr.
    pub stderr: bool,
    /// Raw bytes (TTY) instead of stdcopy frames.
    pub tty: bool,
}

/// Whether a file descriptor is a terminal.
pub fn is_tty(fd: BorrowedFd<'_>) -> bool {
    use std::os::fd::AsRawFd;
    nix::unistd::isatty(fd.as_raw_fd()).unwrap_or(false)
}

/// Whether stdin is a terminal.
pub fn stdin_is_tty() -> bool {
    is_tty(std::io::stdin().as_fd())
}

/// Whether stdout is a terminal.
pub fn stdout_is_tty() -> bool {
    is_tty(std::io::stdout().as_fd())
}

/// The size of the terminal on stdout as (rows, columns); (0, 0) when not a terminal.
pub fn stdout_size() -> (u16, u16) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a `winsize` into the pointed-to struct, which lives for the
    // duration of the call; fd 1 is only read.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    if rc != 0 {
        (0, 0)
    } else {
        (ws.ws_row, ws.ws_col)
    }
}

/// Puts stdin in raw mode until [`RawMode::restore`] (or drop).
pub struct RawMode {
    original: Option<Termios>,
}

impl RawMode {
    /// Switches the terminal on stdin to raw mode (no-op when stdin is not a terminal).
    pub fn enable() -> Result<RawMode> {
        let stdin = std::io::stdin();
        if !is_tty(stdin.as_fd()) {
            return Ok(RawMode { original: None });
        }
        let original = termios::tcgetattr(stdin.as_fd())
            .map_err(|e| anyhow!("reading terminal settings: {e}"))?;
        let mut raw = original.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
            .map_err(|e| anyhow!("setting the terminal to raw mode: {e}"))?;
        Ok(RawMode {
            original: Some(original),
        })
    }

    /// Restores the saved terminal settings.
    pub fn restore(&mut self) {
        if let Some(orig) = self.original.take() {
            let stdin = std::io::stdin();
            // Nothing sensible can be done if restoring fails; the shell's `reset` remains.
            let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &orig);
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Reads local stdin on a plain thread (so the runtime never blocks on it) and hands chunks
/// to the async side; the channel closes at EOF.
fn stdin_reader() -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    });
    rx
}

/// Where remote output lands: local stdout and stderr (tests pass buffers).
pub struct Sinks<'a> {
    /// Receives stdout frames (and all TTY output).
    pub out: &'a mut dyn Write,
    /// Receives stderr frames.
    pub err: &'a mut dyn Write,
}

fn write_local(
    sinks: &mut Sinks<'_>,
    stream: StdStream,
    data: &[u8],
    streams: Streams,
) -> std::io::Result<()> {
    match stream {
        StdStream::Stderr if streams.stderr => {
            sinks.err.write_all(data)?;
            sinks.err.flush()
        }
        StdStream::Stdout | StdStream::Stdin if streams.stdout => {
            sinks.out.write_all(data)?;
            sinks.out.flush()
        }
        _ => Ok(()),
    }
}

/// How a pump ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The server closed the stream (the process exited).
    Closed,
    /// The user typed the detach key sequence.
    Detached,
}

/// Parses a detach key spec (`ctrl-p,ctrl-q`, `a,ctrl-@`) into bytes, as moby's `ToBytes`.
pub fn parse_detach_keys(spec: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for key in spec.split(',') {
        let key = key.trim();
        if let Some(c) = key.strip_prefix("ctrl-") {
            let b = match c.as_bytes() {
                [b @ b'a'..=b'z'] => b - b'a' + 1,
                [b'@'] => 0,
                [b'['] => 27,
                [b'\\'] => 28,
                [b']'] => 29,
                [b'^'] => 30,
                [b'_'] => 31,
                _ => return Err(anyhow!("Unknown character: '{key}'")),
            };
            out.push(b);
        } else if key.len() == 1 {
            out.push(key.as_bytes()[0]);
        } else {
            return Err(anyhow!("Unknown character: '{key}'"));
        }
    }
    Ok(out)
}

/// Detects the detach sequence in typed input (docker's `term.EscapeProxy`): bytes that may
/// start the sequence are held back until it either completes or breaks.
#[derive(Debug)]
pub struct EscapeProxy {
    keys: Vec<u8>,
    held: Vec<u8>,
}

impl EscapeProxy {
    /// A proxy for the given key sequence.
    pub fn new(keys: Vec<u8>) -> EscapeProxy {
        EscapeProxy {
            keys,
            held: Vec::new(),
        }
    }

    /// Returns the bytes to forward, and whether the full sequence was typed.
    pub fn filter(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut forward = Vec::with_capacity(input.len());
        for &b in input {
            if self.keys.is_empty() {
                forward.push(b);
                continue;
            }
            if b == self.keys[self.held.len()] {
                self.held.push(b);
                if self.held.len() == self.keys.len() {
                    return (forward, true);
                }
            } else {
                forward.append(&mut self.held);
                if b == self.keys[0] {
                    self.held.push(b);
                } else {
                    forward.push(b);
                }
            }
        }
        (forward, false)
    }
}

/// The detach keys in effect for a TTY session with stdin: the flag or config value, else
/// `ctrl-p,ctrl-q`.
pub fn escape_for(streams: Streams, configured: Option<&str>) -> Result<Option<EscapeProxy>> {
    if !(streams.tty && streams.stdin) {
        return Ok(None);
    }
    let keys = parse_detach_keys(configured.unwrap_or("ctrl-p,ctrl-q"))?;
    Ok(Some(EscapeProxy::new(keys)))
}

/// [`pump_to`] with the process's own stdout and stderr.
pub async fn pump(conn: Hijacked, streams: Streams, escape: Option<EscapeProxy>) -> Result<Ended> {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    pump_to(
        conn,
        streams,
        escape,
        Sinks {
            out: &mut out,
            err: &mut err,
        },
    )
    .await
}

/// Copies the connection's output to the sinks and local stdin to the connection.
/// Returns when the output ends (the server closed), or, when no output is attached, when
/// stdin reaches EOF. At stdin EOF the write side is half-closed and output keeps flowing.
pub async fn pump_to<S>(
    conn: S,
    streams: Streams,
    mut escape: Option<EscapeProxy>,
    mut sinks: Sinks<'_>,
) -> Result<Ended>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    let (mut rd, mut wr) = tokio::io::split(conn);
    let want_output = streams.stdout || streams.stderr;
    let input = async move {
        if streams.stdin {
            let mut rx = stdin_reader();
            while let Some(chunk) = rx.recv().await {
                let (data, detached) = match escape.as_mut() {
                    Some(e) => e.filter(&chunk),
                    None => (chunk, false),
                };
                if wr.write_all(&data).await.is_err() {
                    break;
                }
                if detached {
                    return Ended::Detached;
                }
            }
        }
        // Like the docker CLI, half-close even when stdin is not attached.
        let _ = wr.shutdown().await;
        if want_output {
            // Output decides when we are done; keep the write half alive meanwhile.
            std::future::pending::<()>().await;
        }
        Ended::Closed
    };
    let output = async move {
        let mut buf = vec![0u8; 32 * 1024];
        let mut decoder = Decoder::default();
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) => return Ok(Ended::Closed),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Ok(Ended::Closed);
                }
                Err(e) => return Err(anyhow!("reading the attached stream: {e}")),
            };
            if streams.tty {
                write_local(&mut sinks, StdStream::Stdout, &buf[..n], streams)?;
                continue;
            }
            decoder.feed(&buf[..n]);
            while let Some((stream, payload)) = decoder.next_frame()? {
                write_local(&mut sinks, stream, &payload, streams)?;
            }
        }
    };
    if want_output {
        tokio::select! {
            r = output => r,
            ended = input => Ok(ended),
        }
    } else {
        Ok(input.await)
    }
}

async fn resize(client: &Client, path: &str) -> Result<()> {
    let (h, w) = stdout_size();
    if h == 0 && w == 0 {
        return Ok(());
    }
    client
        .call(Method::POST, &format!("{path}/resize?h={h}&w={w}"))
        .await?;
    Ok(())
}

/// Sends the terminal size to `path/resize` now (retrying briefly, as the process may not
/// exist yet) and again on every SIGWINCH. `path` is `/containers/{id}` or `/exec/{id}`.
pub fn monitor_tty_size(client: Arc<Client>, path: String) {
    tokio::spawn(async move {
        if resize(&client, &path).await.is_err() {
            let mut ok = false;
            for retry in 0..10u64 {
                tokio::time::sleep(Duration::from_millis((retry + 1) * 10)).await;
                if resize(&client, &path).await.is_ok() {
                    ok = true;
                    break;
                }
            }
            if !ok {
                eprintln!("failed to resize tty, using default size");
            }
        }
        let Ok(mut winch) = signal(SignalKind::window_change()) else {
            return;
        };
        while winch.recv().await.is_some() {
            let _ = resize(&client, &path).await;
        }
    });
}

/// Forwards the usual terminating and user signals to the container as `kill?signal=NAME`
/// (docker's sig-proxy).
pub fn proxy_signals(client: Arc<Client>, id: String) {
    let kinds = [
        (SignalKind::interrupt(), "INT"),
        (SignalKind::terminate(), "TERM"),
        (SignalKind::hangup(), "HUP"),
        (SignalKind::quit(), "QUIT"),
        (SignalKind::user_defined1(), "USR1"),
        (SignalKind::user_defined2(), "USR2"),
    ];
    for (kind, name) in kinds {
        let Ok(mut sig) = signal(kind) else { continue };
        let client = client.clone();
        let id = id.clone();
        tokio::spawn(async move {
            while sig.recv().await.is_some() {
                let path = format!("/containers/{id}/kill?signal={name}");
                let _ = client.call(Method::POST, &path).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_like_moby() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), vec![16, 17]);
        assert_eq!(
            parse_detach_keys("a,ctrl-@,ctrl-[").unwrap(),
            vec![b'a', 0, 27]
        );
        assert!(parse_detach_keys("ctrl-1").is_err());
        assert!(parse_detach_keys("ab").is_err());
    }

    #[test]
    fn escape_proxy_holds_partial_sequences() {
        let mut p = EscapeProxy::new(vec![16, 17]);
        assert_eq!(p.filter(b"ls\r"), (b"ls\r".to_vec(), false));
        assert_eq!(p.filter(&[16]), (vec![], false));
        assert_eq!(p.filter(b"x"), (vec![16, b'x'], false));
        assert_eq!(p.filter(&[b'a', 16]), (vec![b'a'], false));
        assert_eq!(p.filter(&[17, b'z']), (vec![], true));
    }
}
