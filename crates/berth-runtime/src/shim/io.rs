//! Plumbing shared by the container and exec paths of the shim: client connections, fds,
//! the pty master hand-over and memory release.

use std::fs::{self, File};
use std::io::{self, IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

use super::runtime::ShimError;
use crate::protocol::{EXIT_FILE_NAME, ExitStatus, Response};

/// Stop reading a process's output while its client has this much unsent.
pub(super) const CLIENT_BUFFER_LIMIT: usize = 1 << 20;
/// Stop reading client stdin while this much waits to be written to a process.
const STDIN_BUFFER_LIMIT: usize = 1 << 20;
/// After a process exited, how long to wait for its output to reach EOF.
pub(super) const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes read from an output in one go.
pub(super) const READ_CHUNK: usize = 32 * 1024;

/// What a client connection is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Control,
    Waiting,
    Deleting,
    Attach {
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    /// The framed stream of the exec with this key.
    Exec {
        key: u64,
    },
    /// Waiting for the exec with this key to finish (`WaitExec`).
    WaitingExec {
        key: u64,
    },
}

/// One connection to the control socket.
pub(super) struct Client {
    pub sock: UnixStream,
    pub inbuf: Vec<u8>,
    pub outbuf: Vec<u8>,
    pub mode: Mode,
    pub greeted: bool,
    pub read_closed: bool,
    pub close_when_flushed: bool,
    pub dead: bool,
}

impl Client {
    pub(super) fn new(sock: UnixStream) -> Client {
        Client {
            sock,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            mode: Mode::Control,
            greeted: false,
            read_closed: false,
            close_when_flushed: false,
            dead: false,
        }
    }

    pub(super) fn send(&mut self, resp: &Response) {
        match serde_json::to_vec(resp) {
            Ok(mut line) => {
                line.push(b'\n');
                self.outbuf.extend_from_slice(&line);
            }
            Err(_) => self.dead = true,
        }
    }

    pub(super) fn flush(&mut self) {
        while !self.outbuf.is_empty() {
            match self.sock.write(&self.outbuf) {
                Ok(0) => {
                    self.dead = true;
                    return;
                }
                Ok(n) => {
                    self.outbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
        if self.close_when_flushed {
            let _ = self.sock.shutdown(std::net::Shutdown::Both);
            self.dead = true;
        }
    }
}

/// A process's stdin as the shim feeds it: bytes from clients are queued and written
/// whenever the pipe (or pty master) takes them.
pub(super) struct StdinFeed {
    file: Option<File>,
    buf: Vec<u8>,
    close_pending: bool,
    tty: bool,
}

impl StdinFeed {
    /// Feeds `file` (non-blocking; `None`: the process has no stdin from the shim). With
    /// a terminal, closing sends the EOF character instead.
    pub fn new(file: Option<File>, tty: bool) -> StdinFeed {
        StdinFeed {
            file,
            buf: Vec::new(),
            close_pending: false,
            tty,
        }
    }

    /// Queues client bytes (dropped once stdin is closed or closing).
    pub fn push(&mut self, data: &[u8]) {
        if self.file.is_some() && !self.close_pending {
            self.buf.extend_from_slice(data);
            self.write();
        }
    }

    /// So much is queued that clients should not be read.
    pub fn full(&self) -> bool {
        self.buf.len() > STDIN_BUFFER_LIMIT
    }

    /// Closes stdin once everything queued is written.
    pub fn close_when_written(&mut self) {
        self.close_pending = true;
    }

    /// Closes stdin now, dropping what is queued.
    pub fn close(&mut self) {
        self.file = None;
        self.buf.clear();
    }

    /// The pollfd to watch (POLLOUT while bytes are queued), if stdin is open.
    pub fn pollfd(&self) -> Option<libc::pollfd> {
        let file = self.file.as_ref()?;
        Some(libc::pollfd {
            fd: file.as_raw_fd(),
            events: if self.buf.is_empty() {
                0
            } else {
                libc::POLLOUT
            },
            revents: 0,
        })
    }

    /// Handles the events of [`StdinFeed::pollfd`].
    pub fn handle(&mut self, revents: i16) {
        if revents & (libc::POLLERR | libc::POLLHUP) != 0 {
            // The process closed its stdin: nothing will read it any more (and an
            // unwatched error would wake every poll).
            self.close();
        } else if revents != 0 {
            self.write();
        }
    }

    fn write(&mut self) {
        let Some(f) = self.file.as_mut() else { return };
        while !self.buf.is_empty() {
            match f.write(&self.buf) {
                Ok(n) => {
                    self.buf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // The reader is gone (EPIPE): nothing will consume stdin any more.
                    self.close();
                    return;
                }
            }
        }
    }

    /// Closes stdin if a close is due and the queue is written.
    pub fn maybe_close(&mut self) {
        if !self.close_pending || self.file.is_none() {
            return;
        }
        if self.tty && self.buf.last() != Some(&4) {
            // A pty has no half close: send the EOF character (VEOF) instead.
            self.buf.push(4);
        }
        self.write();
        if self.buf.is_empty() {
            self.file = None;
        }
    }
}

pub(super) fn err_other(context: &str, e: impl std::fmt::Display) -> ShimError {
    ShimError::other(format!("{context}: {e}"))
}

pub(super) fn pipe_pair() -> Result<(OwnedFd, OwnedFd), ShimError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| err_other("create pipe", e))
}

pub(super) fn set_nonblocking(fd: &impl AsRawFd) -> Result<(), ShimError> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags =
        fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(|e| err_other("get fd flags", e))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(|e| err_other("set O_NONBLOCK", e))?;
    Ok(())
}

/// Sets a terminal's size.
pub(super) fn set_window_size(pty: &File, height: u16, width: u16) -> Result<(), ShimError> {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct that lives across the call.
    if unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws) } == 0 {
        Ok(())
    } else {
        Err(err_other("resize terminal", io::Error::last_os_error()))
    }
}

