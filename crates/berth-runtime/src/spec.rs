//! OCI runtime spec generation from a narrow [`RunConfig`], producing what Docker produces.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde_json::{Value, json};

use crate::error::{Result, RuntimeError};
use crate::seccomp;

/// Where the init binary is mounted inside the container, like Docker's tini.
pub const INIT_PATH_IN_CONTAINER: &str = "/sbin/docker-init";

/// Where [`generate`] installs the init binary when [`RunConfig::init_binary`] is not set.
pub const DEFAULT_INIT_DIR: &str = "/run/berth";

/// The static `berth-init` binary (built by build.rs from src/init/berth-init.rs).
const INIT_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth-init"));

/// PATH added when the configuration has none (Docker does the same).
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// nofile limit Docker containers get by default (before clamping to the hard limit).
const DEFAULT_NOFILE: u64 = 1_048_576;

/// Everything needed to run one container process.
#[derive(Debug, Clone, Default)]
pub struct RunConfig {
    /// Container id.
    pub id: String,
    /// Already-mounted root filesystem.
    pub rootfs: PathBuf,
    /// Mount the root filesystem read-only.
    pub readonly_rootfs: bool,
    /// Process arguments; `args[0]` is the executable.
    pub args: Vec<String>,
    /// `KEY=value` environment.
    pub env: Vec<String>,
    /// Working directory inside the container (empty = `/`).
    pub cwd: String,
    /// Process user.
    pub user: ProcessUser,
    /// Container hostname.
    pub hostname: String,
    /// Allocate a pseudo terminal.
    pub tty: bool,
    /// Keep stdin open.
    pub open_stdin: bool,
    /// Extra mounts (binds, volumes, tmpfs).
    pub mounts: Vec<MountSpec>,
    /// Network namespace to use.
    pub network: NetworkNamespace,
    /// Capability changes.
    pub capabilities: CapabilityConfig,
    /// Set the process's no_new_privs bit.
    pub no_new_privileges: bool,
    /// Seccomp profile.
    pub seccomp: SeccompConfig,
    /// Resource limits.
    pub resources: Resources,
    /// `--ulimit` values.
    pub ulimits: Vec<Ulimit>,
    /// Absolute cgroupfs path for the container (e.g. `/<parent>/berth/<id>`).
    pub cgroups_path: String,
    /// Namespaced sysctls.
    pub sysctls: BTreeMap<String, String>,
    /// OOM score adjustment of the process.
    pub oom_score_adj: Option<i32>,
    /// Masked paths; `None` = Docker's defaults (none when privileged).
    pub masked_paths: Option<Vec<String>>,
    /// Read-only paths; `None` = Docker's defaults (none when privileged).
    pub readonly_paths: Option<Vec<String>>,
    /// Run the process under a tiny init (`--init`).
    pub init: bool,
    /// Host path of the static init binary (see [`install_init_binary`]); `None` = install
    /// it into [`DEFAULT_INIT_DIR`] when `init` is set.
    pub init_binary: Option<PathBuf>,
}

/// The user a container process runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessUser {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary group ids.
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

/// One mount added to the container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountSpec {
    /// Path inside the container.
    pub destination: String,
    /// Mount type: `bind`, `tmpfs`, ...
    pub kind: String,
    /// Host path or filesystem source.
    pub source: String,
    /// Mount options (`rbind`, `ro`, `size=...`).
    pub options: Vec<String>,
}

/// Which network namespace the container gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NetworkNamespace {
    /// A new, empty namespace.
    #[default]
    New,
    /// The host's namespace (no net namespace in the spec).
    Host,
    /// Join the namespace at this path (e.g. `/run/netns/x` or `/proc/<pid>/ns/net`).
    Path(PathBuf),
}

/// `--cap-add`, `--cap-drop`, `--privileged`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapabilityConfig {
    /// Capabilities to add (`ALL`, with or without `CAP_`, any case).
    pub add: Vec<String>,
    /// Capabilities to drop.
    pub drop: Vec<String>,
    /// Privileged container: every capability the host allows, no seccomp, all devices.
    pub privileged: bool,
}

