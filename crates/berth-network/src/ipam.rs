//! IP address management: choosing network subnets and container addresses.
//!
//! Pure functions over plain data. The caller supplies what is in use — the subnets of existing
//! networks and the host's routes ([`crate::netlink::Netlink::ipv4_routes`]) — and keeps one
//! [`Addresses`] per network; nothing here touches the kernel or persists anything. After a
//! daemon restart, rebuild an [`Addresses`] with [`Addresses::reserve`] for every address the
//! persisted endpoints hold.
//!
//! IPv4 only: IPv6 subnets are refused with a clear error.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;

/// Errors validating network addressing or allocating addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// Text that is not a CIDR subnet.
    #[error("invalid {what} {value:?}: not a CIDR such as 10.1.0.0/16")]
    BadCidr {
        /// "subnet", "ip range" or "address pool".
        what: &'static str,
        /// The text given.
        value: String,
    },
    /// Text that is not an IPv4 address.
    #[error("invalid {what} {value:?}: not an IPv4 address")]
    BadAddress {
        /// "gateway" or "address".
        what: &'static str,
        /// The text given.
        value: String,
    },
    /// A subnet or range written with host bits set.
    #[error("invalid {what} {given}: it should be {expected}")]
    NotNetworkAddress {
        /// "subnet" or "ip range".
        what: &'static str,
        /// What was given.
        given: Ipv4Net,
        /// The same prefix with the host bits cleared.
        expected: Ipv4Net,
    },
    /// IPv6 addressing was requested.
    #[error("ipv6 {0} is not supported: berth networks are IPv4 only")]
    Ipv6Unsupported(String),
    /// A subnet with no room for a gateway and a container.
    #[error("subnet {0} is too small: use at most a /30")]
    TooSmall(Ipv4Net),
    /// The requested subnet overlaps one already in use.
    #[error("subnet {subnet} overlaps with {other} used by {owner}")]
    Overlap {
        /// The requested subnet.
        subnet: Ipv4Net,
        /// The subnet it collides with.
        other: Ipv4Net,
        /// Who uses `other`, e.g. "network app-net".
        owner: String,
    },
    /// The gateway is not inside the subnet.
    #[error("gateway {gateway} is outside subnet {subnet}")]
    GatewayOutside {
        /// The gateway.
        gateway: Ipv4Addr,
        /// The subnet.
        subnet: Ipv4Net,
    },
    /// The ip range is not inside the subnet.
    #[error("ip range {range} is outside subnet {subnet}")]
    RangeOutside {
        /// The range.
        range: Ipv4Net,
        /// The subnet.
        subnet: Ipv4Net,
    },
    /// A gateway or ip range given without a subnet.
    #[error("a {0} needs a subnet: give the subnet too")]
    NeedsSubnet(&'static str),
    /// An address pool that cannot be split as asked.
    #[error(
        "invalid address pool {base} with size {size}: size must be between the pool's prefix length and 30"
    )]
    BadPool {
        /// The pool's base.
        base: Ipv4Net,
        /// The requested subnet prefix length.
        size: u8,
    },
    /// Every subnet of every pool is taken or routed on the host.
    #[error("all predefined address pools have been fully subnetted")]
    PoolsExhausted,
    /// The network (or its ip range) has no free address left.
    #[error("no available addresses in {0}")]
    Exhausted(Ipv4Net),
    /// A requested address outside the network's subnet.
    #[error("address {ip} is outside subnet {subnet}")]
    AddressOutside {
        /// The address.
        ip: Ipv4Addr,
        /// The subnet.
        subnet: Ipv4Net,
    },
    /// A requested address already held by another endpoint.
    #[error("address {ip} is already in use in subnet {subnet}")]
    AddressInUse {
        /// The address.
        ip: Ipv4Addr,
        /// The subnet.
        subnet: Ipv4Net,
    },
    /// A requested address that is the subnet's network, broadcast or gateway address.
    #[error("address {ip} is reserved in subnet {subnet} (network, broadcast or gateway)")]
    AddressReserved {
        /// The address.
        ip: Ipv4Addr,
        /// The subnet.
        subnet: Ipv4Net,
    },
}