/// Receives the pty master sent over the console socket.
pub(super) fn receive_pty_master(listener: &UnixListener) -> Result<File, ShimError> {
    set_nonblocking(listener)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (conn, _) = loop {
        match listener.accept() {
            Ok(c) => break c,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(err_other("accept on console socket", e)),
        }
    };
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| err_other("console socket timeout", e))?;
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| err_other("receive pty master", e))?;
    for c in msg
        .cmsgs()
        .map_err(|e| err_other("decode console message", e))?
    {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(&fd) = fds.first()
        {
            // SAFETY: SCM_RIGHTS just installed `fd` in this process; nobody else owns it.
            return Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    Err(ShimError::other(
        "console socket message carried no pty master",
    ))
}

/// Gives back memory that one-off work (container creation, start, exit handling) left
/// resident: freed heap goes back to the kernel, and clean file-backed pages (libcontainer's
/// code and data, touched once) are unmapped from this process. The serve loop faults back
/// in the few pages it uses; the pages stay in the page cache, shared with every other shim.
pub(super) fn release_unused_memory() {
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };
    let Ok(smaps) = fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            // start-end perms offset dev inode path: read-only private file mappings only
            let perms = f.next().unwrap_or("");
            let path = f.nth(3).unwrap_or("");
            current = (perms.starts_with('r')
                && !perms.contains('w')
                && perms.ends_with('p')
                && path.starts_with('/'))
            .then_some((start, end));
        } else if first == "Anonymous:"
            && let Some((start, end)) = current.take()
            && f.next() == Some("0")
        {
            // SAFETY: the range is a read-only private file mapping without a single
            // copy-on-write page (Anonymous: 0), so every page equals the file's content;
            // MADV_DONTNEED only drops page-table entries and later accesses fault the same
            // file pages back in.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
}

/// Raises the soft open-file limit to the hard one: every exec holds a few descriptors
/// (pipes, its connection). Containers and execs get their limits from the spec.
pub(super) fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only access the rlimit struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Writes exit.json atomically (temp file + rename). Not synced: it is read when the
/// daemon restarts and the shim is gone, and a daemon crash keeps the page cache; after a
/// host crash there is no container left to report on (the exec root is normally a
/// tmpfs), and the daemon records such a container as killed. A sync here would sit on
/// the exit path of every container (an ext4 journal commit, 0.5–2 ms here).
pub(super) fn write_exit_file(state_dir: &Path, exit: &ExitStatus) -> io::Result<()> {
    let tmp = state_dir.join(format!("{EXIT_FILE_NAME}.tmp"));
    let data = serde_json::to_vec(exit).map_err(io::Error::other)?;
    File::create(&tmp)?.write_all(&data)?;
    fs::rename(&tmp, state_dir.join(EXIT_FILE_NAME))
}
