//! The network service: bridge networks (records, addresses, the default `bridge`), and the
//! networks of each container (endpoints, namespaces, published ports).
//!
//! Networks are persisted as JSON records of kind [`NETWORK_KIND`]; what a container is
//! connected to (and, while it runs, its addresses and published ports) as records of kind
//! [`ENDPOINTS_KIND`] keyed by container id. Address allocation lives in memory and is
//! rebuilt from those records at startup. Kernel state (bridges, veths, nftables, the DNS
//! servers) is [`BridgeDriver`]'s; this service only decides what to plug where.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use berth_network::driver::{BridgeDriver, EndpointSpec, NetworkSpec};
use berth_network::firewall::{Firewall, NftFirewall, PortForward, Protocol};

use berth_network::ipam::{self, Addresses, SubnetConfig, SubnetRequest, UsedSubnet};
use berth_network::ports::{self, PortReservation};
use berth_store::Store;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::containers::ContainerRecord;
use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

/// Record kind of networks.
pub const NETWORK_KIND: &str = "network";
/// Record kind of a container's endpoints, keyed by container id.
pub const ENDPOINTS_KIND: &str = "container-networks";
/// The default network's name.
pub const DEFAULT_NETWORK: &str = "bridge";

/// A persisted network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NetworkRecord {
    /// 64 hex characters.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Creation time.
    pub created: DateTime<Utc>,
    /// The bridge device.
    pub bridge: String,
    /// Subnet in CIDR notation.
    pub subnet: String,
    /// Gateway address.
    pub gateway: String,
    /// `--ip-range`, if given.
    pub ip_range: Option<String>,
    /// `--internal`.
    pub internal: bool,
    /// `--attachable`.
    pub attachable: bool,
    /// Labels.
    pub labels: HashMap<String, String>,
    /// Driver options, as given.
    pub options: HashMap<String, String>,
    /// IPAM driver options, as given.
    pub ipam_options: HashMap<String, String>,
    /// MTU from `com.docker.network.driver.mtu`.
    pub mtu: Option<u32>,
    /// Whether this is the daemon's default `bridge` network (no embedded DNS, no removal).
    pub default_bridge: bool,
}

impl NetworkRecord {
    fn addressing(&self) -> ServiceResult<SubnetConfig> {
        let request = SubnetRequest {
            subnet: Some(self.subnet.clone()),
            gateway: Some(self.gateway.clone()),
            ip_range: self.ip_range.clone(),
        };
        ipam::configure(&request, &[], &[], &[])
            .map_err(|e| ServiceError::internal(format!("network {}: {e}", self.name)))
    }

    fn spec(&self, addressing: SubnetConfig) -> NetworkSpec {
        NetworkSpec {
            id: self.id.clone(),
            name: self.name.clone(),
            bridge: self.bridge.clone(),
            addressing,
            internal: self.internal,
            dns: !self.default_bridge,
            mtu: self.mtu,
        }
    }
}

/// A container's place on one network.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    /// The network's id.
    pub network_id: String,
    /// 64 hex characters, new per connect.
    pub endpoint_id: String,
    /// Extra names on this network (`--network-alias`, `--alias`).
    pub aliases: Vec<String>,
    /// `--ip`.
    pub requested_ip: Option<Ipv4Addr>,
    /// `--mac-address`.
    pub requested_mac: Option<String>,
    /// The address while the container runs.
    pub address: Option<Ipv4Addr>,
    /// The interface's MAC while the container runs.
    pub mac: Option<String>,
}

/// A host port forwarded to a container port.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublishedPort {
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// The container's port.
    pub container_port: u16,
    /// The host address (`None`: all).
    pub host_ip: Option<Ipv4Addr>,
    /// The host port actually reserved.
    pub host_port: u16,
}

/// What a container is connected to; the first endpoint is its primary network (`eth0`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ContainerNetworks {
    /// Endpoints in connection order.
    pub endpoints: Vec<Endpoint>,
    /// Published ports while the container runs.
    pub ports: Vec<PublishedPort>,
    /// Whether its network namespace exists (between start and exit).
    pub attached: bool,
}

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

/// Networks and the driver that realises them.
pub struct Networks {
    driver: BridgeDriver,
    firewall: Arc<NftFirewall>,
    state: Mutex<NetworkState>,
    netns_dir: PathBuf,
    host_resolv: String,
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
            host_resolv,
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

    /// The `resolv.conf` of a container whose primary network has embedded DNS.
    pub fn embedded_resolv_conf(&self, container_id: &str) -> Option<String> {
        let state = self.lock();
        let primary = state.containers.get(container_id)?.endpoints.first()?;
        let net = state.networks.get(&primary.network_id)?;
        (!net.record.default_bridge).then(|| {
            berth_network::files::embedded_resolv_conf(
                &self.host_resolv,
                IpAddr::V4(net.addresses.config().gateway),
            )
        })
    }
}

/// What inspect shows of a network.
#[derive(Debug, Clone)]
pub struct NetworkView {
    /// The record.
    pub record: NetworkRecord,
    /// Attached containers: id → (name, endpoint, address with prefix).
    pub containers: BTreeMap<String, AttachedContainer>,
}

/// A container in a network's inspect output.
#[derive(Debug, Clone)]
pub struct AttachedContainer {
    /// Container name.
    pub name: String,
    /// Endpoint id.
    pub endpoint_id: String,
    /// MAC address, empty when not running.
    pub mac: String,
    /// `addr/prefix`, empty when not running.
    pub ipv4: String,
}

