//! The `/networks` operations: create, list, inspect, remove, prune, and network events.

use std::collections::{BTreeMap, HashMap};

use berth_api::filters::labels_match;
use berth_network::ipam::{self, Addresses, SubnetRequest};
use chrono::Utc;

use super::{
    NETWORK_KIND, Network, NetworkRecord, NetworkState, delete_record, find_in, host_routes,
    put_json,
};
use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

/// The filters `GET /networks` understands.
const NETWORK_FILTERS: &[&str] = &["name", "id", "driver", "label", "type", "scope"];

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
    pub(super) fn network_event(
        &self,
        id: &str,
        name: &str,
        action: &str,
        container: Option<&str>,
    ) {
        let mut attributes = HashMap::from([
            ("name".to_string(), name.to_string()),
            ("type".to_string(), "bridge".to_string()),
        ]);
        if let Some(container) = container {
            attributes.insert("container".into(), container.into());
        }
        self.events.publish("network", action, id, attributes);
    }

    pub(super) fn network_view(&self, state: &NetworkState, record: &NetworkRecord) -> NetworkView {
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
                    && labels_match(filters.get("label"), |k| {
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

    /// Removes every user network without containers, as `network prune`: `until` (a
    /// timestamp or a duration ago) keeps newer networks, `label` keeps those without the
    /// labels, `label!` those with them; returns the removed networks' names.
    pub async fn prune_networks(
        &self,
        filters: &berth_api::filters::Filters,
    ) -> ServiceResult<Vec<String>> {
        let _running = self.prunes.begin(crate::system::PruneKind::Networks)?;
        let until = crate::images::prune_until(filters, &["until", "label", "label!"])?;
        let candidates: Vec<NetworkView> = {
            let state = self.networks.lock();
            state
                .networks
                .values()
                .map(|n| &n.record)
                .filter(|r| {
                    let label = |k: &str| r.labels.get(k).map(String::as_str);
                    !r.default_bridge
                        && until.is_none_or(|u| r.created < u)
                        && labels_match(filters.get("label"), label)
                        && !filters
                            .get("label!")
                            .iter()
                            .any(|l| labels_match(std::slice::from_ref(l), label))
                })
                .map(|r| self.network_view(&state, r))
                .filter(|v| v.containers.is_empty())
                .collect()
        };
        let mut removed = Vec::new();
        for view in candidates {
            match self.remove_network(&view.record.id).await {
                Ok(()) => removed.push(view.record.name),
                Err(e) => tracing::warn!(network = %view.record.name, "prune: {e}"),
            }
        }
        Ok(removed)
    }
}
