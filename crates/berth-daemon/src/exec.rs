//! The exec service: extra processes inside running containers (`docker exec`).
//!
//! An exec is created (validated, recorded) and later started, attached or detached; its exit
//! code is recorded before its stream closes, because the docker CLI inspects the exec right
//! after the stream ends to learn the code.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_api::models::{ExecConfig, ExecInspectResponse, ProcessConfig};
use berth_runtime::client::ExecStream;
use berth_runtime::protocol::ExecSpec;

use crate::containers::user;
use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

/// How many exec records are kept; the oldest finished ones go first.
const EXEC_HISTORY: usize = 1024;
/// How long a finished exec stays inspectable. moby forgets finished execs on the second
/// tick of a five-minute collector, so after five to ten minutes.
const FINISHED_EXEC_TTL: Duration = Duration::from_secs(5 * 60);

/// Where an exec is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecStatus {
    /// Created, not started.
    Created,
    /// Its process runs.
    Running,
    /// Its process ended with this code.
    Exited(i64),
}

/// One exec instance.
#[derive(Debug)]
pub struct ExecInstance {
    /// The exec's ID.
    pub id: String,
    /// The container it runs in.
    pub container_id: String,
    /// What the client asked for.
    pub config: ExecConfig,
    state: Mutex<ExecProgress>,
}

/// The changing part of an exec.
#[derive(Debug, Clone, Copy)]
struct ExecProgress {
    status: ExecStatus,
    pid: i64,
    /// When it became `Exited`.
    finished: Option<Instant>,
}

impl ExecInstance {
    fn progress(&self) -> std::sync::MutexGuard<'_, ExecProgress> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, status: ExecStatus, pid: i64) {
        let finished = matches!(status, ExecStatus::Exited(_)).then(Instant::now);
        *self.progress() = ExecProgress {
            status,
            pid,
            finished,
        };
    }

    /// Moves Created → Running; false if another start got there first.
    fn begin(&self) -> bool {
        let mut state = self.progress();
        if state.status != ExecStatus::Created {
            return false;
        }
        state.status = ExecStatus::Running;
        true
    }

    fn get(&self) -> (ExecStatus, i64) {
        let state = self.progress();
        (state.status, state.pid)
    }

    /// Finished, and for longer than `ttl` at `now`.
    fn expired(&self, now: Instant, ttl: Duration) -> bool {
        self.progress()
            .finished
            .is_some_and(|at| now.saturating_duration_since(at) >= ttl)
    }

    fn finished(&self) -> bool {
        matches!(self.progress().status, ExecStatus::Exited(_))
    }

    /// Whether the client asked for a terminal.
    pub fn tty(&self) -> bool {
        self.config.tty.unwrap_or(false)
    }

    /// The key sequence that detaches a client from this exec's stream: moby watches for
    /// one only on a terminal with stdin attached (the exec's `DetachKeys`, checked at
    /// create, or ctrl-p,ctrl-q).
    pub fn detach_keys(&self) -> Option<Vec<u8>> {
        if !self.tty() || !self.config.attach_stdin.unwrap_or(false) {
            return None;
        }
        detach_sequence(self.config.detach_keys.as_deref()).ok()
    }
}

/// The detach sequence when a client names none: ctrl-p, ctrl-q.
const DEFAULT_DETACH_KEYS: [u8; 2] = [0x10, 0x11];

/// Parses a detach key list the way docker does (`term.ToBytes`): comma-separated keys,
/// each a single character, `ctrl-<a-z @ [ \ ] ^ _>` or `DEL`.
fn parse_detach_keys(spec: &str) -> Option<Vec<u8>> {
    spec.split(',')
        .map(|key| {
            if key.len() == 1 {
                return Some(key.as_bytes()[0]);
            }
            if key == "DEL" {
                return Some(0x7f);
            }
            match key.strip_prefix("ctrl-")?.as_bytes() {
                [c @ b'a'..=b'z'] => Some(c - b'a' + 1),
                [b'@'] => Some(0),
                [c @ (b'[' | b'\\' | b']' | b'^' | b'_')] => Some(c - b'@'),
                _ => None,
            }
        })
        .collect()
}