/// What `POST /networks/create` asks for, in service terms.
#[derive(Debug, Clone, Default)]
pub struct CreateNetwork {
    /// Name.
    pub name: String,
    /// Driver (`bridge` or empty).
    pub driver: String,
    /// First IPAM config entry (subnet, gateway, ip range).
    pub subnet: SubnetRequest,
    /// IPAM driver options.
    pub ipam_options: HashMap<String, String>,
    /// `--internal`.
    pub internal: bool,
    /// `--attachable`.
    pub attachable: bool,
    /// Labels.
    pub labels: HashMap<String, String>,
    /// Driver options.
    pub options: HashMap<String, String>,
}

/// A connect request: the endpoint settings of `network connect` or a create body.
#[derive(Debug, Clone, Default)]
pub struct EndpointRequest {
    /// Aliases.
    pub aliases: Vec<String>,
    /// `--ip`.
    pub ip: Option<String>,
    /// `--mac-address`.
    pub mac: Option<String>,
}

/// The filters `GET /networks` understands.
const NETWORK_FILTERS: &[&str] = &["name", "id", "driver", "label", "type", "scope"];

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

/// A port a container asks to publish, before its host port is reserved.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PortRequest {
    protocol: Protocol,
    container_port: u16,
    host_ip: Option<Ipv4Addr>,
    host_ports: ports::HostPorts,
}

/// Splits Docker's port key (`80/tcp`, `53/udp`, `80`).
fn parse_port_key(key: &str) -> ServiceResult<(u16, Protocol)> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let bad = || ServiceError::invalid(format!("invalid port specification: {key:?}"));
    let port = port.parse::<u16>().map_err(|_| bad())?;
    let protocol = Protocol::parse(proto).ok_or_else(bad)?;
    Ok((port, protocol))
}

/// The ports to publish: `PortBindings`, plus every exposed port with `PublishAllPorts`.
fn port_requests(
    config: &berth_api::models::ContainerConfig,
    host: &berth_api::models::HostConfig,
) -> ServiceResult<Vec<PortRequest>> {
    let mut out = Vec::new();
    let bindings = host.port_bindings.clone().unwrap_or_default();
    let mut keys: Vec<&String> = bindings.keys().collect();
    keys.sort();
    for key in keys {
        let (container_port, protocol) = parse_port_key(key)?;
        for binding in bindings[key].iter().flatten() {
            let host_ip = match binding.host_ip.as_deref().unwrap_or("") {
                "" | "0.0.0.0" => None,
                // IPv6 bindings have nothing to forward to on IPv4-only networks.
                ip if ip.contains(':') => continue,
                ip => Some(
                    ipam::parse_ipv4(ip, "host ip")
                        .map_err(|e| ServiceError::invalid(e.to_string()))?,
                ),
            };
            let host_ports = ports::parse_host_ports(binding.host_port.as_deref().unwrap_or(""))
                .map_err(|e| ServiceError::invalid(e.to_string()))?;
            out.push(PortRequest {
                protocol,
                container_port,
                host_ip,
                host_ports,
            });
        }
    }
    if host.publish_all_ports.unwrap_or(false) {
        let mut exposed: Vec<&String> = config.exposed_ports.iter().flatten().collect();
        exposed.sort();
        for key in exposed {
            if bindings.contains_key(key.as_str()) {
                continue;
            }
            let (container_port, protocol) = parse_port_key(key)?;
            out.push(PortRequest {
                protocol,
                container_port,
                host_ip: None,
                host_ports: ports::HostPorts::Random,
            });
        }
    }
    Ok(out)
}

/// Docker's message for a host port that is taken.
fn port_error(request: &PortRequest, error: ports::PortError) -> ServiceError {
    match error {
        ports::PortError::InUse { ip, port, .. } => ServiceError::internal(format!(
            "driver failed programming external connectivity: Bind for {ip}:{port} failed: port is already allocated"
        )),
        other => ServiceError::internal(format!(
            "cannot publish container port {}/{}: {other}",
            request.container_port,
            request.protocol.as_str()
        )),
    }
}

/// The names a container is found by on a user network: name, aliases, short id.
fn dns_names(record: &ContainerRecord, endpoint: &Endpoint) -> Vec<String> {
    let mut names = vec![record.name.clone()];
    names.extend(endpoint.aliases.iter().cloned());
    names.push(record.id[..12].to_string());
    names
}

/// The network a container's `NetworkMode` names, or `None` for `host`/`none`.
fn primary_network_name(mode: &str) -> Option<&str> {
    match mode {
        "host" | "none" => None,
        "" | "default" | DEFAULT_NETWORK => Some(DEFAULT_NETWORK),
        other => Some(other),
    }
}

fn endpoint_from_request(network_id: &str, request: &EndpointRequest) -> ServiceResult<Endpoint> {
    let requested_ip = request
        .ip
        .as_deref()
        .filter(|ip| !ip.is_empty())
        .map(|ip| ipam::parse_ipv4(ip, "ip address"))
        .transpose()
        .map_err(|e| ServiceError::invalid(e.to_string()))?;
    if let Some(mac) = request.mac.as_deref().filter(|m| !m.is_empty()) {
        berth_network::bridge::parse_mac(mac).map_err(|e| ServiceError::invalid(e.to_string()))?;
    }
    Ok(Endpoint {
        network_id: network_id.to_string(),
        endpoint_id: crate::containers::random_id(),
        aliases: request.aliases.clone(),
        requested_ip,
        requested_mac: request.mac.clone().filter(|m| !m.is_empty()),
        address: None,
        mac: None,
    })
}

