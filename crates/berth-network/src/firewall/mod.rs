//! Packet filtering and NAT for bridge networks: outbound masquerade, inter-network isolation
//! and published ports, behind the [`Firewall`] trait.
//!
//! The firewall is declarative: a [`RuleSet`] (networks and published ports, plain data) is the
//! whole truth, and every change re-renders berth's table from it and replaces the old one in
//! a single atomic nftables transaction ([`NftFirewall`]). Rules therefore disappear exactly
//! when nothing needs them, the table itself is deleted when the rule set is empty, and a
//! restarted daemon that re-adds its networks overwrites whatever a crash left behind.
//! [`NoopFirewall`] keeps the same rule set without touching the kernel, for unit tests.
//!
//! What the rules do (all in berth's own table; nothing else on the host is modified):
//! - **masquerade**: traffic from a non-internal network's subnet leaving through any other
//!   interface is source-NATed to the host's address.
//! - **isolation**: forwarding from one berth bridge to another is dropped (Docker's
//!   `DOCKER-ISOLATION` chains); an `internal` network's bridge forwards nothing in or out.
//! - **published ports**: DNAT to the container for packets addressed to a local address, in
//!   PREROUTING (from other hosts and from containers) and OUTPUT (from the host itself).
//!
//! Publishing on the host's loopback uses DNAT, not a userland proxy: `127.0.0.1:8080` is
//! rewritten in OUTPUT to the container's address; for the kernel to route a packet with a
//! loopback source out of the bridge, the bridge gets `route_localnet=1`
//! ([`crate::bridge::BridgeConfig::route_localnet`]), and POSTROUTING masquerades loopback
//! sources leaving through a berth bridge so the container can answer. Compared with Docker's
//! `docker-proxy` this costs no process per port and no copy through userspace, which is what
//! the published-port throughput goal needs. Hairpin traffic (a container reaching a published
//! port of its own network through a host address) is masqueraded the same way, so the reply
//! comes back through the host instead of directly from the peer.
//!
//! Host ports are reserved separately by binding them ([`crate::ports`]); the rule set only
//! refuses two owners forwarding the same host address and port.

mod nft;

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use ipnet::Ipv4Net;

pub use nft::NftFirewall;

/// Errors changing the firewall.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// The `nft` program could not be run.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program path.
        program: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `nft` refused the rules for a table.
    #[error("nft refused the rules for table inet {table}: {stderr}")]
    Nft {
        /// berth's table name.
        table: String,
        /// What nft printed.
        stderr: String,
    },
    /// `nft` printed something that is not the expected JSON.
    #[error("cannot read nft's listing of table inet {table}: {reason}")]
    Listing {
        /// berth's table name.
        table: String,
        /// What was wrong.
        reason: String,
    },
    /// Two published ports would forward the same host address and port.
    #[error("host port {port} is already published by {owner}")]
    PortTaken {
        /// The conflicting binding, e.g. `0.0.0.0:8080/tcp`.
        port: String,
        /// Who holds it.
        owner: String,
    },
    /// A port forward with port 0 (host ports must be resolved before publishing).
    #[error("invalid port forward {0}: ports must be 1-65535")]
    BadPort(String),
    /// A bridge name nft would not accept as an interface name.
    #[error(transparent)]
    BadName(#[from] crate::bridge::BridgeError),
}

/// The transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The lower-case name (`tcp`, `udp`), as in `80/tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }

    /// Parses `tcp` or `udp` (any case); `None` for anything else (sctp is not supported).
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "tcp" => Some(Self::Tcp),
            "udp" => Some(Self::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A bridge network as the firewall sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRules {
    /// The bridge device.
    pub bridge: String,
    /// The network's subnet.
    pub subnet: Ipv4Net,
    /// No traffic in or out of the bridge, and no masquerade (`--internal`).
    pub internal: bool,
}

/// One forwarded host port (a published range is one of these per port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortForward {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The host address it is published on; `None` for all of them.
    pub host_ip: Option<Ipv4Addr>,
    /// The host port (already chosen: never 0).
    pub host_port: u16,
    /// The container's address on the network the port is published through.
    pub container_ip: Ipv4Addr,
    /// The port inside the container.
    pub container_port: u16,
}

impl PortForward {
    fn host_binding(&self) -> String {
        format!(
            "{}:{}/{}",
            self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            self.host_port,
            self.protocol
        )
    }

    fn clashes_with(&self, other: &PortForward) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && (self.host_ip.is_none() || other.host_ip.is_none() || self.host_ip == other.host_ip)
    }
}