/// Seccomp profile choice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SeccompConfig {
    /// Docker's default profile.
    #[default]
    Default,
    /// No seccomp filter.
    Unconfined,
    /// A profile in Docker's JSON format.
    Profile(String),
}

/// Cgroup resource limits (values as Docker passes them to the runtime).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// Memory + swap limit in bytes; -1 = unlimited swap.
    pub memory_swap: Option<i64>,
    /// Soft memory limit in bytes.
    pub memory_reservation: Option<i64>,
    /// CPU shares (relative weight).
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds.
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds.
    pub cpu_period: Option<u64>,
    /// CPUs the container may use (`0-2,4`).
    pub cpuset_cpus: Option<String>,
    /// Maximum number of pids; 0 or negative = unlimited.
    pub pids_limit: Option<i64>,
}

/// One `--ulimit name=soft:hard`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    /// Name as Docker spells it (`nofile`, `nproc`, ...).
    pub name: String,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// Docker's default capability set.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability Linux knows, indexed by its number.
const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Docker's default masked paths.
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's default read-only paths.
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Host facts the spec depends on; injectable so unit tests do not depend on the machine.
#[derive(Debug, Clone)]
pub struct HostInfo {
    /// Capability bounding set of this process (bit n = capability n).
    pub bounding_set: u64,
    /// Current hard limit per rlimit resource name (`RLIMIT_NOFILE`, ...).
    pub hard_limits: BTreeMap<&'static str, u64>,
    /// The kernel supports cgroup namespaces.
    pub cgroup_namespace: bool,
    /// The memory cgroup supports swap limits.
    pub swap_limit: bool,
    /// Kernel version (major, minor) for seccomp `minKernel`.
    pub kernel: (u32, u32),
}

/// Docker `--ulimit` names and their rlimit types.
const RLIMITS: &[(&str, &str, libc::__rlimit_resource_t)] = &[
    ("core", "RLIMIT_CORE", libc::RLIMIT_CORE),
    ("cpu", "RLIMIT_CPU", libc::RLIMIT_CPU),
    ("data", "RLIMIT_DATA", libc::RLIMIT_DATA),
    ("fsize", "RLIMIT_FSIZE", libc::RLIMIT_FSIZE),
    ("locks", "RLIMIT_LOCKS", libc::RLIMIT_LOCKS),
    ("memlock", "RLIMIT_MEMLOCK", libc::RLIMIT_MEMLOCK),
    ("msgqueue", "RLIMIT_MSGQUEUE", libc::RLIMIT_MSGQUEUE),
    ("nice", "RLIMIT_NICE", libc::RLIMIT_NICE),
    ("nofile", "RLIMIT_NOFILE", libc::RLIMIT_NOFILE),
    ("nproc", "RLIMIT_NPROC", libc::RLIMIT_NPROC),
    ("rss", "RLIMIT_RSS", libc::RLIMIT_RSS),
    ("rtprio", "RLIMIT_RTPRIO", libc::RLIMIT_RTPRIO),
    ("rttime", "RLIMIT_RTTIME", libc::RLIMIT_RTTIME),
    ("sigpending", "RLIMIT_SIGPENDING", libc::RLIMIT_SIGPENDING),
    ("stack", "RLIMIT_STACK", libc::RLIMIT_STACK),
    ("as", "RLIMIT_AS", libc::RLIMIT_AS),
];

/// Capability bounding set of this process (bit n = capability n); all bits if unknown.
pub(crate) fn own_bounding_set() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

impl HostInfo {
    /// Reads the facts from this process and the kernel.
    pub fn detect() -> Self {
        let bounding_set = own_bounding_set();
        let mut hard_limits = BTreeMap::new();
        for &(_, oci_name, resource) in RLIMITS {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit only writes into the rlimit struct we pass.
            if unsafe { libc::getrlimit(resource, &mut lim) } == 0 {
                hard_limits.insert(oci_name, lim.rlim_max);
            }
        }
        let swap_limit = Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
            || Path::new("/sys/fs/cgroup/memory.swap.max").exists()
            || !Path::new("/sys/fs/cgroup/memory").exists();
        HostInfo {
            bounding_set,
            hard_limits,
            cgroup_namespace: Path::new("/proc/self/ns/cgroup").exists(),
            swap_limit,
            kernel: kernel_version(),
        }
    }
}