/// The detach sequence a client asked for (`detachKeys` of an attach, `DetachKeys` of an
/// exec); none or an empty one means the default, ctrl-p,ctrl-q.
pub fn detach_sequence(spec: Option<&str>) -> Result<Vec<u8>, String> {
    match spec.filter(|s| !s.is_empty()) {
        None => Ok(DEFAULT_DETACH_KEYS.to_vec()),
        Some(spec) => parse_detach_keys(spec).ok_or_else(|| spec.to_string()),
    }
}

/// Exec instances by ID, and their IDs oldest first.
type ExecIndex = (HashMap<String, Arc<ExecInstance>>, VecDeque<String>);

/// Exec instances by ID, bounded: running execs stay, finished ones are forgotten after
/// [`FINISHED_EXEC_TTL`] (or sooner, oldest first, beyond [`EXEC_HISTORY`] records), and
/// execs never started go once their container stopped, as moby drops them at its exit.
#[derive(Debug, Default)]
pub struct ExecTable {
    inner: Mutex<ExecIndex>,
}

impl ExecTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, ExecIndex> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// (exec id, container id) of the execs never started.
    fn unstarted(&self) -> Vec<(String, String)> {
        self.lock()
            .0
            .values()
            .filter(|e| e.get().0 == ExecStatus::Created)
            .map(|e| (e.id.clone(), e.container_id.clone()))
            .collect()
    }

    /// Records `exec`, first forgetting the execs in `abandoned` (never started, their
    /// container gone or stopped), the finished ones older than `ttl`, and then the oldest
    /// finished ones while there are `EXEC_HISTORY` records or more.
    fn insert(&self, exec: Arc<ExecInstance>, abandoned: &HashSet<String>, ttl: Duration) {
        let now = Instant::now();
        let mut inner = self.lock();
        let (map, order) = &mut *inner;
        order.retain(|id| {
            let keep = map.get(id).is_some_and(|e| {
                let given_up = abandoned.contains(id) && e.get().0 == ExecStatus::Created;
                !given_up && !e.expired(now, ttl)
            });
            if !keep {
                map.remove(id);
            }
            keep
        });
        while order.len() >= EXEC_HISTORY {
            let Some(oldest) = order
                .iter()
                .position(|id| map.get(id).is_none_or(|e| e.finished()))
            else {
                break;
            };
            if let Some(id) = order.remove(oldest) {
                map.remove(&id);
            }
        }
        order.push_back(exec.id.clone());
        map.insert(exec.id.clone(), exec);
    }

    /// Finds an exec by ID.
    pub fn get(&self, id: &str) -> ServiceResult<Arc<ExecInstance>> {
        self.lock()
            .0
            .get(id)
            .cloned()
            .ok_or_else(|| ServiceError::not_found(format!("No such exec instance: {id}")))
    }

    /// IDs of the unfinished execs of a container, for inspect's `ExecIDs` (moby drops an
    /// exec from its container's list when it exits; healthcheck probes would pile up).
    pub fn of_container(&self, container_id: &str) -> Vec<String> {
        let inner = self.lock();
        inner
            .1
            .iter()
            .filter(|id| {
                inner.0.get(*id).is_some_and(|e| {
                    e.container_id == container_id && !matches!(e.get().0, ExecStatus::Exited(_))
                })
            })
            .cloned()
            .collect()
    }
}

/// A frozen container cannot run a new process (it would hang): Docker's refusal, naming
/// the container as the client did.
fn refuse_paused(container: &crate::containers::Container, reference: &str) -> ServiceResult<()> {
    if container.record().state.status == crate::containers::Status::Paused {
        return Err(ServiceError::conflict(format!(
            "Container {reference} is paused, unpause the container before exec"
        )));
    }
    Ok(())
}

/// How an exec is started.
#[derive(Debug)]
pub enum ExecStart {
    /// The process runs with its output discarded.
    Detached,
    /// The process's stdio is streamed to the caller.
    Attached(ExecStream),
}