impl fmt::Display for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {}:{}",
            self.host_binding(),
            self.container_ip,
            self.container_port
        )
    }
}

/// Everything berth's firewall table must express.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    networks: BTreeMap<String, NetworkRules>,
    ports: BTreeMap<String, Vec<PortForward>>,
}

impl RuleSet {
    /// Adds a network, or replaces the one on the same bridge.
    pub fn add_network(&mut self, network: &NetworkRules) -> Result<(), FirewallError> {
        crate::bridge::validate_ifname(&network.bridge)?;
        self.networks
            .insert(network.bridge.clone(), network.clone());
        Ok(())
    }

    /// Removes the network on `bridge`; returns whether it was there.
    pub fn remove_network(&mut self, bridge: &str) -> bool {
        self.networks.remove(bridge).is_some()
    }

    /// Sets the ports `owner` (a container endpoint) publishes, replacing its previous ones.
    /// Refuses a host binding that another owner, or the list itself, already uses.
    pub fn publish(&mut self, owner: &str, ports: &[PortForward]) -> Result<(), FirewallError> {
        for (i, port) in ports.iter().enumerate() {
            if port.host_port == 0 || port.container_port == 0 {
                return Err(FirewallError::BadPort(port.to_string()));
            }
            let earlier = ports[..i].iter().find(|p| p.clashes_with(port));
            let other = self
                .ports
                .iter()
                .filter(|(o, _)| o.as_str() != owner)
                .find_map(|(o, list)| {
                    list.iter()
                        .any(|p| p.clashes_with(port))
                        .then_some(o.as_str())
                });
            if let Some(taken_by) = other.or(earlier.map(|_| owner)) {
                return Err(FirewallError::PortTaken {
                    port: port.host_binding(),
                    owner: taken_by.to_string(),
                });
            }
        }
        if ports.is_empty() {
            self.ports.remove(owner);
        } else {
            self.ports.insert(owner.to_string(), ports.to_vec());
        }
        Ok(())
    }

    /// Drops every port `owner` publishes; returns whether it had any.
    pub fn unpublish(&mut self, owner: &str) -> bool {
        self.ports.remove(owner).is_some()
    }

    /// The networks, ordered by bridge name.
    pub fn networks(&self) -> impl Iterator<Item = &NetworkRules> {
        self.networks.values()
    }

    /// Every published port with its owner, ordered by owner.
    pub fn ports(&self) -> impl Iterator<Item = (&str, &PortForward)> {
        self.ports
            .iter()
            .flat_map(|(owner, list)| list.iter().map(move |p| (owner.as_str(), p)))
    }

    /// Whether nothing needs a rule (the table can go).
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty() && self.ports.is_empty()
    }
}

/// What the bridge driver asks of a firewall backend (netavark's `FirewallDriver`, reduced to
/// berth's needs). Each call is applied before it returns; on error nothing changed.
pub trait Firewall: Send + Sync {
    /// Adds (or updates) a network's masquerade and isolation rules.
    fn add_network(&self, network: &NetworkRules) -> Result<(), FirewallError>;
    /// Removes a network's rules (no-op if unknown).
    fn remove_network(&self, bridge: &str) -> Result<(), FirewallError>;
    /// Sets the ports `owner` publishes (replacing earlier ones).
    fn publish(&self, owner: &str, ports: &[PortForward]) -> Result<(), FirewallError>;
    /// Removes the ports `owner` publishes (no-op if none).
    fn unpublish(&self, owner: &str) -> Result<(), FirewallError>;
    /// A copy of the current rule set.
    fn rules(&self) -> RuleSet;
}

/// A firewall that only records the rule set: for tests and for `--iptables=false`-like
/// setups where the host's firewall is managed by someone else.
#[derive(Debug, Default)]
pub struct NoopFirewall {
    rules: Mutex<RuleSet>,
}

impl NoopFirewall {
    /// An empty firewall.
    pub fn new() -> Self {
        Self::default()
    }

    fn change<T>(
        &self,
        edit: impl FnOnce(&mut RuleSet) -> Result<T, FirewallError>,
    ) -> Result<T, FirewallError> {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = rules.clone();
        let out = edit(&mut next)?;
        *rules = next;
        Ok(out)
    }
}

impl Firewall for NoopFirewall {
    fn add_network(&self, network: &NetworkRules) -> Result<(), FirewallError> {
        self.change(|r| r.add_network(network))
    }

    fn remove_network(&self, bridge: &str) -> Result<(), FirewallError> {
        self.change(|r| Ok(r.remove_network(bridge))).map(drop)
    }

