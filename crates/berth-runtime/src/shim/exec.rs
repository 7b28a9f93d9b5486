//! `exec`: extra processes started inside the running container, like `docker exec`.
//!
//! The runtime (libcontainer's tenant builder, or `runc exec --detach`) joins the process to
//! the container's namespaces and cgroup and returns once it runs. The process is then a
//! child of the shim (libcontainer clones it as a sibling of its helper; runc's exits and
//! the process is reparented to the shim, a child subreaper), so the shim reaps it and
//! records its exit code. It shares the container's pid namespace and dies with it.
//!
//! An attached exec's output goes, framed, to the one connection that started it, and that
//! connection's bytes are its stdin. Once the process has exited and its output is drained,
//! a [`STREAM_EXIT`] frame carries the exit code and the connection closes.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Instant;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use super::io::{
    CLIENT_BUFFER_LIMIT, Client, DRAIN_TIMEOUT, Mode, READ_CHUNK, StdinFeed, err_other, pipe_pair,
    receive_pty_master, set_nonblocking, set_window_size,
};
use super::runtime::{Backend, ContainerStdio, ShimError};
use crate::protocol::{
    ExecSpec, ExecState, Response, STREAM_EXIT, STREAM_STDERR, STREAM_STDOUT, encode_frame_header,
};
use crate::spec::{CapabilityConfig, capability_set, own_bounding_set};

/// Finished execs remembered for `ExecState`; the oldest are forgotten first.
const FINISHED_EXECS_KEPT: usize = 256;
/// Exit code of an exec that was still running when the shim had to stop (SIGKILL).
const KILLED_EXIT_CODE: i32 = 128 + libc::SIGKILL;

/// One output of an exec: a pipe or the pty master.
struct ExecOutput {
    file: File,
    stream: u8,
}

/// A started exec whose end has not been reported yet.
struct Exec {
    id: String,
    /// Links the exec to its client connection ([`Mode::Exec`]).
    key: u64,
    pid: i32,
    outputs: Vec<ExecOutput>,
    stdin: StdinFeed,
    pty: Option<File>,
    /// Exit code once reaped.
    exit_code: Option<i32>,
    drain_deadline: Option<Instant>,
}

struct FinishedExec {
    id: String,
    pid: i32,
    exit_code: i32,
}

/// What `Execs::wait` finds.
pub(super) enum ExecWait {
    /// The exec has finished.
    Finished(ExecState),
    /// It runs; its end is reported to the clients in [`Mode::WaitingExec`] with this key.
    Running { key: u64 },
}

/// What `Execs::start` reports.
pub(super) struct Started {
    /// Key for [`Mode::Exec`] of the starting connection.
    pub key: u64,
    /// Host pid of the process.
    pub pid: i32,
}

/// The shim's execs: running ones and the recently finished.
#[derive(Default)]
pub(super) struct Execs {
    running: Vec<Exec>,
    finished: VecDeque<FinishedExec>,
    next_key: u64,
}

/// Docker's env merge (`ReplaceOrAppendEnvValues`): an override replaces the variable of the
/// same name in place or is appended; an override without `=` removes the variable.
pub(super) fn merge_env(base: &[String], overrides: &[String]) -> Vec<String> {
    let mut env: Vec<Option<String>> = base.iter().cloned().map(Some).collect();
    let name = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_string();
    for o in overrides {
        let key = name(o);
        let existing = env
            .iter()
            .position(|e| e.as_deref().is_some_and(|e| name(e) == key));
        match (existing, o.contains('=')) {
            (Some(i), true) => env[i] = Some(o.clone()),
            (Some(i), false) => env[i] = None,
            (None, true) => env.push(Some(o.clone())),
            (None, false) => {}
        }
    }
    env.into_iter().flatten().collect()
}