impl Daemon {
    /// `POST /containers/{id}/exec`: validates and records an exec.
    pub fn create_exec(&self, reference: &str, config: ExecConfig) -> ServiceResult<String> {
        let container = self.containers.get(reference)?;
        if !container.record().state.status.is_active() {
            return Err(ServiceError::conflict(format!(
                "container {} is not running",
                container.id
            )));
        }
        refuse_paused(&container, reference)?;
        if config.cmd.as_ref().is_none_or(Vec::is_empty) {
            return Err(ServiceError::invalid("No exec command specified"));
        }
        detach_sequence(config.detach_keys.as_deref()).map_err(|keys| {
            ServiceError::invalid(format!("Invalid escape keys ({keys}) provided"))
        })?;
        let id = crate::containers::random_id();
        let exec = Arc::new(ExecInstance {
            id: id.clone(),
            container_id: container.id.clone(),
            config,
            state: Mutex::new(ExecProgress {
                status: ExecStatus::Created,
                pid: 0,
                finished: None,
            }),
        });
        // Looked up before the table is locked: listing a container locks its record and
        // then the table.
        let abandoned: HashSet<String> = self
            .execs
            .unstarted()
            .into_iter()
            .filter(|(_, container_id)| {
                !self
                    .containers
                    .get(container_id)
                    .is_ok_and(|c| c.record().state.status.is_active())
            })
            .map(|(exec_id, _)| exec_id)
            .collect();
        self.execs
            .insert(exec.clone(), &abandoned, FINISHED_EXEC_TTL);
        let command = exec.config.cmd.clone().unwrap_or_default().join(" ");
        let attrs = HashMap::from([("execID".to_string(), id.clone())]);
        self.container_event(&container, &format!("exec_create: {command}"), attrs);
        Ok(id)
    }

    /// Checks that an exec exists, was not started, and its container runs: the errors a
    /// client must get as plain responses before its connection is hijacked.
    pub fn check_exec_startable(&self, exec_id: &str) -> ServiceResult<Arc<ExecInstance>> {
        let exec = self.execs.get(exec_id)?;
        if exec.get().0 != ExecStatus::Created {
            return Err(ServiceError::conflict(format!(
                "exec {exec_id} has already been started"
            )));
        }
        let container = self.containers.get(&exec.container_id)?;
        if !container.record().state.status.is_active() {
            return Err(ServiceError::conflict(format!(
                "container {} is not running",
                container.id
            )));
        }
        refuse_paused(&container, &container.id)?;
        Ok(exec)
    }

    /// `POST /exec/{id}/start`: runs the process, detached or streamed.
    pub async fn start_exec(&self, exec_id: &str, detach: bool) -> ServiceResult<ExecStart> {
        let exec = self.check_exec_startable(exec_id)?;
        let container = self.containers.get(&exec.container_id)?;
        let shim = container
            .shim()
            .filter(|_| container.record().state.status.is_active())
            .ok_or_else(|| {
                ServiceError::conflict(format!("container {} is not running", container.id))
            })?;
        let spec = self.exec_spec(
            &exec,
            &container.record().config.user.clone().unwrap_or_default(),
        )?;
        if !exec.begin() {
            return Err(ServiceError::conflict(format!(
                "exec {exec_id} has already been started"
            )));
        }
        let attrs = HashMap::from([("execID".to_string(), exec.id.clone())]);
        let command = exec.config.cmd.clone().unwrap_or_default().join(" ");
        self.container_event(&container, &format!("exec_start: {command}"), attrs);
        let started = if detach {
            shim.exec_detached(&spec).await.map(|pid| {
                exec.set(ExecStatus::Running, i64::from(pid));
                self.watch_detached_exec(exec.clone(), shim.clone());
                ExecStart::Detached
            })
        } else {
            shim.exec(&spec).await.map(|stream| {
                exec.set(ExecStatus::Running, i64::from(stream.pid()));
                ExecStart::Attached(stream)
            })
        };
        started.map_err(|e| {
            let message = e.to_string();
            exec.set(
                ExecStatus::Exited(crate::containers::exit_code_for_start_error(&message)),
                0,
            );
            ServiceError::invalid(message)
        })
    }

    /// Records the exit code of an attached exec once its stream ended.
    pub fn finish_exec(&self, exec_id: &str, code: Option<i32>) {
        if let Ok(exec) = self.execs.get(exec_id) {
            // No code means the stream broke before the shim reported one: the process
            // went with its container.
            let code = i64::from(code.unwrap_or(137));
            // The pid stays in inspect after the exit, as with moby.
            exec.set(ExecStatus::Exited(code), exec.get().1);
            if let Ok(container) = self.containers.get(&exec.container_id) {
                let attrs = HashMap::from([
                    ("execID".to_string(), exec.id.clone()),
                    ("exitCode".to_string(), code.to_string()),
                ]);
                self.container_event(&container, "exec_die", attrs);
            }
        }
    }

