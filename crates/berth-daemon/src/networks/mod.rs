//! The network service: bridge networks (records, addresses, the default `bridge`), and the
//! networks of each container (endpoints, namespaces, published ports).
//!
//! Networks are persisted as JSON records of kind [`NETWORK_KIND`]; what a container is
//! connected to (and, while it runs, its addresses and published ports) as records of kind
//! [`ENDPOINTS_KIND`] keyed by container id. Address allocation lives in memory and is
//! rebuilt from those records at startup. Kernel state (bridges, veths, nftables, the DNS
//! servers) is [`BridgeDriver`]'s; this service only decides what to plug where.

//!
//! - `records`: the persisted network and endpoint records.
//! - `api`: `/networks` operations (create, list with filters, inspect, remove, prune).
//! - `endpoints`: planning a container's endpoints at create, plugging them in at start,
//!   releasing them at exit, restoring them after a restart.
//! - `connect`: `network connect` / `disconnect` of created and running containers.
//! - `ports`: published ports (`PortBindings`, `-P`) as requests.
//! - `settings`: what inspect and `ps` show of a container's networks.
//! - `files`: a container's `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`.

mod api;
mod connect;
mod endpoints;
mod files;
mod ports;
mod records;
mod settings;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use berth_network::driver::{BridgeDriver, NetworkSpec};
use berth_network::firewall::{Firewall, NftFirewall};
use berth_network::ipam::{self, Addresses, SubnetRequest, UsedSubnet};
use berth_network::ports::PortReservation;
use berth_store::Store;
use chrono::Utc;
use serde::Serialize;

pub use api::{CreateNetwork, NetworkView};
pub use endpoints::EndpointRequest;
pub(crate) use files::{dns_overrides, normalise_extra_hosts};
pub use records::{ContainerNetworks, Endpoint, NetworkRecord, PublishedPort};

use crate::config::Config;
use crate::error::{ServiceError, ServiceResult};

/// Record kind of networks.
pub const NETWORK_KIND: &str = "network";
/// Record kind of a container's endpoints, keyed by container id.
pub const ENDPOINTS_KIND: &str = "container-networks";
/// The default network's name.
pub const DEFAULT_NETWORK: &str = "bridge";

#[derive(Debug)]
struct Network {
    record: NetworkRecord,
    addresses: Addresses,
}

#[derive(Default)]
struct NetworkState {
    networks: HashMap<String, Network>,
    containers: HashMap<String, ContainerNetworks>,
    reservations: HashMap<String, Vec<PortReservation>>,
}

impl NetworkState {
    /// Takes `container`'s endpoint on `network_id` out of the state and gives its address
    /// back to the network; `None` when the container has no endpoint there.
    fn take_endpoint(&mut self, container: &str, network_id: &str) -> Option<Endpoint> {
        let endpoints = &mut self.containers.get_mut(container)?.endpoints;
        let index = endpoints.iter().position(|e| e.network_id == network_id)?;
        let endpoint = endpoints.remove(index);
        if let (Some(ip), Some(net)) = (endpoint.address, self.networks.get_mut(network_id)) {
            net.addresses.release(ip);
        }
        Some(endpoint)
    }

    /// Gives `endpoint` its address on its network (`--ip` if it asked for one) and returns
    /// the network's spec with it.
    fn assign_address(
        &mut self,
        endpoint: &Endpoint,
    ) -> ServiceResult<(NetworkSpec, std::net::Ipv4Addr)> {
        let net = self.networks.get_mut(&endpoint.network_id).ok_or_else(|| {
            ServiceError::not_found(format!("network {} not found", endpoint.network_id))
        })?;
        let address = match endpoint.requested_ip {
            Some(ip) => net.addresses.reserve(ip).map(|()| ip),
            None => net.addresses.allocate(),
        }
        .map_err(|e| ServiceError::invalid(format!("network {}: {e}", net.record.name)))?;
        Ok((net.record.spec(*net.addresses.config()), address))
    }
}

/// Networks and the driver that realises them.
pub struct Networks {
    driver: BridgeDriver,
    firewall: Arc<NftFirewall>,
    state: Mutex<NetworkState>,
    netns_dir: PathBuf,
}

impl std::fmt::Debug for Networks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Networks")
            .field("netns_dir", &self.netns_dir)
            .finish_non_exhaustive()
    }
}

/// The nftables table of a daemon: `berth` with the default bridge device, else one named
/// after the bridge so that several daemons (tests) never share a table.
fn firewall_table(config: &Config) -> String {
    match config.default_bridge.as_deref() {
        None | Some(berth_network::bridge::DEFAULT_BRIDGE) => NftFirewall::DEFAULT_TABLE.into(),
        Some(bridge) => bridge.to_string(),
    }
}