/// The OCI process of an exec: like docker, the container's process (rlimits, no_new_privs,
/// capabilities, ...) with the exec's command, environment, working directory, user and
/// terminal. A privileged exec gets every capability the shim itself may hold.
pub(super) fn exec_process(
    container: &Value,
    spec: &ExecSpec,
    bounding_set: u64,
) -> Result<Value, ShimError> {
    let mut process = match container {
        Value::Object(_) => container.clone(),
        _ => json!({}),
    };
    let base_env: Vec<String> = process["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    process["args"] = json!(spec.args);
    process["env"] = json!(merge_env(&base_env, &spec.env));
    if !spec.cwd.is_empty() {
        process["cwd"] = json!(spec.cwd);
    } else if !process["cwd"].is_string() {
        process["cwd"] = json!("/");
    }
    process["terminal"] = json!(spec.tty);
    let mut user = json!({"uid": spec.user.uid, "gid": spec.user.gid});
    if !spec.user.additional_gids.is_empty() {
        user["additionalGids"] = json!(spec.user.additional_gids);
    }
    process["user"] = user;
    if spec.privileged {
        let all = CapabilityConfig {
            privileged: true,
            ..Default::default()
        };
        let caps = capability_set(&all, bounding_set)
            .map_err(|e| ShimError::other(format!("exec {}: {e}", spec.exec_id)))?;
        process["capabilities"] = json!({"bounding": caps, "effective": caps, "permitted": caps});
    }
    if let Some(p) = process.as_object_mut() {
        p.remove("consoleSize");
    }
    Ok(process)
}

/// The container's process object from the bundle's config.json.
fn container_process(bundle: &Path) -> Result<Value, ShimError> {
    let path = bundle.join("config.json");
    let data = fs::read(&path).map_err(|e| err_other(&format!("read {}", path.display()), e))?;
    let mut config: Value = serde_json::from_slice(&data)
        .map_err(|e| err_other(&format!("decode {}", path.display()), e))?;
    Ok(config["process"].take())
}

fn open_null(write: bool) -> Result<OwnedFd, ShimError> {
    OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|e| err_other("open /dev/null", e))
}

impl Execs {
    fn known(&self, id: &str) -> bool {
        self.running.iter().any(|e| e.id == id) || self.finished.iter().any(|e| e.id == id)
    }

    /// Starts `spec` in the container. A detached exec's output is discarded.
    pub fn start(
        &mut self,
        backend: &Backend,
        bundle: &Path,
        state_dir: &Path,
        spec: &ExecSpec,
        detach: bool,
    ) -> Result<Started, ShimError> {
        if spec.args.is_empty() {
            return Err(ShimError::other(format!(
                "exec {}: no exec command specified",
                spec.exec_id
            )));
        }
        if self.known(&spec.exec_id) {
            return Err(ShimError::invalid_state(format!(
                "exec {} already exists",
                spec.exec_id
            )));
        }
        let mut process = exec_process(&container_process(bundle)?, spec, own_bounding_set())?;
        backend.prepare_exec_process(&mut process);
        let key = self.next_key;
        self.next_key += 1;
        let scratch = state_dir.join(format!("exec-{key}"));
        let process_path = scratch.with_extension("json");
        let data = serde_json::to_vec(&process).map_err(|e| err_other("encode exec process", e))?;
        fs::write(&process_path, data)
            .map_err(|e| err_other(&format!("write {}", process_path.display()), e))?;
        let started = self.spawn(backend, &process_path, &scratch, spec, detach, key);
        let _ = fs::remove_file(&process_path);
        let exec = started?;
        let pid = exec.pid;
        self.running.push(exec);
        Ok(Started { key, pid })
    }

