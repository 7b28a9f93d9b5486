//! The container service: records, the in-memory index, and the lifecycle operations.
//!
//! A container is an immutable config (what the client asked for, merged with the image's
//! defaults) plus a mutable [`State`]; both are persisted as one JSON record in the store's
//! `records` table (kind `container`). The in-memory index is the source of truth while the
//! daemon runs; every change is written through before it is acknowledged.

mod archive;
mod cgroupfs;
mod commit;
mod create;
mod diff;
mod health;
mod lifecycle;
mod logs;
mod pause;
mod recover;
mod restart;
mod rootfs;
mod spec;
pub mod state;
mod stats;
pub mod summary;
mod top;
mod update;
pub(crate) mod user;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use berth_api::models::{ContainerConfig, HostConfig};
use berth_runtime::client::ShimClient;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use archive::ExtractRequest;
pub use commit::CommitRequest;
pub use create::CreateRequest;
pub(crate) use create::is_restricted_name;
pub(crate) use create::random_id;
pub(crate) use diff::mount_points_with;
pub(crate) use lifecycle::exit_code_for_start_error;
pub use lifecycle::{AttachRequest, WaitCondition};
pub use logs::LogsRequest;
pub(crate) use spec::is_mountpoint;
pub use state::{State, Status};
pub use stats::StatsRequest;
pub(crate) use summary::rfc3339;

use crate::error::{ServiceError, ServiceResult};

/// The record kind containers use in the store's generic records table.
pub const RECORD_KIND: &str = "container";

/// What is persisted for a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// 64 hex characters.
    pub id: String,
    /// Name without the leading slash.
    pub name: String,
    /// Creation time.
    pub created: DateTime<Utc>,
    /// The image ID (`sha256:...`) the container was created from.
    pub image_id: String,
    /// The config as run: the request merged with the image's defaults.
    pub config: ContainerConfig,
    /// The host config as received.
    pub host_config: HostConfig,
    /// The executable (first word of entrypoint + cmd).
    pub path: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The runtime name (`libcontainer` or a configured OCI runtime).
    pub runtime: String,
    /// Lifecycle state.
    pub state: State,
    /// Binds, volumes and tmpfs mounts, resolved at create.
    #[serde(default)]
    pub mounts: Vec<crate::volumes::MountPoint>,
    /// For the container of a build step: the layer chain its writable layer sits on (it
    /// has no image of its own; `image_id` names the stage's base image, or is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_layers: Option<Vec<berth_store::LayerInfo>>,
}

/// What waiters observe: a counter of exits, the last exit code, and removal.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lifecycle {
    /// Incremented each time the process exits.
    pub exits: u64,
    /// Exit code of the last exit.
    pub exit_code: i64,
    /// Whether the process is active (running, paused, restarting).
    pub active: bool,
    /// Set once the container is gone.
    pub removed: bool,
}

/// One container known to the daemon.
#[derive(Debug)]
pub struct Container {
    /// Full ID (immutable).
    pub id: String,
    record: Mutex<ContainerRecord>,
    /// Serialises lifecycle operations (start, stop, remove, exit handling).
    pub(crate) op_lock: tokio::sync::Mutex<()>,
    lifecycle: watch::Sender<Lifecycle>,
    shim: Mutex<Option<Arc<ShimClient>>>,
    pending_attaches: Mutex<Vec<AttachRequest>>,
    /// The restart policy's back-off and cancellation ([`restart::RestartManager`]).
    restart: Mutex<restart::RestartManager>,
    /// Stops the healthcheck monitor while one runs ([`health`]).
    health_monitor: Mutex<Option<watch::Sender<bool>>>,
}

impl Container {
    fn new(record: ContainerRecord) -> Arc<Container> {
        let lifecycle = Lifecycle {
            exits: 0,
            exit_code: record.state.exit_code,
            active: record.state.status.is_active(),
            removed: false,
        };
        Arc::new(Container {
            id: record.id.clone(),
            record: Mutex::new(record),
            op_lock: tokio::sync::Mutex::new(()),
            lifecycle: watch::channel(lifecycle).0,
            shim: Mutex::new(None),
            pending_attaches: Mutex::new(Vec::new()),
            restart: Mutex::new(restart::RestartManager::default()),
            health_monitor: Mutex::new(None),
        })
    }

