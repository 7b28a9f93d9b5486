//! Start, stop, kill, wait, attach, remove, and what happens when a process exits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use berth_runtime::ExitStatus;
use berth_runtime::client::{AttachStream, ShimClient};
use tokio::sync::oneshot;

use super::state::{Op, Status, TransitionError, transition};
use super::{Container, RECORD_KIND};
use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

/// A client waiting to be attached to a container's stdio once its process exists.
#[derive(Debug)]
pub struct AttachRequest {
    /// Forward the client's stdin.
    pub stdin: bool,
    /// Stream stdout.
    pub stdout: bool,
    /// Stream stderr.
    pub stderr: bool,
    /// Where the attached stream (or the reason there is none) goes.
    pub reply: oneshot::Sender<ServiceResult<AttachStream>>,
}

/// `wait?condition=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCondition {
    /// Return once the container is not running (at once if it is not).
    NotRunning,
    /// Return at the next exit.
    NextExit,
    /// Return once the container is removed.
    Removed,
}

impl WaitCondition {
    /// Parses the query value; empty means `not-running`.
    pub fn parse(value: &str) -> ServiceResult<WaitCondition> {
        match value {
            "" | "not-running" => Ok(WaitCondition::NotRunning),
            "next-exit" => Ok(WaitCondition::NextExit),
            "removed" => Ok(WaitCondition::Removed),
            other => Err(ServiceError::invalid(format!(
                "invalid condition: \"{other}\""
            ))),
        }
    }
}

/// Maps a signal name or number (`KILL`, `SIGKILL`, `9`) to its number.
pub fn parse_signal(text: &str) -> ServiceResult<i32> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i32>()
        && (1..=64).contains(&n)
    {
        return Ok(n);
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let full = format!("SIG{name}");
    full.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| ServiceError::invalid(format!("Invalid signal: {text}")))
}

