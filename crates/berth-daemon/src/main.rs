#![recursion_limit = "256"]
//! `berthd`: the berth daemon. Flags → configuration → `Daemon::start` (store + recovery)
//! → the Engine API on a unix socket.

mod build;
mod changes;
mod config;
mod containers;
mod daemon;
mod error;
mod events;
mod exec;
mod http;
mod images;
mod metrics;
mod networks;
mod registry;
mod remote;
mod system;
mod volumes;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Parser;

use crate::config::{BUILTIN_RUNTIME, Config, FileConfig};

/// Flags, named like dockerd's.
#[derive(Debug, Parser)]
#[command(
    name = "berthd",
    version,
    about = "The berth container engine daemon (Docker Engine API compatible)"
)]
struct Flags {
    /// Socket to listen on (unix:///path).
    #[arg(short = 'H', long = "host")]
    host: Option<String>,
    /// Root of persistent state.
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Root of volatile state (shim sockets, bundles).
    #[arg(long)]
    exec_root: Option<PathBuf>,
    /// daemon.json-compatible configuration file.
    #[arg(long = "config-file", alias = "config")]
    config: Option<PathBuf>,
    /// Default runtime: `libcontainer` (built in) or a name from the config's `runtimes`.
    #[arg(long = "default-runtime", alias = "runtime")]
    default_runtime: Option<String>,
    /// The default network's bridge device (`none`: no default network).
    #[arg(long = "bridge-name", alias = "bridge")]
    bridge: Option<String>,
    /// A pool for automatic network subnets, `base=10.10.0.0/16,size=24` (repeatable).
    #[arg(long = "default-address-pool")]
    default_address_pool: Vec<String>,
    /// Serve Prometheus metrics at `GET /metrics` on this TCP address (`127.0.0.1:9323`).
    #[arg(long = "metrics-addr")]
    metrics_addr: Option<String>,
    /// A nameserver for containers without `--dns` (repeatable).
    #[arg(long = "dns")]
    dns: Vec<String>,
    /// A search domain for containers without `--dns-search` (repeatable).
    #[arg(long = "dns-search")]
    dns_search: Vec<String>,
    /// A resolver option for containers without `--dns-option` (repeatable).
    #[arg(long = "dns-opt")]
    dns_opt: Vec<String>,
    /// The address `--add-host name:host-gateway` resolves to (default: the default
    /// bridge's gateway).
    #[arg(long = "host-gateway-ip")]
    host_gateway_ip: Option<String>,
    /// Log at debug level.
    #[arg(short = 'D', long)]
    debug: bool,
}

const DEFAULT_CONFIG: &str = "/etc/berth/daemon.json";