/// A block split into equal subnets for automatic allocation (Docker's `default-address-pools`
/// entry: `{"base": "172.17.0.0/16", "size": 16}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPool {
    /// The block subnets are carved from.
    pub base: Ipv4Net,
    /// Prefix length of each subnet handed out.
    pub size: u8,
}

impl AddressPool {
    /// Parses and validates a pool such as (`"10.10.0.0/16"`, 24).
    pub fn parse(base: &str, size: u8) -> Result<Self, IpamError> {
        let base = parse_net(base, "address pool")?;
        if size < base.prefix_len() || size > 30 {
            return Err(IpamError::BadPool { base, size });
        }
        Ok(Self { base, size })
    }
}

/// Docker's default local address pools: 172.17–172.31 as /16s, then 192.168.0.0/16 as /20s.
pub fn default_pools() -> Vec<AddressPool> {
    [
        ("172.17.0.0/16", 16),
        ("172.18.0.0/16", 16),
        ("172.19.0.0/16", 16),
        ("172.20.0.0/14", 16),
        ("172.24.0.0/14", 16),
        ("172.28.0.0/14", 16),
        ("192.168.0.0/16", 20),
    ]
    .into_iter()
    .map(|(base, size)| AddressPool::parse(base, size).expect("built-in pools are valid"))
    .collect()
}

/// A subnet already taken, for overlap checks and errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedSubnet {
    /// The subnet.
    pub subnet: Ipv4Net,
    /// Who holds it, e.g. "network app-net".
    pub owner: String,
}

/// What the user asked for (`--subnet`, `--gateway`, `--ip-range`), as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubnetRequest {
    /// The subnet in CIDR notation; `None` picks one from the pools.
    pub subnet: Option<String>,
    /// The gateway; `None` takes the subnet's first address.
    pub gateway: Option<String>,
    /// The part of the subnet automatic container addresses come from.
    pub ip_range: Option<String>,
}

/// A network's validated addressing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetConfig {
    /// The network's subnet (host bits clear).
    pub subnet: Ipv4Net,
    /// The bridge's address, containers' default route and DNS server.
    pub gateway: Ipv4Addr,
    /// Where automatic addresses come from, if narrower than the subnet.
    pub ip_range: Option<Ipv4Net>,
}

impl SubnetConfig {
    /// The gateway with the subnet's prefix length, as assigned to the bridge.
    pub fn gateway_cidr(&self) -> Ipv4Net {
        Ipv4Net::new(self.gateway, self.subnet.prefix_len())
            .expect("prefix comes from a valid subnet")
    }
}

fn parse_net(value: &str, what: &'static str) -> Result<Ipv4Net, IpamError> {
    match value.trim().parse::<ipnet::IpNet>() {
        Ok(ipnet::IpNet::V4(net)) => Ok(net),
        Ok(ipnet::IpNet::V6(_)) => Err(IpamError::Ipv6Unsupported(format!("{what} {value}"))),
        Err(_) => Err(IpamError::BadCidr {
            what,
            value: value.to_string(),
        }),
    }
}

fn parse_network(value: &str, what: &'static str) -> Result<Ipv4Net, IpamError> {
    let given = parse_net(value, what)?;
    if given.trunc() != given {
        return Err(IpamError::NotNetworkAddress {
            what,
            given,
            expected: given.trunc(),
        });
    }
    Ok(given)
}

/// Parses an IPv4 address, naming `what` it is in the error.
pub fn parse_ipv4(value: &str, what: &'static str) -> Result<Ipv4Addr, IpamError> {
    match value.trim().parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => Ok(ip),
        Ok(IpAddr::V6(_)) => Err(IpamError::Ipv6Unsupported(format!("{what} {value}"))),
        Err(_) => Err(IpamError::BadAddress {
            what,
            value: value.to_string(),
        }),
    }
}