fn kernel_version() -> (u32, u32) {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor)
}

/// Generates the OCI spec for `cfg` on this host.
pub fn generate(cfg: &RunConfig) -> Result<Spec> {
    generate_for_host(cfg, &HostInfo::detect())
}

/// Writes `spec` as `config.json` into the bundle directory `dir` (created if missing),
/// with its seccomp filter precompiled beside it ([`crate::bpf`]).
pub fn write_bundle(dir: &Path, spec: &Spec) -> Result<()> {
    fs::create_dir_all(dir)
        .map_err(|e| RuntimeError::io(format!("create bundle dir {}", dir.display()), e))?;
    let path = dir.join("config.json");
    let data = serde_json::to_vec_pretty(spec)
        .map_err(|e| RuntimeError::InvalidConfig(format!("serialize spec: {e}")))?;
    fs::write(&path, data).map_err(|e| RuntimeError::io(format!("write {}", path.display()), e))?;
    crate::bpf::write_program(
        dir,
        spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()),
    )
}

/// Normalises a capability name: upper case with the `CAP_` prefix; `ALL` stays `ALL`.
pub fn normalize_capability(name: &str) -> Result<String> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if ALL_CAPABILITIES.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(RuntimeError::InvalidConfig(format!(
            "unknown capability: \"{name}\""
        )))
    }
}

/// Computes the capability set of a container the way Docker does, clamped to `bounding_set`.
pub fn capability_set(caps: &CapabilityConfig, bounding_set: u64) -> Result<Vec<String>> {
    let allowed = |name: &str| {
        ALL_CAPABILITIES
            .iter()
            .position(|c| *c == name)
            .is_some_and(|bit| bit < 64 && bounding_set & (1u64 << bit) != 0)
    };
    let all: BTreeSet<String> = ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    if caps.privileged {
        return Ok(ALL_CAPABILITIES
            .iter()
            .filter(|c| allowed(c))
            .map(|c| c.to_string())
            .collect());
    }
    let add = caps
        .add
        .iter()
        .map(|c| normalize_capability(c))
        .collect::<Result<Vec<_>>>()?;
    let drop = caps
        .drop
        .iter()
        .map(|c| normalize_capability(c))
        .collect::<Result<Vec<_>>>()?;
    let add_all = add.iter().any(|c| c == "ALL");
    let drop_all = drop.iter().any(|c| c == "ALL");
    let mut set: BTreeSet<String> = if add_all {
        all
    } else if drop_all {
        BTreeSet::new()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    };
    for cap in drop.iter().filter(|c| *c != "ALL") {
        set.remove(cap);
    }
    if !add_all {
        set.extend(add);
    }
    // Keep Linux's numbering order: it reads better in config.json and is deterministic.
    Ok(ALL_CAPABILITIES
        .iter()
        .filter(|c| set.contains(**c) && allowed(c))
        .map(|c| c.to_string())
        .collect())
}

/// Translates ulimits to OCI rlimits, clamping every hard limit to the current one
/// (root here lacks CAP_SYS_RESOURCE and cannot raise hard limits).
pub fn rlimits(ulimits: &[Ulimit], host: &HostInfo) -> Result<Vec<Value>> {
    let mut out: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    let clamp = |oci: &'static str, soft: u64, hard: u64| {
        let max = host.hard_limits.get(oci).copied().unwrap_or(u64::MAX);
        let hard = hard.min(max);
        (soft.min(hard), hard)
    };
    out.insert(
        "RLIMIT_NOFILE",
        clamp("RLIMIT_NOFILE", DEFAULT_NOFILE, DEFAULT_NOFILE),
    );
    for u in ulimits {
        let (_, oci, _) = RLIMITS
            .iter()
            .find(|(name, _, _)| name.eq_ignore_ascii_case(&u.name))
            .ok_or_else(|| {
                RuntimeError::InvalidConfig(format!("invalid ulimit type: {}", u.name))
            })?;
        if u.soft > u.hard {
            return Err(RuntimeError::InvalidConfig(format!(
                "ulimit soft limit must be less than or equal to hard limit: {} > {}",
                u.soft, u.hard
            )));
        }
        let clamped = clamp(oci, u.soft, u.hard);
        if clamped != (u.soft, u.hard) {
            tracing::warn!(ulimit = %u.name, soft = u.soft, hard = u.hard, "clamping ulimit to current hard limit {}", clamped.1);
        }
        out.insert(oci, clamped);
    }
    Ok(out
        .into_iter()
        .map(|(typ, (soft, hard))| json!({"type": typ, "soft": soft, "hard": hard}))
        .collect())
}