    /// Locks the record for a short read or update (never held across an await).
    pub fn record(&self) -> MutexGuard<'_, ContainerRecord> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the record.
    pub fn snapshot(&self) -> ContainerRecord {
        self.record().clone()
    }

    pub(crate) fn shim(&self) -> Option<Arc<ShimClient>> {
        self.shim.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_shim(&self, shim: Option<Arc<ShimClient>>) {
        *self.shim.lock().unwrap_or_else(|p| p.into_inner()) = shim;
    }

    /// Subscribes to lifecycle changes (wait, logs --follow).
    pub fn watch(&self) -> watch::Receiver<Lifecycle> {
        self.lifecycle.subscribe()
    }
}

/// Index of containers by ID and name.
#[derive(Debug, Default)]
pub struct ContainerIndex {
    inner: Mutex<IndexInner>,
}

#[derive(Debug, Default)]
struct IndexInner {
    by_id: HashMap<String, Arc<Container>>,
    by_name: HashMap<String, String>,
}

impl ContainerIndex {
    fn lock(&self) -> MutexGuard<'_, IndexInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Finds a container by full ID, name (with or without `/`), or unique ID prefix.
    pub fn get(&self, reference: &str) -> ServiceResult<Arc<Container>> {
        let inner = self.lock();
        if let Some(c) = inner.by_id.get(reference) {
            return Ok(c.clone());
        }
        let name = reference.strip_prefix('/').unwrap_or(reference);
        if let Some(id) = inner.by_name.get(name)
            && let Some(c) = inner.by_id.get(id)
        {
            return Ok(c.clone());
        }
        if !reference.is_empty() && reference.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut matches = inner.by_id.values().filter(|c| c.id.starts_with(reference));
            if let Some(first) = matches.next() {
                if matches.next().is_some() {
                    return Err(ServiceError::invalid(format!(
                        "multiple containers found with provided prefix: {reference}"
                    )));
                }
                return Ok(first.clone());
            }
        }
        Err(ServiceError::no_such_container(reference))
    }

    /// Every container.
    pub fn all(&self) -> Vec<Arc<Container>> {
        self.lock().by_id.values().cloned().collect()
    }

    /// Adds a container, refusing a taken name with docker's conflict message.
    fn insert(&self, container: Arc<Container>) -> ServiceResult<()> {
        let mut inner = self.lock();
        let name = container.record().name.clone();
        if let Some(owner) = inner.by_name.get(&name) {
            return Err(ServiceError::conflict(format!(
                "Conflict. The container name \"/{name}\" is already in use by container \"{owner}\". \
                 You have to remove (or rename) that container to be able to reuse that name."
            )));
        }
        inner.by_name.insert(name, container.id.clone());
        inner.by_id.insert(container.id.clone(), container);
        Ok(())
    }

    fn remove(&self, id: &str) {
        let mut inner = self.lock();
        if let Some(c) = inner.by_id.remove(id) {
            let name = c.record().name.clone();
            inner.by_name.remove(&name);
        }
    }

    /// Moves a container to a new name, refusing a taken one.
    fn rename(&self, id: &str, old: &str, new: &str) -> ServiceResult<()> {
        let mut inner = self.lock();
        if let Some(owner) = inner.by_name.get(new) {
            return Err(ServiceError::conflict(format!(
                "Conflict. The container name \"/{new}\" is already in use by container \"{owner}\". \
                 You have to remove (or rename) that container to be able to reuse that name."
            )));
        }
        inner.by_name.remove(old);
        inner.by_name.insert(new.to_string(), id.to_string());
        Ok(())
    }

    /// Whether any container uses the image.
    pub fn uses_image(&self, image_id: &str) -> Vec<String> {
        self.lock()
            .by_id
            .values()
            .filter(|c| c.record().image_id == image_id)
            .map(|c| c.id.clone())
            .collect()
    }
}
