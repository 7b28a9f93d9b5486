//! Linux bridges and the veth pairs that plug container namespaces into them, via rtnetlink.
//!
//! One bridge per network (`berth0` for the default `bridge` network, `br-<12 hex>` for user
//! networks, or the name from `com.docker.network.bridge.name`), holding the network's gateway
//! address. Each container gets a veth pair: the host end (`veth<11 hex>`) enslaved to the
//! bridge, the peer created directly inside the container's namespace as `eth0` (or `ethN`)
//! with its address, MAC and default route. Deleting the host end deletes the pair.
//!
//! Everything is idempotent where teardown needs it: removing what is already gone succeeds,
//! so a daemon can retry after a crash.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use crate::netlink::{Netlink, NetlinkError, VethPair};

/// The default network's bridge device (Docker's `docker0`).
pub const DEFAULT_BRIDGE: &str = "berth0";

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

/// Errors setting up or tearing down bridges and veth pairs.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// A netlink request failed (the message names the interface).
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// A kernel parameter could not be written.
    #[error("cannot set {path} to {value}: {source}")]
    Sysctl {
        /// The `/proc/sys` path.
        path: String,
        /// The value written.
        value: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The container's namespace could not be opened.
    #[error("cannot open network namespace {path}: {source}")]
    Netns {
        /// The namespace path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An interface name the kernel would refuse.
    #[error("invalid interface name {0:?}: use 1 to 15 characters without '/', ':' or whitespace")]
    BadName(String),
    /// A MAC address that does not parse or is multicast.
    #[error("invalid mac address {0:?}: use a unicast address such as 02:42:ac:11:00:02")]
    BadMac(String),
    /// An interface with the bridge's name exists but is something else.
    #[error("network interface {0} exists and is not a bridge")]
    NotABridge(String),
}

/// Checks that `name` is a valid interface name.
pub fn validate_ifname(name: &str) -> Result<(), BridgeError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(BridgeError::BadName(name.to_string()))
    }
}

/// The bridge name of a user network: `br-` and the first 12 characters of its id.
pub fn bridge_name(network_id: &str) -> String {
    format!("br-{}", network_id.chars().take(12).collect::<String>())
}

/// The host end of a container's veth on a network: `veth` and 11 hex digits of a stable
/// hash of both ids, so teardown can find it without stored state and a container on several
/// networks gets one name per network.
pub fn host_veth_name(container_id: &str, network_id: &str) -> String {
    // FNV-1a: fixed forever, unlike std's hasher, since the name must survive daemon upgrades.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in container_id.bytes().chain([0]).chain(network_id.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("veth{:011x}", hash & 0xfff_ffff_ffff)
}

/// The MAC Docker derives from an IPv4 address: `02:42` followed by the address's four bytes.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x42, a, b, c, d]
}