impl Daemon {
    /// Starts a created or exited container.
    pub async fn start_container(&self, reference: &str) -> ServiceResult<()> {
        let container = self.containers.get(reference)?;
        let guard = container.op_lock.lock().await;
        let status = container.record().state.status;
        match transition(status, Op::Start) {
            Ok(_) => {}
            Err(TransitionError::AlreadyThere) => return Err(ServiceError::not_modified()),
            Err(TransitionError::Illegal(why)) => {
                return Err(ServiceError::conflict(format!(
                    "container {} {why}",
                    container.id
                )));
            }
        }
        self.reset_restart_policy(&container);
        let result = self.launch(&container).await;
        drop(guard);
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                self.fail_pending_attaches(&container, &e);
                self.start_failed(&container, &e).await;
                Err(e)
            }
        }
    }

    /// Plugs the container into its networks, then [`Self::launch_process`]; unplugs it
    /// again if that fails.
    pub(super) async fn launch(&self, container: &Arc<Container>) -> ServiceResult<()> {
        // From here until the shim has created the container, so that the runtime's move
        // into the container's cgroups does not wait out a grace period of its own.
        let warmup = berth_runtime::cgroups::MigrationWarmup::start();
        self.attach_container_networks(&container.snapshot())
            .await?;
        let launched = self.launch_process(container, warmup).await;
        if launched.is_err() {
            self.detach_container_networks(&container.id).await;
        }
        launched
    }

    /// Mounts the rootfs, spawns the shim, connects waiting attaches, starts the process.
    async fn launch_process(
        &self,
        container: &Arc<Container>,
        warmup: Option<berth_runtime::cgroups::MigrationWarmup>,
    ) -> ServiceResult<()> {
        let prepared = self.prepare_run(container).await?;
        let spawned = ShimClient::spawn(&prepared.shim_options).await;
        drop(warmup);
        let shim = match spawned {
            Ok(shim) => Arc::new(shim),
            Err(e) => {
                self.unmount_rootfs(&container.id).await;
                return Err(start_error(e));
            }
        };
        let pending: Vec<AttachRequest> = std::mem::take(
            &mut *container
                .pending_attaches
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for req in pending {
            let attached = shim
                .attach(req.stdin, req.stdout, req.stderr)
                .await
                .map_err(Into::into);
            let _ = req.reply.send(attached);
        }
        if let Err(e) = shim.start().await {
            let _ = shim.delete().await;
            self.unmount_rootfs(&container.id).await;
            return Err(start_error(e));
        }
        let pid = shim.state().await.map(|s| s.pid).unwrap_or_default();
        {
            let mut r = container.record();
            r.state.status = Status::Running;
            r.state.pid = i64::from(pid);
            r.state.error.clear();
            r.state.exit_code = 0;
            r.state.oom_killed = false;
            r.state.started_at = Some(chrono::Utc::now());
            r.state.stopped_by_user = false;
        }
        container.set_shim(Some(shim.clone()));
        self.start_health_monitor(container);
        self.persist(container).await?;
        container.lifecycle.send_modify(|l| l.active = true);
        self.container_event(container, "start", HashMap::new());
        self.watch_exit(container.clone(), shim);
        Ok(())
    }

    /// Records a failed start like docker: the error and a 126/127/128 exit code.
    pub(super) async fn start_failed(&self, container: &Arc<Container>, error: &ServiceError) {
        let auto_remove = {
            let mut r = container.record();
            r.state.status = transition(r.state.status, Op::StartFailed).unwrap_or(r.state.status);
            r.state.error = error.message.clone();
            r.state.exit_code = exit_code_for_start_error(&error.message);
            r.host_config.auto_remove.unwrap_or(false)
        };
        if let Err(e) = self.persist(container).await {
            tracing::warn!(container = %container.id, "cannot persist start failure: {e}");
        }
        if auto_remove && let Err(e) = self.remove_container(&container.id, true, true).await {
            tracing::warn!(container = %container.id, "auto-remove after failed start: {e}");
        }
    }

    pub(super) fn fail_pending_attaches(&self, container: &Container, error: &ServiceError) {
        let pending: Vec<AttachRequest> = std::mem::take(
            &mut *container
                .pending_attaches
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for req in pending {
            let _ = req.reply.send(Err(error.clone()));
        }
    }

    /// Waits for the shim to report the exit, then records it.
    pub(crate) fn watch_exit(&self, container: Arc<Container>, shim: Arc<ShimClient>) {
        let daemon = self.handle();
        tokio::spawn(async move {
            let status = match shim.wait().await {
                Ok(status) => status,
                Err(e) => {
                    tracing::warn!(container = %container.id, "lost the shim while waiting: {e}");
                    berth_runtime::client::read_exit_file(&daemon.shim_dir(&container.id))
                        .unwrap_or_else(unknown_exit)
                }
            };
            daemon.handle_exit(&container, status).await;
        });
    }

    /// Records an exit: state, shim teardown, unmount, event, waiters, auto-remove.
    pub(crate) async fn handle_exit(&self, container: &Arc<Container>, status: ExitStatus) {
        let guard = container.op_lock.lock().await;
        let (auto_remove, restart_delay) = {
            let mut r = container.record();
            match transition(r.state.status, Op::Exit) {
                Ok(next) => r.state.status = next,
                // Already recorded (a reconnect raced the watcher): nothing to do.
                Err(_) => return,
            }
            r.state.exit_code = i64::from(status.code);
            r.state.oom_killed = status.oom_killed;
            r.state.pid = 0;
            r.state.finished_at = Some(
                chrono::DateTime::parse_from_rfc3339(&status.finished_at)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .unwrap_or_else(|_| chrono::Utc::now()),
            );
            // In the same lock, so no reader sees `exited` before `restarting`.
            let restart_delay = self.plan_restart(container, &mut r);
            (r.host_config.auto_remove.unwrap_or(false), restart_delay)
        };
        self.stop_health_monitor(container);
        let shim = container
            .shim
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let deleted = match shim {
            Some(shim) => match shim.delete().await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(container = %container.id, "shim delete failed: {e}");
                    false
                }
            },
            None => false,
        };
        // A shim's successful delete includes the cgroups.
        if !deleted {
            self.remove_cgroup(&container.id);
            self.forget_lost_shim(&container.id).await;
        }
        self.unmount_rootfs(&container.id).await;
        self.detach_container_networks(&container.id).await;
        self.release_volumes(&container.snapshot()).await;
        // An auto-removed container's record is deleted next; until then the stored
        // `running` state is safe: after a crash, recovery finds no shim, reads the exit
        // file and removes the container.
        let removed_next = auto_remove && restart_delay.is_none();
        if !removed_next && let Err(e) = self.persist(container).await {
            tracing::warn!(container = %container.id, "cannot persist exit: {e}");
        }
        let mut attrs = HashMap::from([("exitCode".to_string(), status.code.to_string())]);
        if status.oom_killed {
            self.container_event(container, "oom", HashMap::new());
        }
        self.container_event(container, "die", std::mem::take(&mut attrs));
        container.lifecycle.send_modify(|l| {
            l.exits += 1;
            l.exit_code = i64::from(status.code);
            // A container waiting for its restart still counts as active, as in moby.
            l.active = restart_delay.is_some();
        });
        drop(guard);
        if let Some(delay) = restart_delay {
            self.schedule_restart(container.clone(), delay);
        }
        if auto_remove && let Err(e) = self.remove_container(&container.id, true, true).await {
            tracing::warn!(container = %container.id, "auto-remove failed: {e}");
        }
    }

    /// Removes what is left of a container's cgroup (the shim normally does it).
    fn remove_cgroup(&self, id: &str) {
        if let Err(e) = berth_runtime::cgroups::remove_cgroup(&self.cgroup_path(id)) {
            tracing::warn!(container = id, "cannot remove cgroup: {e}");
        }
    }

    /// Sends a signal to a running container.
    pub async fn kill_container(&self, reference: &str, signal: Option<&str>) -> ServiceResult<()> {
        let container = self.containers.get(reference)?;
        let signal = parse_signal(signal.filter(|s| !s.is_empty()).unwrap_or("KILL"))?;
        if self.restart_policy_on_kill(&container, signal).await {
            return Ok(());
        }
        let Some(shim) = container
            .shim()
            .filter(|_| container.record().state.status.is_active())
        else {
            return Err(ServiceError::conflict(format!(
                "Cannot kill container: {reference}: container {} is not running",
                container.id
            )));
        };
        match shim.kill(signal).await {
            // The process ended just before (a restart policy's quick exit, say) and its
            // exit is being recorded: like moby, a kill that finds no process is done.
            Err(e) if e.kind() == berth_runtime::ErrorKind::InvalidState => {}
            other => other?,
        }
        let attrs = HashMap::from([("signal".to_string(), signal.to_string())]);
        self.container_event(&container, "kill", attrs);
        self.resume_after_signal(&container).await;
        Ok(())
    }

    /// Stops a container: its stop signal, then SIGKILL after the timeout.
    pub async fn stop_container(
        &self,
        reference: &str,
        timeout: Option<i64>,
        signal: Option<&str>,
    ) -> ServiceResult<()> {
        let container = self.containers.get(reference)?;
        if !container.record().state.status.is_active() {
            return Err(ServiceError::not_modified());
        }
        container.record().state.stopped_by_user = true;
        self.stop_process(&container, timeout, signal).await?;
        self.container_event(&container, "stop", HashMap::new());
        Ok(())
    }

    async fn stop_process(
        &self,
        container: &Arc<Container>,
        timeout: Option<i64>,
        signal: Option<&str>,
    ) -> ServiceResult<()> {
        let (stop_signal, stop_timeout) = {
            let r = container.record();
            (r.config.stop_signal.clone(), r.config.stop_timeout)
        };
        let signal = signal
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .or(stop_signal.filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "SIGTERM".into());
        let timeout = timeout.or(stop_timeout).unwrap_or(10);
        if self.cancel_restart(container).await {
            return Ok(());
        }
        let mut watch = container.watch();
        if !watch.borrow().active {
            return Ok(());
        }
        if let Some(shim) = container.shim() {
            let signo = parse_signal(&signal)?;
            if let Err(e) = shim.kill(signo).await {
                tracing::debug!(container = %container.id, "stop signal not delivered: {e}");
            }
            let attrs = HashMap::from([("signal".to_string(), signo.to_string())]);
            self.container_event(container, "kill", attrs);
            self.resume_after_signal(container).await;
        }
        let exited = |l: &super::Lifecycle| !l.active;
        let graceful = if timeout < 0 {
            watch.wait_for(exited).await.is_ok()
        } else {
            let wait = watch.wait_for(exited);
            tokio::time::timeout(Duration::from_secs(timeout as u64), wait)
                .await
                .is_ok()
        };
        if !graceful {
            if let Some(shim) = container.shim() {
                let _ = shim.kill(libc::SIGKILL).await;
                let attrs = HashMap::from([("signal".to_string(), libc::SIGKILL.to_string())]);
                self.container_event(container, "kill", attrs);
            }
            let _ = watch.wait_for(exited).await;
        }
        Ok(())
    }

    /// Stops (if running) and starts a container again.
    pub async fn restart_container(
        &self,
        reference: &str,
        timeout: Option<i64>,
    ) -> ServiceResult<()> {
        let container = self.containers.get(reference)?;
        if container.record().state.status.is_active() {
            self.stop_process(&container, timeout, None).await?;
        }
        match self.start_container(&container.id).await {
            Ok(())
            | Err(ServiceError {
                kind: crate::error::ErrorKind::NotModified,
                ..
            }) => {}
            Err(e) => return Err(e),
        }
        self.container_event(&container, "restart", HashMap::new());
        Ok(())
    }

    /// Returns a future that completes with the exit code when `condition` holds. The
    /// container is resolved now so a 404 is reported before any response is sent.
    pub fn wait_container(
        &self,
        reference: &str,
        condition: WaitCondition,
    ) -> ServiceResult<impl std::future::Future<Output = i64> + Send + 'static> {
        let container = self.containers.get(reference)?;
        let mut watch = container.watch();
        drop(container);
        let start = *watch.borrow();
        Ok(async move {
            let outcome = match condition {
                WaitCondition::NotRunning => {
                    watch.wait_for(|l| !l.active || l.removed).await.map(|l| *l)
                }
                WaitCondition::NextExit => watch
                    .wait_for(|l| l.exits > start.exits || l.removed)
                    .await
                    .map(|l| *l),
                WaitCondition::Removed => watch.wait_for(|l| l.removed).await.map(|l| *l),
            };
            // A dropped sender means the container is gone: report the last code seen.
            outcome
                .map(|l| l.exit_code)
                .unwrap_or(watch.borrow().exit_code)
        })
    }

    /// Attaches to a container's stdio: now if its process runs, else at its next start.
    pub async fn attach_container(
        &self,
        reference: &str,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> ServiceResult<(bool, oneshot::Receiver<ServiceResult<AttachStream>>)> {
        let container = self.containers.get(reference)?;
        let (tx, rx) = oneshot::channel();
        let tty = container.record().config.tty.unwrap_or(false);
        let req = AttachRequest {
            stdin,
            stdout,
            stderr,
            reply: tx,
        };
        match container
            .shim()
            .filter(|_| container.record().state.status.is_active())
        {
            Some(shim) => {
                let attached = shim.attach(stdin, stdout, stderr).await.map_err(Into::into);
                let _ = req.reply.send(attached);
            }
            None => container
                .pending_attaches
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(req),
        }
        self.container_event(&container, "attach", HashMap::new());
        Ok((tty, rx))
    }

    /// Resizes a container's TTY.
    pub async fn resize_container(
        &self,
        reference: &str,
        height: u16,
        width: u16,
    ) -> ServiceResult<()> {
        let container = self.containers.get(reference)?;
        let Some(shim) = container.shim() else {
            return Err(ServiceError::conflict(format!(
                "cannot resize container {}: it is not running",
                container.id
            )));
        };
        shim.resize(height, width).await?;
        Ok(())
    }

    /// Removes a container: refuses a running one unless forced; `volumes` also removes its
    /// anonymous volumes.
    pub async fn remove_container(
        &self,
        reference: &str,
        force: bool,
        volumes: bool,
    ) -> ServiceResult<()> {
        let container = self.containers.get(reference)?;
        if container.record().state.status.is_active() {
            if !force {
                let name = container.record().name.clone();
                return Err(ServiceError::conflict(format!(
                    "cannot remove container \"/{name}\": container is running: stop the container before removing or force remove"
                )));
            }
            self.stop_process(&container, Some(0), Some("SIGKILL"))
                .await?;
        }
        let guard = container.op_lock.lock().await;
        {
            let mut r = container.record();
            match transition(r.state.status, Op::Remove) {
                Ok(next) => r.state.status = next,
                Err(TransitionError::Illegal(why)) => {
                    return Err(ServiceError::conflict(format!(
                        "container {}: {why}",
                        container.id
                    )));
                }
                Err(TransitionError::AlreadyThere) => return Err(ServiceError::not_modified()),
            }
        }
        let shim = container
            .shim
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(shim) = shim {
            let _ = shim.delete().await;
        }
        self.remove_cgroup(&container.id);
        self.unmount_rootfs(&container.id).await;
        self.forget_container_networks(&container.id).await;
        let store = self.store.clone();
        let id = container.id.clone();
        // The writable layer's record and the container's go in one commit; their files
        // after the waiters have been told (the container is gone once the commit is).
        let removed = tokio::task::spawn_blocking(move || {
            store.meta().write(|tx| {
                let layer = match store
                    .snapshotter()
                    .remove_in(tx, &berth_store::snapshot::container_key(&id))
                {
                    Ok(files) => Some(files),
                    Err(berth_store::StoreError::SnapshotNotFound(_)) => None,
                    Err(e) => return Err(e),
                };
                tx.delete_record(RECORD_KIND, &id)?;
                Ok(layer)
            })
        })
        .await?;
        let layer = match removed {
            Ok(layer) => layer,
            Err(e) => {
                container.record().state.status = Status::Dead;
                let _ = self.persist(&container).await;
                return Err(e.into());
            }
        };
        self.containers.remove(&container.id);
        drop(guard);
        if volumes {
            self.remove_anonymous_volumes(&container.snapshot()).await;
        }
        container.lifecycle.send_modify(|l| l.removed = true);
        self.container_event(&container, "destroy", HashMap::new());
        let dirs = [
            self.container_dir(&container.id),
            self.shim_dir(&container.id),
        ];
        let deleted = tokio::task::spawn_blocking(move || -> Result<(), String> {
            if let Some(layer) = layer {
                layer.delete().map_err(|e| e.to_string())?;
            }
            for d in &dirs {
                match std::fs::remove_dir_all(d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(format!("cannot remove {}: {e}", d.display())),
                }
            }
            Ok(())
        })
        .await;
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(container = %container.id, "removed, but {e}"),
            Err(e) => tracing::warn!(container = %container.id, "file removal task failed: {e}"),
        }
        Ok(())
    }
}