    fn publish(&self, owner: &str, ports: &[PortForward]) -> Result<(), FirewallError> {
        self.change(|r| r.publish(owner, ports))
    }

    fn unpublish(&self, owner: &str) -> Result<(), FirewallError> {
        self.change(|r| Ok(r.unpublish(owner))).map(drop)
    }

    fn rules(&self) -> RuleSet {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn fwd(host_ip: Option<&str>, host_port: u16, protocol: Protocol) -> PortForward {
        PortForward {
            protocol,
            host_ip: host_ip.map(|s| s.parse().unwrap()),
            host_port,
            container_ip: "10.213.0.2".parse().unwrap(),
            container_port: 80,
        }
    }

    pub(super) fn network(bridge: &str, subnet: &str, internal: bool) -> NetworkRules {
        NetworkRules {
            bridge: bridge.into(),
            subnet: subnet.parse().unwrap(),
            internal,
        }
    }

    #[test]
    fn protocols_parse_and_print() {
        assert_eq!(Protocol::parse("TCP"), Some(Protocol::Tcp));
        assert_eq!(Protocol::parse("udp"), Some(Protocol::Udp));
        assert_eq!(Protocol::parse("sctp"), None);
        assert_eq!(Protocol::Udp.to_string(), "udp");
    }

    #[test]
    fn conflicting_host_ports_are_refused_naming_the_holder() {
        let fw = NoopFirewall::new();
        fw.publish("web", &[fwd(None, 8080, Protocol::Tcp)])
            .unwrap();
        // Same port, other protocol or a different port: fine.
        fw.publish(
            "dns",
            &[
                fwd(None, 8080, Protocol::Udp),
                fwd(Some("127.0.0.1"), 8081, Protocol::Tcp),
            ],
        )
        .unwrap();
        let err = fw
            .publish("api", &[fwd(Some("127.0.0.1"), 8080, Protocol::Tcp)])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "host port 127.0.0.1:8080/tcp is already published by web"
        );
        let err = fw
            .publish("api", &[fwd(None, 8081, Protocol::Tcp)])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "host port 0.0.0.0:8081/tcp is already published by dns"
        );
        // Two specific, different addresses do not clash.
        fw.publish("api", &[fwd(Some("127.0.0.2"), 8081, Protocol::Tcp)])
            .unwrap();
        // A duplicate inside one request is refused too, and nothing of it is kept.
        let err = fw
            .publish(
                "dup",
                &[
                    fwd(None, 9000, Protocol::Tcp),
                    fwd(None, 9000, Protocol::Tcp),
                ],
            )
            .unwrap_err();
        assert!(matches!(err, FirewallError::PortTaken { .. }), "{err}");
        assert_eq!(fw.rules().ports().filter(|(o, _)| *o == "dup").count(), 0);
        // Republishing replaces an owner's own ports without clashing with itself.
        fw.publish(
            "web",
            &[
                fwd(None, 8080, Protocol::Tcp),
                fwd(None, 8443, Protocol::Tcp),
            ],
        )
        .unwrap();
        assert_eq!(fw.rules().ports().filter(|(o, _)| *o == "web").count(), 2);
        let err = fw
            .publish("web", &[fwd(None, 0, Protocol::Tcp)])
            .unwrap_err();
        assert!(matches!(err, FirewallError::BadPort(_)), "{err}");
    }

    #[test]
    fn the_rule_set_empties_when_everything_is_removed() {
        let fw = NoopFirewall::new();
        fw.add_network(&network("br-a", "10.213.1.0/24", false))
            .unwrap();
        fw.add_network(&network("br-a", "10.213.1.0/24", true))
            .unwrap();
        assert_eq!(fw.rules().networks().count(), 1);
        assert!(
            fw.rules().networks().all(|n| n.internal),
            "re-adding replaces"
        );
        fw.publish("c1", &[fwd(None, 8080, Protocol::Tcp)]).unwrap();
        fw.remove_network("br-a").unwrap();
        fw.remove_network("br-a").unwrap();
        assert!(!fw.rules().is_empty());
        fw.unpublish("c1").unwrap();
        assert!(fw.rules().is_empty());
        fw.publish("c2", &[]).unwrap();
        assert!(fw.rules().is_empty(), "publishing nothing keeps no entry");
        let err = fw
            .add_network(&network("bad name", "10.213.1.0/24", false))
            .unwrap_err();
        assert!(err.to_string().contains("bad name"), "{err}");
    }
}