fn default_mounts(privileged: bool) -> Vec<Value> {
    let sys_mode = if privileged { "rw" } else { "ro" };
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", sys_mode]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", sys_mode]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]}),
    ]
}

/// (path, type, major, minor) of the devices every container gets.
const DEFAULT_DEVICES: &[(&str, &str, i64, i64)] = &[
    ("/dev/null", "c", 1, 3),
    ("/dev/zero", "c", 1, 5),
    ("/dev/full", "c", 1, 7),
    ("/dev/random", "c", 1, 8),
    ("/dev/urandom", "c", 1, 9),
    ("/dev/tty", "c", 5, 0),
];

fn device_cgroup_rules(privileged: bool) -> Vec<Value> {
    if privileged {
        return vec![json!({"allow": true, "access": "rwm"})];
    }
    let mut rules = vec![json!({"allow": false, "access": "rwm"})];
    // runc's default allow list, which Docker relies on.
    let allowed: &[(&str, Option<i64>, Option<i64>, &str)] = &[
        ("c", None, None, "m"),
        ("b", None, None, "m"),
        ("c", Some(1), Some(3), "rwm"),
        ("c", Some(1), Some(5), "rwm"),
        ("c", Some(1), Some(7), "rwm"),
        ("c", Some(1), Some(8), "rwm"),
        ("c", Some(1), Some(9), "rwm"),
        ("c", Some(5), Some(0), "rwm"),
        ("c", Some(5), Some(1), "rwm"),
        ("c", Some(5), Some(2), "rwm"),
        ("c", Some(136), None, "rwm"),
        ("c", Some(10), Some(200), "rwm"),
    ];
    for (typ, major, minor, access) in allowed {
        let mut rule = json!({"allow": true, "type": typ, "access": access});
        if let Some(m) = major {
            rule["major"] = json!(m);
        }
        if let Some(m) = minor {
            rule["minor"] = json!(m);
        }
        rules.push(rule);
    }
    rules
}

/// Lists the host's device nodes for privileged containers (like Docker's HostDevices).
fn host_devices() -> Vec<Value> {
    fn walk(dir: &Path, out: &mut Vec<Value>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                let name = entry.file_name();
                if !matches!(
                    name.to_str(),
                    Some("pts" | "shm" | "mqueue" | ".lxc" | ".udev")
                ) {
                    walk(&path, out);
                }
                continue;
            }
            let typ = if ft.is_char_device() {
                "c"
            } else if ft.is_block_device() {
                "b"
            } else {
                continue;
            };
            if path == Path::new("/dev/console") {
                continue;
            }
            let rdev = meta.rdev();
            out.push(json!({
                "path": path.to_string_lossy(), "type": typ,
                "major": libc::major(rdev), "minor": libc::minor(rdev),
                "fileMode": meta.mode() & 0o7777, "uid": meta.uid(), "gid": meta.gid(),
            }));
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/dev"), &mut out);
    out
}

