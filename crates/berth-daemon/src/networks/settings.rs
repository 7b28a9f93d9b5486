//! What a container's inspect and `ps` show of its networks.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::endpoints::dns_names;
use super::ports::{parse_port_key, port_type};
use super::{ContainerNetworks, NetworkState};
use crate::containers::ContainerRecord;
use crate::daemon::Daemon;

impl Daemon {
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