    /// A client typed its detach keys in an exec's stream: the process goes on.
    pub fn exec_detached(&self, exec_id: &str) {
        if let Ok(exec) = self.execs.get(exec_id)
            && let Ok(container) = self.containers.get(&exec.container_id)
        {
            let attrs = HashMap::from([("execID".to_string(), exec.id.clone())]);
            self.container_event(&container, "exec_detach", attrs);
        }
    }

    /// A client typed its detach keys in a container's attach stream (the counterpart of
    /// [`Daemon::exec_detached`]): the container goes on.
    pub fn attach_detached(&self, reference: &str) {
        if let Ok(container) = self.containers.get(reference) {
            self.container_event(&container, "detach", HashMap::new());
        }
    }

    /// Waits for a detached exec's end, so inspect shows its exit code. The shim answers
    /// a `WaitExec` once the exec finished; a shim started by an older berthd does not know
    /// the request, and its exec's state is polled instead.
    fn watch_detached_exec(&self, exec: Arc<ExecInstance>, shim: Arc<berth_runtime::ShimClient>) {
        let daemon = self.handle();
        tokio::spawn(async move {
            let code = match shim.wait_exec(&exec.id).await {
                Ok(state) => state.exit_code,
                Err(berth_runtime::RuntimeError::Shim { message, .. })
                    if message.starts_with(berth_runtime::protocol::UNSUPPORTED_REQUEST) =>
                {
                    poll_exec_exit(&shim, &exec.id).await
                }
                // The shim went away with the container, and the process with it.
                Err(_) => None,
            };
            daemon.finish_exec(&exec.id, code);
        });
    }

    /// `POST /exec/{id}/resize`.
    pub async fn resize_exec(&self, exec_id: &str, height: u16, width: u16) -> ServiceResult<()> {
        let exec = self.execs.get(exec_id)?;
        let container = self.containers.get(&exec.container_id)?;
        let shim = container.shim().ok_or_else(|| {
            ServiceError::conflict(format!("container {} is not running", container.id))
        })?;
        shim.resize_exec(exec_id, height, width).await?;
        Ok(())
    }

    /// `GET /exec/{id}/json`.
    pub fn inspect_exec(&self, exec_id: &str) -> ServiceResult<ExecInspectResponse> {
        let exec = self.execs.get(exec_id)?;
        let (status, pid) = exec.get();
        let cmd = exec.config.cmd.clone().unwrap_or_default();
        let (entrypoint, arguments) = match cmd.split_first() {
            Some((first, rest)) => (first.clone(), rest.to_vec()),
            None => (String::new(), Vec::new()),
        };
        Ok(ExecInspectResponse {
            can_remove: Some(false),
            detach_keys: Some(exec.config.detach_keys.clone().unwrap_or_default()),
            id: Some(exec.id.clone()),
            running: Some(status == ExecStatus::Running),
            exit_code: match status {
                ExecStatus::Exited(code) => Some(code),
                _ => None,
            },
            process_config: Some(ProcessConfig {
                privileged: Some(exec.config.privileged.unwrap_or(false)),
                user: Some(exec.config.user.clone().unwrap_or_default()),
                tty: Some(exec.tty()),
                entrypoint: Some(entrypoint),
                arguments: Some(arguments),
            }),
            open_stdin: Some(exec.config.attach_stdin.unwrap_or(false)),
            open_stderr: Some(exec.config.attach_stderr.unwrap_or(false)),
            open_stdout: Some(exec.config.attach_stdout.unwrap_or(false)),
            container_id: Some(exec.container_id.clone()),
            pid: Some(pid),
        })
    }

    /// The runtime's view of an exec: user resolved inside the container's rootfs.
    fn exec_spec(&self, exec: &ExecInstance, container_user: &str) -> ServiceResult<ExecSpec> {
        let c = &exec.config;
        let user_spec = c
            .user
            .clone()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| container_user.to_string());
        let resolved = user::resolve(&self.rootfs_dir(&exec.container_id), &user_spec)?;
        Ok(ExecSpec {
            exec_id: exec.id.clone(),
            args: c.cmd.clone().unwrap_or_default(),
            env: c.env.clone().unwrap_or_default(),
            cwd: c.working_dir.clone().unwrap_or_default(),
            user: berth_runtime::ProcessUser {
                uid: resolved.uid,
                gid: resolved.gid,
                additional_gids: resolved.additional_gids,
            },
            tty: exec.tty(),
            stdin: c.attach_stdin.unwrap_or(false),
            privileged: c.privileged.unwrap_or(false),
        })
    }
}