    fn spawn(
        &self,
        backend: &Backend,
        process: &Path,
        scratch: &Path,
        spec: &ExecSpec,
        detach: bool,
        key: u64,
    ) -> Result<Exec, ShimError> {
        let arg0 = &spec.args[0];
        let mut exec = Exec {
            id: spec.exec_id.clone(),
            key,
            pid: 0,
            outputs: Vec::new(),
            stdin: StdinFeed::new(None, spec.tty),
            pty: None,
            exit_code: None,
            drain_deadline: None,
        };
        if spec.tty {
            let socket = scratch.with_extension("sock");
            let _ = fs::remove_file(&socket);
            // Bound relative to the shim's working directory (the state dir): short path.
            let name = socket.file_name().unwrap_or_default();
            let listener = UnixListener::bind(name)
                .map_err(|e| err_other(&format!("bind {}", socket.display()), e))?;
            let stdio = ContainerStdio {
                stdin: None,
                stdout: None,
                stderr: None,
                console_socket: Some(socket.clone()),
            };
            let started = backend.exec(process, stdio, scratch, arg0);
            let received = started.and_then(|pid| {
                receive_pty_master(&listener)
                    .inspect_err(|_| {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    })
                    .map(|master| (pid, master))
            });
            drop(listener);
            let _ = fs::remove_file(&socket);
            let (pid, master) = received?;
            exec.pid = pid;
            set_nonblocking(&master)?;
            let dup = || {
                master
                    .try_clone()
                    .map_err(|e| err_other("dup pty master", e))
            };
            exec.outputs.push(ExecOutput {
                file: dup()?,
                stream: STREAM_STDOUT,
            });
            if spec.stdin && !detach {
                exec.stdin = StdinFeed::new(Some(dup()?), true);
            }
            exec.pty = Some(master);
        } else if detach {
            let stdio = ContainerStdio {
                stdin: Some(open_null(false)?),
                stdout: Some(open_null(true)?),
                stderr: Some(open_null(true)?),
                console_socket: None,
            };
            exec.pid = backend.exec(process, stdio, scratch, arg0)?;
        } else {
            let (out_r, out_w) = pipe_pair()?;
            let (err_r, err_w) = pipe_pair()?;
            let (process_stdin, stdin_writer) = if spec.stdin {
                let (r, w) = pipe_pair()?;
                (r, Some(File::from(w)))
            } else {
                (open_null(false)?, None)
            };
            let stdio = ContainerStdio {
                stdin: Some(process_stdin),
                stdout: Some(out_w),
                stderr: Some(err_w),
                console_socket: None,
            };
            exec.pid = backend.exec(process, stdio, scratch, arg0)?;
            for (fd, stream) in [(out_r, STREAM_STDOUT), (err_r, STREAM_STDERR)] {
                set_nonblocking(&fd)?;
                exec.outputs.push(ExecOutput {
                    file: File::from(fd),
                    stream,
                });
            }
            if let Some(w) = &stdin_writer {
                set_nonblocking(w)?;
            }
            exec.stdin = StdinFeed::new(stdin_writer, false);
        }
        Ok(exec)
    }

    /// The state of exec `id`.
    pub fn state(&self, id: &str) -> Result<ExecState, ShimError> {
        if let Some(e) = self.running.iter().find(|e| e.id == id) {
            return Ok(ExecState {
                pid: e.pid,
                running: true,
                exit_code: None,
            });
        }
        self.finished
            .iter()
            .find(|e| e.id == id)
            .map(|e| ExecState {
                pid: e.pid,
                running: false,
                exit_code: Some(e.exit_code),
            })
            .ok_or_else(|| ShimError::other(format!("no such exec: {id}")))
    }

    /// Exec `id`'s state if it has finished, or the key its end will be reported under.
    pub fn wait(&self, id: &str) -> Result<ExecWait, ShimError> {
        match self.running.iter().find(|e| e.id == id) {
            Some(e) => Ok(ExecWait::Running { key: e.key }),
            None => self.state(id).map(ExecWait::Finished),
        }
    }

    /// Resizes exec `id`'s terminal.
    pub fn resize(&self, id: &str, height: u16, width: u16) -> Result<(), ShimError> {
        match self.running.iter().find(|e| e.id == id) {
            Some(Exec { pty: Some(pty), .. }) => set_window_size(pty, height, width),
            Some(_) => Err(ShimError::invalid_state(format!(
                "exec {id} has no terminal"
            ))),
            None if self.known(id) => Err(ShimError::invalid_state(format!(
                "exec {id} is not running"
            ))),
            None => Err(ShimError::other(format!("no such exec: {id}"))),
        }
    }

