//! `pause` and `unpause`: freezing a container's processes with the cgroup freezer (the v1
//! `freezer` controller or v2's `cgroup.freeze`).
//!
//! A signal sent to a paused container is held by the frozen processes (cgroup v1 does not
//! even deliver SIGKILL), so, like Docker, kill and stop thaw the container right after
//! signalling it ([`Daemon::resume_after_signal`]); the container is then running again and
//! an `unpause` event says so.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::Container;
use super::cgroupfs::{self, ContainerCgroup};
use super::state::{Op, Status, TransitionError, transition};
use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

/// How long a freeze or thaw may take before it is reported as failed.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);

impl Daemon {
    /// `POST /containers/{id}/pause`.
    pub async fn pause_container(&self, reference: &str) -> ServiceResult<()> {
        self.set_paused(reference, true).await
    }

    /// `POST /containers/{id}/unpause`.
    pub async fn unpause_container(&self, reference: &str) -> ServiceResult<()> {
        self.set_paused(reference, false).await
    }

    async fn set_paused(&self, reference: &str, paused: bool) -> ServiceResult<()> {
        let container = self.containers.get(reference)?;
        let _guard = container.op_lock.lock().await;
        let op = if paused { Op::Pause } else { Op::Unpause };
        let status = container.record().state.status;
        let next = transition(status, op).map_err(|e| match e {
            // moby's wording: only "not running" starts in lower case.
            TransitionError::Illegal(why) if why == "is not running" => {
                ServiceError::conflict(format!("container {} {why}", container.id))
            }
            TransitionError::Illegal(why) => {
                ServiceError::conflict(format!("Container {} {why}", container.id))
            }
            TransitionError::AlreadyThere => ServiceError::not_modified(),
        })?;
        let cgroup_path = self.cgroup_path(&container.id);
        tokio::task::spawn_blocking(move || freeze(&cgroup_path, paused)).await??;
        container.record().state.status = next;
        if let Err(e) = self.persist(&container).await {
            tracing::warn!(container = %container.id, "cannot persist the paused state: {e}");
        }
        let action = if paused { "pause" } else { "unpause" };
        self.container_event(&container, action, HashMap::new());
        Ok(())
    }

    /// Thaws a paused container after a signal was sent to it, so the signal takes effect
    /// (Docker does the same); a container that is not paused is left alone.
    pub(crate) async fn resume_after_signal(&self, container: &Arc<Container>) {
        if container.record().state.status != Status::Paused {
            return;
        }
        let _guard = container.op_lock.lock().await;
        let next = match transition(container.record().state.status, Op::Unpause) {
            Ok(next) => next,
            // Exited (or unpaused) meanwhile.
            Err(_) => return,
        };
        let cgroup_path = self.cgroup_path(&container.id);
        match tokio::task::spawn_blocking(move || freeze(&cgroup_path, false)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(container = %container.id, "cannot thaw after a signal: {e}");
                return;
            }
            Err(e) => {
                tracing::warn!(container = %container.id, "thaw task failed: {e}");
                return;
            }
        }
        container.record().state.status = next;
        if let Err(e) = self.persist(container).await {
            tracing::warn!(container = %container.id, "cannot persist the unpause: {e}");
        }
        self.container_event(container, "unpause", HashMap::new());
    }
}

/// Freezes (or thaws) the cgroup and waits until the kernel reports it done.
fn freeze(cgroup_path: &str, frozen: bool) -> ServiceResult<()> {
    let cgroup = ContainerCgroup::locate(cgroup_path)?;
    let what = if frozen { "freeze" } else { "thaw" };
    let done = if let Some(dir) = cgroup.v1("freezer") {
        freeze_v1(dir, frozen)?
    } else if let Some(dir) = cgroup.v2() {
        freeze_v2(dir, frozen)?
    } else {
        return Err(ServiceError::internal(format!(
            "cannot {what} cgroup {cgroup_path}: no freezer controller holds it"
        )));
    };
    if done {
        return Ok(());
    }
    if frozen {
        // Leave nothing half-frozen behind a failed pause.
        let _ = freeze(cgroup_path, false);
    }
    Err(ServiceError::internal(format!(
        "cannot {what} cgroup {cgroup_path}: still not done after {FREEZE_TIMEOUT:?}"
    )))
}

/// v1: write the wanted state to `freezer.state` until it reads back (a freeze can stay in
/// `FREEZING` while a task is in an uninterruptible sleep; writing again retries it).
fn freeze_v1(dir: &Path, frozen: bool) -> ServiceResult<bool> {
    let want = if frozen { "FROZEN" } else { "THAWED" };
    let deadline = std::time::Instant::now() + FREEZE_TIMEOUT;
    loop {
        cgroupfs::write(dir, "freezer.state", want)?;
        if cgroupfs::read(dir, "freezer.state").as_deref() == Some(want) {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// v2: write `cgroup.freeze` once, then wait for `frozen` in `cgroup.events`.
fn freeze_v2(dir: &Path, frozen: bool) -> ServiceResult<bool> {
    cgroupfs::write(dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
    let want = if frozen { "frozen 1" } else { "frozen 0" };
    let deadline = std::time::Instant::now() + FREEZE_TIMEOUT;
    loop {
        let events = cgroupfs::read(dir, "cgroup.events").unwrap_or_default();
        if events.lines().any(|l| l.trim() == want) {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_freeze_waits_for_the_event() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
        assert!(freeze_v2(dir.path(), true).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("cgroup.freeze")).unwrap(),
            "1"
        );
    }

    #[test]
    fn v1_freeze_reads_the_state_back() {
        // A plain file reads back what was written, as a freezer that froze at once.
        let dir = tempfile::tempdir().unwrap();
        assert!(freeze_v1(dir.path(), true).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("freezer.state")).unwrap(),
            "FROZEN"
        );
        assert!(freeze_v1(dir.path(), false).unwrap());
    }
}
