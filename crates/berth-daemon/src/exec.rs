//! The exec service: extra processes inside running containers (`docker exec`).
//!
//! An exec is created (validated, recorded) and later started, attached or detached; its exit
//! code is recorded before its stream closes, because the docker CLI inspects the exec right
//! after the stream ends to learn the code.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use berth_api::models::{ExecConfig, ExecInspectResponse, ProcessConfig};
use berth_runtime::client::ExecStream;
use berth_runtime::protocol::ExecSpec;

use crate::containers::user;
use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

/// How many exec records are kept; the oldest finished ones go first.
const EXEC_HISTORY: usize = 1024;

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
    state: Mutex<(ExecStatus, i64)>,
}

impl ExecInstance {
    fn set(&self, status: ExecStatus, pid: i64) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = (status, pid);
    }

    /// Moves Created → Running; false if another start got there first.
    fn begin(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.0 != ExecStatus::Created {
            return false;
        }
        state.0 = ExecStatus::Running;
        true
    }

    fn get(&self) -> (ExecStatus, i64) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the client asked for a terminal.
    pub fn tty(&self) -> bool {
        self.config.tty.unwrap_or(false)
    }
}

/// Exec instances by ID, and their IDs oldest first.
type ExecIndex = (HashMap<String, Arc<ExecInstance>>, VecDeque<String>);

/// Exec instances by ID, bounded.
#[derive(Debug, Default)]
pub struct ExecTable {
    inner: Mutex<ExecIndex>,
}

impl ExecTable {
    fn insert(&self, exec: Arc<ExecInstance>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *inner;
        while order.len() >= EXEC_HISTORY {
            let Some(oldest) = order.iter().position(|id| {
                map.get(id)
                    .is_none_or(|e| matches!(e.get().0, ExecStatus::Exited(_)))
            }) else {
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
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .get(id)
            .cloned()
            .ok_or_else(|| ServiceError::not_found(format!("No such exec instance: {id}")))
    }

    /// IDs of the unfinished execs of a container, for inspect's `ExecIDs` (moby drops an
    /// exec from its container's list when it exits; healthcheck probes would pile up).
    pub fn of_container(&self, container_id: &str) -> Vec<String> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
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
        let id = crate::containers::random_id();
        let exec = Arc::new(ExecInstance {
            id: id.clone(),
            container_id: container.id.clone(),
            config,
            state: Mutex::new((ExecStatus::Created, 0)),
        });
        self.execs.insert(exec.clone());
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
            shim.exec(&spec).await.map(ExecStart::Attached)
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
            exec.set(ExecStatus::Exited(code), 0);
            if let Ok(container) = self.containers.get(&exec.container_id) {
                let attrs = HashMap::from([
                    ("execID".to_string(), exec.id.clone()),
                    ("exitCode".to_string(), code.to_string()),
                ]);
                self.container_event(&container, "exec_die", attrs);
            }
        }
    }

    /// Polls a detached exec's state until it ends, so inspect shows its exit code.
    fn watch_detached_exec(&self, exec: Arc<ExecInstance>, shim: Arc<berth_runtime::ShimClient>) {
        let daemon = self.handle();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                match shim.exec_state(&exec.id).await {
                    Ok(state) if state.running => continue,
                    Ok(state) => {
                        daemon.finish_exec(&exec.id, state.exit_code);
                        return;
                    }
                    Err(_) => {
                        daemon.finish_exec(&exec.id, None);
                        return;
                    }
                }
            }
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
