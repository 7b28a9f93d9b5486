//! A small rtnetlink session: the link, address and route operations berth needs, in one
//! network namespace (the host's, or a container's opened through [`crate::netns`]).

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{IntoRawFd, OwnedFd};
use std::path::Path;

use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::{LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use tokio::task::JoinHandle;

/// Errors talking rtnetlink.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The netlink socket could not be set up.
    #[error("cannot open a netlink connection: {0}")]
    Connect(std::io::Error),
    /// The socket could not be opened inside a network namespace.
    #[error(transparent)]
    Netns(Box<crate::netns::NetnsError>),
    /// The kernel refused a request.
    #[error("cannot {action}: {source}")]
    Request {
        /// What was asked, naming the interface or address.
        action: String,
        /// The netlink error.
        source: rtnetlink::Error,
    },
    /// A named interface does not exist.
    #[error("network interface {0} does not exist")]
    NoSuchLink(String),
}

impl NetlinkError {
    /// The errno carried by a kernel refusal, if any (positive, e.g. `libc::EEXIST`).
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Request {
                source: rtnetlink::Error::NetlinkError(msg),
                ..
            } => Some(-msg.raw_code()),
            _ => None,
        }
    }
}

fn request(action: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let action = action.into();
    move |source| NetlinkError::Request { action, source }
}

/// An rtnetlink connection bound to one network namespace. Must be created inside a tokio
/// runtime; the connection task stops when this is dropped.
pub struct Netlink {
    handle: rtnetlink::Handle,
    connection: JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// A veth pair to create, one end on a host bridge and the other inside a namespace.
pub(crate) struct VethPair<'a> {
    pub host_name: &'a str,
    pub bridge_index: u32,
    pub peer_name: &'a str,
    pub peer_netns: &'a OwnedFd,
    pub peer_mac: [u8; 6],
    pub mtu: Option<u32>,
}

