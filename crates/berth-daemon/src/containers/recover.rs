//! Startup recovery: rebuild the index from the store, reconnect to live shims, and record
//! the exits that happened while the daemon was away. Restart policies are suspended
//! meanwhile and asked again once networks are restored
//! ([`Daemon::restart_containers_at_startup`]).

use std::sync::Arc;

use berth_runtime::client::ShimClient;

use super::state::Status;
use super::{Container, ContainerRecord, RECORD_KIND};
use crate::daemon::Daemon;

impl Daemon {
    /// Loads every container record and reconciles it with its shim.
    pub async fn recover_containers(&self) -> anyhow::Result<()> {
        let store = self.store.clone();
        let records =
            tokio::task::spawn_blocking(move || store.list_records(RECORD_KIND)).await??;
        for (id, bytes) in records {
            let mut record: ContainerRecord = match serde_json::from_slice(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(container = %id, "unreadable container record, skipped: {e}");
                    continue;
                }
            };
            crate::volumes::adopt_legacy_binds(&mut record);
            let status = record.state.status;
            let leftover_build_step = record.build_layers.is_some();
            let container = Container::new(record);
            if let Err(e) = self.containers.insert(container.clone()) {
                tracing::error!(container = %id, "duplicate container name on recovery: {e}");
                continue;
            }
            if leftover_build_step {
                // Its build died with the previous daemon: nothing will ever commit it.
                if let Err(e) = self.remove_container(&id, true, false).await {
                    tracing::warn!(container = %id, "removing a dead build's step failed: {e}");
                }
                continue;
            }
            match status {
                Status::Restarting => self.settle_interrupted_restart(&container).await,
                s if s.is_active() => {
                    self.suspend_restart_policy(&container);
                    self.reconnect(container).await;
                }
                Status::Removing | Status::Dead => {
                    if let Err(e) = self.remove_container(&id, true, false).await {
                        tracing::warn!(container = %id, "finishing removal failed: {e}");
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Reattaches a container that was running when the daemon stopped.
    async fn reconnect(&self, container: Arc<Container>) {
        let dir = self.shim_dir(&container.id);
        match ShimClient::connect(&dir).await {
            Ok(shim) => {
                let shim = Arc::new(shim);
                container.set_shim(Some(shim.clone()));
                tracing::info!(container = %container.id, "reconnected to shim");
                self.start_health_monitor(&container);
                // The watcher returns at once if the process already exited.
                self.watch_exit(container, shim);
            }
            Err(e) => {
                let status = berth_runtime::client::read_exit_file(&dir).unwrap_or_else(|| {
                    tracing::warn!(container = %container.id, "shim gone without an exit record: {e}");
                    super::lifecycle::unknown_exit()
                });
                self.handle_exit(&container, status).await;
            }
        }
    }

    /// After an exit the shim could not clean up (it was killed, or went with a reboot):
    /// once no shim serves the container's state directory, the directory goes, since the
    /// runtime state left in it would make the next start fail with "container already
    /// exists".
    pub(super) async fn forget_lost_shim(&self, id: &str) {
        let dir = self.shim_dir(id);
        if ShimClient::connect(&dir).await.is_ok() {
            return;
        }
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(container = id, "cannot remove {}: {e}", dir.display()),
        }
    }
}
