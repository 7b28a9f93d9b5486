//! Daemon configuration: command-line flags over a daemon.json-compatible file.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// The subset of daemon.json berth understands; unknown keys are ignored like dockerd's
/// forward-compatible readers would not, but berth prefers starting over refusing.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FileConfig {
    /// `hosts`: sockets to listen on.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// `data-root`.
    pub data_root: Option<PathBuf>,
    /// `exec-root`.
    pub exec_root: Option<PathBuf>,
    /// `default-runtime`: `libcontainer` or a key of `runtimes`.
    pub default_runtime: Option<String>,
    /// `runtimes`: name → `{ "path": ... }`.
    #[serde(default)]
    pub runtimes: std::collections::BTreeMap<String, RuntimeEntry>,
    /// `debug`.
    #[serde(default)]
    pub debug: bool,
    /// `insecure-registries`: registries that may use plain HTTP.
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    /// `registry-mirrors`: Docker Hub mirrors (`http[s]://host[:port]`), tried first for
    /// pulls of Docker Hub images.
    #[serde(default)]
    pub registry_mirrors: Vec<String>,
    /// `max-concurrent-downloads`: layers a pull fetches at once (docker's default 3).
    pub max_concurrent_downloads: Option<usize>,
    /// `max-concurrent-uploads`: layers a push sends at once (docker's default 5).
    pub max_concurrent_uploads: Option<usize>,
    /// `bridge`: the default network's bridge device, or `none` for no default network.
    pub bridge: Option<String>,
    /// `default-address-pools`: where automatic network subnets come from.
    #[serde(default)]
    pub default_address_pools: Vec<PoolEntry>,
    /// `metrics-addr`: TCP address of the Prometheus `/metrics` endpoint (empty: none).
    pub metrics_addr: Option<String>,
}

/// One entry of `default-address-pools`: `{"base": "10.10.0.0/16", "size": 24}`.
#[derive(Debug, Clone, Deserialize)]
pub struct PoolEntry {
    /// The block subnets are carved from.
    pub base: String,
    /// Prefix length of each subnet.
    pub size: u8,
}

/// One entry of `runtimes`.
#[derive(Debug, Clone, Deserialize)]
pub struct RuntimeEntry {
    /// Path of the OCI runtime binary.
    pub path: PathBuf,
}

impl FileConfig {
    /// Reads a daemon.json file.
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))
    }
}

/// The resolved configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Unix socket path the API is served on.
    pub socket: PathBuf,
    /// Persistent state: store, container dirs, logs.
    pub data_root: PathBuf,
    /// Volatile state: shim sockets and bundles (tmpfs-like, /run).
    pub exec_root: PathBuf,
    /// The runtime name new containers use by default.
    pub default_runtime: String,
    /// Named OCI runtime binaries; `libcontainer` (built into the shim) is always present.
    pub runtimes: std::collections::BTreeMap<String, PathBuf>,
    /// The shim binary to spawn per container.
    pub shim_binary: PathBuf,
    /// Registries that may use plain HTTP besides 127.0.0.0/8.
    pub insecure_registries: Vec<String>,
    /// Docker Hub mirrors, tried in order before Docker Hub for pulls.
    pub registry_mirrors: Vec<String>,
    /// Layers a pull fetches at once.
    pub max_concurrent_downloads: usize,
    /// Layers a push sends at once.
    pub max_concurrent_uploads: usize,
    /// The default `bridge` network's device; `None` runs without a default network.
    pub default_bridge: Option<String>,
    /// Pools automatic subnets come from (Docker's defaults unless configured).
    pub address_pools: Vec<berth_network::ipam::AddressPool>,
    /// Where `GET /metrics` is served over plain HTTP; `None` serves no metrics.
    pub metrics_addr: Option<String>,
}

/// Name of the built-in runtime (youki's libcontainer linked into the shim).
pub const BUILTIN_RUNTIME: &str = "libcontainer";