fn resolve(flags: Flags) -> anyhow::Result<Config> {
    let file = match &flags.config {
        Some(p) => FileConfig::load(p)?,
        None if Path::new(DEFAULT_CONFIG).exists() => FileConfig::load(Path::new(DEFAULT_CONFIG))?,
        None => FileConfig::default(),
    };
    let host = flags
        .host
        .or_else(|| file.hosts.first().cloned())
        .unwrap_or_else(|| "unix:///run/berth/berth.sock".into());
    let Some(socket) = host.strip_prefix("unix://") else {
        bail!("unsupported host {host}: only unix:// sockets are served");
    };
    let mut runtimes: std::collections::BTreeMap<String, PathBuf> = file
        .runtimes
        .into_iter()
        .map(|(k, v)| (k, v.path))
        .collect();
    for (name, path) in [
        ("runc", "/usr/sbin/runc"),
        ("crun", "/usr/bin/crun"),
        ("youki", "/usr/bin/youki"),
    ] {
        if Path::new(path).exists() {
            runtimes.entry(name.into()).or_insert_with(|| path.into());
        }
    }
    let default_runtime = flags
        .default_runtime
        .or(file.default_runtime)
        .unwrap_or_else(|| BUILTIN_RUNTIME.into());
    if default_runtime != BUILTIN_RUNTIME && !runtimes.contains_key(&default_runtime) {
        bail!("unknown default runtime {default_runtime}: configure it under \"runtimes\"");
    }
    let mut pools = flags
        .default_address_pool
        .iter()
        .map(|text| parse_pool_flag(text))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if pools.is_empty() {
        pools = file
            .default_address_pools
            .iter()
            .map(|p| {
                berth_network::ipam::AddressPool::parse(&p.base, p.size)
                    .with_context(|| format!("invalid default-address-pools entry {}", p.base))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
    }
    if pools.is_empty() {
        pools = berth_network::ipam::default_pools();
    }
    let bridge = flags
        .bridge
        .or(file.bridge)
        .unwrap_or_else(|| berth_network::bridge::DEFAULT_BRIDGE.into());
    let default_bridge = (bridge != "none").then_some(bridge);
    if let Some(name) = &default_bridge {
        berth_network::bridge::validate_ifname(name)
            .with_context(|| format!("invalid bridge name {name}"))?;
    }
    // Each list given as flags replaces the file's, as for the other settings.
    let pick = |flag: Vec<String>, file: Vec<String>| if flag.is_empty() { file } else { flag };
    let dns_defaults = config::dns_defaults(
        &pick(flags.dns, file.dns),
        &pick(flags.dns_search, file.dns_search),
        &pick(flags.dns_opt, file.dns_opts),
    )?;
    let host_gateway_ip = flags
        .host_gateway_ip
        .or(file.host_gateway_ip)
        .map(|text| config::host_gateway_ip(&text))
        .transpose()?;
    Ok(Config {
        socket: PathBuf::from(socket),
        data_root: flags
            .data_root
            .or(file.data_root)
            .unwrap_or_else(|| "/var/lib/berth".into()),
        exec_root: flags
            .exec_root
            .or(file.exec_root)
            .unwrap_or_else(|| "/run/berth".into()),
        default_runtime,
        runtimes,
        shim_binary: find_shim()?,
        insecure_registries: file.insecure_registries,
        registry_mirrors: file.registry_mirrors,
        max_concurrent_downloads: file.max_concurrent_downloads.unwrap_or(3).max(1),
        max_concurrent_uploads: file.max_concurrent_uploads.unwrap_or(5).max(1),
        default_bridge,
        address_pools: pools,
        metrics_addr: flags
            .metrics_addr
            .or(file.metrics_addr)
            .filter(|addr| !addr.is_empty()),
        dns_defaults,
        host_gateway_ip,
    })
}

/// Parses dockerd's `--default-address-pool base=10.10.0.0/16,size=24`.
fn parse_pool_flag(text: &str) -> anyhow::Result<berth_network::ipam::AddressPool> {
    let (mut base, mut size) = (None, None);
    for part in text.split(',') {
        match part.split_once('=') {
            Some(("base", v)) => base = Some(v.trim()),
            Some(("size", v)) => size = v.trim().parse::<u8>().ok(),
            _ => bail!("invalid --default-address-pool {text}: expected base=CIDR,size=N"),
        }
    }
    let (Some(base), Some(size)) = (base, size) else {
        bail!("invalid --default-address-pool {text}: expected base=CIDR,size=N");
    };
    berth_network::ipam::AddressPool::parse(base, size)
        .with_context(|| format!("invalid --default-address-pool {text}"))
}

/// Listens on `--metrics-addr`: `host:port` (a name, an IPv4 address or a bracketed IPv6
/// one), or `:port` for every interface as Go's listeners read it.
async fn bind_metrics(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let target = match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_string(),
    };
    let listener = tokio::net::TcpListener::bind(&target)
        .await
        .with_context(|| format!("cannot listen on metrics-addr {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "berthd serving metrics at /metrics");
    Ok(listener)
}

/// The shim sits next to `berthd`, or on PATH.
fn find_shim() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        let candidate = dir.join("berth-shim");
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("berth-shim"))
        .find(|p| p.exists())
        .context("berth-shim not found next to berthd or on PATH")
}

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let file_debug = flags
        .config
        .as_deref()
        .and_then(|p| FileConfig::load(p).ok())
        .is_some_and(|f| f.debug);
    let level = if flags.debug || file_debug {
        "debug"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .unwrap_or_else(|_| level.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = resolve(flags)?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Store and tar work runs on blocking threads; a burst of 1000 removals would
        // otherwise grow the pool to 512 threads and keep their memory.
        .max_blocking_threads(16)
        .enable_all()
        .build()?
        .block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let socket = config.socket.clone();
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        bail!("another daemon is already serving {}", socket.display());
    }
    let _ = std::fs::remove_file(&socket);
    // Bound before the daemon starts, so a bad address stops berthd before it touches state.
    let metrics_listener = match &config.metrics_addr {
        Some(addr) => Some(bind_metrics(addr).await?),
        None => None,
    };
    let daemon = daemon::Daemon::start(config).await?;
    let containers_cgroup = daemon.containers_cgroup();
    let listener = tokio::net::UnixListener::bind(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660))?;
    tracing::info!(socket = %socket.display(), "berthd serving the Engine API");
    if let Some(listener) = metrics_listener {
        tokio::spawn(http::serve_metrics(listener, daemon.clone()));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        served = http::serve(listener, daemon) => served?,
        _ = term.recv() => tracing::info!("terminating; containers keep running under their shims"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; containers keep running under their shims"),
    }
    let _ = std::fs::remove_file(&socket);
    // The parent of container cgroups goes with the daemon once no container is left in it
    // (a non-empty directory cannot be removed, so running containers keep theirs).
    for dir in berth_runtime::cgroups::existing_dirs(&containers_cgroup).unwrap_or_default() {
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}
