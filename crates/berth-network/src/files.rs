//! Contents of the name-resolution files bind-mounted into every container: `/etc/hostname`,
//! `/etc/hosts` and `/etc/resolv.conf`, generated the way Docker generates them.
//!
//! The files are bind-mounted one by one, so every later change (a network connected to a
//! running container) rewrites them in place: a new file renamed over the old one would not
//! be seen through the mount.

use std::net::IpAddr;
use std::path::Path;

/// Errors reading or writing a container's resolution files.
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

/// Docker's loopback and IPv6 boilerplate, the first lines of every generated hosts file.
const DEFAULT_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
     fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

/// What a container's hosts file should name.
#[derive(Debug, Clone, Default)]
pub struct HostEntries {
    /// The container's hostname.
    pub hostname: String,
    /// The container's domain name (`--domainname`), appended to the hostname if set.
    pub domainname: String,
    /// The container's addresses on its networks; empty for `none`.
    pub addresses: Vec<String>,
    /// Extra `--add-host` lines as (name, address).
    pub extra: Vec<(String, String)>,
}

/// The names a container's own hosts lines carry: `host.domain`, plus the first label alone
/// when the name has dots (moby's `makeHostsRecs`).
pub fn host_record_names(hostname: &str, domainname: &str) -> String {
    let mut names = hostname.to_string();
    if !domainname.is_empty() {
        names = format!("{names}.{domainname}");
    }
    if let Some((short, _)) = names.split_once('.') {
        let short = short.to_string();
        names = format!("{names} {short}");
    }
    names
}

/// The `/etc/hosts` Docker writes: loopback entries, IPv6 boilerplate, the `--add-host`
/// entries, then one line per address of the container.
pub fn hosts(entries: &HostEntries) -> String {
    let mut out = String::from(DEFAULT_HOSTS);
    for (name, addr) in &entries.extra {
        out.push_str(&format!("{addr}\t{name}\n"));
    }
    let names = host_record_names(&entries.hostname, &entries.domainname);
    for addr in &entries.addresses {
        out.push_str(&format!("{addr}\t{names}\n"));
    }
    out
}

/// The `/etc/hosts` of a container on the host's network: the host's own file, unless
/// `--add-host` entries were given (then Docker's generated file with them, so that a name
/// in the host's file can be overridden).
pub fn host_network_hosts(host_hosts: &str, extra: &[(String, String)]) -> String {
    if extra.is_empty() {
        return host_hosts.to_string();
    }
    hosts(&HostEntries {
        extra: extra.to_vec(),
        ..Default::default()
    })
}

/// `text` with a line `<addr>\t<names>` appended for each address not listed with those
/// names yet (moby's `etchosts.Add`, for a network connected to a running container).
pub fn hosts_with_records(text: &str, names: &str, addresses: &[String]) -> String {
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    for addr in addresses {
        if !text.lines().any(|line| is_record(line, addr, names)) {
            out.push_str(&format!("{addr}\t{names}\n"));
        }
    }
    out
}

/// `text` without the lines naming `names` at one of `addresses` (moby's `etchosts.Delete`,
/// for a network disconnected from a running container). Other lines are kept as they are.
pub fn hosts_without_records(text: &str, names: &str, addresses: &[String]) -> String {
    text.split_inclusive('\n')
        .filter(|line| !addresses.iter().any(|addr| is_record(line, addr, names)))
        .collect()
}

/// Whether a hosts line maps exactly `names` (space separated) to `addr`.
fn is_record(line: &str, addr: &str, names: &str) -> bool {
    let mut fields = line.split_whitespace();
    fields.next() == Some(addr) && fields.eq(names.split_whitespace())
}

/// A container's own DNS settings (`--dns`, `--dns-search`, `--dns-option`). Each list,
/// when not empty, replaces what the host's `resolv.conf` says, as in Docker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsOverrides {
    /// Nameservers.
    pub nameservers: Vec<IpAddr>,
    /// Search domains; `.` alone clears the host's.
    pub search: Vec<String>,
    /// Resolver options such as `ndots:2`.
    pub options: Vec<String>,
}

