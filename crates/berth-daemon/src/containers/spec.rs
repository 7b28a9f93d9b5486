//! The adapter from a container record to the runtime's narrow `RunConfig`: the one place
//! where Docker's host-config vocabulary becomes the runtime's.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_api::models::HostConfig;
use berth_runtime::client::ShimOptions;
use berth_runtime::protocol::RunArgs;
use berth_runtime::spec::{
    CapabilityConfig, MountSpec, NetworkNamespace, ProcessUser, Resources, RunConfig,
    SeccompConfig, Ulimit,
};

use super::{Container, ContainerRecord, Status, user};
use crate::config::BUILTIN_RUNTIME;
use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

/// Default CFS period used to turn `--cpus` into a quota.
const CPU_PERIOD: i64 = 100_000;

/// Everything needed to spawn a container's shim.
#[derive(Debug)]
pub(crate) struct PreparedRun {
    pub shim_options: ShimOptions,
}

/// What a `--network container:<owner>` container takes from its owner.
#[derive(Debug)]
struct SharedNetwork {
    /// The directory whose `hostname`, `hosts` and `resolv.conf` it mounts (the owner's, or
    /// that of the container the owner itself shares with).
    files_dir: PathBuf,
    /// The owner's network namespace.
    namespace: NetworkNamespace,
}

/// How many `container:` links are followed to the container that owns the namespace.
const MAX_SHARED_NETWORK_HOPS: usize = 16;

impl Daemon {
    /// `<data-root>/containers/<id>`: hostname, hosts, resolv.conf, the log, the rootfs mount.
    pub(crate) fn container_dir(&self, id: &str) -> PathBuf {
        self.config.data_root.join("containers").join(id)
    }

    /// `<exec-root>/shims/<id>`: the shim's sockets, bundle and exit file.
    pub(crate) fn shim_dir(&self, id: &str) -> PathBuf {
        self.config.exec_root.join("shims").join(id)
    }

    pub(crate) fn rootfs_dir(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("rootfs")
    }

    /// Where container cgroups go: `berth` under the daemon's own cgroup, so the machine's
    /// limits hold.
    pub(crate) fn containers_cgroup(&self) -> String {
        format!("{}/berth", self.cgroup_parent.trim_end_matches('/'))
    }

    /// The container's cgroup.
    pub(crate) fn cgroup_path(&self, id: &str) -> String {
        format!("{}/{id}", self.containers_cgroup())
    }

