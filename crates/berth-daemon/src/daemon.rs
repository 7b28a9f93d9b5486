//! The `Daemon`: every service handle in one place, and startup.

use std::sync::{Arc, Weak};

use berth_store::Store;

use crate::config::Config;
use crate::containers::ContainerIndex;
use crate::events::EventBus;

/// The engine: the store, the containers, the event bus and the configuration.
#[derive(Debug)]
pub struct Daemon {
    /// Resolved configuration.
    pub config: Config,
    /// Images, snapshots and the metadata database.
    pub store: Arc<Store>,
    /// Containers by ID and name.
    pub containers: ContainerIndex,
    /// Events for `/events`.
    pub events: EventBus,
    /// Exec instances.
    pub execs: crate::exec::ExecTable,
    /// The cgroup containers are nested under.
    pub cgroup_parent: String,
    /// The static init binary mounted at /sbin/docker-init for `--init`.
    pub init_binary: std::path::PathBuf,
    /// Bridge networks and containers' endpoints.
    pub networks: crate::networks::Networks,
    /// Prometheus metrics, recording only when `--metrics-addr` is set.
    pub metrics: crate::metrics::Metrics,
    /// Serialises volume creation, removal and mounting against each other.
    pub(crate) volume_lock: std::sync::Mutex<()>,
    /// Digests of build context files, so unchanged contexts are not read again.
    pub(crate) context_digests: Arc<crate::build::ContextDigests>,
    /// Locks of `RUN --mount=type=cache,sharing=locked` mounts, by cache id.
    pub(crate) cache_mount_locks:
        std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// One running prune per kind: a second is refused with a conflict, as moby does.
    pub(crate) prunes: crate::system::PruneFlags,
    me: Weak<Daemon>,
}

impl Daemon {
    /// Opens the store, recovers containers and starts those their restart policy wants.
    pub async fn start(config: Config) -> anyhow::Result<Arc<Daemon>> {
        for dir in [&config.data_root, &config.exec_root] {
            std::fs::create_dir_all(dir)?;
        }
        let root = config.data_root.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&root)).await??;
        let cgroup_parent = berth_runtime::cgroups::daemon_cgroup_parent().unwrap_or_else(|e| {
            tracing::warn!(
                "cannot read the daemon's cgroup, nesting containers under the root: {e}"
            );
            "/".to_string()
        });
        let init_binary = berth_runtime::spec::install_init_binary(&config.exec_root)?;
        let store = Arc::new(store);
        let networks = crate::networks::Networks::open(&config, &store).await?;
        let metrics = crate::metrics::Metrics::new(config.metrics_addr.is_some());
        let daemon = Arc::new_cyclic(|me| Daemon {
            config,
            store,
            containers: ContainerIndex::default(),
            events: EventBus::default(),
            execs: Default::default(),
            cgroup_parent,
            init_binary,
            networks,
            metrics,
            volume_lock: Default::default(),
            context_digests: Default::default(),
            cache_mount_locks: Default::default(),
            prunes: Default::default(),
            me: me.clone(),
        });
        daemon.recover_containers().await?;
        daemon.restore_container_networks().await;
        daemon.restart_containers_at_startup().await;
        Ok(daemon)
    }

    /// A strong handle for background tasks.
    pub(crate) fn handle(&self) -> Arc<Daemon> {
        // The daemon is only ever reached through the Arc made in `start`, so while a method
        // runs on it that Arc is alive.
        self.me
            .upgrade()
            .expect("daemon handle used after the daemon was dropped")
    }
}
