//! The shim's single-threaded event loop: container output → log + attached clients,
//! control requests, exit handling; execs are driven from here (see `exec.rs`).

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigHandler, SigSet, Signal, kill, signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::RunArgs;
use super::exec::{ExecWait, Execs};
use super::io::{
    CLIENT_BUFFER_LIMIT, Client, DRAIN_TIMEOUT, Mode, READ_CHUNK, StdinFeed, err_other, pipe_pair,
    raise_open_file_limit, receive_pty_master, release_unused_memory, set_nonblocking,
    set_window_size, write_exit_file,
};
use super::runtime::{Backend, ContainerStdio, ShimError};
use crate::cgroups;
use crate::logs::{JsonLogWriter, LogStream, format_time};
use crate::protocol::{
    EXIT_FILE_NAME, ExitStatus, PROTOCOL_VERSION, Request, Response, SOCKET_NAME, STREAM_STDERR,
    STREAM_STDOUT, ShimState, Status, UNSUPPORTED_REQUEST, encode_frame_header,
};

const CONSOLE_SOCKET_NAME: &str = "console.sock";
/// Idle time after create, start and exit before unused memory is given back.
const MEMORY_RELEASE_DELAY: Duration = Duration::from_millis(500);

/// One output source: a pipe of the container or the pty master.
struct Output {
    file: File,
    stream: u8,
    log_stream: LogStream,
}

pub(crate) struct Shim {
    id: String,
    arg0: String,
    bundle: PathBuf,
    state_dir: PathBuf,
    cgroups_path: String,
    tty: bool,
    backend: Backend,
    pid: i32,
    started: bool,
    /// (code, signal, when) once the process has been reaped.
    reaped: Option<(i32, Option<i32>, String)>,
    drain_deadline: Option<Instant>,
    release_memory_at: Option<Instant>,
    exit: Option<ExitStatus>,
    listener: UnixListener,
    signal_fd: SignalFd,
    outputs: Vec<Output>,
    stdin: StdinFeed,
    pty: Option<File>,
    log: JsonLogWriter,
    clients: Vec<Client>,
    execs: Execs,
    delete_requested: bool,
}

