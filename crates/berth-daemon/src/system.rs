//! System-wide views: version, info, disk usage, container prune, and the one-at-a-time
//! rule every prune follows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use berth_api::filters::{Filters, labels_match};
use berth_api::models::{
    ContainerPruneResponse, ContainerSummary, ImageSummary, SystemInfo, SystemVersion,
    SystemVersionComponents, SystemVersionPlatform, Volume,
};

use crate::containers::Status;
use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

/// Facts about the host that `version` and `info` report.
fn uname() -> (String, String) {
    let u = nix::sys::utsname::uname().ok();
    let release = u
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let node = u
        .as_ref()
        .map(|u| u.nodename().to_string_lossy().into_owned())
        .unwrap_or_default();
    (release, node)
}

/// The host's architecture as Go and OCI name it.
pub(crate) fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

impl Daemon {
    /// `GET /version`.
    pub fn version(&self) -> SystemVersion {
        let (kernel, _) = uname();
        let details: HashMap<String, String> = HashMap::from([
            ("ApiVersion".into(), berth_api::API_VERSION.into()),
            ("MinAPIVersion".into(), berth_api::MIN_API_VERSION.into()),
            ("Os".into(), "linux".into()),
            ("Arch".into(), go_arch().into()),
            ("KernelVersion".into(), kernel.clone()),
            ("Experimental".into(), "false".into()),
        ]);
        SystemVersion {
            platform: Some(SystemVersionPlatform {
                name: "berth".into(),
            }),
            components: Some(vec![SystemVersionComponents {
                name: "Engine".into(),
                version: berth_api::ENGINE_VERSION.into(),
                details: Some(details),
            }]),
            version: Some(berth_api::ENGINE_VERSION.into()),
            api_version: Some(berth_api::API_VERSION.into()),
            min_api_version: Some(berth_api::MIN_API_VERSION.into()),
            git_commit: Some(option_env!("BERTH_GIT_COMMIT").unwrap_or("unknown").into()),
            go_version: Some(format!(
                "rust{}",
                option_env!("CARGO_PKG_RUST_VERSION").unwrap_or("")
            )),
            os: Some("linux".into()),
            arch: Some(go_arch().into()),
            kernel_version: Some(kernel),
            experimental: Some(false),
            build_time: Some(String::new()),
        }
    }

