//! Connecting and disconnecting containers, created or running.

use std::net::Ipv4Addr;

use berth_network::driver::EndpointSpec;

use super::endpoints::{dns_names, dns_upstreams, endpoint_from_request, primary_network_name};
use super::{ENDPOINTS_KIND, Endpoint, EndpointRequest, delete_record};
use crate::containers::ContainerRecord;
use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

impl Daemon {
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
            let resolver_before = self.networks.resolver(&snapshot.id);
            match self.hot_plug(&snapshot, &endpoint).await {
                Ok(address) => self.refresh_network_files(
                    &snapshot,
                    &[address.to_string()],
                    &[],
                    resolver_before,
                ),
                Err(e) => {
                    if let Some(c) = self.networks.lock().containers.get_mut(&snapshot.id) {
                        c.endpoints.retain(|e| e.network_id != record.id);
                    }
                    return Err(e);
                }
            }
        }
        self.persist_container_networks(&snapshot.id).await
    }

    /// Plugs a new endpoint into a running container, on the first free `ethN`; returns
    /// its address.
    async fn hot_plug(
        &self,
        record: &ContainerRecord,
        endpoint: &Endpoint,
    ) -> ServiceResult<Ipv4Addr> {
        let netns = self.networks.netns_path(&record.id);
        let ifname = {
            let state = self.networks.lock();
            // Endpoints plugged in by an older daemon have no recorded name: theirs was
            // `eth<position>`.
            let taken: Vec<String> = state
                .containers
                .get(&record.id)
                .map(|c| {
                    c.endpoints
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| e.address.is_some())
                        .map(|(i, e)| e.ifname.clone().unwrap_or_else(|| format!("eth{i}")))
                        .collect()
                })
                .unwrap_or_default();
            (0..)
                .map(|n| format!("eth{n}"))
                .find(|name| !taken.contains(name))
                .expect("an unbounded range has a free name")
        };
        let (spec, address) = self.networks.lock().assign_address(endpoint)?;
        let spec_ep = EndpointSpec {
            container_id: record.id.clone(),
            names: dns_names(record, endpoint),
            netns,
            ifname: ifname.clone(),
            address,
            default_route: false,
            mac: endpoint
                .requested_mac
                .as_deref()
                .map(berth_network::bridge::parse_mac)
                .transpose()
                .map_err(|e| ServiceError::invalid(e.to_string()))?,
            ports: Vec::new(),
            dns_servers: dns_upstreams(record, &self.config.dns_defaults.nameservers),
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
                    ep.ifname = Some(ifname);
                }
                Ok(address)
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

    /// Disconnects a container from a network (unplugging it if it runs, and taking its
    /// address out of its `/etc/hosts`). With `force`, the endpoint of a container that no
    /// longer exists is removed too (moby's `ForceEndpointDelete`).
    pub async fn disconnect_network(
        &self,
        network: &str,
        container: &str,
        force: bool,
    ) -> ServiceResult<()> {
        let record = self.networks.find(network)?;
        let target = match self.containers.get(container) {
            Ok(target) => target,
            Err(e) if force => return self.force_endpoint_delete(&record, container, e).await,
            Err(e) => return Err(e),
        };
        let _guard = target.op_lock.lock().await;
        let resolver_before = self.networks.resolver(&target.id);
        let (endpoint, spec) = {
            let mut state = self.networks.lock();
            let Some(endpoint) = state.take_endpoint(&target.id, &record.id) else {
                return Err(ServiceError::conflict(format!(
                    "container {} is not connected to network {}",
                    target.id, record.name
                )));
            };
            let net = state.networks.get(&record.id).expect("found above");
            (endpoint, net.record.spec(*net.addresses.config()))
        };
        if let Some(address) = endpoint.address {
            if let Err(e) = self.networks.driver.disconnect(&spec, &target.id).await {
                tracing::warn!(container = %target.id, network = %record.name, "cannot unplug: {e}");
            }
            self.network_event(&record.id, &record.name, "disconnect", Some(&target.id));
            self.refresh_network_files(
                &target.snapshot(),
                &[],
                &[address.to_string()],
                resolver_before,
            );
        }
        self.persist_container_networks(&target.id).await
    }

    /// `disconnect --force` for a container that is gone: its leftover endpoint on the
    /// network (found by id or unique id prefix) is unplugged and forgotten; `missing` is
    /// the error when there is none.
    async fn force_endpoint_delete(
        &self,
        network: &super::NetworkRecord,
        reference: &str,
        missing: ServiceError,
    ) -> ServiceResult<()> {
        let live: Vec<String> = self.containers.all().iter().map(|c| c.id.clone()).collect();
        let found = {
            let mut state = self.networks.lock();
            let mut stale = state.containers.iter().filter(|(id, c)| {
                !reference.is_empty()
                    && id.starts_with(reference)
                    && !live.contains(id)
                    && c.endpoints.iter().any(|e| e.network_id == network.id)
            });
            match (stale.next().map(|(id, _)| id.clone()), stale.next()) {
                (Some(id), None) => {
                    state.take_endpoint(&id, &network.id);
                    let now_empty = state
                        .containers
                        .get(&id)
                        .is_none_or(|c| c.endpoints.is_empty());
                    if now_empty {
                        state.containers.remove(&id);
                    }
                    Some((id, now_empty))
                }
                _ => None,
            }
        };
        let Some((id, now_empty)) = found else {
            return Err(missing);
        };
        let spec = network.spec(network.addressing()?);
        if let Err(e) = self.networks.driver.disconnect(&spec, &id).await {
            tracing::warn!(container = %id, network = %network.name, "cannot unplug: {e}");
        }
        self.network_event(&network.id, &network.name, "disconnect", Some(&id));
        if now_empty {
            delete_record(&self.store, ENDPOINTS_KIND, &id).await
        } else {
            self.persist_container_networks(&id).await
        }
    }
}