impl Networks {
    /// Loads networks and endpoints, creates the default network if configured, and brings
    /// every network's bridge up (idle networks are kept, as Docker does).
    pub async fn open(config: &Config, store: &Arc<Store>) -> anyhow::Result<Networks> {
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let firewall = Arc::new(NftFirewall::new(firewall_table(config)));
        let upstreams = berth_network::dns::upstreams_from_resolv_conf(&host_resolv);
        let driver = BridgeDriver::new(firewall.clone() as Arc<dyn Firewall>, upstreams)?
            .keep_idle_networks(true);
        let netns_dir = config.exec_root.join("netns");
        berth_network::netns::prepare_dir(&netns_dir)?;
        let records = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                Ok((
                    store.list_records(NETWORK_KIND)?,
                    store.list_records(ENDPOINTS_KIND)?,
                ))
            })
            .await??
        };
        let mut state = NetworkState::default();
        for (id, bytes) in records.0 {
            match serde_json::from_slice::<NetworkRecord>(&bytes) {
                Ok(record) => {
                    let addresses = Addresses::new(record.addressing()?);
                    state
                        .networks
                        .insert(record.id.clone(), Network { record, addresses });
                }
                Err(e) => tracing::warn!(network = %id, "skipping unreadable network record: {e}"),
            }
        }
        for (id, bytes) in records.1 {
            match serde_json::from_slice::<ContainerNetworks>(&bytes) {
                Ok(networks) => {
                    for ep in &networks.endpoints {
                        if let (Some(ip), Some(net)) =
                            (ep.address, state.networks.get_mut(&ep.network_id))
                            && let Err(e) = net.addresses.reserve(ip)
                        {
                            tracing::warn!(container = %id, "cannot restore address {ip}: {e}");
                        }
                    }
                    state.containers.insert(id, networks);
                }
                Err(e) => tracing::warn!(container = %id, "skipping unreadable endpoints: {e}"),
            }
        }
        if config.default_bridge.is_none() {
            // Configured without a default network: an earlier one is kept on disk but unused.
            state.networks.retain(|_, n| !n.record.default_bridge);
        }
        let networks = Networks {
            driver,
            firewall,
            state: Mutex::new(state),
            netns_dir,
        };
        if let Some(bridge) = &config.default_bridge {
            networks
                .ensure_default(store, bridge, &config.address_pools)
                .await?;
        }
        let specs: Vec<NetworkSpec> = {
            let state = networks.lock();
            state
                .networks
                .values()
                .map(|n| n.record.spec(*n.addresses.config()))
                .collect()
        };
        for spec in &specs {
            networks.driver.setup_network(spec).await?;
        }
        Ok(networks)
    }

    fn lock(&self) -> MutexGuard<'_, NetworkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates the default `bridge` network on first start (or after its bridge changed).
    async fn ensure_default(
        &self,
        store: &Arc<Store>,
        bridge: &str,
        pools: &[ipam::AddressPool],
    ) -> anyhow::Result<()> {
        let existing = self
            .lock()
            .networks
            .values()
            .find(|n| n.record.default_bridge)
            .map(|n| n.record.clone());
        if let Some(record) = &existing
            && record.bridge == bridge
        {
            return Ok(());
        }
        if let Some(record) = existing {
            self.lock().networks.remove(&record.id);
            delete_record(store, NETWORK_KIND, &record.id).await?;
        }
        let routes = host_routes().await;
        let used = self.used_subnets();
        let addressing = ipam::configure(&SubnetRequest::default(), pools, &used, &routes)?;
        let record = NetworkRecord {
            id: crate::containers::random_id(),
            name: DEFAULT_NETWORK.into(),
            created: Utc::now(),
            bridge: bridge.to_string(),
            subnet: addressing.subnet.to_string(),
            gateway: addressing.gateway.to_string(),
            ip_range: None,
            internal: false,
            attachable: false,
            labels: HashMap::new(),
            options: HashMap::new(),
            ipam_options: HashMap::new(),
            mtu: None,
            default_bridge: true,
        };
        put_json(store, NETWORK_KIND, &record.id, &record).await?;
        self.lock().networks.insert(
            record.id.clone(),
            Network {
                record,
                addresses: Addresses::new(addressing),
            },
        );
        Ok(())
    }

    fn used_subnets(&self) -> Vec<UsedSubnet> {
        self.lock()
            .networks
            .values()
            .map(|n| UsedSubnet {
                subnet: n.addresses.config().subnet,
                owner: format!("network {}", n.record.name),
            })
            .collect()
    }

    /// Finds a network by id, name, or unique id prefix (Docker's order).
    fn find(&self, reference: &str) -> ServiceResult<NetworkRecord> {
        find_in(&self.lock().networks, reference).map(|n| n.record.clone())
    }

    /// The namespace path of a container.
    fn netns_path(&self, container_id: &str) -> PathBuf {
        self.netns_dir.join(container_id)
    }

    /// The namespace a starting container joins, when it was connected to networks.
    pub fn container_netns(&self, container_id: &str) -> Option<PathBuf> {
        self.lock()
            .containers
            .get(container_id)
            .filter(|c| c.attached)
            .map(|_| self.netns_path(container_id))
    }

    /// The container's addresses, for its `/etc/hosts`.
    pub fn container_addresses(&self, container_id: &str) -> Vec<String> {
        self.lock()
            .containers
            .get(container_id)
            .map(|c| {
                c.endpoints
                    .iter()
                    .filter_map(|e| e.address.map(|a| a.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The embedded DNS server a container asks: the gateway of the first of its networks
    /// (in connection order) that serves names and where it has an address. Docker's
    /// containers likewise use the embedded resolver once any network has one.
    pub fn resolver(&self, container_id: &str) -> Option<IpAddr> {
        let state = self.lock();
        state
            .containers
            .get(container_id)?
            .endpoints
            .iter()
            .filter(|ep| ep.address.is_some())
            .filter_map(|ep| state.networks.get(&ep.network_id))
            .find(|net| !net.record.default_bridge)
            .map(|net| IpAddr::V4(net.addresses.config().gateway))
    }

    /// What `host-gateway` in `--add-host` stands for: the default bridge's gateway address.
    pub fn host_gateway(&self) -> Option<IpAddr> {
        self.lock()
            .networks
            .values()
            .find(|n| n.record.default_bridge)
            .map(|n| IpAddr::V4(n.addresses.config().gateway))
    }
}

fn find_in<'a>(
    networks: &'a HashMap<String, Network>,
    reference: &str,
) -> ServiceResult<&'a Network> {
    if let Some(n) = networks.get(reference) {
        return Ok(n);
    }
    if let Some(n) = networks.values().find(|n| n.record.name == reference) {
        return Ok(n);
    }
    let mut prefixed = networks
        .values()
        .filter(|n| n.record.id.starts_with(reference));
    match (prefixed.next(), prefixed.next()) {
        (Some(n), None) if !reference.is_empty() => Ok(n),
        (Some(_), Some(_)) => Err(ServiceError::invalid(format!(
            "network {reference} is ambiguous"
        ))),
        _ => Err(ServiceError::not_found(format!(
            "network {reference} not found"
        ))),
    }
}

/// The host's routed IPv4 destinations (empty if they cannot be read).
async fn host_routes() -> Vec<ipnet::Ipv4Net> {
    let routes = match berth_network::netlink::Netlink::host() {
        Ok(netlink) => netlink.ipv4_routes().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    routes.unwrap_or_else(|e| {
        tracing::warn!("cannot read the host's routes: {e}");
        Vec::new()
    })
}

async fn put_json<T: Serialize>(
    store: &Arc<Store>,
    kind: &'static str,
    id: &str,
    value: &T,
) -> ServiceResult<()> {
    let bytes = serde_json::to_vec(value).map_err(|e| ServiceError::internal(e.to_string()))?;
    let store = store.clone();
    let id = id.to_string();
    tokio::task::spawn_blocking(move || store.put_record(kind, &id, &bytes)).await??;
    Ok(())
}

async fn delete_record(store: &Arc<Store>, kind: &'static str, id: &str) -> ServiceResult<()> {
    let store = store.clone();
    let id = id.to_string();
    tokio::task::spawn_blocking(move || store.delete_record(kind, &id)).await??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use chrono::Utc;

    use super::*;

    fn network(id: &str, name: &str, subnet: &str) -> Network {
        let record = NetworkRecord {
            id: id.into(),
            name: name.into(),
            created: Utc::now(),
            bridge: "br-test".into(),
            subnet: subnet.into(),
            gateway: subnet.replace(".0/24", ".1"),
            ip_range: None,
            internal: false,
            attachable: false,
            labels: HashMap::new(),
            options: HashMap::new(),
            ipam_options: HashMap::new(),
            mtu: None,
            default_bridge: false,
        };
        let addresses = Addresses::new(record.addressing().unwrap());
        Network { record, addresses }
    }

    #[test]
    fn networks_are_found_by_id_name_or_unique_prefix() {
        let networks = HashMap::from([
            (
                "abc123".to_string(),
                network("abc123", "front", "10.1.0.0/24"),
            ),
            (
                "abd456".to_string(),
                network("abd456", "back", "10.2.0.0/24"),
            ),
        ]);
        assert_eq!(find_in(&networks, "abc123").unwrap().record.name, "front");
        assert_eq!(find_in(&networks, "back").unwrap().record.id, "abd456");
        assert_eq!(find_in(&networks, "abc").unwrap().record.name, "front");
        assert_eq!(
            find_in(&networks, "ab").unwrap_err().kind,
            crate::error::ErrorKind::InvalidArgument
        );
        let missing = find_in(&networks, "nope").unwrap_err();
        assert_eq!(missing.kind, crate::error::ErrorKind::NotFound);
        assert_eq!(missing.message, "network nope not found");
    }

    #[test]
    fn records_round_trip_and_rebuild_their_addressing() {
        let net = network("abc123", "front", "10.1.0.0/24");
        let json = serde_json::to_vec(&net.record).unwrap();
        let back: NetworkRecord = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, net.record);
        let addressing = back.addressing().unwrap();
        assert_eq!(addressing.gateway, Ipv4Addr::new(10, 1, 0, 1));
        let spec = back.spec(addressing);
        assert!(spec.dns, "user networks serve names");
    }
}