    /// Records the exit of `pid` if it is an exec's process; returns whether it was.
    pub fn record_exit(&mut self, pid: i32, code: i32) -> bool {
        match self
            .running
            .iter_mut()
            .find(|e| e.pid == pid && e.exit_code.is_none())
        {
            Some(e) => {
                e.exit_code = Some(code);
                e.drain_deadline = Some(Instant::now() + DRAIN_TIMEOUT);
                true
            }
            None => false,
        }
    }

    /// Kills every exec process not reaped yet (the container is gone).
    pub fn kill_all(&self) {
        for e in self.running.iter().filter(|e| e.exit_code.is_none()) {
            // Not reaped yet, so the pid still names this process (or its zombie).
            let _ = kill(Pid::from_raw(e.pid), Signal::SIGKILL);
        }
    }

    /// The earliest drain deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.running.iter().filter_map(|e| e.drain_deadline).min()
    }

    /// Stdin of exec `key` has as much queued as it may.
    pub fn stdin_full(&self, key: u64) -> bool {
        self.running.iter().any(|e| e.key == key && e.stdin.full())
    }

    /// Adds the pollfds of every running exec: outputs, then stdin.
    pub fn poll_fds(&self, fds: &mut Vec<libc::pollfd>, clients: &[Client]) {
        for e in &self.running {
            let backlogged = clients.iter().any(|c| {
                c.mode == Mode::Exec { key: e.key } && c.outbuf.len() > CLIENT_BUFFER_LIMIT
            });
            let events = if backlogged { 0 } else { libc::POLLIN };
            for o in &e.outputs {
                fds.push(libc::pollfd {
                    fd: o.file.as_raw_fd(),
                    events,
                    revents: 0,
                });
            }
            fds.extend(e.stdin.pollfd());
        }
    }

    /// Handles the events of the pollfds added by [`Execs::poll_fds`] (same execs, same
    /// order: nothing is added or removed in between).
    pub fn handle_events(&mut self, fds: &[libc::pollfd], clients: &mut [Client]) {
        let mut revents = fds.iter().map(|p| p.revents);
        for e in &mut self.running {
            let mut client = clients
                .iter_mut()
                .find(|c| c.mode == Mode::Exec { key: e.key });
            let mut eof = Vec::new();
            for o in 0..e.outputs.len() {
                if revents.next().unwrap_or(0) != 0 && e.read_output(o, client.as_deref_mut()) {
                    eof.push(o);
                }
            }
            for o in eof.into_iter().rev() {
                e.outputs.remove(o);
            }
            if e.stdin.pollfd().is_some() {
                e.stdin.handle(revents.next().unwrap_or(0));
            }
        }
    }

    /// Bytes from exec `key`'s client: its stdin.
    pub fn client_input(&mut self, key: u64, data: &[u8]) {
        if let Some(e) = self.running.iter_mut().find(|e| e.key == key) {
            e.stdin.push(data);
        }
    }

    /// Exec `key`'s client half-closed or went away: EOF to the process's stdin.
    pub fn client_closed(&mut self, key: u64) {
        if let Some(e) = self.running.iter_mut().find(|e| e.key == key) {
            e.stdin.close_when_written();
        }
    }

    /// Closes stdins whose close is due and reports execs that exited and are drained (or
    /// whose drain timed out).
    pub fn maintain(&mut self, clients: &mut [Client]) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.running.len() {
            let e = &mut self.running[i];
            e.stdin.maybe_close();
            let overdue = e.drain_deadline.is_some_and(|d| now >= d);
            match e.exit_code {
                Some(code) if e.outputs.is_empty() || overdue => {
                    // A burst of starts can block the loop past the deadline: take what
                    // the pipes hold before giving up on them.
                    let mut client = clients
                        .iter_mut()
                        .find(|c| c.mode == Mode::Exec { key: e.key });
                    for o in 0..e.outputs.len() {
                        e.read_output(o, client.as_deref_mut());
                    }
                    let e = self.running.remove(i);
                    self.finish(e, code, clients);
                }
                _ => i += 1,
            }
        }
    }

    /// Reports every exec as finished; those not reaped count as killed. For shutdown.
    pub fn finish_all(&mut self, clients: &mut [Client]) {
        for e in std::mem::take(&mut self.running) {
            let code = e.exit_code.unwrap_or(KILLED_EXIT_CODE);
            self.finish(e, code, clients);
        }
    }

    fn finish(&mut self, e: Exec, code: i32, clients: &mut [Client]) {
        if let Some(c) = clients
            .iter_mut()
            .find(|c| c.mode == Mode::Exec { key: e.key })
            && !c.close_when_flushed
        {
            c.outbuf
                .extend_from_slice(&encode_frame_header(STREAM_EXIT, 4));
            c.outbuf.extend_from_slice(&code.to_be_bytes());
            c.close_when_flushed = true;
        }
        for c in clients
            .iter_mut()
            .filter(|c| c.mode == Mode::WaitingExec { key: e.key })
        {
            c.send(&Response::ExecState(ExecState {
                pid: e.pid,
                running: false,
                exit_code: Some(code),
            }));
            c.mode = Mode::Control;
        }
        if self.finished.len() >= FINISHED_EXECS_KEPT {
            self.finished.pop_front();
        }
        self.finished.push_back(FinishedExec {
            id: e.id,
            pid: e.pid,
            exit_code: code,
        });
    }
}