impl Netlink {
    /// Connects in the calling thread's network namespace (the host's, for the daemon).
    pub fn host() -> Result<Self, NetlinkError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        Ok(Self {
            handle,
            connection: tokio::spawn(connection),
        })
    }

    /// Connects inside the network namespace pinned at `path`.
    pub fn in_netns(path: &Path) -> Result<Self, NetlinkError> {
        let socket =
            crate::netns::netlink_socket_in(path).map_err(|e| NetlinkError::Netns(Box::new(e)))?;
        Self::from_socket(socket)
    }

    /// Wraps a `NETLINK_ROUTE` socket opened elsewhere (e.g. in a namespace).
    pub(crate) fn from_socket(socket: OwnedFd) -> Result<Self, NetlinkError> {
        let fd = socket.into_raw_fd();
        // SAFETY: `fd` is an open netlink socket whose ownership we just released; the tokio
        // socket takes it over (and closes it on drop).
        let socket =
            unsafe { <rtnetlink::sys::TokioSocket as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let (connection, handle, _) = rtnetlink::from_socket(socket);
        Ok(Self {
            handle,
            connection: tokio::spawn(connection),
        })
    }

    /// The IPv4 destinations routed in this namespace (every table but `local`), without the
    /// default route: what automatic subnet allocation must stay clear of.
    pub async fn ipv4_routes(&self) -> Result<Vec<Ipv4Net>, NetlinkError> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let routes: Vec<_> = self
            .handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(request("list IPv4 routes"))?;
        let mut nets = Vec::new();
        for route in routes {
            let prefix = route.header.destination_prefix_length;
            if route.header.table == 255 || prefix == 0 {
                continue;
            }
            for attr in &route.attributes {
                if let RouteAttribute::Destination(RouteAddress::Inet(addr)) = attr
                    && let Ok(net) = Ipv4Net::new(*addr, prefix)
                {
                    nets.push(net.trunc());
                }
            }
        }
        nets.sort();
        nets.dedup();
        Ok(nets)
    }

    /// Whether an interface named `name` exists.
    pub async fn link_exists(&self, name: &str) -> Result<bool, NetlinkError> {
        Ok(self.link(name).await?.is_some())
    }

    /// The interface named `name`, if it exists.
    pub(crate) async fn link(&self, name: &str) -> Result<Option<LinkMessage>, NetlinkError> {
        let found = self
            .handle
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_next()
            .await;
        match found {
            Ok(link) => Ok(link),
            Err(rtnetlink::Error::NetlinkError(msg)) if -msg.raw_code() == libc::ENODEV => Ok(None),
            Err(e) => Err(request(format!("look up interface {name}"))(e)),
        }
    }

    /// The index of interface `name`, or [`NetlinkError::NoSuchLink`].
    pub(crate) async fn index(&self, name: &str) -> Result<u32, NetlinkError> {
        self.link(name)
            .await?
            .map(|l| l.header.index)
            .ok_or_else(|| NetlinkError::NoSuchLink(name.to_string()))
    }

    /// Brings interface `name` up.
    pub(crate) async fn set_up_by_name(&self, name: &str) -> Result<(), NetlinkError> {
        let index = self.index(name).await?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(request(format!("bring up {name}")))
    }

    /// Creates a bridge named `name`, down, with a fixed MAC: without one the kernel gives a
    /// bridge the lowest MAC of its ports, which changes as containers come and go.
    pub(crate) async fn add_bridge(
        &self,
        name: &str,
        mac: [u8; 6],
        mtu: Option<u32>,
    ) -> Result<(), NetlinkError> {
        let mut builder = LinkBridge::new(name).down().address(mac.to_vec());
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        self.handle
            .link()
            .add(builder.build())
            .execute()
            .await
            .map_err(request(format!("create bridge {name}")))
    }

    /// Whether `link` is a Linux bridge.
    pub(crate) fn is_bridge(link: &LinkMessage) -> bool {
        use rtnetlink::packet_route::link::LinkInfo;
        link.attributes.iter().any(|a| {
            matches!(a, LinkAttribute::LinkInfo(infos) if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge))))
        })
    }

    /// Deletes interface `name`; returns false if it did not exist.
    pub(crate) async fn delete_link(&self, name: &str) -> Result<bool, NetlinkError> {
        let Some(link) = self.link(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(link.header.index).execute().await {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(msg)) if -msg.raw_code() == libc::ENODEV => {
                Ok(false)
            }
            Err(e) => Err(request(format!("delete interface {name}"))(e)),
        }
    }

    /// Names of the interfaces enslaved to the bridge with index `bridge_index`.
    pub(crate) async fn ports_of(&self, bridge_index: u32) -> Result<Vec<String>, NetlinkError> {
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(request("list interfaces"))?;
        Ok(links
            .iter()
            .filter(|l| {
                l.attributes
                    .iter()
                    .any(|a| matches!(a, LinkAttribute::Controller(i) if *i == bridge_index))
            })
            .filter_map(|l| {
                l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                })
            })
            .collect())
    }

    /// The IPv4 addresses (with prefix length) on interface `index`.
    pub(crate) async fn ipv4_addresses(&self, index: u32) -> Result<Vec<Ipv4Net>, NetlinkError> {
        use rtnetlink::packet_route::address::AddressAttribute;
        let addrs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(request(format!("list addresses of interface {index}")))?;
        Ok(addrs
            .iter()
            .filter(|a| a.header.family == AddressFamily::Inet)
            .filter_map(|a| {
                a.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Address(IpAddr::V4(ip)) => {
                        Ipv4Net::new(*ip, a.header.prefix_len).ok()
                    }
                    _ => None,
                })
            })
            .collect())
    }

    /// Adds `address` to interface `index` (named `name` in errors).
    pub(crate) async fn add_address(
        &self,
        index: u32,
        name: &str,
        address: Ipv4Net,
    ) -> Result<(), NetlinkError> {
        self.handle
            .address()
            .add(index, IpAddr::V4(address.addr()), address.prefix_len())
            .execute()
            .await
            .map_err(request(format!("add address {address} to {name}")))
    }

    /// Adds a default route via `gateway`.
    pub(crate) async fn add_default_route(&self, gateway: Ipv4Addr) -> Result<(), NetlinkError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .build();
        self.handle
            .route()
            .add(route)
            .execute()
            .await
            .map_err(request(format!("add a default route via {gateway}")))
    }

    /// Creates a veth pair: the host end enslaved to a bridge and up, the peer created directly
    /// inside another namespace with its final name and MAC (so nothing ever has to be renamed
    /// or moved, and a failure leaves no half-configured device behind).
    pub(crate) async fn add_veth(&self, pair: &VethPair<'_>) -> Result<(), NetlinkError> {
        use std::os::fd::AsRawFd;
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(pair.peer_name)
            .address(pair.peer_mac.to_vec())
            .setns_by_fd(pair.peer_netns.as_raw_fd());
        let mut host = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(pair.host_name)
            .controller(pair.bridge_index)
            .up();
        if let Some(mtu) = pair.mtu {
            peer = peer.mtu(mtu);
            host = host.mtu(mtu);
        }
        let message = host
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
            .build();
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(request(format!(
                "create veth pair {} / {}",
                pair.host_name, pair.peer_name
            )))
    }
}