/// Parses `aa:bb:cc:dd:ee:ff` (`--mac-address`); multicast addresses are refused.
pub fn parse_mac(text: &str) -> Result<[u8; 6], BridgeError> {
    let bad = || BridgeError::BadMac(text.to_string());
    let mut mac = [0u8; 6];
    let mut parts = text.split([':', '-']);
    for byte in &mut mac {
        let part = parts.next().ok_or_else(bad)?;
        if part.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() || mac[0] & 1 == 1 {
        return Err(bad());
    }
    Ok(mac)
}

/// Formats a MAC the way `docker inspect` shows it.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Writes a kernel parameter under `/proc/sys`.
fn set_sysctl(path: String, value: &'static str) -> Result<(), BridgeError> {
    if std::fs::read_to_string(&path).is_ok_and(|current| current.trim() == value) {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(|source| BridgeError::Sysctl {
        path,
        value,
        source,
    })
}

/// Turns on IPv4 forwarding (`net.ipv4.ip_forward=1`), needed for anything to leave a bridge.
pub fn enable_ip_forwarding() -> Result<(), BridgeError> {
    set_sysctl("/proc/sys/net/ipv4/ip_forward".into(), "1")
}

/// A network's bridge as it should exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// The device name.
    pub name: String,
    /// The gateway address with the subnet's prefix length, assigned to the bridge.
    pub gateway: Ipv4Net,
    /// MTU for the bridge and its veths; `None` keeps the kernel's 1500.
    pub mtu: Option<u32>,
    /// Sets `net.ipv4.conf.<bridge>.route_localnet=1`, so traffic to `127.0.0.1` published
    /// ports can be DNATed out through the bridge (see [`crate::firewall`]).
    pub route_localnet: bool,
}

/// Creates the bridge if missing, gives it the gateway address and brings it up. Calling it
/// for an existing bridge repairs a missing address or a down state (daemon restart).
pub async fn ensure_bridge(netlink: &Netlink, config: &BridgeConfig) -> Result<(), BridgeError> {
    validate_ifname(&config.name)?;
    let existing = netlink.link(&config.name).await?;
    let index = match existing {
        Some(link) if !Netlink::is_bridge(&link) => {
            return Err(BridgeError::NotABridge(config.name.clone()));
        }
        Some(link) => link.header.index,
        None => {
            match netlink
                .add_bridge(&config.name, mac_for(config.gateway.addr()), config.mtu)
                .await
            {
                Ok(()) => {}
                // Created concurrently: fine, configure it below.
                Err(e) if e.errno() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
            tracing::debug!(bridge = %config.name, gateway = %config.gateway, "created bridge");
            netlink.index(&config.name).await?
        }
    };
    if !netlink
        .ipv4_addresses(index)
        .await?
        .contains(&config.gateway)
    {
        match netlink
            .add_address(index, &config.name, config.gateway)
            .await
        {
            Ok(()) => {}
            Err(e) if e.errno() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if config.route_localnet {
        set_sysctl(
            format!("/proc/sys/net/ipv4/conf/{}/route_localnet", config.name),
            "1",
        )?;
    }
    netlink.set_up_by_name(&config.name).await?;
    Ok(())
}

/// Deletes the bridge (and with it any remaining ports' enslavement). Returns false if it did
/// not exist.
pub async fn remove_bridge(netlink: &Netlink, name: &str) -> Result<bool, BridgeError> {
    let removed = netlink.delete_link(name).await?;
    if removed {
        tracing::debug!(bridge = %name, "removed bridge");
    }
    Ok(removed)
}

/// The interfaces currently plugged into bridge `name` (empty if the bridge does not exist).
pub async fn bridge_ports(netlink: &Netlink, name: &str) -> Result<Vec<String>, BridgeError> {
    match netlink.link(name).await? {
        Some(link) => Ok(netlink.ports_of(link.header.index).await?),
        None => Ok(Vec::new()),
    }
}

/// Deletes bridge `name` only if nothing is plugged into it; returns whether it was deleted.
pub async fn remove_bridge_if_unused(netlink: &Netlink, name: &str) -> Result<bool, BridgeError> {
    if !bridge_ports(netlink, name).await?.is_empty() {
        return Ok(false);
    }
    remove_bridge(netlink, name).await
}

/// One container's attachment to a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethConfig {
    /// Host end name, usually [`host_veth_name`].
    pub host_name: String,
    /// The bridge to plug the host end into.
    pub bridge: String,
    /// The container's pinned network namespace.
    pub netns: PathBuf,
    /// The interface name inside the container (`eth0`, `eth1`, ...).
    pub ifname: String,
    /// The container's address with the subnet's prefix length.
    pub address: Ipv4Net,
    /// Default route via this gateway (the container's first, non-internal network only).
    pub gateway: Option<Ipv4Addr>,
    /// The container interface's MAC; `None` derives it from the address ([`mac_for`]).
    pub mac: Option<[u8; 6]>,
    /// MTU for both ends.
    pub mtu: Option<u32>,
}

/// Plugs a container namespace into a bridge; returns the MAC given to the container's end.
/// On failure the pair is removed again.
pub async fn attach(netlink: &Netlink, config: &VethConfig) -> Result<[u8; 6], BridgeError> {
    validate_ifname(&config.host_name)?;
    validate_ifname(&config.ifname)?;
    let netns = open_netns(&config.netns)?;
    let bridge_index = netlink.index(&config.bridge).await?;
    let mac = config.mac.unwrap_or_else(|| mac_for(config.address.addr()));
    netlink
        .add_veth(&VethPair {
            host_name: &config.host_name,
            bridge_index,
            peer_name: &config.ifname,
            peer_netns: &netns,
            peer_mac: mac,
            mtu: config.mtu,
        })
        .await?;
    if let Err(e) = configure_container_end(config).await {
        if let Err(cleanup) = netlink.delete_link(&config.host_name).await {
            tracing::warn!(veth = %config.host_name, error = %cleanup, "cannot remove veth after a failed attach");
        }
        return Err(e);
    }
    tracing::debug!(veth = %config.host_name, bridge = %config.bridge, address = %config.address, "attached");
    Ok(mac)
}

async fn configure_container_end(config: &VethConfig) -> Result<(), BridgeError> {
    let inside = Netlink::in_netns(&config.netns)?;
    let index = inside.index(&config.ifname).await?;
    inside
        .add_address(index, &config.ifname, config.address)
        .await?;
    inside.set_up_by_name(&config.ifname).await?;
    if let Some(gateway) = config.gateway {
        inside.add_default_route(gateway).await?;
    }
    Ok(())
}

/// Unplugs a container: deletes the host end of its veth (the kernel deletes the peer).
/// Returns false if it was already gone (e.g. the namespace was destroyed first).
pub async fn detach(netlink: &Netlink, host_name: &str) -> Result<bool, BridgeError> {
    Ok(netlink.delete_link(host_name).await?)
}

fn open_netns(path: &Path) -> Result<OwnedFd, BridgeError> {
    File::open(path)
        .map(OwnedFd::from)
        .map_err(|source| BridgeError::Netns {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limit() {
        assert_eq!(bridge_name("0123456789abcdef0123"), "br-0123456789ab");
        let veth = host_veth_name("4f3c2b1a0e9d8c7b", "net1");
        assert_eq!(veth.len(), 15);
        assert!(veth.starts_with("veth"));
        validate_ifname(&veth).unwrap();
        assert_eq!(veth, host_veth_name("4f3c2b1a0e9d8c7b", "net1"), "stable");
        assert_ne!(veth, host_veth_name("4f3c2b1a0e9d8c7b", "net2"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(host_veth_name("ab", "c"), host_veth_name("a", "bc"));
    }

    #[test]
    fn interface_names_are_validated() {
        for ok in ["berth0", "br-0123456789ab", "eth0", "a"] {
            validate_ifname(ok).unwrap();
        }
        for bad in ["", "this-name-is-too-long", "a/b", "a:b", "a b", ".", ".."] {
            assert!(
                matches!(validate_ifname(bad), Err(BridgeError::BadName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn macs_derive_parse_and_format() {
        let mac = mac_for(Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(format_mac(mac), "02:42:ac:11:00:02");
        assert_eq!(parse_mac("02:42:AC:11:00:02").unwrap(), mac);
        assert_eq!(parse_mac("02-42-ac-11-00-02").unwrap(), mac);
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "02:42:ac:11:00:2",
            "zz:42:ac:11:00:02",
            "01:00:5e:00:00:01",
        ] {
            let err = parse_mac(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }
}