/// Who answers a container's queries, which decides the shape of its `resolv.conf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolverMode {
    /// The host's network: the host's resolvers as they are.
    Host,
    /// A network without embedded DNS (the default `bridge`, `none`): the host's resolvers
    /// minus loopback ones (unreachable from another namespace), Google's if none are left.
    Legacy,
    /// A network with embedded DNS ([`crate::dns`]) at this address: the only nameserver;
    /// the host's (or `--dns`) servers become its upstreams for this container.
    Embedded(IpAddr),
}

/// The nameservers Docker falls back to when the host lists only loopback resolvers.
const FALLBACK_NAMESERVERS: &str = "8.8.8.8 8.8.4.4";

/// A parsed `resolv.conf`, as moby's `resolvconf` package reads one.
#[derive(Debug, Clone, Default)]
struct ResolvConf {
    nameservers: Vec<IpAddr>,
    search: Vec<String>,
    options: Vec<String>,
    /// Directives other than the three above, kept verbatim.
    other: Vec<String>,
}

impl ResolvConf {
    fn parse(text: &str) -> ResolvConf {
        let mut rc = ResolvConf::default();
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(first) = fields.first() else {
                continue;
            };
            if first.starts_with('#') || first.starts_with(';') {
                continue;
            }
            match *first {
                "nameserver" => {
                    // Strip an IPv6 zone ("fe80::1%eth0"): it cannot be parsed.
                    if let Some(Ok(addr)) = fields
                        .get(1)
                        .map(|a| a.split('%').next().unwrap_or(a).parse::<IpAddr>())
                    {
                        rc.nameservers.push(addr);
                    }
                }
                // `domain` is the obsolete name of `search`; only the last one counts.
                "search" | "domain" if fields.len() > 1 => {
                    rc.search = fields[1..].iter().map(|s| s.to_string()).collect();
                }
                "options" => rc.options.extend(fields[1..].iter().map(|s| s.to_string())),
                "search" | "domain" => {}
                _ => rc.other.push(line.to_string()),
            }
        }
        rc
    }
}