    /// The json-file log of a container.
    pub(crate) fn log_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join(format!("{id}-json.log"))
    }

    /// Mounts the rootfs and writes the bundle for a start.
    pub(crate) async fn prepare_run(
        &self,
        container: &Arc<Container>,
    ) -> ServiceResult<PreparedRun> {
        let shared = self.shared_network(container)?;
        let record = container.snapshot();
        let rootfs = self.rootfs_dir(&record.id);
        let store = self.store.clone();
        let id = record.id.clone();
        let target = rootfs.clone();
        let disposable = record.host_config.auto_remove.unwrap_or(false);
        tokio::task::spawn_blocking(move || -> ServiceResult<()> {
            std::fs::create_dir_all(&target)?;
            if is_mountpoint(&target) {
                return Ok(());
            }
            let mounts = store.container_mounts(&id)?;
            if !disposable {
                return Ok(berth_store::snapshot::mount_all(&mounts, &target)?);
            }
            // A container removed when it exits gets a `volatile` writable layer: unmounting
            // a normal overlay syncs the whole filesystem under its upper directory, a wait
            // (1–30 ms here, more on a busy disk) on the exit path of every `run --rm`, for
            // a layer about to be deleted. A kernel without the option gets the usual mount.
            let volatile: Vec<berth_store::Mount> = mounts
                .iter()
                .cloned()
                .map(berth_store::Mount::volatile)
                .collect();
            match berth_store::snapshot::mount_all(&volatile, &target) {
                Err(berth_store::StoreError::Mount {
                    source: nix::errno::Errno::EINVAL,
                    ..
                }) if volatile != mounts => berth_store::snapshot::mount_all(&mounts, &target)?,
                other => other?,
            }
            Ok(())
        })
        .await??;
        if let Err(e) = self.prepare_mounts(&record, &rootfs).await {
            self.unmount_rootfs(&record.id).await;
            return Err(e);
        }
        match self.build_run(&record, &rootfs, shared.as_ref()) {
            Ok(run) => Ok(run),
            Err(e) => {
                self.unmount_rootfs(&record.id).await;
                Err(e)
            }
        }
    }

    /// For `--network container:<owner>`: checks that the owner runs (moby's messages), takes
    /// its hostname and domain name into the record (as moby does at start), and returns
    /// the namespace and files to share.
    fn shared_network(&self, container: &Container) -> ServiceResult<Option<SharedNetwork>> {
        let mode = container
            .record()
            .host_config
            .network_mode
            .clone()
            .unwrap_or_default();
        let Some(reference) = mode.strip_prefix("container:") else {
            return Ok(None);
        };
        let owner = self.containers.get(reference).map_err(|e| {
            ServiceError::internal(format!(
                "joining network namespace of container: {}",
                e.message
            ))
        })?;
        if owner.id == container.id {
            return Err(ServiceError::internal("cannot join own network namespace"));
        }
        let direct = owner.snapshot();
        match direct.state.status {
            Status::Running | Status::Paused => {}
            Status::Restarting => {
                return Err(ServiceError::conflict(format!(
                    "cannot join network namespace of container: Container {reference} is restarting, wait until the container is running"
                )));
            }
            other => {
                return Err(ServiceError::conflict(format!(
                    "cannot join network namespace of a non running container: container {} is {}",
                    direct.name,
                    other.as_str()
                )));
            }
        }
        // The owner may share another container's namespace in turn: the files and pinned
        // namespace are those of the container at the end of the chain.
        let mut root = direct.clone();
        for _ in 0..MAX_SHARED_NETWORK_HOPS {
            let next = root
                .host_config
                .network_mode
                .as_deref()
                .and_then(|m| m.strip_prefix("container:"))
                .and_then(|r| self.containers.get(r).ok());
            match next {
                Some(next) => root = next.snapshot(),
                None => break,
            }
        }
        let namespace = if root.host_config.network_mode.as_deref() == Some("host") {
            NetworkNamespace::Host
        } else {
            match self.networks.container_netns(&root.id) {
                Some(path) => NetworkNamespace::Path(path),
                None => NetworkNamespace::Path(format!("/proc/{}/ns/net", direct.state.pid).into()),
            }
        };
        {
            let mut r = container.record();
            r.config.hostname = direct.config.hostname.clone();
            r.config.domainname = direct.config.domainname.clone();
        }
        Ok(Some(SharedNetwork {
            files_dir: self.container_dir(&root.id),
            namespace,
        }))
    }

    fn build_run(
        &self,
        record: &ContainerRecord,
        rootfs: &Path,
        shared: Option<&SharedNetwork>,
    ) -> ServiceResult<PreparedRun> {
        let dir = self.container_dir(&record.id);
        let host = &record.host_config;
        let config = &record.config;
        let network_mode = host.network_mode.as_deref().unwrap_or("bridge");
        let hostname = config.hostname.clone().unwrap_or_default();
        let files_dir = match shared {
            Some(shared) => shared.files_dir.clone(),
            None => {
                self.write_network_files(record, &dir)?;
                dir.clone()
            }
        };

        let user = user::resolve(rootfs, config.user.as_deref().unwrap_or(""))?;
        let cwd = config
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into());
        user::create_dir_in_root(rootfs, &cwd, user.uid, user.gid)?;
        let tty = config.tty.unwrap_or(false);
        let mut env = config.env.clone().unwrap_or_default();
        let has = |env: &[String], key: &str| env.iter().any(|e| e.split('=').next() == Some(key));
        if !has(&env, "HOSTNAME") {
            env.push(format!("HOSTNAME={hostname}"));
        }
        if !has(&env, "HOME") {
            env.push(format!(
                "HOME={}",
                if user.home.is_empty() {
                    "/"
                } else {
                    &user.home
                }
            ));
        }
        if tty && !has(&env, "TERM") {
            env.push("TERM=xterm".into());
        }

        let mut mounts = Vec::new();
        for (name, dest) in [
            ("hostname", "/etc/hostname"),
            ("hosts", "/etc/hosts"),
            ("resolv.conf", "/etc/resolv.conf"),
        ] {
            mounts.push(MountSpec {
                destination: dest.into(),
                kind: "bind".into(),
                source: files_dir.join(name).display().to_string(),
                options: vec!["rbind".into(), "rprivate".into()],
            });
        }
        // The container's own mounts replace the generated files they land on.
        let own_mounts = crate::volumes::mount_specs(&record.mounts, tmpfs_mounts(host));
        mounts.retain(|m| !own_mounts.iter().any(|o| o.destination == m.destination));
        mounts.extend(own_mounts);
        crate::volumes::order_mounts(&mut mounts);

        let security = parse_security_opts(host.security_opt.as_deref().unwrap_or_default())?;
        let run = RunConfig {
            id: record.id.clone(),
            rootfs: rootfs.to_path_buf(),
            readonly_rootfs: host.readonly_rootfs.unwrap_or(false),
            args: std::iter::once(record.path.clone())
                .chain(record.args.iter().cloned())
                .collect(),
            env,
            cwd,
            user: ProcessUser {
                uid: user.uid,
                gid: user.gid,
                additional_gids: user.additional_gids,
            },
            hostname,
            tty,
            open_stdin: config.open_stdin.unwrap_or(false),
            mounts,
            network: match (shared, network_mode) {
                (Some(shared), _) => shared.namespace.clone(),
                (None, "host") => NetworkNamespace::Host,
                (None, _) => match self.networks.container_netns(&record.id) {
                    Some(path) => NetworkNamespace::Path(path),
                    None => NetworkNamespace::New,
                },
            },
            capabilities: CapabilityConfig {
                add: host.cap_add.clone().unwrap_or_default(),
                drop: host.cap_drop.clone().unwrap_or_default(),
                privileged: host.privileged.unwrap_or(false),
            },
            no_new_privileges: security.no_new_privileges,
            seccomp: security.seccomp,
            resources: resources(host),
            ulimits: host
                .ulimits
                .iter()
                .flatten()
                .map(|u| Ulimit {
                    name: u.name.clone().unwrap_or_default(),
                    soft: u.soft.unwrap_or_default().max(0) as u64,
                    hard: u.hard.unwrap_or_default().max(0) as u64,
                })
                .collect(),
            cgroups_path: self.cgroup_path(&record.id),
            sysctls: host
                .sysctls
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            oom_score_adj: host.oom_score_adj.map(|v| v.clamp(-1000, 1000) as i32),
            masked_paths: None,
            readonly_paths: None,
            init_binary: Some(self.init_binary.clone()),
            init: host.init.unwrap_or(false),
        };
        let spec = berth_runtime::spec::generate(&run)?;
        let shim_dir = self.shim_dir(&record.id);
        let bundle = shim_dir.join("bundle");
        std::fs::create_dir_all(&bundle)?;
        berth_runtime::spec::write_bundle(&bundle, &spec)?;
        let log_opts = host
            .log_config
            .as_ref()
            .and_then(|l| l.config.clone())
            .unwrap_or_default();
        let runtime = match record.runtime.as_str() {
            BUILTIN_RUNTIME => None,
            name => Some(self.config.runtimes.get(name).cloned().ok_or_else(|| {
                ServiceError::invalid(format!("unknown or invalid runtime name: {name}"))
            })?),
        };
        Ok(PreparedRun {
            shim_options: ShimOptions {
                shim_binary: self.config.shim_binary.clone(),
                run: RunArgs {
                    id: record.id.clone(),
                    bundle,
                    state_dir: shim_dir,
                    log_path: self.log_path(&record.id),
                    log_max_size: log_opts
                        .get("max-size")
                        .map(|s| parse_size(s))
                        .transpose()?,
                    log_max_file: log_opts
                        .get("max-file")
                        .map(|s| {
                            s.parse::<u32>().map_err(|_| {
                                ServiceError::invalid(format!("invalid max-file: {s}"))
                            })
                        })
                        .transpose()?
                        .unwrap_or(1),
                    tty,
                    stdin: config.open_stdin.unwrap_or(false),
                    runtime,
                },
            },
        })
    }

    /// Unmounts a container's rootfs if mounted; errors are logged, never fatal.
    pub(crate) async fn unmount_rootfs(&self, id: &str) {
        let target = self.rootfs_dir(id);
        let result = tokio::task::spawn_blocking(move || {
            if is_mountpoint(&target) {
                berth_store::snapshot::unmount(&target)
            } else {
                Ok(())
            }
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(container = id, "cannot unmount rootfs: {e}"),
            Err(e) => tracing::warn!(container = id, "unmount task failed: {e}"),
        }
    }
}