impl Exec {
    /// Reads available output of `outputs[o]` into the client's buffer (or discards it
    /// without a client); returns true at EOF.
    fn read_output(&mut self, o: usize, mut client: Option<&mut Client>) -> bool {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = match self.outputs[o].file.read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // EIO: the pty's slave side is closed for good.
                Err(_) => return true,
            };
            if let Some(c) = client.as_deref_mut() {
                if !c.close_when_flushed {
                    let header = encode_frame_header(self.outputs[o].stream, n);
                    c.outbuf.extend_from_slice(&header);
                    c.outbuf.extend_from_slice(&buf[..n]);
                }
                if c.outbuf.len() > CLIENT_BUFFER_LIMIT {
                    return false;
                }
            }
            if n < READ_CHUNK {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ProcessUser;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn env_overrides_replace_in_place_append_and_unset() {
        let base = strings(&["PATH=/bin", "A=1", "B=2", "C=3"]);
        let merged = merge_env(&base, &strings(&["B=two", "D=4", "C", "NOPE", "A=x=y"]));
        assert_eq!(merged, strings(&["PATH=/bin", "A=x=y", "B=two", "D=4"]));
        assert_eq!(merge_env(&[], &strings(&["X="])), strings(&["X="]));
    }

    fn spec() -> ExecSpec {
        ExecSpec {
            exec_id: "e1".into(),
            args: strings(&["sh", "-c", "id"]),
            env: strings(&["HOME=/tmp"]),
            cwd: String::new(),
            user: ProcessUser {
                uid: 1000,
                gid: 100,
                additional_gids: vec![],
            },
            tty: true,
            stdin: false,
            privileged: false,
        }
    }

    #[test]
    fn exec_process_starts_from_the_container_process() {
        let container = json!({
            "terminal": false,
            "user": {"uid": 0, "gid": 0, "additionalGids": [10]},
            "args": ["sleep", "100"],
            "env": ["PATH=/bin", "HOME=/root"],
            "cwd": "/srv",
            "capabilities": {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 100, "soft": 100}],
            "noNewPrivileges": true,
            "consoleSize": {"height": 1, "width": 1},
        });
        let p = exec_process(&container, &spec(), u64::MAX).unwrap();
        assert_eq!(p["args"], json!(["sh", "-c", "id"]));
        assert_eq!(p["env"], json!(["PATH=/bin", "HOME=/tmp"]));
        assert_eq!(p["cwd"], "/srv");
        assert_eq!(p["terminal"], true);
        assert_eq!(p["user"], json!({"uid": 1000, "gid": 100}));
        assert_eq!(p["capabilities"]["bounding"], json!(["CAP_CHOWN"]));
        assert_eq!(p["rlimits"][0]["hard"], 100);
        assert_eq!(p["noNewPrivileges"], true);
        assert!(p.get("consoleSize").is_none());

        let mut s = spec();
        s.cwd = "/tmp".into();
        s.privileged = true;
        s.user.additional_gids = vec![5];
        // bits 0 (CAP_CHOWN) and 21 (CAP_SYS_ADMIN) only
        let p = exec_process(&container, &s, (1 << 0) | (1 << 21)).unwrap();
        assert_eq!(p["cwd"], "/tmp");
        assert_eq!(p["user"]["additionalGids"], json!([5]));
        let caps = json!(["CAP_CHOWN", "CAP_SYS_ADMIN"]);
        assert_eq!(p["capabilities"]["effective"], caps);
        assert_eq!(p["capabilities"]["bounding"], caps);
    }