    /// `GET /info`.
    pub fn info(&self) -> ServiceResult<SystemInfo> {
        let (kernel, node) = uname();
        let mut by_state: HashMap<&str, i64> = HashMap::new();
        let containers = self.containers.all();
        for c in &containers {
            let key = match c.record().state.status {
                Status::Running | Status::Restarting => "running",
                Status::Paused => "paused",
                _ => "stopped",
            };
            *by_state.entry(key).or_default() += 1;
        }
        let images = self.store.list_images()?.len() as i64;
        let mem_total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<i64>().ok())
            })
            .map(|kb| kb * 1024)
            .unwrap_or_default();
        let os = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                    .map(|v| v.trim_matches('"').to_string())
            })
            .unwrap_or_else(|| "Linux".into());
        let cgroup_v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let mut runtimes: HashMap<String, berth_api::models::Runtime> = HashMap::from([(
            crate::config::BUILTIN_RUNTIME.to_string(),
            berth_api::models::Runtime {
                path: Some("berth-shim (youki libcontainer)".into()),
                ..Default::default()
            },
        )]);
        for (name, path) in &self.config.runtimes {
            runtimes.insert(
                name.clone(),
                berth_api::models::Runtime {
                    path: Some(path.display().to_string()),
                    ..Default::default()
                },
            );
        }
        let value = serde_json::json!({
            "ID": self.store_id(),
            "Containers": containers.len(),
            "ContainersRunning": by_state.get("running").copied().unwrap_or_default(),
            "ContainersPaused": by_state.get("paused").copied().unwrap_or_default(),
            "ContainersStopped": by_state.get("stopped").copied().unwrap_or_default(),
            "Images": images,
            "Driver": "overlayfs",
            "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"]],
            "DockerRootDir": self.config.data_root.display().to_string(),
            "Plugins": {"Volume": ["local"], "Network": ["host", "none"], "Log": ["json-file"]},
            "MemoryLimit": true, "SwapLimit": true, "CpuCfsPeriod": true, "CpuCfsQuota": true,
            "CPUShares": true, "CPUSet": true, "PidsLimit": true, "OomKillDisable": !cgroup_v2,
            "IPv4Forwarding": std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").map(|v| v.trim() == "1").unwrap_or(false),
            "Debug": false, "NFd": 0, "NGoroutines": 0,
            "SystemTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            "LoggingDriver": "json-file",
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": if cgroup_v2 { "2" } else { "1" },
            "NEventsListener": 0,
            "KernelVersion": kernel,
            "OperatingSystem": os,
            "OSVersion": "",
            "OSType": "linux",
            "Architecture": std::env::consts::ARCH,
            "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "MemTotal": mem_total,
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": {"IndexConfigs": {}, "InsecureRegistryCIDRs": ["127.0.0.0/8"], "Mirrors": []},
            "Name": node,
            "Labels": [],
            "ExperimentalBuild": false,
            "ServerVersion": berth_api::ENGINE_VERSION,
            "Runtimes": runtimes,
            "DefaultRuntime": self.config.default_runtime,
            "Swarm": {"LocalNodeState": "inactive", "NodeID": "", "NodeAddr": "", "ControlAvailable": false, "Error": "", "RemoteManagers": null},
            "LiveRestoreEnabled": true,
            "Isolation": "",
            "InitBinary": "berth-shim",
            "ContainerdCommit": {"ID": "none"},
            "RuncCommit": {"ID": "libcontainer-0.7.0"},
            "InitCommit": {"ID": "berth-shim"},
            "SecurityOptions": ["name=seccomp,profile=builtin"],
            "Warnings": [],
        });
        serde_json::from_value(value).map_err(|e| ServiceError::internal(format!("info: {e}")))
    }

    /// A stable identifier for this data root, shown as `ID` in info.
    fn store_id(&self) -> String {
        let path = self.config.data_root.join("engine-id");
        if let Ok(id) = std::fs::read_to_string(&path) {
            return id.trim().to_string();
        }
        let id = crate::containers::random_id();
        let _ = std::fs::write(&path, &id);
        id
    }

    /// `POST /containers/prune`: removes stopped containers.
    pub async fn prune_containers(
        &self,
        filters: &Filters,
    ) -> ServiceResult<ContainerPruneResponse> {
        let _running = self.prunes.begin(PruneKind::Containers)?;
        let until = crate::images::prune_until(filters, &["until", "label", "label!"])?;
        let mut deleted = Vec::new();
        let mut reclaimed = 0i64;
        for c in self.containers.all() {
            let (status, created, labels) = {
                let r = c.record();
                (
                    r.state.status,
                    r.created,
                    r.config.labels.clone().unwrap_or_default(),
                )
            };
            if status.is_active() || until.is_some_and(|u| created >= u) {
                continue;
            }
            if !labels_match(filters.get("label"), |k| labels.get(k).map(String::as_str)) {
                continue;
            }
            if filters.get("label!").iter().any(|l| {
                labels_match(std::slice::from_ref(l), |k| {
                    labels.get(k).map(String::as_str)
                })
            }) {
                continue;
            }
            let size = self.store.container_usage(&c.id).unwrap_or_default() as i64;
            if self.remove_container(&c.id, false, false).await.is_ok() {
                reclaimed += size;
                deleted.push(c.id.clone());
            }
        }
        Ok(ContainerPruneResponse {
            containers_deleted: (!deleted.is_empty()).then_some(deleted),
            space_reclaimed: Some(reclaimed),
        })
    }
}

/// What a prune removes. Each kind prunes once at a time: moby refuses a second prune while
/// one runs (`a prune operation is already running`), so two clients never race over the
/// same objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PruneKind {
    /// `POST /containers/prune`.
    Containers,
    /// `POST /images/prune`.
    Images,
    /// `POST /volumes/prune`.
    Volumes,
    /// `POST /networks/prune`.
    Networks,
    /// `POST /build/prune`.
    BuildCache,
}

/// Which prunes are running, one flag per [`PruneKind`].
#[derive(Debug, Default)]
pub(crate) struct PruneFlags([AtomicBool; 5]);

/// Marks a prune as running until dropped.
#[derive(Debug)]
pub(crate) struct PruneRunning<'a>(&'a AtomicBool);

impl Drop for PruneRunning<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl PruneFlags {
    /// Marks a prune of `kind` as running, or refuses with a conflict when one already is.
    pub(crate) fn begin(&self, kind: PruneKind) -> ServiceResult<PruneRunning<'_>> {
        let flag = &self.0[kind as usize];
        flag.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .map_err(|_| ServiceError::conflict("a prune operation is already running"))?;
        Ok(PruneRunning(flag))
    }
}

