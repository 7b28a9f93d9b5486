//! `/networks/...` handlers.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_api::models::{
    EndpointSettings, NetworkConnectRequest, NetworkCreateRequest, NetworkCreateResponse,
    NetworkDisconnectRequest, NetworkPruneResponse, NetworkingConfig,
};
use serde_json::{Value, json as value};

use super::{AppState, QueryParams, json, parse_body};
use crate::containers::rfc3339;
use crate::networks::{CreateNetwork, EndpointRequest, NetworkView};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/networks", get(list))
        .route("/networks/create", post(create))
        .route("/networks/prune", post(prune))
        .route("/networks/{id}", get(inspect).delete(remove))
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
}

/// The endpoint settings of a create body's `NetworkingConfig`, by network name.
pub(super) fn endpoint_requests(
    config: Option<&NetworkingConfig>,
) -> HashMap<String, EndpointRequest> {
    config
        .and_then(|c| c.endpoints_config.as_ref())
        .map(|endpoints| {
            endpoints
                .iter()
                .map(|(name, settings)| (name.clone(), endpoint_request(Some(settings))))
                .collect()
        })
        .unwrap_or_default()
}

fn endpoint_request(settings: Option<&EndpointSettings>) -> EndpointRequest {
    let Some(settings) = settings else {
        return EndpointRequest::default();
    };
    EndpointRequest {
        aliases: settings.aliases.clone().unwrap_or_default(),
        ip: settings
            .ipam_config
            .as_ref()
            .and_then(|c| c.ipv4_address.clone()),
        mac: settings.mac_address.clone(),
    }
}

/// The network as `docker network inspect` prints it; options and labels as given.
fn network_json(view: &NetworkView) -> Value {
    let r = &view.record;
    let mut ipam_config = serde_json::Map::new();
    ipam_config.insert("Subnet".into(), Value::String(r.subnet.clone()));
    ipam_config.insert("Gateway".into(), Value::String(r.gateway.clone()));
    if let Some(range) = &r.ip_range {
        ipam_config.insert("IPRange".into(), Value::String(range.clone()));
    }
    let containers: serde_json::Map<String, Value> = view
        .containers
        .iter()
        .map(|(id, c)| {
            (
                id.clone(),
                value!({
                    "Name": c.name,
                    "EndpointID": c.endpoint_id,
                    "MacAddress": c.mac,
                    "IPv4Address": c.ipv4,
                    "IPv6Address": "",
                }),
            )
        })
        .collect();
    value!({
        "Name": r.name,
        "Id": r.id,
        "Created": rfc3339(Some(r.created)),
        "Scope": "local",
        "Driver": "bridge",
        "EnableIPv4": true,
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": r.ipam_options,
            "Config": [ipam_config],
        },
        "Internal": r.internal,
        "Attachable": r.attachable,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": r.options,
        "Labels": r.labels,
    })
}

async fn list(State(d): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let params = QueryParams::parse(query.as_deref());
    match params.filters().and_then(|f| d.list_networks(&f)) {
        Ok(views) => json(
            StatusCode::OK,
            &views.iter().map(network_json).collect::<Vec<_>>(),
        ),
        Err(e) => e.into_response(),
    }
}

async fn inspect(State(d): State<AppState>, Path(id): Path<String>) -> Response {
    match d.inspect_network(&id) {
        Ok(view) => json(StatusCode::OK, &network_json(&view)),
        Err(e) => e.into_response(),
    }
}

async fn create(State(d): State<AppState>, body: Bytes) -> Response {
    let run = async {
        let body: NetworkCreateRequest = parse_body(&body)?;
        let ipam = body.ipam.unwrap_or_default();
        let first = ipam
            .config
            .iter()
            .flatten()
            .next()
            .cloned()
            .unwrap_or_default();
        let request = CreateNetwork {
            name: body.name,
            driver: body.driver.unwrap_or_default(),
            subnet: berth_network::ipam::SubnetRequest {
                subnet: first.subnet.filter(|s| !s.is_empty()),
                gateway: first.gateway.filter(|s| !s.is_empty()),
                ip_range: first.ip_range.filter(|s| !s.is_empty()),
            },
            ipam_options: ipam.options.unwrap_or_default(),
            internal: body.internal.unwrap_or(false),
            attachable: body.attachable.unwrap_or(false),
            labels: body.labels.unwrap_or_default(),
            options: body.options.unwrap_or_default(),
        };
        d.create_network(request).await
    };
    match run.await {
        Ok(id) => json(
            StatusCode::CREATED,
            &NetworkCreateResponse {
                id,
                warning: String::new(),
            },
        ),
        Err(e) => e.into_response(),
    }
}

async fn remove(State(d): State<AppState>, Path(id): Path<String>) -> Response {
    match d.remove_network(&id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn connect(State(d): State<AppState>, Path(id): Path<String>, body: Bytes) -> Response {
    let run = async {
        let body: NetworkConnectRequest = serde_json::from_slice(&body)
            .map_err(|e| crate::error::ServiceError::invalid(format!("invalid JSON: {e}")))?;
        d.connect_network(
            &id,
            &body.container,
            endpoint_request(body.endpoint_config.as_ref()),
        )
        .await
    };
    match run.await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn disconnect(State(d): State<AppState>, Path(id): Path<String>, body: Bytes) -> Response {
    let run = async {
        let body: NetworkDisconnectRequest = serde_json::from_slice(&body)
            .map_err(|e| crate::error::ServiceError::invalid(format!("invalid JSON: {e}")))?;
        d.disconnect_network(&id, &body.container, body.force.unwrap_or(false))
            .await
    };
    match run.await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn prune(State(d): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let params = QueryParams::parse(query.as_deref());
    match params.filters() {
        Ok(filters) => match d.prune_networks(&filters).await {
            Ok(deleted) => json(
                StatusCode::OK,
                &NetworkPruneResponse {
                    networks_deleted: Some(deleted),
                },
            ),
            Err(e) => e.into_response(),
        },
        Err(e) => e.into_response(),
    }
}
