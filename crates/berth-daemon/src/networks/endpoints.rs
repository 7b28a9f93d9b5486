//! A container's endpoints: planned at create, plugged in at start, released at exit, and
//! restored after a daemon restart.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use berth_network::driver::{EndpointSpec, NetworkSpec};
use berth_network::firewall::{Firewall, PortForward, Protocol};
use berth_network::ipam;
use berth_network::ports;

use super::ports::{port_error, port_requests};
use super::{
    ContainerNetworks, DEFAULT_NETWORK, ENDPOINTS_KIND, Endpoint, PublishedPort, delete_record,
    find_in, put_json,
};
use crate::containers::ContainerRecord;
use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

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

/// The names a container is found by on a user network: name, aliases, short id.
pub(super) fn dns_names(record: &ContainerRecord, endpoint: &Endpoint) -> Vec<String> {
    let mut names = vec![record.name.clone()];
    names.extend(endpoint.aliases.iter().cloned());
    names.push(record.id[..12].to_string());
    names
}

/// The network a container's `NetworkMode` names, or `None` for `host`, `none` and
/// `container:<id>` (another container's namespace).
pub(super) fn primary_network_name(mode: &str) -> Option<&str> {
    match mode {
        "host" | "none" => None,
        shared if shared.starts_with("container:") => None,
        "" | "default" | DEFAULT_NETWORK => Some(DEFAULT_NETWORK),
        other => Some(other),
    }
}

/// Where the embedded DNS server relays a container's other queries: its `--dns` servers,
/// else the daemon's `dns` (moby's per-container `ExtServers`, read from the `resolv.conf`
/// those make); empty for the server's own upstreams.
pub(super) fn dns_upstreams(record: &ContainerRecord, daemon_dns: &[IpAddr]) -> Vec<SocketAddr> {
    let own: Vec<IpAddr> = record
        .host_config
        .dns
        .iter()
        .flatten()
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect();
    let servers = if own.is_empty() { daemon_dns } else { &own };
    servers.iter().map(|ip| SocketAddr::new(*ip, 53)).collect()
}

pub(super) fn endpoint_from_request(
    network_id: &str,
    request: &EndpointRequest,
) -> ServiceResult<Endpoint> {
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
        ifname: None,
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

    pub(super) async fn persist_container_networks(&self, container_id: &str) -> ServiceResult<()> {
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
        let dns_servers = dns_upstreams(record, &self.config.dns_defaults.nameservers);
        for (index, endpoint) in endpoints.iter().enumerate() {
            let (spec, address) = {
                let mut state = self.networks.lock();
                let (spec, address) = state.assign_address(endpoint)?;
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
                    ep.ifname = Some(format!("eth{index}"));
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

    /// Whether a running container shares `container_id`'s network namespace.
    fn namespace_has_sharers(&self, container_id: &str) -> bool {
        self.containers.all().iter().any(|c| {
            let (active, mode) = {
                let r = c.record();
                (
                    r.state.status.is_active(),
                    r.host_config.network_mode.clone().unwrap_or_default(),
                )
            };
            active
                && mode.strip_prefix("container:").is_some_and(|owner| {
                    owner == container_id
                        || self
                            .containers
                            .get(owner)
                            .is_ok_and(|o| o.id == container_id)
                })
        })
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
                ep.ifname = None;
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
        // Containers still running in this namespace (`--network container:`) keep it alive:
        // its veths are taken out now, as moby's sandbox removal does, instead of going with it.
        let shared = self.namespace_has_sharers(container_id);
        for spec in &specs {
            let released = if shared {
                self.networks.driver.disconnect(spec, container_id).await
            } else {
                self.networks.driver.release(spec, container_id).await
            };
            if let Err(e) = released {
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
                        upstreams: dns_upstreams(record, &self.config.dns_defaults.nameservers),
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

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn network_modes_name_the_primary_network() {
        assert_eq!(primary_network_name(""), Some(DEFAULT_NETWORK));
        assert_eq!(primary_network_name("default"), Some(DEFAULT_NETWORK));
        assert_eq!(primary_network_name("bridge"), Some(DEFAULT_NETWORK));
        assert_eq!(primary_network_name("appnet"), Some("appnet"));
        assert_eq!(primary_network_name("host"), None);
        assert_eq!(primary_network_name("none"), None);
        assert_eq!(primary_network_name("container:abc"), None);
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
}