/// The kinds `GET /system/df` reports: every kind unless the request names some with `type=`
/// (API 1.42 and later), and only those are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsageKinds {
    /// Containers and their writable layers.
    pub containers: bool,
    /// Images, their shared sizes and the bytes of their layers.
    pub images: bool,
    /// Local volumes and their sizes.
    pub volumes: bool,
    /// Build cache entries.
    pub build_cache: bool,
}

impl DiskUsageKinds {
    /// Every kind.
    pub const ALL: DiskUsageKinds = DiskUsageKinds {
        containers: true,
        images: true,
        volumes: true,
        build_cache: true,
    };

    /// The kinds named by `type=` values (`container`, `image`, `volume`, `build-cache`).
    pub fn from_types(types: &[String]) -> ServiceResult<DiskUsageKinds> {
        let mut kinds = DiskUsageKinds {
            containers: false,
            images: false,
            volumes: false,
            build_cache: false,
        };
        for t in types {
            match t.as_str() {
                "container" => kinds.containers = true,
                "image" => kinds.images = true,
                "volume" => kinds.volumes = true,
                "build-cache" => kinds.build_cache = true,
                other => {
                    return Err(ServiceError::invalid(format!(
                        "unknown object type: {other}"
                    )));
                }
            }
        }
        Ok(kinds)
    }
}

/// What `GET /system/df` reports; kinds not asked for are `None`.
#[derive(Debug, Default)]
pub struct DiskUsage {
    /// Bytes of every distinct layer some image uses (0 when images were not asked for).
    pub layers_size: i64,
    /// Images with their container counts and shared sizes.
    pub images: Option<Vec<ImageSummary>>,
    /// Every container with the size of its writable layer.
    pub containers: Option<Vec<ContainerSummary>>,
    /// Local volumes with their usage data.
    pub volumes: Option<Vec<Volume>>,
    /// Build cache entries as `BuildCache` records.
    pub build_cache: Option<Vec<serde_json::Value>>,
}

impl Daemon {
    /// `GET /system/df`: the asked kinds of images, containers, volumes and build cache with
    /// their sizes.
    pub fn disk_usage(&self, kinds: DiskUsageKinds) -> ServiceResult<DiskUsage> {
        let mut usage = DiskUsage::default();
        if kinds.images {
            let (images, layers_size) = self.images_disk_usage()?;
            usage.images = Some(images);
            usage.layers_size = layers_size;
        }
        if kinds.containers {
            usage.containers = Some(self.list_containers(
                &crate::containers::summary::ListOptions {
                    all: true,
                    size: true,
                    ..Default::default()
                },
            )?);
        }
        if kinds.volumes {
            usage.volumes = Some(self.volumes_disk_usage()?);
        }
        if kinds.build_cache {
            usage.build_cache = Some(self.build_cache_usage()?);
        }
        Ok(usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn a_second_prune_of_a_kind_is_refused_until_the_first_ends() {
        let flags = PruneFlags::default();
        let running = flags.begin(PruneKind::Volumes).unwrap();
        let refused = flags.begin(PruneKind::Volumes).unwrap_err();
        assert_eq!(refused.kind, ErrorKind::Conflict);
        assert_eq!(refused.message, "a prune operation is already running");
        // Other kinds are independent.
        let images = flags.begin(PruneKind::Images).unwrap();
        drop(running);
        let again = flags.begin(PruneKind::Volumes).unwrap();
        assert!(flags.begin(PruneKind::Images).is_err());
        drop((again, images));
        for kind in [
            PruneKind::Containers,
            PruneKind::Images,
            PruneKind::Volumes,
            PruneKind::Networks,
            PruneKind::BuildCache,
        ] {
            let _running = flags.begin(kind).unwrap();
            assert!(flags.begin(kind).is_err(), "{kind:?}");
        }
    }

    #[test]
    fn df_types_select_kinds() {
        let kinds = |types: &[&str]| {
            DiskUsageKinds::from_types(&types.iter().map(|t| t.to_string()).collect::<Vec<_>>())
        };
        let only_images = kinds(&["image"]).unwrap();
        assert!(only_images.images && !only_images.containers);
        assert!(!only_images.volumes && !only_images.build_cache);
        assert_eq!(
            kinds(&["container", "image", "volume", "build-cache"]).unwrap(),
            DiskUsageKinds::ALL
        );
        assert_eq!(
            kinds(&["images"]).unwrap_err().message,
            "unknown object type: images"
        );
    }
}
