//! Published ports: Docker's port keys and bindings as requests, and its messages.

use std::net::Ipv4Addr;

use berth_network::firewall::Protocol;
use berth_network::ipam;
use berth_network::ports;

use crate::error::{ServiceError, ServiceResult};

/// A port a container asks to publish, before its host port is reserved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PortRequest {
    pub(super) protocol: Protocol,
    pub(super) container_port: u16,
    pub(super) host_ip: Option<Ipv4Addr>,
    pub(super) host_ports: ports::HostPorts,
}

/// Splits Docker's port key (`80/tcp`, `53/udp`, `80`).
pub(super) fn parse_port_key(key: &str) -> ServiceResult<(u16, Protocol)> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let bad = || ServiceError::invalid(format!("invalid port specification: {key:?}"));
    let port = port.parse::<u16>().map_err(|_| bad())?;
    let protocol = Protocol::parse(proto).ok_or_else(bad)?;
    Ok((port, protocol))
}

/// The ports to publish: `PortBindings`, plus every exposed port with `PublishAllPorts`.
pub(super) fn port_requests(
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
pub(super) fn port_error(request: &PortRequest, error: ports::PortError) -> ServiceError {
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

pub(super) fn port_type(protocol: &str) -> Option<berth_api::models::PortSummaryTypeEnum> {
    serde_json::from_value(serde_json::Value::String(protocol.to_string())).ok()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

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
}