/// The exit recorded when a shim vanished without writing one: like a SIGKILL.
pub(crate) fn unknown_exit() -> ExitStatus {
    ExitStatus {
        code: 137,
        signal: Some(libc::SIGKILL),
        oom_killed: false,
        finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
    }
}

/// Classifies a runtime failure at start the way docker's CLI expects to read it.
fn start_error(e: berth_runtime::RuntimeError) -> ServiceError {
    ServiceError::invalid(format!("failed to create task for container: {e}"))
}

/// Docker records 127 for a missing command, 126 for one that cannot be run, else 128.
pub(crate) fn exit_code_for_start_error(message: &str) -> i64 {
    if message.contains("executable file not found")
        || message.contains("no such file or directory")
    {
        127
    } else if message.contains("permission denied") || message.contains("is a directory") {
        126
    } else {
        128
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("KILL").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("0").is_err());
    }

    #[test]
    fn start_errors_map_to_dockers_codes() {
        assert_eq!(
            exit_code_for_start_error("exec: \"x\": executable file not found in $PATH"),
            127
        );
        assert_eq!(
            exit_code_for_start_error("exec: \"/etc/passwd\": permission denied"),
            126
        );
        assert_eq!(exit_code_for_start_error("cgroup failure"), 128);
    }
}
