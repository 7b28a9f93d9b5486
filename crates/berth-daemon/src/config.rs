//! Daemon configuration: command-line flags over a daemon.json-compatible file.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use berth_network::files::DnsOverrides;
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
    /// `dns`: nameservers of containers that give no `--dns` of their own.
    #[serde(default)]
    pub dns: Vec<String>,
    /// `dns-search`: search domains of containers that give no `--dns-search`.
    #[serde(default)]
    pub dns_search: Vec<String>,
    /// `dns-opts`: resolver options of containers that give no `--dns-option`.
    #[serde(default)]
    pub dns_opts: Vec<String>,
    /// `host-gateway-ip`: the address `--add-host name:host-gateway` stands for.
    pub host_gateway_ip: Option<String>,
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
    /// Reads a daemon.json file; a value of the wrong shape is reported with its key.
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        serde_json::from_value(value.clone()).map_err(|e| {
            // The key at fault is the one that does not parse on its own.
            let key = value.as_object().and_then(|object| {
                object.iter().find_map(|(key, v)| {
                    let alone = serde_json::Value::Object(
                        std::iter::once((key.clone(), v.clone())).collect(),
                    );
                    serde_json::from_value::<FileConfig>(alone)
                        .is_err()
                        .then_some(key)
                })
            });
            match key {
                Some(key) => {
                    anyhow::anyhow!("invalid config file {}: \"{key}\": {e}", path.display())
                }
                None => anyhow::anyhow!("invalid config file {}: {e}", path.display()),
            }
        })
    }
}

/// dockerd's `dns`, `dns-search` and `dns-opts` checks, each failure naming its key and
/// value: nameservers are IP addresses, search domains are domain names (or `.`), options
/// are single words.
pub fn dns_defaults(
    nameservers: &[String],
    search: &[String],
    options: &[String],
) -> anyhow::Result<DnsOverrides> {
    let nameservers = nameservers
        .iter()
        .map(|ns| {
            ns.trim()
                .parse::<IpAddr>()
                .map_err(|_| anyhow::anyhow!("invalid dns {ns:?}: not an IP address"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for domain in search {
        if !is_search_domain(domain) {
            bail!("invalid dns-search {domain:?}: {domain} is not a valid domain");
        }
    }
    for option in options {
        if option.is_empty() || option.contains(char::is_whitespace) {
            bail!("invalid dns-opts {option:?}: a resolver option is one word, such as ndots:2");
        }
    }
    Ok(DnsOverrides {
        nameservers,
        search: search.to_vec(),
        options: options.to_vec(),
    })
}

/// Checks `host-gateway-ip`.
pub fn host_gateway_ip(text: &str) -> anyhow::Result<IpAddr> {
    text.trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid host-gateway-ip {text:?}: not an IP address"))
}

/// moby's `ValidateDNSSearch`: `.` (no search list), or a domain name of at most 255
/// characters whose labels are letters, digits and inner hyphens, with at least one letter
/// and an optional final dot.
fn is_search_domain(domain: &str) -> bool {
    if domain == "." {
        return true;
    }
    let name = domain.strip_suffix('.').unwrap_or(domain);
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    name.len() <= 255
        && name.split('.').all(label_ok)
        && name.chars().any(|c| c.is_ascii_alphabetic())
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
    /// The daemon's `dns`, `dns-search` and `dns-opts`: each list stands in for a
    /// container's own when that one is empty, as dockerd's do.
    pub dns_defaults: DnsOverrides,
    /// What `host-gateway` in `--add-host` resolves to; `None`: the default bridge's gateway.
    pub host_gateway_ip: Option<IpAddr>,
}

/// Name of the built-in runtime (youki's libcontainer linked into the shim).
pub const BUILTIN_RUNTIME: &str = "libcontainer";

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn dns_defaults_are_checked_like_dockerd() {
        let ok = dns_defaults(
            &strings(&["1.1.1.1", "fd00::53"]),
            &strings(&["example.org", "a-b.example.", "."]),
            &strings(&["ndots:2", "edns0"]),
        )
        .unwrap();
        assert_eq!(ok.nameservers.len(), 2);
        assert_eq!(ok.search, ["example.org", "a-b.example.", "."]);
        assert_eq!(ok.options, ["ndots:2", "edns0"]);
        let err = |ns: &[&str], search: &[&str], opts: &[&str]| {
            dns_defaults(&strings(ns), &strings(search), &strings(opts))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(&["dns.example"], &[], &[]),
            r#"invalid dns "dns.example": not an IP address"#
        );
        for bad in ["-bad.example", "a..b", "123.456", "under_score.example", ""] {
            assert!(
                err(&[], &[bad], &[]).starts_with(&format!("invalid dns-search {bad:?}")),
                "{bad}"
            );
        }
        assert!(err(&[], &[], &["ndots:1 x"]).starts_with("invalid dns-opts"));
        assert!(err(&[], &[], &[""]).starts_with("invalid dns-opts"));
        assert_eq!(
            host_gateway_ip(" 192.0.2.1").unwrap(),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            host_gateway_ip("gateway").unwrap_err().to_string(),
            r#"invalid host-gateway-ip "gateway": not an IP address"#
        );
    }

    #[test]
    fn a_value_of_the_wrong_shape_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.json");
        std::fs::write(&path, r#"{"debug": true, "dns": "1.1.1.1"}"#).unwrap();
        let e = FileConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains(r#": "dns": invalid type"#), "{e}");
        std::fs::write(
            &path,
            r#"{"dns": ["1.1.1.1"], "dns-search": ["a.test"], "dns-opts": ["ndots:1"], "host-gateway-ip": "10.0.0.1"}"#,
        )
        .unwrap();
        let file = FileConfig::load(&path).unwrap();
        assert_eq!(file.dns, ["1.1.1.1"]);
        assert_eq!(file.dns_search, ["a.test"]);
        assert_eq!(file.dns_opts, ["ndots:1"]);
        assert_eq!(file.host_gateway_ip.as_deref(), Some("10.0.0.1"));
    }
}