/// The `resolv.conf` a container gets from the host's `resolv.conf` text, its own overrides
/// and the resolver that serves it, in Docker's layout (a header, the directives, and a
/// trailing comment naming the upstream servers of an embedded resolver).
pub fn resolv_conf(host_resolv: &str, overrides: &DnsOverrides, mode: ResolverMode) -> String {
    let mut rc = ResolvConf::parse(host_resolv);
    let mut overridden = Vec::new();
    if !overrides.nameservers.is_empty() {
        rc.nameservers = overrides.nameservers.clone();
        overridden.push("nameservers");
    }
    if !overrides.search.is_empty() {
        rc.search = overrides
            .search
            .iter()
            .filter(|s| s.as_str() != ".")
            .cloned()
            .collect();
        overridden.push("search");
    }
    if !overrides.options.is_empty() {
        rc.options = overrides.options.clone();
        overridden.push("options");
    }
    let mut notes = Vec::new();
    let transform = match mode {
        ResolverMode::Host => "",
        ResolverMode::Legacy => {
            // Servers the user named are kept as given; the host's loopback ones are not
            // reachable from the container's namespace.
            if overrides.nameservers.is_empty() {
                rc.nameservers.retain(|ns| !ns.is_loopback());
            }
            if rc.nameservers.is_empty() {
                rc.nameservers = FALLBACK_NAMESERVERS
                    .split(' ')
                    .filter_map(|s| s.parse().ok())
                    .collect();
                notes.push("# Used default nameservers.".to_string());
            }
            " (legacy)"
        }
        ResolverMode::Embedded(server) => {
            let upstreams: Vec<String> = rc.nameservers.iter().map(IpAddr::to_string).collect();
            notes.push(format!("# ExtServers: [{}]", upstreams.join(" ")));
            rc.nameservers = vec![server];
            // The embedded server answers single-label names itself: no search-list walk
            // before asking it, unless the user chose an ndots.
            rc.options.retain(|o| match o.strip_prefix("ndots:") {
                Some(n) => n.parse::<u32>().is_ok(),
                None => true,
            });
            if !rc.options.iter().any(|o| o.starts_with("ndots:")) {
                rc.options.push("ndots:0".into());
            }
            " (internal resolver)"
        }
    };
    let mut out = String::from("# Generated by berth; rewritten when the container starts.\n\n");
    for ns in &rc.nameservers {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    if !rc.search.is_empty() {
        out.push_str(&format!("search {}\n", rc.search.join(" ")));
    }
    if !rc.options.is_empty() {
        out.push_str(&format!("options {}\n", rc.options.join(" ")));
    }
    for line in &rc.other {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!(
        "\n# Based on host file: '/etc/resolv.conf'{transform}\n"
    ));
    for note in notes {
        out.push_str(&note);
        out.push('\n');
    }
    out.push_str(&format!("# Overrides: [{}]\n", overridden.join(" ")));
    out
}

/// Writes `hostname`, `hosts` and `resolv.conf` into `dir`, each in place.
pub fn write_all(
    dir: &Path,
    hostname: &str,
    hosts: &str,
    resolv_conf: &str,
) -> Result<(), FilesError> {
    write_in_place(&dir.join("hostname"), &format!("{hostname}\n"))?;
    write_in_place(&dir.join("hosts"), hosts)?;
    write_in_place(&dir.join("resolv.conf"), resolv_conf)
}

/// Replaces a file's content without replacing the file (it may be bind-mounted).
pub fn write_in_place(path: &Path, content: &str) -> Result<(), FilesError> {
    std::fs::write(path, content).map_err(|source| FilesError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Reads a file written by [`write_all`].
pub fn read(path: &Path) -> Result<String, FilesError> {
    std::fs::read_to_string(path).map_err(|source| FilesError::Io {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The directive lines of a generated file, without comments and blank lines.
    fn directives(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    }

    #[test]
    fn hosts_names_the_container() {
        let text = hosts(&HostEntries {
            hostname: "abc123".into(),
            addresses: vec!["172.17.0.2".into()],
            extra: vec![("db".into(), "10.0.0.5".into())],
            ..Default::default()
        });
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(text.contains("10.0.0.5\tdb\n"));
        assert!(text.ends_with("172.17.0.2\tabc123\n"));
        let dotted = hosts(&HostEntries {
            hostname: "web".into(),
            domainname: "example.org".into(),
            addresses: vec!["10.1.0.2".into()],
            ..Default::default()
        });
        assert!(
            dotted.ends_with("10.1.0.2\tweb.example.org web\n"),
            "{dotted}"
        );
        assert_eq!(host_record_names("a.b", ""), "a.b a");
        assert_eq!(host_record_names("plain", ""), "plain");
    }

    #[test]
    fn the_host_network_keeps_the_hosts_file_unless_hosts_are_added() {
        let host = "127.0.0.1 localhost\n192.168.1.5 myhost\n";
        assert_eq!(host_network_hosts(host, &[]), host);
        let added = host_network_hosts(host, &[("myhost".into(), "10.9.9.9".into())]);
        assert!(added.contains("10.9.9.9\tmyhost\n"), "{added}");
        assert!(!added.contains("192.168.1.5"), "{added}");
    }

    #[test]
    fn records_are_added_once_and_removed_exactly() {
        let base = "127.0.0.1\tlocalhost\n10.0.0.2\tweb\n# user note\n";
        let added = hosts_with_records(base, "web", &["10.1.0.3".into(), "10.0.0.2".into()]);
        assert_eq!(added, format!("{base}10.1.0.3\tweb\n"));
        let removed = hosts_without_records(&added, "web", &["10.1.0.3".into()]);
        assert_eq!(removed, base);
        // Only exact records go: other names at the address and user lines stay.
        let text = "10.1.0.3\tweb other\n10.1.0.3  web\n";
        assert_eq!(
            hosts_without_records(text, "web", &["10.1.0.3".into()]),
            "10.1.0.3\tweb other\n"
        );
        assert_eq!(hosts_with_records("x", "web", &[]), "x\n");
    }

    #[test]
    fn loopback_resolvers_are_dropped_outside_the_host_network() {
        let host =
            "search example.org\nnameserver 127.0.0.53\nnameserver 10.1.2.3\nsortlist 10.0.0.0\n";
        let none = DnsOverrides::default();
        let c = resolv_conf(host, &none, ResolverMode::Legacy);
        assert_eq!(
            directives(&c),
            [
                "nameserver 10.1.2.3",
                "search example.org",
                "sortlist 10.0.0.0"
            ]
        );
        let on_host = resolv_conf(host, &none, ResolverMode::Host);
        assert_eq!(
            directives(&on_host),
            [
                "nameserver 127.0.0.53",
                "nameserver 10.1.2.3",
                "search example.org",
                "sortlist 10.0.0.0"
            ]
        );
        let only_loop = resolv_conf("nameserver 127.0.0.1\n", &none, ResolverMode::Legacy);
        assert_eq!(
            directives(&only_loop),
            ["nameserver 8.8.8.8", "nameserver 8.8.4.4"]
        );
    }

    #[test]
    fn overrides_replace_the_hosts_settings() {
        let host = "search example.org\nnameserver 10.1.2.3\noptions ndots:2\n";
        let overrides = DnsOverrides {
            nameservers: vec![ip("127.0.0.1"), ip("9.9.9.9")],
            search: vec!["a.test".into(), "b.test".into()],
            options: vec!["timeout:3".into(), "attempts:2".into()],
        };
        let c = resolv_conf(host, &overrides, ResolverMode::Legacy);
        assert_eq!(
            directives(&c),
            [
                "nameserver 127.0.0.1",
                "nameserver 9.9.9.9",
                "search a.test b.test",
                "options timeout:3 attempts:2"
            ],
            "servers the user names are kept even when loopback"
        );
        assert!(
            c.contains("# Overrides: [nameservers search options]"),
            "{c}"
        );
        let cleared = DnsOverrides {
            search: vec![".".into()],
            ..Default::default()
        };
        let c = resolv_conf(host, &cleared, ResolverMode::Legacy);
        assert_eq!(
            directives(&c),
            ["nameserver 10.1.2.3", "options ndots:2"],
            "`--dns-search .` clears the search list"
        );
    }

    #[test]
    fn embedded_dns_replaces_the_nameservers() {
        let host =
            "# comment\nsearch example.org\nnameserver 10.1.2.3\noptions ndots:2 timeout:1\n";
        let server = ip("10.213.5.1");
        let c = resolv_conf(
            host,
            &DnsOverrides::default(),
            ResolverMode::Embedded(server),
        );
        assert_eq!(
            directives(&c),
            [
                "nameserver 10.213.5.1",
                "search example.org",
                "options ndots:2 timeout:1"
            ]
        );
        assert!(c.contains("# ExtServers: [10.1.2.3]"), "{c}");
        let with_dns = DnsOverrides {
            nameservers: vec![ip("1.1.1.1")],
            options: vec!["ndots:x".into(), "edns0".into()],
            ..Default::default()
        };
        let c = resolv_conf(host, &with_dns, ResolverMode::Embedded(server));
        assert_eq!(
            directives(&c),
            [
                "nameserver 10.213.5.1",
                "search example.org",
                "options edns0 ndots:0"
            ]
        );
        assert!(c.contains("# ExtServers: [1.1.1.1]"), "{c}");
    }
}