/// Whether two subnets share any address.
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first subnet of the pools (in order) that overlaps nothing in `used`.
pub fn next_free_subnet(pools: &[AddressPool], used: &[Ipv4Net]) -> Option<Ipv4Net> {
    pools.iter().find_map(|pool| {
        let mut candidates = pool.base.subnets(pool.size).ok()?;
        candidates.find(|c| !used.iter().any(|u| overlaps(c, u)))
    })
}

/// Validates a user request, or picks a free subnet, for a new network.
///
/// An explicit subnet must not overlap another network (`networks`); an automatic one also
/// stays clear of the host's routes (`host_routes`), as Docker does.
pub fn configure(
    request: &SubnetRequest,
    pools: &[AddressPool],
    networks: &[UsedSubnet],
    host_routes: &[Ipv4Net],
) -> Result<SubnetConfig, IpamError> {
    let subnet = match &request.subnet {
        Some(text) => {
            let subnet = parse_network(text, "subnet")?;
            if let Some(used) = networks.iter().find(|u| overlaps(&subnet, &u.subnet)) {
                return Err(IpamError::Overlap {
                    subnet,
                    other: used.subnet,
                    owner: used.owner.clone(),
                });
            }
            subnet
        }
        None if request.gateway.is_some() => return Err(IpamError::NeedsSubnet("gateway")),
        None if request.ip_range.is_some() => return Err(IpamError::NeedsSubnet("ip range")),
        None => {
            let used: Vec<Ipv4Net> = networks
                .iter()
                .map(|u| u.subnet)
                .chain(host_routes.iter().copied())
                .collect();
            next_free_subnet(pools, &used).ok_or(IpamError::PoolsExhausted)?
        }
    };
    if subnet.prefix_len() > 30 {
        return Err(IpamError::TooSmall(subnet));
    }
    let gateway = match &request.gateway {
        Some(text) => {
            let gateway = parse_ipv4(text, "gateway")?;
            if !subnet.contains(&gateway) {
                return Err(IpamError::GatewayOutside { gateway, subnet });
            }
            if gateway == subnet.network() || gateway == subnet.broadcast() {
                return Err(IpamError::AddressReserved {
                    ip: gateway,
                    subnet,
                });
            }
            gateway
        }
        None => first_host(&subnet),
    };
    let ip_range = match &request.ip_range {
        Some(text) => {
            let range = parse_network(text, "ip range")?;
            if !subnet.contains(&range) {
                return Err(IpamError::RangeOutside { range, subnet });
            }
            Some(range)
        }
        None => None,
    };
    Ok(SubnetConfig {
        subnet,
        gateway,
        ip_range,
    })
}