impl Daemon {
    /// Plans a new container's endpoints from its `NetworkMode` and `EndpointsConfig`
    /// (`requests` by network name; `default` means the mode's network), refusing unknown
    /// networks with Docker's message.
    pub(crate) fn plan_container_networks(
        &self,
        mode: &str,
        requests: &HashMap<String, EndpointRequest>,
    ) -> ServiceResult<ContainerNetworks> {
        let Some(primary) = primary_network_name(mode) else {
            return Ok(ContainerNetworks::default());
        };
        let state = self.networks.lock();
        let mut endpoints = Vec::new();
        let net = find_in(&state.networks, primary)?;
        let primary_request = requests
            .get(mode)
            .or_else(|| requests.get("default"))
            .or_else(|| requests.get(primary))
            .cloned()
            .unwrap_or_default();
        endpoints.push(endpoint_from_request(&net.record.id, &primary_request)?);
        let mut others: Vec<(&String, &EndpointRequest)> = requests
            .iter()
            .filter(|(name, _)| !["default", mode, primary].contains(&name.as_str()))
            .collect();
        others.sort_by(|a, b| a.0.cmp(b.0));
        for (name, request) in others {
            let net = find_in(&state.networks, name)?;
            if endpoints.iter().all(|e| e.network_id != net.record.id) {
                endpoints.push(endpoint_from_request(&net.record.id, request)?);
            }
        }
        Ok(ContainerNetworks {
            endpoints,
            ..Default::default()
        })
    }

    /// Persists a container's endpoints (after create, connect, start and exit).
    pub(crate) async fn save_container_networks(
        &self,
        container_id: &str,
        networks: ContainerNetworks,
    ) -> ServiceResult<()> {
        put_json(&self.store, ENDPOINTS_KIND, container_id, &networks).await?;
        self.networks
            .lock()
            .containers
            .insert(container_id.to_string(), networks);
        Ok(())
    }

    async fn persist_container_networks(&self, container_id: &str) -> ServiceResult<()> {
        let current = self.networks.lock().containers.get(container_id).cloned();
        match current {
            Some(networks) => put_json(&self.store, ENDPOINTS_KIND, container_id, &networks).await,
            None => Ok(()),
        }
    }

    /// Forgets a removed container's endpoints.
    pub(crate) async fn forget_container_networks(&self, container_id: &str) {
        self.detach_container_networks(container_id).await;
        self.networks.lock().containers.remove(container_id);
        if let Err(e) = delete_record(&self.store, ENDPOINTS_KIND, container_id).await {
            tracing::warn!(
                container = container_id,
                "cannot delete endpoints record: {e}"
            );
        }
    }

    /// Gives a starting container its namespace, addresses, veths, names and published
    /// ports. On failure everything done is undone.
    pub(crate) async fn attach_container_networks(
        &self,
        record: &ContainerRecord,
    ) -> ServiceResult<()> {
        let id = record.id.clone();
        let (endpoints, was_attached) = match self.networks.lock().containers.get(&id) {
            Some(c) if !c.endpoints.is_empty() => (c.endpoints.clone(), c.attached),
            _ => return Ok(()),
        };
        if was_attached {
            self.detach_container_networks(&id).await;
        }
        let netns = self.networks.netns_path(&id);
        // A namespace left by a crash is stale: nothing can still run in it.
        berth_network::netns::remove(&netns).map_err(|e| ServiceError::internal(e.to_string()))?;
        berth_network::netns::create(&netns)
            .await
            .map_err(|e| ServiceError::internal(e.to_string()))?;
        if let Some(c) = self.networks.lock().containers.get_mut(&id) {
            c.attached = true;
        }
        let result = self.plug_in(record, &netns, &endpoints).await;
        if let Err(e) = result {
            self.detach_container_networks(&id).await;
            return Err(e);
        }
        self.persist_container_networks(&id).await
    }