    #[test]
    fn finished_execs_are_bounded_oldest_first() {
        let mut execs = Execs::default();
        for i in 0..300 {
            let exec = Exec {
                id: format!("e{i}"),
                key: i,
                pid: 1000 + i as i32,
                outputs: Vec::new(),
                stdin: StdinFeed::new(None, false),
                pty: None,
                exit_code: None,
                drain_deadline: None,
            };
            execs.running.push(exec);
            assert!(execs.record_exit(1000 + i as i32, (i % 256) as i32));
            execs.maintain(&mut []);
        }
        assert!(execs.running.is_empty());
        assert_eq!(execs.finished.len(), FINISHED_EXECS_KEPT);
        assert!(execs.state("e43").is_err());
        let s = execs.state("e299").unwrap();
        assert_eq!((s.pid, s.running, s.exit_code), (1299, false, Some(43)));
        assert!(
            !execs.record_exit(1299, 0),
            "a finished exec's pid is not matched again"
        );
    }

    #[test]
    fn waiting_clients_get_the_end_of_their_exec() {
        let mut execs = Execs::default();
        execs.running.push(Exec {
            id: "w".into(),
            key: 7,
            pid: 4242,
            outputs: Vec::new(),
            stdin: StdinFeed::new(None, false),
            pty: None,
            exit_code: None,
            drain_deadline: None,
        });
        let (sock, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut clients = vec![Client::new(sock)];
        match execs.wait("w").unwrap() {
            ExecWait::Running { key } => clients[0].mode = Mode::WaitingExec { key },
            ExecWait::Finished(s) => panic!("exec w finished early: {s:?}"),
        }
        assert!(execs.record_exit(4242, 3));
        execs.maintain(&mut clients);
        assert_eq!(clients[0].mode, Mode::Control);
        let line = clients[0]
            .outbuf
            .strip_suffix(b"\n")
            .expect("one response line");
        let expected = ExecState {
            pid: 4242,
            running: false,
            exit_code: Some(3),
        };
        assert_eq!(
            serde_json::from_slice::<Response>(line).unwrap(),
            Response::ExecState(expected.clone())
        );
        match execs.wait("w").unwrap() {
            ExecWait::Finished(s) => assert_eq!(s, expected),
            ExecWait::Running { .. } => panic!("exec w still running"),
        }
        assert!(execs.wait("nope").is_err());
    }

    #[test]
    fn exec_process_without_container_process_defaults_cwd() {
        let p = exec_process(&Value::Null, &spec(), u64::MAX).unwrap();
        assert_eq!(p["cwd"], "/");
        assert_eq!(p["env"], json!(["HOME=/tmp"]));
    }
}