fn first_host(subnet: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// The addresses handed out on one network.
///
/// Automatic allocation walks the range round-robin from where it last stopped, as Docker
/// does, so a just-released address is not immediately reused (stale ARP and DNS caches).
#[derive(Debug, Clone)]
pub struct Addresses {
    config: SubnetConfig,
    used: BTreeSet<Ipv4Addr>,
    cursor: u32,
}

impl Addresses {
    /// An empty allocator for a network.
    pub fn new(config: SubnetConfig) -> Self {
        let (first, _) = Self::bounds(&config);
        Self {
            config,
            used: BTreeSet::new(),
            cursor: first,
        }
    }

    /// The network's addressing.
    pub fn config(&self) -> &SubnetConfig {
        &self.config
    }

    /// The addresses currently held, in order.
    pub fn in_use(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.used.iter().copied()
    }

    /// First and last candidate for automatic allocation (as integers), inside the ip range
    /// and never the subnet's network or broadcast address.
    fn bounds(config: &SubnetConfig) -> (u32, u32) {
        let range = config.ip_range.unwrap_or(config.subnet);
        let first = u32::from(range.network()).max(u32::from(config.subnet.network()) + 1);
        let last = u32::from(range.broadcast()).min(u32::from(config.subnet.broadcast()) - 1);
        (first, last)
    }

    /// Takes the next free address from the ip range (or subnet).
    pub fn allocate(&mut self) -> Result<Ipv4Addr, IpamError> {
        let (first, last) = Self::bounds(&self.config);
        if first > last {
            return Err(IpamError::Exhausted(
                self.config.ip_range.unwrap_or(self.config.subnet),
            ));
        }
        let span = u64::from(last - first) + 1;
        let start = if (first..=last).contains(&self.cursor) {
            self.cursor
        } else {
            first
        };
        for step in 0..span {
            let candidate = first + ((u64::from(start - first) + step) % span) as u32;
            let ip = Ipv4Addr::from(candidate);
            if ip != self.config.gateway && !self.used.contains(&ip) {
                self.used.insert(ip);
                self.cursor = if candidate == last {
                    first
                } else {
                    candidate + 1
                };
                return Ok(ip);
            }
        }
        Err(IpamError::Exhausted(
            self.config.ip_range.unwrap_or(self.config.subnet),
        ))
    }

    /// Takes a specific address (`--ip`, or restoring state). It must be in the subnet (not
    /// necessarily the ip range, as with Docker) and not the network, broadcast or gateway.
    pub fn reserve(&mut self, ip: Ipv4Addr) -> Result<(), IpamError> {
        let subnet = self.config.subnet;
        if !subnet.contains(&ip) {
            return Err(IpamError::AddressOutside { ip, subnet });
        }
        if ip == subnet.network() || ip == subnet.broadcast() || ip == self.config.gateway {
            return Err(IpamError::AddressReserved { ip, subnet });
        }
        if !self.used.insert(ip) {
            return Err(IpamError::AddressInUse { ip, subnet });
        }
        Ok(())
    }

    /// Gives an address back; returns whether it was held.
    pub fn release(&mut self, ip: Ipv4Addr) -> bool {
        self.used.remove(&ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn req(subnet: Option<&str>, gateway: Option<&str>, ip_range: Option<&str>) -> SubnetRequest {
        SubnetRequest {
            subnet: subnet.map(String::from),
            gateway: gateway.map(String::from),
            ip_range: ip_range.map(String::from),
        }
    }

    fn used(s: &str, owner: &str) -> UsedSubnet {
        UsedSubnet {
            subnet: net(s),
            owner: owner.into(),
        }
    }

    #[test]
    fn default_pools_start_at_172_17_and_follow_dockers_order() {
        let pools = default_pools();
        assert_eq!(next_free_subnet(&pools, &[]), Some(net("172.17.0.0/16")));
        assert_eq!(
            next_free_subnet(&pools, &[net("172.17.0.0/16")]),
            Some(net("172.18.0.0/16"))
        );
        // 172.17–172.31 is 15 /16s; then 192.168.x.0/20s.
        let all_172: Vec<Ipv4Net> = (17..=31).map(|b| net(&format!("172.{b}.0.0/16"))).collect();
        assert_eq!(
            next_free_subnet(&pools, &all_172),
            Some(net("192.168.0.0/20"))
        );
        let mut taken = all_172.clone();
        taken.push(net("192.168.0.0/20"));
        assert_eq!(
            next_free_subnet(&pools, &taken),
            Some(net("192.168.16.0/20"))
        );
        taken.push(net("192.168.0.0/16"));
        assert_eq!(next_free_subnet(&pools, &taken), None);
    }

    #[test]
    fn automatic_subnets_avoid_networks_and_host_routes() {
        let pools = default_pools();
        let networks = [used("172.17.0.0/16", "network bridge")];
        // A host route inside 172.18/16 (a VPN /24, say) blocks that whole /16.
        let routes = [net("172.18.5.0/24"), net("10.0.0.0/8")];
        let c = configure(&SubnetRequest::default(), &pools, &networks, &routes).unwrap();
        assert_eq!(c.subnet, net("172.19.0.0/16"));
        assert_eq!(c.gateway, "172.19.0.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!(c.ip_range, None);
        assert_eq!(c.gateway_cidr(), net("172.19.0.1/16"));
        // A covering host route (172.16.0.0/12) blocks all of 172.x.
        let c = configure(
            &SubnetRequest::default(),
            &pools,
            &[],
            &[net("172.16.0.0/12")],
        )
        .unwrap();
        assert_eq!(c.subnet, net("192.168.0.0/20"));
        let err = configure(
            &SubnetRequest::default(),
            &pools,
            &[],
            &[net("172.16.0.0/12"), net("192.168.0.0/16")],
        );
        assert_eq!(err, Err(IpamError::PoolsExhausted));
    }

    #[test]
    fn configurable_pools_are_used_in_order() {
        let pools = vec![AddressPool::parse("10.10.0.0/16", 24).unwrap()];
        let networks = [
            used("10.10.0.0/24", "network a"),
            used("10.10.1.0/24", "network b"),
        ];
        let c = configure(&SubnetRequest::default(), &pools, &networks, &[]).unwrap();
        assert_eq!(c.subnet, net("10.10.2.0/24"));
        assert_eq!(
            AddressPool::parse("10.10.0.0/16", 8),
            Err(IpamError::BadPool {
                base: net("10.10.0.0/16"),
                size: 8
            })
        );
        assert_eq!(
            AddressPool::parse("10.10.0.0/16", 31),
            Err(IpamError::BadPool {
                base: net("10.10.0.0/16"),
                size: 31
            })
        );
        assert!(matches!(
            AddressPool::parse("10.10.0/16", 24),
            Err(IpamError::BadCidr { .. })
        ));
    }

    #[test]
    fn explicit_subnets_are_validated() {
        let pools = default_pools();
        let c = configure(&req(Some("10.1.0.0/16"), None, None), &pools, &[], &[]).unwrap();
        assert_eq!(
            (c.subnet, c.gateway),
            (net("10.1.0.0/16"), "10.1.0.1".parse().unwrap())
        );

        let err = configure(&req(Some("10.1.0.0/33"), None, None), &pools, &[], &[]).unwrap_err();
        assert_eq!(
            err,
            IpamError::BadCidr {
                what: "subnet",
                value: "10.1.0.0/33".into()
            }
        );
        assert!(err.to_string().contains("10.1.0.0/33"), "{err}");
        assert!(matches!(
            configure(&req(Some("banana"), None, None), &pools, &[], &[]),
            Err(IpamError::BadCidr { .. })
        ));
        assert!(matches!(
            configure(&req(Some("10.1.0.0"), None, None), &pools, &[], &[]),
            Err(IpamError::BadCidr { .. })
        ));

        let err = configure(&req(Some("10.1.2.3/16"), None, None), &pools, &[], &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid subnet 10.1.2.3/16: it should be 10.1.0.0/16"
        );

        let err = configure(&req(Some("fd00::/64"), None, None), &pools, &[], &[]).unwrap_err();
        assert!(matches!(err, IpamError::Ipv6Unsupported(_)), "{err}");

        let err = configure(&req(Some("10.1.0.0/31"), None, None), &pools, &[], &[]).unwrap_err();
        assert_eq!(err, IpamError::TooSmall(net("10.1.0.0/31")));
        assert!(configure(&req(Some("10.1.0.0/30"), None, None), &pools, &[], &[]).is_ok());
    }

    #[test]
    fn overlapping_subnets_are_refused_naming_the_other_network() {
        let pools = default_pools();
        let networks = [used("10.1.0.0/16", "network app-net")];
        for wanted in ["10.1.0.0/16", "10.1.5.0/24", "10.0.0.0/8"] {
            let err =
                configure(&req(Some(wanted), None, None), &pools, &networks, &[]).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("subnet {wanted} overlaps with 10.1.0.0/16 used by network app-net")
            );
        }
        // Adjacent is fine, and host routes do not block an explicit subnet.
        assert!(
            configure(
                &req(Some("10.2.0.0/16"), None, None),
                &pools,
                &networks,
                &[net("10.2.0.0/16")]
            )
            .is_ok()
        );
    }

    #[test]
    fn gateways_are_validated() {
        let pools = default_pools();
        let c = configure(
            &req(Some("10.1.0.0/24"), Some("10.1.0.254"), None),
            &pools,
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(c.gateway, "10.1.0.254".parse::<Ipv4Addr>().unwrap());

        let err = configure(
            &req(Some("10.1.0.0/24"), Some("10.2.0.1"), None),
            &pools,
            &[],
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "gateway 10.2.0.1 is outside subnet 10.1.0.0/24"
        );
        for reserved in ["10.1.0.0", "10.1.0.255"] {
            let err = configure(
                &req(Some("10.1.0.0/24"), Some(reserved), None),
                &pools,
                &[],
                &[],
            )
            .unwrap_err();
            assert!(matches!(err, IpamError::AddressReserved { .. }), "{err}");
        }
        let err = configure(
            &req(Some("10.1.0.0/24"), Some("10.1.0.300"), None),
            &pools,
            &[],
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err,
            IpamError::BadAddress {
                what: "gateway",
                value: "10.1.0.300".into()
            }
        );
        let err = configure(&req(None, Some("10.1.0.1"), None), &pools, &[], &[]).unwrap_err();
        assert_eq!(err, IpamError::NeedsSubnet("gateway"));
        let err = configure(&req(None, None, Some("10.1.0.0/25")), &pools, &[], &[]).unwrap_err();
        assert_eq!(err, IpamError::NeedsSubnet("ip range"));
    }

    #[test]
    fn ip_ranges_are_validated() {
        let pools = default_pools();
        let c = configure(
            &req(Some("10.1.0.0/16"), None, Some("10.1.5.0/24")),
            &pools,
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(c.ip_range, Some(net("10.1.5.0/24")));
        assert_eq!(c.gateway, "10.1.0.1".parse::<Ipv4Addr>().unwrap());
        let err = configure(
            &req(Some("10.1.0.0/16"), None, Some("10.2.5.0/24")),
            &pools,
            &[],
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "ip range 10.2.5.0/24 is outside subnet 10.1.0.0/16"
        );
        let err = configure(
            &req(Some("10.1.0.0/24"), None, Some("10.1.0.0/16")),
            &pools,
            &[],
            &[],
        )
        .unwrap_err();
        assert!(matches!(err, IpamError::RangeOutside { .. }), "{err}");
        let err = configure(
            &req(Some("10.1.0.0/16"), None, Some("10.1.5.7/24")),
            &pools,
            &[],
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid ip range 10.1.5.7/24: it should be 10.1.5.0/24"
        );
    }

    fn config(subnet: &str, gateway: &str, range: Option<&str>) -> SubnetConfig {
        SubnetConfig {
            subnet: net(subnet),
            gateway: gateway.parse().unwrap(),
            ip_range: range.map(net),
        }
    }

    #[test]
    fn allocation_skips_gateway_network_and_broadcast() {
        let mut a = Addresses::new(config("10.9.0.0/29", "10.9.0.1", None));
        let got: Vec<Ipv4Addr> = (0..5).map(|_| a.allocate().unwrap()).collect();
        let want: Vec<Ipv4Addr> = (2..=6).map(|h| Ipv4Addr::new(10, 9, 0, h)).collect();
        assert_eq!(got, want);
        assert_eq!(a.allocate(), Err(IpamError::Exhausted(net("10.9.0.0/29"))));
        assert_eq!(a.in_use().count(), 5);
    }

    #[test]
    fn allocation_is_round_robin_and_reuses_released_addresses_last() {
        let mut a = Addresses::new(config("10.9.0.0/29", "10.9.0.1", None));
        let first = a.allocate().unwrap();
        let second = a.allocate().unwrap();
        assert!(a.release(first));
        assert!(!a.release(first), "a second release reports nothing held");
        // Next comes .4, not the just-released .2.
        assert_eq!(a.allocate().unwrap(), Ipv4Addr::new(10, 9, 0, 4));
        for _ in 0..2 {
            a.allocate().unwrap();
        }
        // Wrapped around: the only free one is the released .2.
        assert_eq!(a.allocate().unwrap(), first);
        assert!(a.in_use().any(|ip| ip == second));
        assert!(a.allocate().is_err());
    }

    #[test]
    fn a_gateway_in_the_middle_is_skipped() {
        let mut a = Addresses::new(config("10.9.0.0/30", "10.9.0.2", None));
        assert_eq!(a.allocate().unwrap(), Ipv4Addr::new(10, 9, 0, 1));
        assert_eq!(a.allocate(), Err(IpamError::Exhausted(net("10.9.0.0/30"))));
    }

    #[test]
    fn allocation_stays_inside_the_ip_range() {
        let mut a = Addresses::new(config("10.9.0.0/16", "10.9.0.1", Some("10.9.7.0/30")));
        // A range's own network and broadcast addresses are ordinary hosts of the subnet.
        let got: Vec<Ipv4Addr> = (0..4).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(
            got,
            (0..4)
                .map(|h| Ipv4Addr::new(10, 9, 7, h))
                .collect::<Vec<_>>()
        );
        assert_eq!(a.allocate(), Err(IpamError::Exhausted(net("10.9.7.0/30"))));
        // Static addresses may still come from the rest of the subnet.
        a.reserve(Ipv4Addr::new(10, 9, 200, 1)).unwrap();
    }

    #[test]
    fn a_range_at_the_subnet_edge_excludes_network_and_broadcast() {
        let mut a = Addresses::new(config("10.9.0.0/24", "10.9.0.129", Some("10.9.0.128/30")));
        let got: Vec<Ipv4Addr> = (0..3).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(got, [128, 130, 131].map(|h| Ipv4Addr::new(10, 9, 0, h)));
        let mut edge = Addresses::new(config("10.9.0.0/24", "10.9.0.1", Some("10.9.0.252/30")));
        let got: Vec<Ipv4Addr> = (0..3).map(|_| edge.allocate().unwrap()).collect();
        assert_eq!(got, [252, 253, 254].map(|h| Ipv4Addr::new(10, 9, 0, h)));
        assert!(edge.allocate().is_err(), ".255 is the subnet's broadcast");
    }

    #[test]
    fn static_addresses_are_checked_and_then_skipped_by_allocation() {
        let mut a = Addresses::new(config("10.9.0.0/24", "10.9.0.1", None));
        a.reserve(Ipv4Addr::new(10, 9, 0, 2)).unwrap();
        assert_eq!(
            a.reserve(Ipv4Addr::new(10, 9, 0, 2))
                .unwrap_err()
                .to_string(),
            "address 10.9.0.2 is already in use in subnet 10.9.0.0/24"
        );
        assert_eq!(a.allocate().unwrap(), Ipv4Addr::new(10, 9, 0, 3));
        for reserved in [0, 1, 255] {
            let err = a.reserve(Ipv4Addr::new(10, 9, 0, reserved)).unwrap_err();
            assert!(matches!(err, IpamError::AddressReserved { .. }), "{err}");
        }
        let err = a.reserve(Ipv4Addr::new(10, 8, 0, 5)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "address 10.8.0.5 is outside subnet 10.9.0.0/24"
        );
        assert!(a.release(Ipv4Addr::new(10, 9, 0, 2)));
        a.reserve(Ipv4Addr::new(10, 9, 0, 2)).unwrap();
    }

    #[test]
    fn a_slash_16_allocates_past_the_third_octet() {
        let mut a = Addresses::new(config("10.9.0.0/16", "10.9.0.1", None));
        let mut last = Ipv4Addr::UNSPECIFIED;
        for _ in 0..300 {
            last = a.allocate().unwrap();
        }
        assert_eq!(last, Ipv4Addr::new(10, 9, 1, 45));
    }

    #[test]
    fn overlap_is_symmetric_and_exact() {
        assert!(overlaps(&net("10.0.0.0/8"), &net("10.5.0.0/16")));
        assert!(overlaps(&net("10.5.0.0/16"), &net("10.0.0.0/8")));
        assert!(!overlaps(&net("10.5.0.0/16"), &net("10.6.0.0/16")));
        assert!(!overlaps(&net("192.168.0.0/20"), &net("192.168.16.0/20")));
        assert_eq!(
            parse_ipv4(" 10.0.0.1 ", "address").unwrap(),
            Ipv4Addr::new(10, 0, 0, 1)
        );
        assert!(matches!(
            parse_ipv4("::1", "address"),
            Err(IpamError::Ipv6Unsupported(_))
        ));
    }
}
