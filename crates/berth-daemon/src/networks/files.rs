//! A container's `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`: written when it
//! starts from its networks, `--add-host` and `--dns*` settings, and kept current while it
//! runs as networks are connected and disconnected (moby's sandbox files).

use std::net::IpAddr;
use std::path::Path;

use berth_api::models::HostConfig;
use berth_network::files::{self, DnsOverrides, HostEntries, ResolverMode};

use crate::containers::ContainerRecord;
use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

/// The `--add-host` address replaced by the host's address as seen from containers.
pub(crate) const HOST_GATEWAY: &str = "host-gateway";

/// One `--add-host` entry as (name, address or `host-gateway`): `name:ip` or `name=ip`, the
/// address optionally in brackets (`name:[::1]`), as the docker CLI accepts them.
pub(crate) fn parse_extra_host(entry: &str) -> ServiceResult<(String, String)> {
    let (name, addr) = entry
        .split_once('=')
        .or_else(|| entry.split_once(':'))
        .filter(|(name, _)| !name.is_empty() && !name.contains(':'))
        .ok_or_else(|| ServiceError::invalid(format!("bad format for add-host: {entry:?}")))?;
    if addr == HOST_GATEWAY {
        return Ok((name.to_string(), addr.to_string()));
    }
    let bare = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .filter(|a| !a.is_empty())
        .unwrap_or(addr);
    if bare.trim().parse::<IpAddr>().is_err() {
        return Err(ServiceError::invalid(format!(
            "invalid IP address in add-host: {bare:?}"
        )));
    }
    Ok((name.to_string(), bare.trim().to_string()))
}

/// Checks `ExtraHosts` and rewrites each entry as `name:address`, the form the Engine API
/// stores (so inspect shows what Docker shows whichever form was given).
pub(crate) fn normalise_extra_hosts(host: &mut HostConfig) -> ServiceResult<()> {
    if let Some(entries) = host.extra_hosts.as_mut() {
        for entry in entries.iter_mut() {
            let (name, addr) = parse_extra_host(entry)?;
            *entry = format!("{name}:{addr}");
        }
    }
    Ok(())
}

/// The container's `--dns`, `--dns-search` and `--dns-option`.
pub(crate) fn dns_overrides(host: &HostConfig) -> ServiceResult<DnsOverrides> {
    let nameservers = host
        .dns
        .iter()
        .flatten()
        .map(|ns| {
            ns.trim()
                .parse::<IpAddr>()
                .map_err(|_| ServiceError::invalid(format!("bad nameserver address {ns:?}")))
        })
        .collect::<ServiceResult<Vec<_>>>()?;
    Ok(DnsOverrides {
        nameservers,
        search: host.dns_search.clone().unwrap_or_default(),
        options: host.dns_options.clone().unwrap_or_default(),
    })
}

/// A container's own DNS settings with the daemon's `dns`, `dns-search` and `dns-opts`
/// standing in for each list it left empty (moby's per-list fallback).
fn with_daemon_defaults(own: DnsOverrides, defaults: &DnsOverrides) -> DnsOverrides {
    let or_default = |own: Vec<String>, default: &Vec<String>| {
        if own.is_empty() { default.clone() } else { own }
    };
    DnsOverrides {
        nameservers: if own.nameservers.is_empty() {
            defaults.nameservers.clone()
        } else {
            own.nameservers
        },
        search: or_default(own.search, &defaults.search),
        options: or_default(own.options, &defaults.options),
    }
}

fn io_error(e: files::FilesError) -> ServiceError {
    ServiceError::internal(e.to_string())
}

impl Daemon {
    /// The DNS settings a container's `resolv.conf` is written with: its own, else the
    /// daemon's defaults.
    fn container_dns(&self, host: &HostConfig) -> ServiceResult<DnsOverrides> {
        Ok(with_daemon_defaults(
            dns_overrides(host)?,
            &self.config.dns_defaults,
        ))
    }

    /// `--add-host` entries with `host-gateway` resolved to the daemon's `host-gateway-ip`,
    /// else the default bridge's gateway.
    fn extra_hosts(&self, record: &ContainerRecord) -> ServiceResult<Vec<(String, String)>> {
        let mut out = Vec::new();
        for entry in record.host_config.extra_hosts.iter().flatten() {
            let (name, addr) = parse_extra_host(entry)?;
            let addr = if addr == HOST_GATEWAY {
                self.config
                    .host_gateway_ip
                    .or_else(|| self.networks.host_gateway())
                    .ok_or_else(|| {
                        ServiceError::internal("unable to derive the IP value for host-gateway")
                    })?
                    .to_string()
            } else {
                addr
            };
            out.push((name, addr));
        }
        Ok(out)
    }

    /// Writes a starting container's `hostname`, `hosts` and `resolv.conf` into `dir`, once
    /// its networks are plugged in (its addresses and resolver are known).
    pub(crate) fn write_network_files(
        &self,
        record: &ContainerRecord,
        dir: &Path,
    ) -> ServiceResult<()> {
        let host = &record.host_config;
        let hostname = record.config.hostname.clone().unwrap_or_default();
        let extra = self.extra_hosts(record)?;
        let overrides = self.container_dns(host)?;
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let (hosts, resolver) = if host.network_mode.as_deref() == Some("host") {
            let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
            (
                files::host_network_hosts(&host_hosts, &extra),
                ResolverMode::Host,
            )
        } else {
            let entries = HostEntries {
                hostname: hostname.clone(),
                domainname: record.config.domainname.clone().unwrap_or_default(),
                addresses: self.networks.container_addresses(&record.id),
                extra,
            };
            let resolver = match self.networks.resolver(&record.id) {
                Some(server) => ResolverMode::Embedded(server),
                None => ResolverMode::Legacy,
            };
            (files::hosts(&entries), resolver)
        };
        let resolv = files::resolv_conf(&host_resolv, &overrides, resolver);
        files::write_all(dir, &hostname, &hosts, &resolv).map_err(io_error)
    }