    async fn plug_in(
        &self,
        record: &ContainerRecord,
        netns: &std::path::Path,
        endpoints: &[Endpoint],
    ) -> ServiceResult<()> {
        let id = &record.id;
        let mut reservations = Vec::new();
        for request in port_requests(&record.config, &record.host_config)? {
            let reserved = ports::reserve(request.protocol, request.host_ip, request.host_ports)
                .map_err(|e| port_error(&request, e))?;
            reservations.push((request, reserved));
        }
        let dns_servers: Vec<SocketAddr> = record
            .host_config
            .dns
            .iter()
            .flatten()
            .filter_map(|s| s.parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
            .collect();
        for (index, endpoint) in endpoints.iter().enumerate() {
            let (spec, address) = {
                let mut state = self.networks.lock();
                let net = state
                    .networks
                    .get_mut(&endpoint.network_id)
                    .ok_or_else(|| {
                        ServiceError::not_found(format!(
                            "network {} not found",
                            endpoint.network_id
                        ))
                    })?;
                let address = match endpoint.requested_ip {
                    Some(ip) => net.addresses.reserve(ip).map(|()| ip),
                    None => net.addresses.allocate(),
                }
                .map_err(|e| ServiceError::invalid(format!("network {}: {e}", net.record.name)))?;
                let spec = net.record.spec(*net.addresses.config());
                let c = state
                    .containers
                    .get_mut(id)
                    .expect("attached container has endpoints");
                if let Some(ep) = c
                    .endpoints
                    .iter_mut()
                    .find(|e| e.network_id == endpoint.network_id)
                {
                    ep.address = Some(address);
                }
                (spec, address)
            };
            let forwards: Vec<PortForward> = if index == 0 {
                reservations
                    .iter()
                    .map(|(request, reserved)| PortForward {
                        protocol: request.protocol,
                        host_ip: request.host_ip,
                        host_port: reserved.port(),
                        container_ip: address,
                        container_port: request.container_port,
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let mac = endpoint
                .requested_mac
                .as_deref()
                .map(berth_network::bridge::parse_mac)
                .transpose()
                .map_err(|e| ServiceError::invalid(e.to_string()))?;
            let spec_ep = EndpointSpec {
                container_id: id.clone(),
                names: dns_names(record, endpoint),
                netns: netns.to_path_buf(),
                ifname: format!("eth{index}"),
                address,
                default_route: index == 0,
                mac,
                ports: forwards,
                dns_servers: dns_servers.clone(),
            };
            let attachment = self
                .networks
                .driver
                .connect(&spec, &spec_ep)
                .await
                .map_err(|e| {
                    ServiceError::internal(format!(
                        "cannot connect container {id} to network {}: {e}",
                        spec.name
                    ))
                })?;
            self.network_event(&spec.id, &spec.name, "connect", Some(id));
            let mut state = self.networks.lock();
            if let Some(c) = state.containers.get_mut(id) {
                if let Some(ep) = c
                    .endpoints
                    .iter_mut()
                    .find(|e| e.network_id == endpoint.network_id)
                {
                    ep.mac = Some(berth_network::bridge::format_mac(attachment.mac));
                }
                if index == 0 {
                    c.ports = reservations
                        .iter()
                        .map(|(request, reserved)| PublishedPort {
                            protocol: request.protocol.as_str().to_string(),
                            container_port: request.container_port,
                            host_ip: request.host_ip,
                            host_port: reserved.port(),
                        })
                        .collect();
                }
            }
        }
        let held = reservations.into_iter().map(|(_, r)| r).collect();
        self.networks.lock().reservations.insert(id.clone(), held);
        Ok(())
    }

    /// Takes a stopped container off its networks: names, ports, addresses, namespace.
    /// Idempotent; failures are logged.
    pub(crate) async fn detach_container_networks(&self, container_id: &str) {
        let specs: Vec<NetworkSpec> = {
            let mut guard = self.networks.lock();
            let state = &mut *guard;
            let Some(c) = state.containers.get_mut(container_id) else {
                return;
            };
            if !c.attached {
                return;
            }
            c.attached = false;
            c.ports.clear();
            let mut specs = Vec::new();
            for ep in &mut c.endpoints {
                ep.mac = None;
                if let Some(ip) = ep.address.take()
                    && let Some(net) = state.networks.get_mut(&ep.network_id)
                {
                    net.addresses.release(ip);
                    specs.push(net.record.spec(*net.addresses.config()));
                }
            }
            state.reservations.remove(container_id);
            specs
        };
        for spec in &specs {
            if let Err(e) = self.networks.driver.release(spec, container_id).await {
                tracing::warn!(container = container_id, network = %spec.name, "cannot release endpoint: {e}");
            }
            self.network_event(&spec.id, &spec.name, "disconnect", Some(container_id));
        }
        let netns = self.networks.netns_path(container_id);
        if let Err(e) = berth_network::netns::remove(&netns) {
            tracing::warn!(
                container = container_id,
                "cannot remove network namespace: {e}"
            );
        }
        if let Err(e) = self.persist_container_networks(container_id).await {
            tracing::warn!(container = container_id, "cannot persist endpoints: {e}");
        }
    }

    /// After a restart: names and published ports of running containers come back, the
    /// leftovers of containers that stopped while the daemon was away go.
    pub(crate) async fn restore_container_networks(&self) {
        let ids: Vec<String> = self.networks.lock().containers.keys().cloned().collect();
        for id in ids {
            let Ok(container) = self.containers.get(&id) else {
                self.forget_container_networks(&id).await;
                continue;
            };
            let record = container.snapshot();
            if !record.state.status.is_active() {
                self.detach_container_networks(&id).await;
                continue;
            }
            self.restore_running(&record);
        }
        let firewall = self.networks.firewall.clone();
        match tokio::task::spawn_blocking(move || firewall.sync()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("cannot apply firewall rules: {e}"),
            Err(e) => tracing::warn!("firewall sync failed: {e}"),
        }
    }

    fn restore_running(&self, record: &ContainerRecord) {
        let mut guard = self.networks.lock();
        let state = &mut *guard;
        let Some(c) = state.containers.get(&record.id) else {
            return;
        };
        let mut held = Vec::new();
        for port in &c.ports {
            let protocol = Protocol::parse(&port.protocol).unwrap_or(Protocol::Tcp);
            match ports::reserve(
                protocol,
                port.host_ip,
                ports::HostPorts::Fixed(port.host_port),
            ) {
                Ok(r) => held.push(r),
                Err(e) => {
                    tracing::warn!(container = %record.id, "cannot reserve published port again: {e}")
                }
            }
        }
        for (index, ep) in c.endpoints.iter().enumerate() {
            let (Some(address), Some(net)) = (ep.address, state.networks.get(&ep.network_id))
            else {
                continue;
            };
            if !net.record.default_bridge {
                self.networks.driver.dns_table().add_endpoint(
                    &net.record.id,
                    berth_network::dns::DnsEndpoint {
                        container_id: record.id.clone(),
                        names: dns_names(record, ep),
                        addresses: vec![IpAddr::V4(address)],
                        upstreams: Vec::new(),
                    },
                );
            }
            if index == 0 && !c.ports.is_empty() {
                let forwards: Vec<PortForward> = c
                    .ports
                    .iter()
                    .map(|p| PortForward {
                        protocol: Protocol::parse(&p.protocol).unwrap_or(Protocol::Tcp),
                        host_ip: p.host_ip,
                        host_port: p.host_port,
                        container_ip: address,
                        container_port: p.container_port,
                    })
                    .collect();
                // The driver's owner key for a container's ports on a network.
                let owner = format!("{}@{}", record.id, net.record.id);
                if let Err(e) = self.networks.firewall.publish(&owner, &forwards) {
                    tracing::warn!(container = %record.id, "cannot publish ports again: {e}");
                }
            }
        }
        state.reservations.insert(record.id.clone(), held);
    }
}

impl Daemon {
    /// Creates a bridge network; returns its id.
    pub async fn create_network(&self, request: CreateNetwork) -> ServiceResult<String> {
        if request.name.is_empty() {
            return Err(ServiceError::invalid("network name must not be empty"));
        }
        if !matches!(request.driver.as_str(), "" | "bridge") {
            return Err(ServiceError::not_found(format!(
                "plugin \"{}\" not found",
                request.driver
            )));
        }
        if self
            .networks
            .lock()
            .networks
            .values()
            .any(|n| n.record.name == request.name)
            || matches!(request.name.as_str(), "host" | "none")
        {
            return Err(ServiceError::conflict(format!(
                "network with name {} already exists",
                request.name
            )));
        }
        let mtu = request
            .options
            .get("com.docker.network.driver.mtu")
            .map(|m| {
                m.parse::<u32>()
                    .map_err(|_| ServiceError::invalid(format!("invalid mtu {m}")))
            })
            .transpose()?;
        let routes = host_routes().await;
        let used = self.networks.used_subnets();
        let addressing =
            ipam::configure(&request.subnet, &self.config.address_pools, &used, &routes)
                .map_err(|e| ServiceError::invalid(e.to_string()))?;
        let id = crate::containers::random_id();
        let bridge = match request.options.get("com.docker.network.bridge.name") {
            Some(name) => {
                berth_network::bridge::validate_ifname(name)
                    .map_err(|e| ServiceError::invalid(e.to_string()))?;
                name.clone()
            }
            None => berth_network::bridge::bridge_name(&id),
        };
        let record = NetworkRecord {
            id: id.clone(),
            name: request.name,
            created: Utc::now(),
            bridge,
            subnet: addressing.subnet.to_string(),
            gateway: addressing.gateway.to_string(),
            ip_range: addressing.ip_range.map(|r| r.to_string()),
            internal: request.internal,
            attachable: request.attachable,
            labels: request.labels,
            options: request.options,
            ipam_options: request.ipam_options,
            mtu,
            default_bridge: false,
        };
        let spec = record.spec(addressing);
        self.networks
            .driver
            .setup_network(&spec)
            .await
            .map_err(|e| {
                ServiceError::internal(format!("cannot create network {}: {e}", record.name))
            })?;
        if let Err(e) = put_json(&self.store, NETWORK_KIND, &id, &record).await {
            let _ = self.networks.driver.remove_network(&spec).await;
            return Err(e);
        }
        self.network_event(&id, &record.name, "create", None);
        self.networks.lock().networks.insert(
            id.clone(),
            Network {
                record,
                addresses: Addresses::new(addressing),
            },
        );
        Ok(id)
    }

    /// Publishes a `network` event (`create`, `connect`, `disconnect`, `destroy`).
    fn network_event(&self, id: &str, name: &str, action: &str, container: Option<&str>) {
        let mut attributes = HashMap::from([
            ("name".to_string(), name.to_string()),
            ("type".to_string(), "bridge".to_string()),
        ]);
        if let Some(container) = container {
            attributes.insert("container".into(), container.into());
        }
        self.events.publish("network", action, id, attributes);
    }

    fn network_view(&self, state: &NetworkState, record: &NetworkRecord) -> NetworkView {
        let prefix = record.subnet.rsplit('/').next().unwrap_or("32").to_string();
        let containers = state
            .containers
            .iter()
            .filter_map(|(id, c)| {
                let ep = c.endpoints.iter().find(|e| e.network_id == record.id)?;
                let name = self.containers.get(id).ok()?.record().name.clone();
                Some((
                    id.clone(),
                    AttachedContainer {
                        name,
                        endpoint_id: ep.endpoint_id.clone(),
                        mac: ep.mac.clone().unwrap_or_default(),
                        ipv4: ep
                            .address
                            .map(|a| format!("{a}/{prefix}"))
                            .unwrap_or_default(),
                    },
                ))
            })
            .collect();
        NetworkView {
            record: record.clone(),
            containers,
        }
    }

    /// Networks matching `filters` (name, id, driver, label, type), by name.
    pub fn list_networks(
        &self,
        filters: &berth_api::filters::Filters,
    ) -> ServiceResult<Vec<NetworkView>> {
        filters
            .check_names(NETWORK_FILTERS)
            .map_err(|e| ServiceError::invalid(e.to_string()))?;
        let state = self.networks.lock();
        let any = |key: &str, pred: &dyn Fn(&str) -> bool| {
            let values = filters.get(key);
            values.is_empty() || values.iter().any(|v| pred(v))
        };
        let mut out: Vec<NetworkView> = state
            .networks
            .values()
            .map(|n| &n.record)
            .filter(|r| {
                any("name", &|v| r.name.contains(v))
                    && any("id", &|v| r.id.starts_with(v))
                    && any("driver", &|v| v == "bridge")
                    && any("scope", &|v| v == "local")
                    && any("type", &|v| match v {
                        "builtin" => r.default_bridge,
                        "custom" => !r.default_bridge,
                        _ => false,
                    })
                    && berth_api::filters::labels_match(filters.get("label"), |k| {
                        r.labels.get(k).map(String::as_str)
                    })
            })
            .map(|r| self.network_view(&state, r))
            .collect();
        out.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        Ok(out)
    }

    /// One network by id, name or id prefix.
    pub fn inspect_network(&self, reference: &str) -> ServiceResult<NetworkView> {
        let state = self.networks.lock();
        let record = find_in(&state.networks, reference)?.record.clone();
        Ok(self.network_view(&state, &record))
    }

    /// Removes a network no container is connected to.
    pub async fn remove_network(&self, reference: &str) -> ServiceResult<()> {
        let view = self.inspect_network(reference)?;
        let record = &view.record;
        if record.default_bridge {
            return Err(ServiceError::conflict(format!(
                "{} is a pre-defined network and cannot be removed",
                record.name
            )));
        }
        if !view.containers.is_empty() {
            let attached: Vec<String> = view
                .containers
                .iter()
                .map(|(id, c)| format!("(name:\"{}\" id:\"{}\")", c.name, &id[..12]))
                .collect();
            return Err(ServiceError::conflict(format!(
                "error while removing network: network {} has active endpoints {}",
                record.name,
                attached.join(" ")
            )));
        }
        let spec = record.spec(record.addressing()?);
        self.networks
            .driver
            .remove_network(&spec)
            .await
            .map_err(|e| {
                ServiceError::internal(format!("cannot remove network {}: {e}", record.name))
            })?;
        delete_record(&self.store, NETWORK_KIND, &record.id).await?;
        self.networks.lock().networks.remove(&record.id);
        self.network_event(&record.id, &record.name, "destroy", None);
        Ok(())
    }

    /// Removes every user network without containers (label filters apply); returns names.
    pub async fn prune_networks(
        &self,
        filters: &berth_api::filters::Filters,
    ) -> ServiceResult<Vec<String>> {
        let candidates: Vec<NetworkView> = self
            .list_networks(filters)?
            .into_iter()
            .filter(|v| !v.record.default_bridge && v.containers.is_empty())
            .collect();
        let mut removed = Vec::new();
        for view in candidates {
            match self.remove_network(&view.record.id).await {
                Ok(()) => removed.push(view.record.name),
                Err(e) => tracing::warn!(network = %view.record.name, "prune: {e}"),
            }
        }
        Ok(removed)
    }

    /// Connects a container (created or running) to a network.
    pub async fn connect_network(
        &self,
        network: &str,
        container: &str,
        request: EndpointRequest,
    ) -> ServiceResult<()> {
        let record = self.networks.find(network)?;
        let target = self.containers.get(container)?;
        let _guard = target.op_lock.lock().await;
        let snapshot = target.snapshot();
        let mode = snapshot
            .host_config
            .network_mode
            .clone()
            .unwrap_or_default();
        if primary_network_name(&mode).is_none() {
            return Err(ServiceError::invalid(
                "container sharing network namespace with another container or host cannot be connected to any other network",
            ));
        }
        let endpoint = endpoint_from_request(&record.id, &request)?;
        let attached = {
            let mut state = self.networks.lock();
            let c = state.containers.entry(snapshot.id.clone()).or_default();
            if c.endpoints.iter().any(|e| e.network_id == record.id) {
                return Err(ServiceError::conflict(format!(
                    "endpoint with name {} already exists in network {}",
                    snapshot.name, record.name
                )));
            }
            c.endpoints.push(endpoint.clone());
            c.attached
        };
        if attached {
            let netns = self.networks.netns_path(&snapshot.id);
            let index = self.networks.lock().containers[&snapshot.id]
                .endpoints
                .len()
                - 1;
            if let Err(e) = self.hot_plug(&snapshot, &netns, &endpoint, index).await {
                if let Some(c) = self.networks.lock().containers.get_mut(&snapshot.id) {
                    c.endpoints.retain(|e| e.network_id != record.id);
                }
                return Err(e);
            }
        }
        self.persist_container_networks(&snapshot.id).await
    }

    async fn hot_plug(
        &self,
        record: &ContainerRecord,
        netns: &std::path::Path,
        endpoint: &Endpoint,
        index: usize,
    ) -> ServiceResult<()> {
        let (spec, address) = {
            let mut state = self.networks.lock();
            let net = state
                .networks
                .get_mut(&endpoint.network_id)
                .ok_or_else(|| {
                    ServiceError::not_found(format!("network {} not found", endpoint.network_id))
                })?;
            let address = match endpoint.requested_ip {
                Some(ip) => net.addresses.reserve(ip).map(|()| ip),
                None => net.addresses.allocate(),
            }
            .map_err(|e| ServiceError::invalid(format!("network {}: {e}", net.record.name)))?;
            (net.record.spec(*net.addresses.config()), address)
        };
        let spec_ep = EndpointSpec {
            container_id: record.id.clone(),
            names: dns_names(record, endpoint),
            netns: netns.to_path_buf(),
            ifname: format!("eth{index}"),
            address,
            default_route: false,
            mac: endpoint
                .requested_mac
                .as_deref()
                .map(berth_network::bridge::parse_mac)
                .transpose()
                .map_err(|e| ServiceError::invalid(e.to_string()))?,
            ports: Vec::new(),
            dns_servers: Vec::new(),
        };
        match self.networks.driver.connect(&spec, &spec_ep).await {
            Ok(attachment) => {
                self.network_event(&spec.id, &spec.name, "connect", Some(&record.id));
                let mut state = self.networks.lock();
                if let Some(ep) = state.containers.get_mut(&record.id).and_then(|c| {
                    c.endpoints
                        .iter_mut()
                        .find(|e| e.network_id == endpoint.network_id)
                }) {
                    ep.address = Some(address);
                    ep.mac = Some(berth_network::bridge::format_mac(attachment.mac));
                }
                Ok(())
            }
            Err(e) => {
                if let Some(net) = self.networks.lock().networks.get_mut(&endpoint.network_id) {
                    net.addresses.release(address);
                }
                Err(ServiceError::internal(format!(
                    "cannot connect container {} to network {}: {e}",
                    record.id, spec.name
                )))
            }
        }
    }

    /// Disconnects a container from a network (unplugging it if it runs).
    pub async fn disconnect_network(&self, network: &str, container: &str) -> ServiceResult<()> {
        let record = self.networks.find(network)?;
        let target = self.containers.get(container)?;
        let _guard = target.op_lock.lock().await;
        let (endpoint, spec) = {
            let mut guard = self.networks.lock();
            let state = &mut *guard;
            let c = state.containers.get_mut(&target.id);
            let Some(index) = c
                .as_ref()
                .and_then(|c| c.endpoints.iter().position(|e| e.network_id == record.id))
            else {
                return Err(ServiceError::conflict(format!(
                    "container {} is not connected to network {}",
                    target.id, record.name
                )));
            };
            let c = c.expect("position found an endpoint");
            let endpoint = c.endpoints.remove(index);
            let net = state.networks.get_mut(&record.id).expect("found above");
            if let Some(ip) = endpoint.address {
                net.addresses.release(ip);
            }
            (endpoint, net.record.spec(*net.addresses.config()))
        };
        if endpoint.address.is_some()
            && let Err(e) = self.networks.driver.disconnect(&spec, &target.id).await
        {
            tracing::warn!(container = %target.id, network = %record.name, "cannot unplug: {e}");
        }
        if endpoint.address.is_some() {
            self.network_event(&record.id, &record.name, "disconnect", Some(&target.id));
        }
        self.persist_container_networks(&target.id).await
    }

    /// `NetworkSettings` of a container's inspect: its endpoints and, while it runs, its ports.
    pub(crate) fn container_network_settings(
        &self,
        record: &ContainerRecord,
    ) -> berth_api::models::NetworkSettings {
        let state = self.networks.lock();
        let c = state
            .containers
            .get(&record.id)
            .cloned()
            .unwrap_or_default();
        let mut ports: berth_api::models::PortMap = HashMap::new();
        if c.attached {
            for key in record.config.exposed_ports.iter().flatten() {
                ports.insert(key.clone(), None);
            }
            for p in &c.ports {
                let binding = berth_api::models::PortBinding {
                    host_ip: Some(p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED).to_string()),
                    host_port: Some(p.host_port.to_string()),
                };
                ports
                    .entry(format!("{}/{}", p.container_port, p.protocol))
                    .or_insert(None)
                    .get_or_insert_with(Vec::new)
                    .push(binding);
            }
        }
        berth_api::models::NetworkSettings {
            sandbox_id: Some(String::new()),
            sandbox_key: Some(if c.attached {
                self.networks.netns_path(&record.id).display().to_string()
            } else {
                String::new()
            }),
            ports: Some(ports),
            networks: Some(endpoint_settings(&state, record, &c)),
        }
    }

    /// `Ports` and `NetworkSettings.Networks` of a container's `ps` line.
    pub(crate) fn container_summary_networks(
        &self,
        record: &ContainerRecord,
    ) -> (
        Vec<berth_api::models::PortSummary>,
        HashMap<String, berth_api::models::EndpointSettings>,
    ) {
        let state = self.networks.lock();
        let c = state
            .containers
            .get(&record.id)
            .cloned()
            .unwrap_or_default();
        let mut ports = Vec::new();
        if c.attached {
            for p in &c.ports {
                ports.push(berth_api::models::PortSummary {
                    ip: Some(p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED).to_string()),
                    private_port: p.container_port,
                    public_port: Some(p.host_port),
                    typ: port_type(&p.protocol),
                });
            }
            for key in record.config.exposed_ports.iter().flatten() {
                if let Ok((port, protocol)) = parse_port_key(key)
                    && !c
                        .ports
                        .iter()
                        .any(|p| p.container_port == port && p.protocol == protocol.as_str())
                {
                    ports.push(berth_api::models::PortSummary {
                        ip: None,
                        private_port: port,
                        public_port: None,
                        typ: port_type(protocol.as_str()),
                    });
                }
            }
        }
        (ports, endpoint_settings(&state, record, &c))
    }
}

fn port_type(protocol: &str) -> Option<berth_api::models::PortSummaryTypeEnum> {
    serde_json::from_value(serde_json::Value::String(protocol.to_string())).ok()
}

fn endpoint_settings(
    state: &NetworkState,
    record: &ContainerRecord,
    c: &ContainerNetworks,
) -> HashMap<String, berth_api::models::EndpointSettings> {
    c.endpoints
        .iter()
        .filter_map(|ep| {
            let net = state.networks.get(&ep.network_id)?;
            let running = ep.address.is_some();
            let config = net.addresses.config();
            let settings = berth_api::models::EndpointSettings {
                ipam_config: ep
                    .requested_ip
                    .map(|ip| berth_api::models::EndpointIpamConfig {
                        ipv4_address: Some(ip.to_string()),
                        ..Default::default()
                    }),
                links: None,
                mac_address: Some(ep.mac.clone().unwrap_or_default()),
                aliases: (!ep.aliases.is_empty()).then(|| ep.aliases.clone()),
                driver_opts: None,
                gw_priority: Some(0),
                network_id: Some(net.record.id.clone()),
                endpoint_id: Some(if running {
                    ep.endpoint_id.clone()
                } else {
                    String::new()
                }),
                gateway: Some(if running {
                    config.gateway.to_string()
                } else {
                    String::new()
                }),
                ip_address: Some(ep.address.map(|a| a.to_string()).unwrap_or_default()),
                ip_prefix_len: Some(if running {
                    i64::from(config.subnet.prefix_len())
                } else {
                    0
                }),
                ipv6_gateway: Some(String::new()),
                global_ipv6_address: Some(String::new()),
                global_ipv6_prefix_len: Some(0),
                dns_names: (!net.record.default_bridge).then(|| dns_names(record, ep)),
            };
            Some((net.record.name.clone(), settings))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use berth_api::models::{ContainerConfig, HostConfig, PortBinding};

    use super::*;

    fn binding(ip: &str, port: &str) -> PortBinding {
        PortBinding {
            host_ip: Some(ip.into()),
            host_port: Some(port.into()),
        }
    }

    #[test]
    fn port_keys_default_to_tcp() {
        assert_eq!(parse_port_key("80").unwrap(), (80, Protocol::Tcp));
        assert_eq!(parse_port_key("53/udp").unwrap(), (53, Protocol::Udp));
        assert!(parse_port_key("http/tcp").is_err());
        assert!(parse_port_key("80/icmp").is_err());
    }

    #[test]
    fn bindings_and_publish_all_become_port_requests() {
        let config = ContainerConfig {
            exposed_ports: Some(vec!["80/tcp".into(), "443/tcp".into()]),
            ..Default::default()
        };
        let host = HostConfig {
            port_bindings: Some(HashMap::from([
                ("80/tcp".to_string(), Some(vec![binding("127.0.0.1", "0")])),
                (
                    "53/udp".to_string(),
                    Some(vec![binding("", "5353"), binding("::", "5353")]),
                ),
            ])),
            publish_all_ports: Some(true),
            ..Default::default()
        };
        let requests = port_requests(&config, &host).unwrap();
        assert_eq!(
            requests,
            vec![
                PortRequest {
                    protocol: Protocol::Udp,
                    container_port: 53,
                    host_ip: None,
                    host_ports: ports::HostPorts::Fixed(5353),
                },
                PortRequest {
                    protocol: Protocol::Tcp,
                    container_port: 80,
                    host_ip: Some(Ipv4Addr::LOCALHOST),
                    host_ports: ports::HostPorts::Random,
                },
                PortRequest {
                    protocol: Protocol::Tcp,
                    container_port: 443,
                    host_ip: None,
                    host_ports: ports::HostPorts::Random,
                },
            ]
        );
        let host = HostConfig {
            port_bindings: Some(HashMap::from([(
                "80/tcp".to_string(),
                Some(vec![binding("not-an-ip", "80")]),
            )])),
            ..Default::default()
        };
        assert!(port_requests(&config, &host).is_err());
    }

    #[test]
    fn network_modes_name_the_primary_network() {
        assert_eq!(primary_network_name(""), Some(DEFAULT_NETWORK));
        assert_eq!(primary_network_name("default"), Some(DEFAULT_NETWORK));
        assert_eq!(primary_network_name("bridge"), Some(DEFAULT_NETWORK));
        assert_eq!(primary_network_name("appnet"), Some("appnet"));
        assert_eq!(primary_network_name("host"), None);
        assert_eq!(primary_network_name("none"), None);
    }

    #[test]
    fn endpoint_requests_are_validated() {
        let ep = endpoint_from_request(
            "net1",
            &EndpointRequest {
                aliases: vec!["db".into()],
                ip: Some("10.1.0.5".into()),
                mac: Some("02:42:0a:01:00:05".into()),
            },
        )
        .unwrap();
        assert_eq!(ep.requested_ip, Some(Ipv4Addr::new(10, 1, 0, 5)));
        assert_eq!(ep.aliases, ["db"]);
        assert_eq!(ep.endpoint_id.len(), 64);
        let bad_ip = EndpointRequest {
            ip: Some("10.1.0".into()),
            ..Default::default()
        };
        assert!(endpoint_from_request("net1", &bad_ip).is_err());
        let bad_mac = EndpointRequest {
            mac: Some("zz".into()),
            ..Default::default()
        };
        assert!(endpoint_from_request("net1", &bad_mac).is_err());
    }

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