/// Whether `path` is a mount point, from /proc/self/mountinfo.
pub(crate) fn is_mountpoint(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.display().to_string();
    info.lines()
        .any(|line| line.split(' ').nth(4) == Some(wanted.as_str()))
}

fn resources(host: &HostConfig) -> Resources {
    let nano = host.nano_cpus.unwrap_or(0);
    let (quota, period) = if nano > 0 {
        (Some(nano * CPU_PERIOD / 1_000_000_000), Some(CPU_PERIOD))
    } else {
        (
            host.cpu_quota.filter(|q| *q > 0),
            host.cpu_period.filter(|p| *p > 0),
        )
    };
    Resources {
        memory: host.memory.filter(|m| *m > 0),
        memory_swap: host.memory_swap.filter(|m| *m != 0),
        memory_reservation: host.memory_reservation.filter(|m| *m > 0),
        cpu_shares: host.cpu_shares.filter(|s| *s > 0).map(|s| s as u64),
        cpu_quota: quota,
        cpu_period: period.map(|p| p as u64),
        cpuset_cpus: host.cpuset_cpus.clone().filter(|s| !s.is_empty()),
        pids_limit: host.pids_limit.filter(|p| *p > 0),
    }
}

fn tmpfs_mounts(host: &HostConfig) -> Vec<MountSpec> {
    let mut out: Vec<MountSpec> = host
        .tmpfs
        .iter()
        .flatten()
        .map(|(dest, opts)| {
            let mut options = vec![
                "nosuid".to_string(),
                "nodev".to_string(),
                "noexec".to_string(),
            ];
            options.extend(
                opts.split(',')
                    .filter(|o| !o.is_empty())
                    .map(str::to_string),
            );
            MountSpec {
                destination: dest.clone(),
                kind: "tmpfs".into(),
                source: "tmpfs".into(),
                options,
            }
        })
        .collect();
    out.sort_by(|a, b| a.destination.cmp(&b.destination));
    out
}