fn resources_json(cfg: &RunConfig, host: &HostInfo) -> Value {
    let r = &cfg.resources;
    let mut res = json!({"devices": device_cgroup_rules(cfg.capabilities.privileged)});
    let mut memory = serde_json::Map::new();
    if let Some(limit) = r.memory.filter(|m| *m > 0) {
        memory.insert("limit".into(), json!(limit));
        if host.swap_limit {
            match r.memory_swap {
                Some(swap) if swap != 0 => {
                    memory.insert("swap".into(), json!(swap));
                }
                // Docker's default: as much swap as memory.
                _ => {
                    memory.insert("swap".into(), json!(limit.saturating_mul(2)));
                }
            }
        }
    }
    if let Some(res_bytes) = r.memory_reservation.filter(|m| *m > 0) {
        memory.insert("reservation".into(), json!(res_bytes));
    }
    if !memory.is_empty() {
        res["memory"] = Value::Object(memory);
    }
    let mut cpu = serde_json::Map::new();
    if let Some(shares) = r.cpu_shares.filter(|s| *s > 0) {
        cpu.insert("shares".into(), json!(shares));
    }
    if let Some(quota) = r.cpu_quota.filter(|q| *q != 0) {
        cpu.insert("quota".into(), json!(quota));
    }
    if let Some(period) = r.cpu_period.filter(|p| *p > 0) {
        cpu.insert("period".into(), json!(period));
    }
    if let Some(cpus) = r.cpuset_cpus.as_ref().filter(|c| !c.is_empty()) {
        cpu.insert("cpus".into(), json!(cpus));
    }
    if !cpu.is_empty() {
        res["cpu"] = Value::Object(cpu);
    }
    if let Some(pids) = r.pids_limit.filter(|p| *p != 0) {
        res["pids"] = json!({"limit": if pids < 0 { -1 } else { pids }});
    }
    res
}

/// Writes the embedded static `berth-init` binary to `<dir>/berth-init` (only when missing
/// or different) and returns its path, for [`RunConfig::init_binary`].
pub fn install_init_binary(dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("berth-init");
    if fs::read(&path).is_ok_and(|b| b == INIT_BINARY) {
        return Ok(path);
    }
    fs::create_dir_all(dir)
        .map_err(|e| RuntimeError::io(format!("create {}", dir.display()), e))?;
    let tmp = dir.join(format!(".berth-init.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        fs::write(&tmp, INIT_BINARY)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
        fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        RuntimeError::io(format!("install init binary {}", path.display()), e)
    })?;
    Ok(path)
}