/// What the shim needs from config.json.
fn read_bundle(bundle: &Path) -> Result<(String, String), ShimError> {
    let path = bundle.join("config.json");
    let data = fs::read(&path).map_err(|e| err_other(&format!("read {}", path.display()), e))?;
    let v: serde_json::Value = serde_json::from_slice(&data)
        .map_err(|e| err_other(&format!("decode {}", path.display()), e))?;
    let arg0 = v["process"]["args"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let cgroups_path = v["linux"]["cgroupsPath"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok((arg0, cgroups_path))
}

impl Shim {
    /// Creates the container (not started) and the control socket.
    pub fn create(opts: &RunArgs) -> Result<Shim, ShimError> {
        fs::create_dir_all(&opts.state_dir)
            .map_err(|e| err_other(&format!("create state dir {}", opts.state_dir.display()), e))?;
        // Work from the state dir: socket paths stay short whatever its length.
        std::env::set_current_dir(&opts.state_dir)
            .map_err(|e| err_other(&format!("enter state dir {}", opts.state_dir.display()), e))?;
        let _ = fs::remove_file(EXIT_FILE_NAME);
        let (arg0, cgroups_path) = read_bundle(&opts.bundle)?;
        if let Some(parent) = opts.log_path.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| err_other(&format!("create log dir {}", parent.display()), e))?;
        }
        let log = JsonLogWriter::open(&opts.log_path, opts.log_max_size, opts.log_max_file)
            .map_err(|e| err_other(&format!("open log {}", opts.log_path.display()), e))?;

        let mut outputs = Vec::new();
        let mut stdin = None;
        let console = opts.state_dir.join(CONSOLE_SOCKET_NAME);
        let mut console_listener = None;
        let stdio = if opts.tty {
            let _ = fs::remove_file(&console);
            console_listener = Some(
                UnixListener::bind(CONSOLE_SOCKET_NAME)
                    .map_err(|e| err_other(&format!("bind {}", console.display()), e))?,
            );
            ContainerStdio {
                stdin: None,
                stdout: None,
                stderr: None,
                console_socket: Some(console.clone()),
            }
        } else {
            let (out_r, out_w) = pipe_pair()?;
            let (err_r, err_w) = pipe_pair()?;
            outputs.push(Output {
                file: File::from(out_r),
                stream: STREAM_STDOUT,
                log_stream: LogStream::Stdout,
            });
            outputs.push(Output {
                file: File::from(err_r),
                stream: STREAM_STDERR,
                log_stream: LogStream::Stderr,
            });
            let container_stdin = if opts.stdin {
                let (in_r, in_w) = pipe_pair()?;
                stdin = Some(File::from(in_w));
                in_r
            } else {
                OwnedFd::from(File::open("/dev/null").map_err(|e| err_other("open /dev/null", e))?)
            };
            ContainerStdio {
                stdin: Some(container_stdin),
                stdout: Some(out_w),
                stderr: Some(err_w),
                console_socket: None,
            }
        };

        // Before create: runc's container process is a grandchild and must be reparented
        // to this shim, not to init, when `runc create` exits.
        // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and touches no memory.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            return Err(err_other("set child subreaper", io::Error::last_os_error()));
        }
        raise_open_file_limit();
        // The container inherits signal dispositions across exec; it must not start with
        // SIGPIPE ignored (Rust ignores it in every binary).
        // SAFETY: single-threaded; restoring the default disposition installs no handler.
        unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }
            .map_err(|e| err_other("reset SIGPIPE", e))?;
        let created = Backend::create(
            &opts.id,
            &opts.bundle,
            &opts.state_dir,
            opts.runtime.as_deref(),
            stdio,
            &arg0,
        );
        // SAFETY: single-threaded; SIG_IGN installs no handler.
        unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) }
            .map_err(|e| err_other("ignore SIGPIPE", e))?;
        let (backend, pid) = created?;

        let mut pty = None;
        if let Some(l) = console_listener.take() {
            let master = receive_pty_master(&l)?;
            drop(l);
            let _ = fs::remove_file(&console);
            let reader = master
                .try_clone()
                .map_err(|e| err_other("dup pty master", e))?;
            set_nonblocking(&master)?;
            outputs.push(Output {
                file: reader,
                stream: STREAM_STDOUT,
                log_stream: LogStream::Stdout,
            });
            if opts.stdin {
                stdin = Some(
                    master
                        .try_clone()
                        .map_err(|e| err_other("dup pty master", e))?,
                );
            }
            pty = Some(master);
        }
        for o in &outputs {
            set_nonblocking(&o.file)?;
        }
        if let Some(s) = &stdin {
            set_nonblocking(s)?;
        }

        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.thread_block()
            .map_err(|e| err_other("block SIGCHLD", e))?;
        let signal_fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| err_other("create signalfd", e))?;

        let _ = fs::remove_file(SOCKET_NAME);
        let listener = UnixListener::bind(SOCKET_NAME).map_err(|e| {
            err_other(
                &format!("bind {}", opts.state_dir.join(SOCKET_NAME).display()),
                e,
            )
        })?;
        set_nonblocking(&listener)?;

        let mut shim = Shim {
            id: opts.id.clone(),
            arg0,
            bundle: opts.bundle.clone(),
            state_dir: opts.state_dir.clone(),
            cgroups_path,
            tty: opts.tty,
            backend,
            pid,
            started: false,
            reaped: None,
            drain_deadline: None,
            release_memory_at: Some(Instant::now() + MEMORY_RELEASE_DELAY),
            exit: None,
            listener,
            signal_fd,
            outputs,
            stdin: StdinFeed::new(stdin, opts.tty),
            pty,
            log,
            clients: Vec::new(),
            execs: Execs::default(),
            delete_requested: false,
        };
        // The process may already be gone (its SIGCHLD came before the signalfd existed).
        shim.reap();
        Ok(shim)
    }

    fn backpressured(&self) -> bool {
        self.clients
            .iter()
            .any(|c| matches!(c.mode, Mode::Attach { .. }) && c.outbuf.len() > CLIENT_BUFFER_LIMIT)
    }

    /// Serves until the container is deleted; returns the exit code of the shim.
    pub fn serve(&mut self) -> i32 {
        loop {
            let mut fds: Vec<libc::pollfd> = Vec::new();
            let pfd = |fd: RawFd, events: i16| libc::pollfd {
                fd,
                events,
                revents: 0,
            };
            fds.push(pfd(self.signal_fd.as_fd().as_raw_fd(), libc::POLLIN));
            fds.push(pfd(self.listener.as_raw_fd(), libc::POLLIN));
            let out_events = if self.backpressured() {
                0
            } else {
                libc::POLLIN
            };
            let out_base = fds.len();
            for o in &self.outputs {
                fds.push(pfd(o.file.as_raw_fd(), out_events));
            }
            let stdin_idx = fds.len();
            fds.extend(self.stdin.pollfd());
            let exec_base = fds.len();
            self.execs.poll_fds(&mut fds, &self.clients);
            let client_base = fds.len();
            let stdin_full = self.stdin.full();
            for c in &self.clients {
                let mut ev = 0;
                let stdin_blocked = match c.mode {
                    Mode::Attach { stdin: true, .. } => stdin_full,
                    Mode::Exec { key } => self.execs.stdin_full(key),
                    _ => false,
                };
                if !c.read_closed && !stdin_blocked {
                    ev |= libc::POLLIN;
                }
                if !c.outbuf.is_empty() {
                    ev |= libc::POLLOUT;
                }
                fds.push(pfd(c.sock.as_raw_fd(), ev));
            }
            let next_timer = [
                self.drain_deadline,
                self.release_memory_at,
                self.execs.next_deadline(),
            ]
            .into_iter()
            .flatten()
            .min();
            let timeout = next_timer.map_or(-1, |d| {
                // round up: waking a millisecond early would spin
                let ms = d
                    .saturating_duration_since(Instant::now())
                    .as_micros()
                    .div_ceil(1000);
                ms.min(i32::MAX as u128) as i32
            });
            // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd of the given length.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return 1;
                }
                continue;
            }
            if n == 0 && self.release_memory_at.is_some_and(|t| Instant::now() >= t) {
                self.release_memory_at = None;
                release_unused_memory();
            }

            // Clients accepted below have no pollfd in this round.
            let polled_clients = self.clients.len();
            if fds[0].revents != 0 {
                while let Ok(Some(_)) = self.signal_fd.read_signal() {}
                self.reap();
            }
            if fds[1].revents != 0 {
                self.accept_clients();
            }
            let ready: Vec<usize> = (0..self.outputs.len())
                .filter(|i| fds[out_base + i].revents != 0)
                .collect();
            let mut to_remove = Vec::new();
            for i in ready {
                if self.read_output(i) {
                    to_remove.push(i);
                }
            }
            for i in to_remove.into_iter().rev() {
                let o = self.outputs.remove(i);
                let _ = self.log.flush_partial(o.log_stream);
            }
            if stdin_idx < exec_base {
                self.stdin.handle(fds[stdin_idx].revents);
            }
            self.execs
                .handle_events(&fds[exec_base..client_base], &mut self.clients);
            for i in 0..polled_clients {
                let rev = fds[client_base + i].revents;
                if rev & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
                    && !self.clients[i].read_closed
                {
                    self.read_client(i);
                } else if rev & (libc::POLLHUP | libc::POLLERR) != 0 {
                    self.clients[i].dead = true;
                }
            }
            self.stdin.maybe_close();
            self.execs.maintain(&mut self.clients);
            if self.reaped.is_some() && self.exit.is_none() {
                let drained = self.outputs.is_empty();
                let overdue = self.drain_deadline.is_some_and(|d| Instant::now() >= d);
                if drained || overdue {
                    // The loop may have been busy past the deadline (exec starts): take
                    // what the pipes hold before giving up on them.
                    for i in 0..self.outputs.len() {
                        self.read_output(i);
                    }
                    self.finalize();
                }
            }
            if self.delete_requested
                && self.exit.is_some()
                && let Some(code) = self.delete()
            {
                return code;
            }
            for c in &mut self.clients {
                c.flush();
                if c.dead
                    && let Mode::Exec { key } = c.mode
                {
                    self.execs.client_closed(key);
                }
            }
            self.clients.retain(|c| !c.dead);
        }
    }

    fn accept_clients(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((sock, _)) => {
                    if set_nonblocking(&sock).is_err() {
                        continue;
                    }
                    self.clients.push(Client::new(sock));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Reads available output of `outputs[i]`; returns true at EOF.
    fn read_output(&mut self, i: usize) -> bool {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = match self.outputs[i].file.read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // EIO: the pty's slave side is closed for good.
                Err(_) => return true,
            };
            let (stream, log_stream) = (self.outputs[i].stream, self.outputs[i].log_stream);
            let data = &buf[..n];
            if let Err(e) = self.log.write(log_stream, data) {
                tracing::warn!(container = %self.id, "write log: {e}");
            }
            let header = encode_frame_header(stream, n);
            let tty = self.tty;
            for c in &mut self.clients {
                if let Mode::Attach { stdout, stderr, .. } = c.mode {
                    let wanted = if tty {
                        stdout || stderr
                    } else if stream == STREAM_STDOUT {
                        stdout
                    } else {
                        stderr
                    };
                    if wanted && !c.close_when_flushed {
                        c.outbuf.extend_from_slice(&header);
                        c.outbuf.extend_from_slice(data);
                    }
                }
            }
            if n < READ_CHUNK || self.backpressured() {
                return false;
            }
        }
    }

    /// An attached client's input ended: it half-closed, went away or detached. A pipe is
    /// closed so the process sees EOF; a terminal stays open, as with Docker (which closes
    /// stdin on a client's EOF only without a TTY): the client may have detached with the
    /// detach keys, and a later attach types into the same shell.
    fn attached_input_ended(&mut self) {
        if !self.tty {
            self.stdin.close_when_written();
        }
    }

    fn read_client(&mut self, i: usize) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.clients[i].sock.read(&mut buf) {
                Ok(0) => {
                    let c = &mut self.clients[i];
                    c.read_closed = true;
                    match c.mode {
                        Mode::Attach { stdin: true, .. } => self.attached_input_ended(),
                        Mode::Exec { key } => self.execs.client_closed(key),
                        Mode::Attach { .. }
                        | Mode::Waiting
                        | Mode::WaitingExec { .. }
                        | Mode::Deleting => {}
                        Mode::Control => c.close_when_flushed = true,
                    }
                    return;
                }
                Ok(n) => {
                    match self.clients[i].mode {
                        Mode::Attach { stdin: true, .. } => self.stdin.push(&buf[..n]),
                        Mode::Attach { .. } => {}
                        Mode::Exec { key } => self.execs.client_input(key, &buf[..n]),
                        _ => {
                            self.clients[i].inbuf.extend_from_slice(&buf[..n]);
                            self.process_requests(i);
                        }
                    }
                    if n < buf.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.clients[i].dead = true;
                    return;
                }
            }
        }
    }

    fn process_requests(&mut self, i: usize) {
        while self.clients[i].mode == Mode::Control {
            let Some(pos) = self.clients[i].inbuf.iter().position(|b| *b == b'\n') else {
                return;
            };
            let line: Vec<u8> = self.clients[i].inbuf.drain(..=pos).collect();
            let resp = match serde_json::from_slice::<Request>(&line) {
                Ok(req) => self.handle(i, req),
                Err(e) => Some(Response::Error {
                    kind: crate::ErrorKind::Other,
                    message: format!("{UNSUPPORTED_REQUEST}: {e}"),
                }),
            };
            if let Some(r) = resp {
                self.clients[i].send(&r);
            }
            match self.clients[i].mode {
                Mode::Attach { stdin, .. } => {
                    let rest = std::mem::take(&mut self.clients[i].inbuf);
                    if stdin && !rest.is_empty() {
                        self.stdin.push(&rest);
                    }
                    if self.exit.is_some() {
                        self.clients[i].close_when_flushed = true;
                    }
                }
                Mode::Exec { key } => {
                    let rest = std::mem::take(&mut self.clients[i].inbuf);
                    if !rest.is_empty() {
                        self.execs.client_input(key, &rest);
                    }
                }
                _ => {}
            }
        }
    }

    fn state(&self) -> ShimState {
        let status = if self.exit.is_some() {
            Status::Stopped
        } else if self.started {
            Status::Running
        } else {
            Status::Created
        };
        ShimState {
            pid: self.pid,
            status,
            exit: self.exit.clone(),
        }
    }

    fn handle(&mut self, i: usize, req: Request) -> Option<Response> {
        let error = |e: ShimError| Response::Error {
            kind: e.kind,
            message: e.message,
        };
        if !self.clients[i].greeted {
            return Some(match req {
                Request::Hello { .. } => {
                    self.clients[i].greeted = true;
                    Response::Hello {
                        version: PROTOCOL_VERSION,
                        shim_pid: std::process::id() as i32,
                    }
                }
                _ => {
                    self.clients[i].close_when_flushed = true;
                    error(ShimError::other(
                        "protocol error: first request must be Hello",
                    ))
                }
            });
        }
        let not_running =
            || ShimError::invalid_state(format!("container {} is not running", self.id));
        Some(match req {
            Request::Hello { .. } => Response::Hello {
                version: PROTOCOL_VERSION,
                shim_pid: std::process::id() as i32,
            },
            Request::Start => {
                if self.started || self.reaped.is_some() {
                    error(ShimError::invalid_state(format!(
                        "container {} is not in created state",
                        self.id
                    )))
                } else {
                    match self.backend.start(&self.arg0) {
                        Ok(()) => {
                            self.started = true;
                            self.schedule_memory_release();
                            Response::Ok
                        }
                        Err(e) => error(e),
                    }
                }
            }
            Request::State => Response::State(self.state()),
            Request::Kill { signal: sig } => {
                if self.reaped.is_some() {
                    error(not_running())
                } else {
                    match Signal::try_from(sig) {
                        Err(_) => error(ShimError::other(format!("invalid signal {sig}"))),
                        Ok(s) => match kill(Pid::from_raw(self.pid), s) {
                            Ok(()) => Response::Ok,
                            Err(nix::errno::Errno::ESRCH) => error(not_running()),
                            Err(e) => error(err_other(&format!("kill container {}", self.id), e)),
                        },
                    }
                }
            }
            Request::Wait => match &self.exit {
                Some(e) => Response::Exit(e.clone()),
                None => {
                    self.clients[i].mode = Mode::Waiting;
                    return None;
                }
            },
            Request::Resize { height, width } => match &self.pty {
                None => error(ShimError::invalid_state(format!(
                    "container {} has no terminal",
                    self.id
                ))),
                Some(pty) => match set_window_size(pty, height, width) {
                    Ok(()) => Response::Ok,
                    Err(e) => error(e),
                },
            },
            Request::CloseStdin => {
                self.stdin.close_when_written();
                Response::Ok
            }
            Request::Attach {
                stdin,
                stdout,
                stderr,
            } => {
                self.clients[i].mode = Mode::Attach {
                    stdin,
                    stdout,
                    stderr,
                };
                Response::Ok
            }
            Request::Exec { spec, detach } => {
                if !self.started || self.reaped.is_some() || self.delete_requested {
                    return Some(error(not_running()));
                }
                let started =
                    self.execs
                        .start(&self.backend, &self.bundle, &self.state_dir, &spec, detach);
                // Starting may have hidden a SIGCHLD from the signalfd (see runtime.rs).
                self.reap();
                self.schedule_memory_release();
                match started {
                    Ok(s) => {
                        if !detach {
                            self.clients[i].mode = Mode::Exec { key: s.key };
                        }
                        Response::ExecStarted { pid: s.pid }
                    }
                    Err(e) => error(e),
                }
            }
            Request::ExecState { exec_id } => match self.execs.state(&exec_id) {
                Ok(s) => Response::ExecState(s),
                Err(e) => error(e),
            },
            Request::WaitExec { exec_id } => match self.execs.wait(&exec_id) {
                Ok(ExecWait::Finished(state)) => Response::ExecState(state),
                Ok(ExecWait::Running { key }) => {
                    self.clients[i].mode = Mode::WaitingExec { key };
                    return None;
                }
                Err(e) => error(e),
            },
            Request::ResizeExec {
                exec_id,
                height,
                width,
            } => match self.execs.resize(&exec_id, height, width) {
                Ok(()) => Response::Ok,
                Err(e) => error(e),
            },
            Request::Delete => {
                self.delete_requested = true;
                self.clients[i].mode = Mode::Deleting;
                if self.reaped.is_none() {
                    let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
                }
                return None;
            }
        })
    }

    /// Reaps every exited child; records the status of the container's and the execs'
    /// processes.
    fn reap(&mut self) {
        loop {
            let (pid, code, signal) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), code, None),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    (pid.as_raw(), 128 + sig as i32, Some(sig as i32))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            if pid == self.pid {
                self.record_exit(code, signal);
            } else {
                self.execs.record_exit(pid, code);
            }
        }
    }

    fn record_exit(&mut self, code: i32, signal: Option<i32>) {
        if self.reaped.is_none() {
            self.reaped = Some((code, signal, format_time(chrono::Utc::now())));
            self.drain_deadline = Some(Instant::now() + DRAIN_TIMEOUT);
        }
    }

    /// Called once the process was reaped and its output drained (or the drain timed out).
    fn finalize(&mut self) {
        let Some((code, signal, finished_at)) = self.reaped.clone() else {
            return;
        };
        for o in std::mem::take(&mut self.outputs) {
            let _ = self.log.flush_partial(o.log_stream);
        }
        self.drain_deadline = None;
        self.stdin.close();
        // The kernel kills the rest of the pid namespace; make sure of it for the execs.
        self.execs.kill_all();
        let oom_killed = cgroups::oom_kill_count(&self.cgroups_path).is_some_and(|n| n > 0);
        let exit = ExitStatus {
            code,
            signal,
            oom_killed,
            finished_at,
        };
        if let Err(e) = write_exit_file(&self.state_dir, &exit) {
            tracing::warn!(container = %self.id, "write exit file: {e}");
        }
        for c in &mut self.clients {
            match c.mode {
                Mode::Waiting => {
                    c.send(&Response::Exit(exit.clone()));
                    c.mode = Mode::Control;
                }
                Mode::Attach { .. } => c.close_when_flushed = true,
                _ => {}
            }
        }
        self.exit = Some(exit);
        self.schedule_memory_release();
    }

    /// Memory is given back once the shim has been idle for a moment, off the hot paths.
    fn schedule_memory_release(&mut self) {
        self.release_memory_at = Some(Instant::now() + MEMORY_RELEASE_DELAY);
    }

    /// Deletes the container; returns the shim's exit code when it should stop.
    fn delete(&mut self) -> Option<i32> {
        self.delete_requested = false;
        self.execs.finish_all(&mut self.clients);
        let mut result = self.backend.delete();
        if let Err(e) = cgroups::remove_cgroup(&self.cgroups_path)
            && result.is_ok()
            && !self.cgroups_path.trim_matches('/').is_empty()
        {
            result = Err(ShimError::other(e.to_string()));
        }
        let resp = match &result {
            Ok(()) => Response::Ok,
            Err(e) => Response::Error {
                kind: e.kind,
                message: e.message.clone(),
            },
        };
        for c in &mut self.clients {
            if c.mode == Mode::Deleting {
                c.send(&resp);
                c.mode = Mode::Control;
            }
        }
        if result.is_err() {
            return None;
        }
        let _ = fs::remove_file(SOCKET_NAME);
        for c in &mut self.clients {
            c.close_when_flushed = true;
            let _ = c.sock.set_nonblocking(false);
            let _ = c.sock.set_write_timeout(Some(Duration::from_secs(1)));
            c.flush();
        }
        Some(0)
    }
}