    /// After a network was connected to or disconnected from a running container: its own
    /// hosts lines for the `added` and `removed` addresses, and its `resolv.conf` when the
    /// embedded resolver it asks changed from `resolver_before`. Containers sharing its
    /// namespace see the same files. Failures are logged: the network change stands.
    pub(super) fn refresh_network_files(
        &self,
        record: &ContainerRecord,
        added: &[String],
        removed: &[String],
        resolver_before: Option<IpAddr>,
    ) {
        let dir = self.container_dir(&record.id);
        let names = files::host_record_names(
            record.config.hostname.as_deref().unwrap_or_default(),
            record.config.domainname.as_deref().unwrap_or_default(),
        );
        let hosts_path = dir.join("hosts");
        let hosts = files::read(&hosts_path).and_then(|text| {
            let updated = files::hosts_with_records(
                &files::hosts_without_records(&text, &names, removed),
                &names,
                added,
            );
            if updated == text {
                return Ok(());
            }
            files::write_in_place(&hosts_path, &updated)
        });
        if let Err(e) = hosts {
            tracing::warn!(container = %record.id, "cannot update /etc/hosts: {e}");
        }
        let resolver = self.networks.resolver(&record.id);
        if resolver == resolver_before {
            return;
        }
        let rewritten = self
            .container_dns(&record.host_config)
            .and_then(|overrides| {
                let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
                let mode = match resolver {
                    Some(server) => ResolverMode::Embedded(server),
                    None => ResolverMode::Legacy,
                };
                let text = files::resolv_conf(&host_resolv, &overrides, mode);
                files::write_in_place(&dir.join("resolv.conf"), &text).map_err(io_error)
            });
        if let Err(e) = rewritten {
            tracing::warn!(container = %record.id, "cannot update /etc/resolv.conf: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_hosts_take_every_form_the_docker_cli_takes() {
        let parse = |s: &str| parse_extra_host(s).map_err(|e| e.message);
        assert_eq!(parse("db:10.0.0.5"), Ok(("db".into(), "10.0.0.5".into())));
        assert_eq!(parse("db=10.0.0.5"), Ok(("db".into(), "10.0.0.5".into())));
        assert_eq!(parse("v6:::1"), Ok(("v6".into(), "::1".into())));
        assert_eq!(parse("v6=[fd00::1]"), Ok(("v6".into(), "fd00::1".into())));
        assert_eq!(parse("v6:[fd00::1]"), Ok(("v6".into(), "fd00::1".into())));
        assert_eq!(
            parse("gw:host-gateway"),
            Ok(("gw".into(), HOST_GATEWAY.into()))
        );
        assert_eq!(
            parse("db:nope"),
            Err(r#"invalid IP address in add-host: "nope""#.into())
        );
        assert_eq!(parse("db"), Err(r#"bad format for add-host: "db""#.into()));
        assert_eq!(
            parse(":1.2.3.4"),
            Err(r#"bad format for add-host: ":1.2.3.4""#.into())
        );
        let mut host = HostConfig {
            extra_hosts: Some(vec!["a=1.2.3.4".into(), "b:[::1]".into()]),
            ..Default::default()
        };
        normalise_extra_hosts(&mut host).unwrap();
        assert_eq!(host.extra_hosts.unwrap(), ["a:1.2.3.4", "b:::1"]);
    }

    #[test]
    fn dns_servers_must_be_addresses() {
        let host = HostConfig {
            dns: Some(vec!["1.1.1.1".into(), "fd00::53".into()]),
            dns_search: Some(vec!["example.org".into()]),
            dns_options: Some(vec!["ndots:1".into()]),
            ..Default::default()
        };
        let overrides = dns_overrides(&host).unwrap();
        assert_eq!(overrides.nameservers.len(), 2);
        assert_eq!(overrides.search, ["example.org"]);
        assert_eq!(overrides.options, ["ndots:1"]);
        let bad = HostConfig {
            dns: Some(vec!["dns.example".into()]),
            ..Default::default()
        };
        assert_eq!(
            dns_overrides(&bad).unwrap_err().message,
            r#"bad nameserver address "dns.example""#
        );
    }

    #[test]
    fn daemon_defaults_fill_each_list_the_container_left_empty() {
        let defaults = DnsOverrides {
            nameservers: vec!["10.0.0.53".parse().unwrap()],
            search: vec!["daemon.test".into()],
            options: vec!["ndots:2".into()],
        };
        let own = DnsOverrides {
            search: vec!["own.test".into()],
            ..Default::default()
        };
        let merged = with_daemon_defaults(own, &defaults);
        assert_eq!(merged.nameservers, defaults.nameservers);
        assert_eq!(merged.search, ["own.test"]);
        assert_eq!(merged.options, ["ndots:2"]);
        let nothing = with_daemon_defaults(DnsOverrides::default(), &DnsOverrides::default());
        assert_eq!(nothing, DnsOverrides::default());
    }
}