/// Polls an exec's state until it has finished; its exit code (`None` when the shim went
/// away first).
async fn poll_exec_exit(shim: &berth_runtime::ShimClient, exec_id: &str) -> Option<i32> {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        match shim.exec_state(exec_id).await {
            Ok(state) if state.running => continue,
            Ok(state) => return state.exit_code,
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(id: &str, container: &str) -> Arc<ExecInstance> {
        Arc::new(ExecInstance {
            id: id.into(),
            container_id: container.into(),
            config: ExecConfig::default(),
            state: Mutex::new(ExecProgress {
                status: ExecStatus::Created,
                pid: 0,
                finished: None,
            }),
        })
    }

    #[test]
    fn parses_docker_detach_keys() {
        assert_eq!(detach_sequence(None).unwrap(), [0x10, 0x11]);
        assert_eq!(detach_sequence(Some("")).unwrap(), [0x10, 0x11]);
        assert_eq!(detach_sequence(Some("ctrl-x,ctrl-y")).unwrap(), [24, 25]);
        assert_eq!(
            detach_sequence(Some("a,ctrl-@,ctrl-[,ctrl-\\,ctrl-_,DEL")).unwrap(),
            [b'a', 0, 27, 28, 31, 127]
        );
        for bad in ["ctrl-1", "ctrl-", "ctrl-A", "ab", "a,,b", "é"] {
            assert_eq!(detach_sequence(Some(bad)), Err(bad.to_string()), "{bad}");
        }
    }

    #[test]
    fn detach_keys_apply_to_terminals_with_stdin_only() {
        let mut config = ExecConfig {
            tty: Some(true),
            attach_stdin: Some(true),
            detach_keys: Some("ctrl-a".into()),
            ..Default::default()
        };
        let with = |config: &ExecConfig| ExecInstance {
            config: config.clone(),
            ..Arc::into_inner(exec("e", "c")).unwrap()
        };
        assert_eq!(with(&config).detach_keys(), Some(vec![1]));
        config.attach_stdin = Some(false);
        assert_eq!(with(&config).detach_keys(), None);
        config.attach_stdin = Some(true);
        config.tty = None;
        assert_eq!(with(&config).detach_keys(), None);
    }

    #[test]
    fn finished_execs_expire_and_abandoned_ones_go() {
        let table = ExecTable::default();
        let none = HashSet::new();
        let ttl = Duration::from_secs(60);
        let done = exec("done", "c1");
        table.insert(done.clone(), &none, ttl);
        done.set(ExecStatus::Exited(0), 5);
        let running = exec("running", "c1");
        table.insert(running.clone(), &none, ttl);
        running.set(ExecStatus::Running, 6);
        table.insert(exec("waiting", "c2"), &none, ttl);
        table.insert(exec("a", "c1"), &none, ttl);
        assert!(table.get("done").is_ok() && table.get("waiting").is_ok());

        // Abandoned only counts for an exec never started; finished ones go when due.
        let abandoned = HashSet::from(["waiting".to_string(), "running".to_string()]);
        table.insert(exec("b", "c1"), &abandoned, Duration::ZERO);
        assert!(table.get("waiting").is_err());
        assert!(table.get("done").is_err());
        assert_eq!(
            table.get("running").unwrap().get(),
            (ExecStatus::Running, 6)
        );
        assert_eq!(table.of_container("c1"), ["running", "a", "b"]);
        assert_eq!(table.unstarted().len(), 2);
    }

    #[test]
    fn the_table_is_bounded_by_forgetting_the_oldest_finished_execs() {
        let table = ExecTable::default();
        let none = HashSet::new();
        let ttl = Duration::from_secs(60);
        let busy = exec("busy", "c");
        table.insert(busy.clone(), &none, ttl);
        busy.set(ExecStatus::Running, 1);
        for i in 0..EXEC_HISTORY + 10 {
            let e = exec(&format!("e{i}"), "c");
            table.insert(e.clone(), &none, ttl);
            e.set(ExecStatus::Exited(0), 1);
        }
        assert_eq!(table.lock().0.len(), EXEC_HISTORY);
        assert!(table.get("busy").is_ok(), "a running exec is kept");
        assert!(table.get("e0").is_err());
        assert!(table.get(&format!("e{}", EXEC_HISTORY + 9)).is_ok());
    }
}
