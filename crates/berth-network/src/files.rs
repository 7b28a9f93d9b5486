//! Contents of the name-resolution files bind-mounted into every container.

use std::net::IpAddr;
use std::path::Path;

/// Errors writing a container's resolution files.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A file could not be read or written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file that failed.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// What a container's hosts file should name.
#[derive(Debug, Clone, Default)]
pub struct HostEntries {
    /// The container's hostname (first label also listed short).
    pub hostname: String,
    /// The container's addresses on its networks; empty for `none`.
    pub addresses: Vec<String>,
    /// Extra `--add-host` lines as (name, address).
    pub extra: Vec<(String, String)>,
}

/// The `/etc/hosts` Docker writes: loopback entries, IPv6 boilerplate, then the container.
pub fn hosts(entries: &HostEntries) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for (name, addr) in &entries.extra {
        out.push_str(&format!("{addr}\t{name}\n"));
    }
    for addr in &entries.addresses {
        out.push_str(&format!("{addr}\t{}\n", entries.hostname));
    }
    out
}

/// The `resolv.conf` a container gets: the host's, minus loopback nameservers (unreachable
/// from a separate network namespace), unless the container shares the host's network.
pub fn resolv_conf(host_resolv: &str, host_network: bool) -> String {
    if host_network {
        return host_resolv.to_string();
    }
    let mut out = String::new();
    let mut nameservers = 0;
    for line in host_resolv.lines() {
        let trimmed = line.trim();
        if let Some(addr) = trimmed.strip_prefix("nameserver") {
            let addr = addr.trim();
            if addr.starts_with("127.") || addr == "::1" {
                continue;
            }
            nameservers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if nameservers == 0 {
        // Docker's fallback when the host only lists loopback resolvers.
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

/// The `resolv.conf` of a container on a network with embedded DNS ([`crate::dns`]): that
/// server (the network's gateway) as the only nameserver, plus the host's `search` and
/// `options` lines. The host's nameservers become the server's upstreams instead.
pub fn embedded_resolv_conf(host_resolv: &str, server: IpAddr) -> String {
    let mut out = format!("nameserver {server}\n");
    for line in host_resolv.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("search")
            || trimmed.starts_with("domain")
            || trimmed.starts_with("options")
        {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Writes `hostname`, `hosts` and `resolv.conf` into `dir`, returning nothing on success.
pub fn write_all(
    dir: &Path,
    entries: &HostEntries,
    host_resolv: &str,
    host_network: bool,
) -> Result<(), FilesError> {
    let write = |name: &str, content: &str| {
        let path = dir.join(name);
        std::fs::write(&path, content).map_err(|source| FilesError::Io {
            path: path.display().to_string(),
            source,
        })
    };
    write("hostname", &format!("{}\n", entries.hostname))?;
    write("hosts", &hosts(entries))?;
    write("resolv.conf", &resolv_conf(host_resolv, host_network))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_names_the_container() {
        let text = hosts(&HostEntries {
            hostname: "abc123".into(),
            addresses: vec!["172.17.0.2".into()],
            extra: vec![("db".into(), "10.0.0.5".into())],
        });
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(text.contains("10.0.0.5\tdb\n"));
        assert!(text.ends_with("172.17.0.2\tabc123\n"));
    }

    #[test]
    fn loopback_resolvers_are_dropped_outside_the_host_network() {
        let host = "search example.org\nnameserver 127.0.0.53\nnameserver 10.1.2.3\n";
        let c = resolv_conf(host, false);
        assert!(!c.contains("127.0.0.53"));
        assert!(c.contains("nameserver 10.1.2.3"));
        assert!(c.contains("search example.org"));
        assert_eq!(resolv_conf(host, true), host);
        let only_loop = resolv_conf("nameserver 127.0.0.1\n", false);
        assert!(only_loop.contains("8.8.8.8"));
    }

    #[test]
    fn embedded_dns_replaces_the_nameservers() {
        let host =
            "# comment\nsearch example.org\nnameserver 10.1.2.3\noptions ndots:2 timeout:1\n";
        let c = embedded_resolv_conf(host, "10.213.5.1".parse().unwrap());
        assert_eq!(
            c,
            "nameserver 10.213.5.1\nsearch example.org\noptions ndots:2 timeout:1\n"
        );
    }
}
