//! The persisted records: networks and each container's endpoints.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use berth_network::driver::NetworkSpec;
use berth_network::ipam::{self, SubnetConfig, SubnetRequest};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{ServiceError, ServiceResult};

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
    pub(super) fn addressing(&self) -> ServiceResult<SubnetConfig> {
        let request = SubnetRequest {
            subnet: Some(self.subnet.clone()),
            gateway: Some(self.gateway.clone()),
            ip_range: self.ip_range.clone(),
        };
        ipam::configure(&request, &[], &[], &[])
            .map_err(|e| ServiceError::internal(format!("network {}: {e}", self.name)))
    }

    pub(super) fn spec(&self, addressing: SubnetConfig) -> NetworkSpec {
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
    /// The interface inside the container (`eth0`, `eth1`...) while it runs.
    pub ifname: Option<String>,
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