/// Generates the spec for `cfg` given explicit host facts.
pub fn generate_for_host(cfg: &RunConfig, host: &HostInfo) -> Result<Spec> {
    if cfg.args.is_empty() {
        return Err(RuntimeError::InvalidConfig(format!(
            "container {}: no command specified",
            cfg.id
        )));
    }
    let privileged = cfg.capabilities.privileged;
    let caps = capability_set(&cfg.capabilities, host.bounding_set)?;

    let mut env = cfg.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH_ENV.to_string());
    }
    let mut args = cfg.args.clone();
    let mut mounts = default_mounts(privileged);
    if cfg.init {
        let init = match &cfg.init_binary {
            Some(p) => p.clone(),
            None => install_init_binary(Path::new(DEFAULT_INIT_DIR))?,
        };
        mounts.push(
            json!({"destination": INIT_PATH_IN_CONTAINER, "type": "bind",
            "source": init.to_string_lossy(), "options": ["rbind", "ro"]}),
        );
        let mut with_init = vec![INIT_PATH_IN_CONTAINER.to_string(), "--".into()];
        with_init.append(&mut args);
        args = with_init;
    }
    for m in &cfg.mounts {
        // A user mount replaces a default mount on the same destination, like Docker.
        mounts.retain(|d| d["destination"] != json!(m.destination));
        mounts.push(json!({"destination": m.destination, "type": m.kind,
            "source": m.source, "options": m.options}));
    }

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    match &cfg.network {
        NetworkNamespace::New => namespaces.push(json!({"type": "network"})),
        NetworkNamespace::Host => {}
        NetworkNamespace::Path(p) => {
            namespaces.push(json!({"type": "network", "path": p.to_string_lossy()}))
        }
    }
    if host.cgroup_namespace {
        namespaces.push(json!({"type": "cgroup"}));
    }

    let mut process = json!({
        "terminal": cfg.tty,
        "user": {"uid": cfg.user.uid, "gid": cfg.user.gid},
        "args": args,
        "env": env,
        "cwd": if cfg.cwd.is_empty() { "/" } else { cfg.cwd.as_str() },
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": rlimits(&cfg.ulimits, host)?,
    });
    // Only emitted when set: libcontainer treats an explicit `false` like `true` when
    // ordering the seccomp load, and then fails to load it after dropping CAP_SYS_ADMIN.
    if cfg.no_new_privileges {
        process["noNewPrivileges"] = json!(true);
    }
    if !cfg.user.additional_gids.is_empty() {
        process["user"]["additionalGids"] = json!(cfg.user.additional_gids);
    }
    if let Some(adj) = cfg.oom_score_adj {
        process["oomScoreAdj"] = json!(adj);
    }

    let devices: Vec<Value> = if privileged {
        host_devices()
    } else {
        DEFAULT_DEVICES
            .iter()
            .map(|(path, typ, major, minor)| {
                json!({"path": path, "type": typ, "major": major, "minor": minor,
                       "fileMode": 0o666, "uid": 0, "gid": 0})
            })
            .collect()
    };
    let mut linux = json!({
        "namespaces": namespaces,
        "devices": devices,
        "resources": resources_json(cfg, host),
        "cgroupsPath": cfg.cgroups_path,
        "sysctl": cfg.sysctls,
    });
    if !privileged {
        let masked = cfg
            .masked_paths
            .clone()
            .unwrap_or_else(|| DEFAULT_MASKED_PATHS.iter().map(|p| p.to_string()).collect());
        let readonly = cfg.readonly_paths.clone().unwrap_or_else(|| {
            DEFAULT_READONLY_PATHS
                .iter()
                .map(|p| p.to_string())
                .collect()
        });
        linux["maskedPaths"] = json!(masked);
        linux["readonlyPaths"] = json!(readonly);
        let profile = match &cfg.seccomp {
            SeccompConfig::Default => Some(seccomp::DEFAULT_PROFILE),
            SeccompConfig::Unconfined => None,
            SeccompConfig::Profile(p) => Some(p.as_str()),
        };
        if let Some(profile) = profile {
            let translated =
                seccomp::translate_cached(profile, &caps, &seccomp::HostArch::detect(host.kernel))?;
            linux["seccomp"] = serde_json::to_value(translated)
                .map_err(|e| RuntimeError::InvalidConfig(format!("seccomp profile: {e}")))?;
        }
    } else {
        if let Some(masked) = &cfg.masked_paths {
            linux["maskedPaths"] = json!(masked);
        }
        if let Some(readonly) = &cfg.readonly_paths {
            linux["readonlyPaths"] = json!(readonly);
        }
    }

    let spec = json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": cfg.rootfs.to_string_lossy(), "readonly": cfg.readonly_rootfs},
        "hostname": cfg.hostname,
        "mounts": mounts,
        "linux": linux,
    });
    serde_json::from_value(spec)
        .map_err(|e| RuntimeError::InvalidConfig(format!("container {}: build spec: {e}", cfg.id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxNamespaceType;

    fn host() -> HostInfo {
        let mut hard_limits = BTreeMap::new();
        hard_limits.insert("RLIMIT_NOFILE", 20000);
        hard_limits.insert("RLIMIT_NPROC", 96364);
        HostInfo {
            // everything but CAP_SYS_RESOURCE (24), like the test machine
            bounding_set: 0x1fffeffffff,
            hard_limits,
            cgroup_namespace: true,
            swap_limit: true,
            kernel: (6, 1),
        }
    }

    fn cfg() -> RunConfig {
        RunConfig {
            id: "c1".into(),
            rootfs: "/tmp/rootfs".into(),
            args: vec!["sh".into()],
            cgroups_path: "/berth/c1".into(),
            ..Default::default()
        }
    }

    fn caps_of(spec: &Spec) -> Vec<String> {
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        let mut v: Vec<String> = caps
            .bounding()
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| format!("CAP_{c}"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn default_capabilities() {
        let spec = generate_for_host(&cfg(), &host()).unwrap();
        let mut want: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(caps_of(&spec), want);
    }

    #[test]
    fn cap_add_drop_with_and_without_prefix() {
        let caps = CapabilityConfig {
            add: vec!["net_admin".into(), "CAP_SYS_PTRACE".into()],
            drop: vec!["chown".into(), "Cap_Kill".into()],
            privileged: false,
        };
        let set = capability_set(&caps, u64::MAX).unwrap();
        assert!(set.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(set.contains(&"CAP_SYS_PTRACE".to_string()));
        assert!(!set.contains(&"CAP_CHOWN".to_string()));
        assert!(!set.contains(&"CAP_KILL".to_string()));
        assert_eq!(set.len(), DEFAULT_CAPABILITIES.len());
    }

    #[test]
    fn cap_drop_all_then_add() {
        let caps = CapabilityConfig {
            add: vec!["chown".into()],
            drop: vec!["all".into()],
            privileged: false,
        };
        assert_eq!(capability_set(&caps, u64::MAX).unwrap(), vec!["CAP_CHOWN"]);
    }

    #[test]
    fn cap_add_all_then_drop_is_clamped() {
        let caps = CapabilityConfig {
            add: vec!["ALL".into()],
            drop: vec!["sys_admin".into()],
            privileged: false,
        };
        let set = capability_set(&caps, host().bounding_set).unwrap();
        assert!(!set.contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(!set.contains(&"CAP_SYS_RESOURCE".to_string()));
        assert_eq!(set.len(), ALL_CAPABILITIES.len() - 2);
    }

    #[test]
    fn unknown_capability_is_an_error() {
        let caps = CapabilityConfig {
            add: vec!["FLY".into()],
            ..Default::default()
        };
        let err = capability_set(&caps, u64::MAX).unwrap_err();
        assert!(err.to_string().contains("FLY"), "{err}");
    }

    #[test]
    fn privileged_clamps_to_bounding_set_and_drops_confinement() {
        let mut c = cfg();
        c.capabilities.privileged = true;
        let spec = generate_for_host(&c, &host()).unwrap();
        let caps = caps_of(&spec);
        assert!(caps.contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_SYS_RESOURCE".to_string()));
        assert_eq!(caps.len(), ALL_CAPABILITIES.len() - 1);
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none());
        assert!(linux.masked_paths().is_none());
        let devs = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .as_ref()
            .unwrap();
        assert_eq!(devs.len(), 1);
        assert!(devs[0].allow());
    }

    #[test]
    fn unprivileged_has_masks_seccomp_and_namespaces() {
        let spec = generate_for_host(&cfg(), &host()).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert!(
            linux
                .masked_paths()
                .as_ref()
                .unwrap()
                .contains(&"/proc/kcore".to_string())
        );
        assert!(
            linux
                .readonly_paths()
                .as_ref()
                .unwrap()
                .contains(&"/proc/sys".to_string())
        );
        assert!(linux.seccomp().is_some());
        let ns: Vec<String> = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ().to_string())
            .collect();
        for want in ["pid", "ipc", "uts", "mnt", "net", "cgroup"] {
            assert!(ns.iter().any(|n| n == want), "missing {want} in {ns:?}");
        }
        assert_eq!(
            linux.cgroups_path().as_ref().unwrap(),
            Path::new("/berth/c1")
        );
        let env = spec.process().as_ref().unwrap().env().as_ref().unwrap();
        assert!(env.iter().any(|e| e.starts_with("PATH=")));
    }

    #[test]
    fn host_network_has_no_net_namespace() {
        let mut c = cfg();
        c.network = NetworkNamespace::Host;
        let spec = generate_for_host(&c, &host()).unwrap();
        let ns = spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap();
        assert!(!ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network));
        c.network = NetworkNamespace::Path("/run/netns/x".into());
        let spec = generate_for_host(&c, &host()).unwrap();
        let ns = spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap();
        let net = ns
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Network)
            .unwrap();
        assert_eq!(net.path().as_deref(), Some(Path::new("/run/netns/x")));
    }

    #[test]
    fn rlimits_are_clamped_to_hard_limits() {
        let limits = rlimits(
            &[
                Ulimit {
                    name: "nproc".into(),
                    soft: 1000,
                    hard: 200_000,
                },
                Ulimit {
                    name: "core".into(),
                    soft: 0,
                    hard: 0,
                },
            ],
            &host(),
        )
        .unwrap();
        let find = |t: &str| limits.iter().find(|l| l["type"] == t).unwrap().clone();
        assert_eq!(
            find("RLIMIT_NOFILE"),
            json!({"type": "RLIMIT_NOFILE", "soft": 20000, "hard": 20000})
        );
        assert_eq!(
            find("RLIMIT_NPROC"),
            json!({"type": "RLIMIT_NPROC", "soft": 1000, "hard": 96364})
        );
        assert_eq!(find("RLIMIT_CORE")["hard"], 0);
        assert!(
            rlimits(
                &[Ulimit {
                    name: "bogus".into(),
                    soft: 1,
                    hard: 1
                }],
                &host()
            )
            .is_err()
        );
        assert!(
            rlimits(
                &[Ulimit {
                    name: "nofile".into(),
                    soft: 5,
                    hard: 1
                }],
                &host()
            )
            .is_err()
        );
    }

    #[test]
    fn resources_cpu_memory_pids() {
        let mut c = cfg();
        c.resources = Resources {
            memory: Some(64 << 20),
            memory_swap: Some(-1),
            cpu_quota: Some(150_000),
            cpu_period: Some(100_000),
            cpu_shares: Some(512),
            cpuset_cpus: Some("0".into()),
            pids_limit: Some(50),
            ..Default::default()
        };
        let spec = generate_for_host(&c, &host()).unwrap();
        let res = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        let mem = res.memory().as_ref().unwrap();
        assert_eq!(mem.limit(), Some(64 << 20));
        assert_eq!(mem.swap(), Some(-1));
        let cpu = res.cpu().as_ref().unwrap();
        assert_eq!(cpu.quota(), Some(150_000));
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(cpu.cpus().as_deref(), Some("0"));
        assert_eq!(res.pids().as_ref().unwrap().limit(), 50);

        c.resources = Resources {
            memory: Some(100),
            ..Default::default()
        };
        let spec = generate_for_host(&c, &host()).unwrap();
        let res = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        assert_eq!(res.memory().as_ref().unwrap().swap(), Some(200));
    }

    #[test]
    fn init_prepends_the_init_binary() {
        let mut c = cfg();
        c.init = true;
        c.init_binary = Some("/usr/lib/berth/berth-init".into());
        let spec = generate_for_host(&c, &host()).unwrap();
        let args = spec.process().as_ref().unwrap().args().as_ref().unwrap();
        assert_eq!(
            args,
            &vec![INIT_PATH_IN_CONTAINER.to_string(), "--".into(), "sh".into()]
        );
        let m = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new(INIT_PATH_IN_CONTAINER))
            .unwrap();
        assert_eq!(
            m.source().as_deref(),
            Some(Path::new("/usr/lib/berth/berth-init"))
        );
    }

    #[test]
    fn installed_init_binary_is_static_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let p = install_init_binary(dir.path()).unwrap();
        let bytes = fs::read(&p).unwrap();
        assert_eq!(&bytes[..4], b"\x7fELF");
        // a static binary has no PT_INTERP (3) program header
        let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
        let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
        let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
        assert!(phnum > 0);
        for i in 0..phnum {
            let off = phoff + i * phentsize;
            let p_type = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap());
            assert_ne!(p_type, 3, "berth-init is dynamically linked");
        }
        let mtime = fs::metadata(&p).unwrap().modified().unwrap();
        assert_eq!(install_init_binary(dir.path()).unwrap(), p);
        assert_eq!(fs::metadata(&p).unwrap().modified().unwrap(), mtime);
    }

    #[test]
    fn user_mount_replaces_default_mount() {
        let mut c = cfg();
        c.mounts.push(MountSpec {
            destination: "/dev/shm".into(),
            kind: "tmpfs".into(),
            source: "shm".into(),
            options: vec!["size=1m".into()],
        });
        let spec = generate_for_host(&c, &host()).unwrap();
        let shm: Vec<_> = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|m| m.destination() == Path::new("/dev/shm"))
            .collect();
        assert_eq!(shm.len(), 1);
        assert_eq!(
            shm[0].options().as_ref().unwrap(),
            &vec!["size=1m".to_string()]
        );
    }

    #[test]
    fn empty_args_is_an_error() {
        let mut c = cfg();
        c.args.clear();
        assert!(generate_for_host(&c, &host()).is_err());
    }
}