/// What `--security-opt` asked for.
#[derive(Debug)]
struct SecurityOpts {
    no_new_privileges: bool,
    seccomp: SeccompConfig,
}

fn parse_security_opts(opts: &[String]) -> ServiceResult<SecurityOpts> {
    let mut out = SecurityOpts {
        no_new_privileges: false,
        seccomp: SeccompConfig::Default,
    };
    for opt in opts {
        let (key, value) = opt.split_once(['=', ':']).unwrap_or((opt.as_str(), ""));
        match key {
            "no-new-privileges" => {
                out.no_new_privileges = value.is_empty() || berth_api::query::parse_bool(value);
            }
            "seccomp" => {
                out.seccomp = match value {
                    "unconfined" => SeccompConfig::Unconfined,
                    "" => return Err(ServiceError::invalid("seccomp option needs a profile")),
                    // The docker CLI reads the profile file and sends its JSON text.
                    json => SeccompConfig::Profile(json.to_string()),
                };
            }
            "label" | "apparmor" => {}
            other => {
                return Err(ServiceError::invalid(format!(
                    "Invalid --security-opt: {other:?}"
                )));
            }
        }
    }
    Ok(out)
}

/// Parses `10m`, `1g`, `512k`, `100` (bytes) like docker's log options.
fn parse_size(text: &str) -> ServiceResult<u64> {
    let t = text.trim().to_ascii_lowercase();
    let digits: String = t
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let unit = t[digits.len()..].trim_end_matches('b');
    let n: f64 = digits
        .parse()
        .map_err(|_| ServiceError::invalid(format!("invalid size: '{text}'")))?;
    let mult = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(ServiceError::invalid(format!("invalid size: '{text}'"))),
    };
    Ok((n * mult) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_opts_parse() {
        let o = parse_security_opts(&["no-new-privileges".into(), "seccomp=unconfined".into()])
            .unwrap();
        assert!(o.no_new_privileges);
        assert!(matches!(o.seccomp, SeccompConfig::Unconfined));
        let o = parse_security_opts(&["no-new-privileges:false".into()]).unwrap();
        assert!(!o.no_new_privileges);
        assert!(parse_security_opts(&["bogus".into()]).is_err());
    }

    #[test]
    fn sizes_and_cpus() {
        assert_eq!(parse_size("10m").unwrap(), 10 * 1024 * 1024);
        assert_eq!(parse_size("512k").unwrap(), 512 * 1024);
        assert!(parse_size("ten").is_err());
        let host = HostConfig {
            nano_cpus: Some(1_500_000_000),
            ..Default::default()
        };
        let r = resources(&host);
        assert_eq!((r.cpu_quota, r.cpu_period), (Some(150_000), Some(100_000)));
    }
}
