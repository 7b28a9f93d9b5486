//! The embedded DNS server: container names by network, everything else forwarded.
//!
//! One [`DnsServer`] runs per user-defined network, in the host's namespace, listening on the
//! network's gateway address (UDP and TCP port 53). Containers' `resolv.conf` names that
//! address ([`crate::files::ResolverMode::Embedded`]). Docker instead listens on 127.0.0.11
//! inside every container's namespace and DNATs port 53 there; the gateway is already
//! reachable from each container and lives in the host namespace, so berth needs no rules
//! and no per-container socket. The cost: a container on several networks asks the server
//! of one of them (the first with embedded DNS), which answers for all of its networks.
//!
//! Answers come from a [`DnsTable`] the daemon updates in memory (no files, no signals): a
//! name resolves only if it belongs to an endpoint on a network the *asking* container (known
//! by its source address) is also on, as aardvark-dns does. Container names, aliases and
//! hostnames are single labels: an unknown single-label name gets NXDOMAIN at once instead
//! of leaking to the upstream servers. Other names are relayed as-is to the host's resolvers
//! (or the container's own `--dns` servers). Addresses that are not containers in the table
//! get REFUSED, so the gateway is not an open resolver for whatever can route to it.
//!
//! Hand-written rather than hickory-server: the server only reads one question and writes A,
//! AAAA or PTR answers (`wire`, under 300 lines), forwarding is a byte relay, and scoping by
//! requester needs the source address, which hickory's authority API does not pass to a
//! zone lookup; hickory would add some 40 crates for that.

mod wire;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use wire::{Malformed, Query, Record};

/// How long to wait for one upstream server before trying the next.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an idle TCP client may keep its connection.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Errors starting a DNS server.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The listening socket could not be bound.
    #[error("cannot listen for DNS on {addr}/{protocol}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// "udp" or "tcp".
        protocol: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A container's presence on one network, as DNS sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsEndpoint {
    /// The container's id (links its endpoints across networks).
    pub container_id: String,
    /// Names it answers to here: container name, network aliases, hostname. The first one is
    /// what reverse lookups return.
    pub names: Vec<String>,
    /// Its addresses on this network.
    pub addresses: Vec<IpAddr>,
    /// Where its other queries go (`--dns`); empty for the server's upstreams.
    pub upstreams: Vec<SocketAddr>,
}

#[derive(Debug, Default)]
struct Endpoints {
    /// network → container id → endpoint.
    networks: HashMap<String, HashMap<String, DnsEndpoint>>,
}

impl Endpoints {
    /// The networks the container owning `requester` is on.
    fn networks_of(&self, requester: IpAddr) -> Vec<&HashMap<String, DnsEndpoint>> {
        let containers: Vec<&str> = self
            .networks
            .values()
            .flat_map(|eps| eps.values())
            .filter(|ep| ep.addresses.contains(&requester))
            .map(|ep| ep.container_id.as_str())
            .collect();
        self.networks
            .values()
            .filter(|eps| containers.iter().any(|c| eps.contains_key(*c)))
            .collect()
    }
}

/// The names DNS servers answer, shared by all of them and updated by the daemon.
#[derive(Debug, Clone, Default)]
pub struct DnsTable {
    inner: Arc<RwLock<Endpoints>>,
}

impl DnsTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Endpoints> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Endpoints> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a container to `network`, replacing its previous entry there. Names are matched
    /// case-insensitively; a trailing dot is ignored.
    pub fn add_endpoint(&self, network: &str, mut endpoint: DnsEndpoint) {
        for name in &mut endpoint.names {
            *name = name.trim_end_matches('.').to_ascii_lowercase();
        }
        endpoint.names.retain(|n| !n.is_empty());
        self.write()
            .networks
            .entry(network.to_string())
            .or_default()
            .insert(endpoint.container_id.clone(), endpoint);
    }

    /// Removes a container from `network`; returns whether it was there.
    pub fn remove_endpoint(&self, network: &str, container_id: &str) -> bool {
        let mut table = self.write();
        let Some(eps) = table.networks.get_mut(network) else {
            return false;
        };
        let removed = eps.remove(container_id).is_some();
        if eps.is_empty() {
            table.networks.remove(network);
        }
        removed
    }

    /// Forgets a whole network.
    pub fn remove_network(&self, network: &str) {
        self.write().networks.remove(network);
    }

    /// The addresses `name` resolves to for the container at `requester`, or `None` if the
    /// name is not known on any of its networks.
    pub fn resolve(&self, requester: IpAddr, name: &str) -> Option<Vec<IpAddr>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let table = self.read();
        let mut found = false;
        let mut addrs = Vec::new();
        for eps in table.networks_of(requester) {
            for ep in eps.values().filter(|ep| ep.names.contains(&name)) {
                found = true;
                for addr in &ep.addresses {
                    if !addrs.contains(addr) {
                        addrs.push(*addr);
                    }
                }
            }
        }
        found.then_some(addrs)
    }

    /// Whether `requester` is the address of a container in the table.
    fn knows(&self, requester: IpAddr) -> bool {
        self.read()
            .networks
            .values()
            .flat_map(|eps| eps.values())
            .any(|ep| ep.addresses.contains(&requester))
    }

    /// The resolvers the container at `requester` asked for, if it named any.
    fn upstreams_of(&self, requester: IpAddr) -> Option<Vec<SocketAddr>> {
        let table = self.read();
        table
            .networks
            .values()
            .flat_map(|eps| eps.values())
            .find(|ep| ep.addresses.contains(&requester) && !ep.upstreams.is_empty())
            .map(|ep| ep.upstreams.clone())
    }

    /// The name of the container holding `ip` on a network `requester` is on.
    pub fn reverse(&self, requester: IpAddr, ip: IpAddr) -> Option<String> {
        let table = self.read();
        table
            .networks_of(requester)
            .into_iter()
            .flat_map(|eps| eps.values())
            .find(|ep| ep.addresses.contains(&ip))
            .and_then(|ep| ep.names.first().cloned())
    }
}

/// The host's resolvers from `resolv.conf` text, on port 53. Loopback resolvers are kept:
/// the server runs in the host's namespace, where they are reachable.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| {
            // Strip an IPv6 zone ("fe80::1%eth0"): it cannot be parsed and is rarely used.
            let addr = rest.trim().split('%').next()?;
            addr.parse::<IpAddr>().ok()
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// What to do with a query.
enum Outcome {
    Reply(Vec<u8>),
    Forward(Vec<SocketAddr>),
}

fn answer(
    table: &DnsTable,
    requester: IpAddr,
    msg: &[u8],
    max_len: usize,
    upstreams: &[SocketAddr],
) -> Option<Outcome> {
    let query = match wire::parse_query(msg) {
        Ok(q) => q,
        Err(Malformed::Unanswerable) => return None,
        Err(Malformed::Reply(rcode)) => return Some(Outcome::Reply(wire::error_reply(msg, rcode))),
    };
    let local = |rcode, records: &[Record]| {
        Some(Outcome::Reply(wire::reply(
            msg, &query, rcode, records, max_len,
        )))
    };
    // Only containers may ask: the gateway address is reachable from more than the bridge,
    // and an open resolver there would serve anyone routed to it.
    if !table.knows(requester) {
        return local(wire::REFUSED, &[]);
    }
    let forward = || {
        let upstreams = table
            .upstreams_of(requester)
            .unwrap_or_else(|| upstreams.to_vec());
        if upstreams.is_empty() {
            local(wire::SERVFAIL, &[])
        } else {
            Some(Outcome::Forward(upstreams))
        }
    };
    if query.qclass != wire::CLASS_IN {
        return forward();
    }
    if query.qtype == wire::TYPE_PTR
        && let Some(ip) = wire::reverse_name_to_ip(&query.name)
    {
        return match table.reverse(requester, ip) {
            Some(name) => local(wire::NOERROR, &[Record::Ptr(name)]),
            None => forward(),
        };
    }
    match table.resolve(requester, &query.name) {
        Some(addrs) => local(wire::NOERROR, &records_for(&query, &addrs)),
        None if query.name.contains('.') => forward(),
        None => local(wire::NXDOMAIN, &[]),
    }
}

fn records_for(query: &Query, addrs: &[IpAddr]) -> Vec<Record> {
    let wanted = |a: &&IpAddr| match query.qtype {
        wire::TYPE_A => a.is_ipv4(),
        wire::TYPE_AAAA => a.is_ipv6(),
        wire::TYPE_ANY => true,
        // Other types for a known name: NOERROR with no records, never NXDOMAIN.
        _ => false,
    };
    addrs
        .iter()
        .filter(wanted)
        .map(|a| Record::Addr(*a))
        .collect()
}

/// One network's DNS server. Stops when dropped.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl DnsServer {
    /// Starts serving `table` on `listen` (UDP and TCP; port 0 picks one, the same for both),
    /// forwarding unknown names to `upstreams`. Must be called inside a tokio runtime.
    pub async fn start(
        listen: SocketAddr,
        table: DnsTable,
        upstreams: Vec<SocketAddr>,
    ) -> Result<Self, DnsError> {
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(|source| DnsError::Bind {
                addr: listen,
                protocol: "udp",
                source,
            })?;
        let addr = udp.local_addr().map_err(|source| DnsError::Bind {
            addr: listen,
            protocol: "udp",
            source,
        })?;
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| DnsError::Bind {
                addr,
                protocol: "tcp",
                source,
            })?;
        let upstreams = Arc::new(upstreams);
        let tasks = vec![
            tokio::spawn(serve_udp(Arc::new(udp), table.clone(), upstreams.clone())),
            tokio::spawn(serve_tcp(tcp, table, upstreams)),
        ];
        tracing::debug!(%addr, "dns server listening");
        Ok(Self { addr, tasks })
    }

    /// The address served.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, table: DnsTable, upstreams: Arc<Vec<SocketAddr>>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::warn!(error = %e, "dns: udp receive failed");
                continue;
            }
        };
        let msg = buf[..len].to_vec();
        match answer(&table, from.ip(), &msg, wire::UDP_MAX, &upstreams) {
            None => {}
            Some(Outcome::Reply(reply)) => {
                let _ = socket.send_to(&reply, from).await;
            }
            Some(Outcome::Forward(upstreams)) => {
                let socket = socket.clone();
                tokio::spawn(async move {
                    let reply = forward_udp(&msg, &upstreams)
                        .await
                        .unwrap_or_else(|| servfail(&msg));
                    let _ = socket.send_to(&reply, from).await;
                });
            }
        }
    }
}

fn servfail(msg: &[u8]) -> Vec<u8> {
    match wire::parse_query(msg) {
        Ok(q) => wire::reply(msg, &q, wire::SERVFAIL, &[], wire::UDP_MAX),
        Err(_) => wire::error_reply(msg, wire::SERVFAIL),
    }
}

/// Relays a query to each upstream in turn until one answers with a matching id.
async fn forward_udp(msg: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for upstream in upstreams {
        let bind: SocketAddr = if upstream.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .ok()?;
        let attempt = async {
            let socket = UdpSocket::bind(bind).await.ok()?;
            socket.connect(upstream).await.ok()?;
            socket.send(msg).await.ok()?;
            let mut buf = vec![0u8; 65535];
            loop {
                let len = socket.recv(&mut buf).await.ok()?;
                if len >= 2 && buf[..2] == msg[..2] {
                    return Some(buf[..len].to_vec());
                }
            }
        };
        match tokio::time::timeout(UPSTREAM_TIMEOUT, attempt).await {
            Ok(Some(reply)) => return Some(reply),
            _ => tracing::debug!(%upstream, "dns: upstream did not answer"),
        }
    }
    None
}

async fn serve_tcp(listener: TcpListener, table: DnsTable, upstreams: Arc<Vec<SocketAddr>>) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(got) => got,
            Err(e) => {
                tracing::warn!(error = %e, "dns: tcp accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (table, upstreams) = (table.clone(), upstreams.clone());
        tokio::spawn(async move {
            let _ = serve_tcp_client(stream, from.ip(), &table, &upstreams).await;
        });
    }
}

async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut msg = vec![0u8; usize::from(len)];
    stream.read_exact(&mut msg).await?;
    Ok(msg)
}

async fn write_framed(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len =
        u16::try_from(msg.len()).map_err(|_| std::io::Error::other("dns message too long"))?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(msg);
    stream.write_all(&framed).await
}

async fn serve_tcp_client(
    mut stream: TcpStream,
    requester: IpAddr,
    table: &DnsTable,
    upstreams: &[SocketAddr],
) -> std::io::Result<()> {
    loop {
        let msg = match tokio::time::timeout(TCP_IDLE, read_framed(&mut stream)).await {
            Ok(Ok(msg)) => msg,
            _ => return Ok(()),
        };
        let reply = match answer(table, requester, &msg, usize::from(u16::MAX), upstreams) {
            None => return Ok(()),
            Some(Outcome::Reply(reply)) => reply,
            Some(Outcome::Forward(to)) => forward_tcp(&msg, &to)
                .await
                .unwrap_or_else(|| servfail(&msg)),
        };
        write_framed(&mut stream, &reply).await?;
    }
}

async fn forward_tcp(msg: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for upstream in upstreams {
        let attempt = async {
            let mut stream = TcpStream::connect(upstream).await.ok()?;
            write_framed(&mut stream, msg).await.ok()?;
            read_framed(&mut stream).await.ok()
        };
        if let Ok(Some(reply)) = tokio::time::timeout(UPSTREAM_TIMEOUT, attempt).await {
            return Some(reply);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::wire::tests::query_bytes;
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ep(id: &str, names: &[&str], addrs: &[&str]) -> DnsEndpoint {
        DnsEndpoint {
            container_id: id.into(),
            names: names.iter().map(|s| s.to_string()).collect(),
            addresses: addrs.iter().map(|a| ip(a)).collect(),
            upstreams: Vec::new(),
        }
    }

    /// web and db on "app"; db also on "data" with cache; other alone on "lonely".
    fn table() -> DnsTable {
        let t = DnsTable::new();
        t.add_endpoint("app", ep("c-web", &["web", "frontend"], &["10.1.0.2"]));
        t.add_endpoint("app", ep("c-db", &["DB.", "database"], &["10.1.0.3"]));
        t.add_endpoint("data", ep("c-db", &["db"], &["10.2.0.3"]));
        t.add_endpoint("data", ep("c-cache", &["cache"], &["10.2.0.4", "fd00::4"]));
        t.add_endpoint("lonely", ep("c-other", &["other"], &["10.3.0.2"]));
        t
    }

    #[test]
    fn names_resolve_only_on_the_requesters_networks() {
        let t = table();
        let web = ip("10.1.0.2");
        // Only db's address on the network web shares with it.
        assert_eq!(t.resolve(web, "db"), Some(vec![ip("10.1.0.3")]));
        let cache = ip("10.2.0.4");
        assert_eq!(t.resolve(cache, "db"), Some(vec![ip("10.2.0.3")]));
        assert_eq!(t.resolve(web, "Database."), Some(vec![ip("10.1.0.3")]));
        assert_eq!(t.resolve(web, "cache"), None, "web is not on data");
        assert_eq!(t.resolve(web, "other"), None);
        // db is on both networks: asking through either address sees both.
        assert_eq!(
            t.resolve(ip("10.2.0.3"), "frontend"),
            Some(vec![ip("10.1.0.2")])
        );
        assert_eq!(
            t.resolve(ip("10.1.0.3"), "cache"),
            Some(vec![ip("10.2.0.4"), ip("fd00::4")])
        );
        // An address no container holds sees nothing.
        assert_eq!(t.resolve(ip("10.1.0.99"), "web"), None);
        assert_eq!(t.reverse(web, ip("10.1.0.3")), Some("db".into()));
        assert_eq!(t.reverse(web, ip("10.3.0.2")), None);
    }

    #[test]
    fn endpoints_come_and_go() {
        let t = table();
        let web = ip("10.1.0.2");
        assert!(t.remove_endpoint("app", "c-db"));
        assert!(!t.remove_endpoint("app", "c-db"));
        assert!(!t.remove_endpoint("nope", "c-db"));
        assert_eq!(
            t.resolve(web, "db"),
            None,
            "db's other network is not web's"
        );
        t.add_endpoint("app", ep("c-web", &["renamed"], &["10.1.0.2"]));
        assert_eq!(t.resolve(web, "web"), None, "re-adding replaces");
        assert_eq!(t.resolve(web, "renamed"), Some(vec![web]));
        t.remove_network("app");
        assert_eq!(t.resolve(web, "renamed"), None);
        assert!(t.remove_endpoint("data", "c-db") && t.remove_endpoint("data", "c-cache"));
        assert!(
            !t.read().networks.contains_key("data"),
            "empty networks are dropped"
        );
    }

    fn rcode_and_count(reply: &[u8]) -> (u8, u16) {
        (reply[3] & 0xf, u16::from_be_bytes([reply[6], reply[7]]))
    }

    fn reply_of(outcome: Option<Outcome>) -> Vec<u8> {
        match outcome {
            Some(Outcome::Reply(r)) => r,
            Some(Outcome::Forward(_)) => panic!("forwarded"),
            None => panic!("dropped"),
        }
    }

    #[test]
    fn answers_follow_the_query_type() {
        let t = table();
        let db = ip("10.1.0.3");
        let a = reply_of(answer(
            &t,
            db,
            &query_bytes(1, "cache", wire::TYPE_A),
            512,
            &UP,
        ));
        assert_eq!(rcode_and_count(&a), (wire::NOERROR, 1));
        let aaaa = reply_of(answer(
            &t,
            db,
            &query_bytes(1, "cache", wire::TYPE_AAAA),
            512,
            &UP,
        ));
        assert_eq!(rcode_and_count(&aaaa), (wire::NOERROR, 1));
        // A known name without an IPv6 address: NOERROR and no records, not NXDOMAIN.
        let none = reply_of(answer(
            &t,
            db,
            &query_bytes(1, "web", wire::TYPE_AAAA),
            512,
            &UP,
        ));
        assert_eq!(rcode_and_count(&none), (wire::NOERROR, 0));
        let any = reply_of(answer(
            &t,
            db,
            &query_bytes(1, "cache", wire::TYPE_ANY),
            512,
            &UP,
        ));
        assert_eq!(rcode_and_count(&any), (wire::NOERROR, 2));
        let ptr = reply_of(answer(
            &t,
            db,
            &query_bytes(1, "4.0.2.10.in-addr.arpa", wire::TYPE_PTR),
            512,
            &UP,
        ));
        assert_eq!(rcode_and_count(&ptr), (wire::NOERROR, 1));
    }

    const UP: [SocketAddr; 1] = [SocketAddr::new(
        IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        5300,
    )];

    #[test]
    fn unknown_names_are_refused_or_forwarded() {
        let t = table();
        let web = ip("10.1.0.2");
        let nx = reply_of(answer(
            &t,
            web,
            &query_bytes(1, "cache", wire::TYPE_A),
            512,
            &UP,
        ));
        assert_eq!(
            rcode_and_count(&nx),
            (wire::NXDOMAIN, 0),
            "single labels never leave"
        );
        assert!(
            matches!(answer(&t, web, &query_bytes(1, "example.com", wire::TYPE_A), 512, &UP), Some(Outcome::Forward(u)) if u == UP)
        );
        assert!(matches!(
            answer(
                &t,
                web,
                &query_bytes(1, "9.9.9.9.in-addr.arpa", wire::TYPE_PTR),
                512,
                &UP
            ),
            Some(Outcome::Forward(_))
        ));
        let no_upstream = reply_of(answer(
            &t,
            web,
            &query_bytes(1, "example.com", wire::TYPE_A),
            512,
            &[],
        ));
        assert_eq!(rcode_and_count(&no_upstream), (wire::SERVFAIL, 0));
        let mut chaos = query_bytes(1, "version.bind", 16);
        let n = chaos.len();
        chaos[n - 1] = 3; // class CH
        assert!(matches!(
            answer(&t, web, &chaos, 512, &UP),
            Some(Outcome::Forward(_))
        ));
        assert!(answer(&t, web, &[1, 2, 3], 512, &UP).is_none());
        let stranger = reply_of(answer(
            &t,
            ip("10.1.0.99"),
            &query_bytes(1, "example.com", wire::TYPE_A),
            512,
            &UP,
        ));
        assert_eq!(
            rcode_and_count(&stranger),
            (wire::REFUSED, 0),
            "only containers may ask"
        );
        // A container's own resolvers (--dns) win over the server's.
        let own: SocketAddr = "127.0.0.1:5301".parse().unwrap();
        t.add_endpoint(
            "app",
            DnsEndpoint {
                upstreams: vec![own],
                ..ep("c-web", &["web"], &["10.1.0.2"])
            },
        );
        assert!(
            matches!(answer(&t, web, &query_bytes(1, "example.com", wire::TYPE_A), 512, &UP), Some(Outcome::Forward(u)) if u == [own])
        );
        let own_only = reply_of(answer(
            &t,
            ip("10.1.0.3"),
            &query_bytes(1, "example.com", wire::TYPE_A),
            512,
            &[],
        ));
        assert_eq!(
            rcode_and_count(&own_only),
            (wire::SERVFAIL, 0),
            "db has no resolvers of its own"
        );
    }

    #[test]
    fn upstreams_come_from_resolv_conf() {
        let text = "# generated\nsearch example.org\nnameserver 10.255.255.53\nnameserver  127.0.0.53\n\
                    nameserver fe80::1%eth0\nnameserver bogus\noptions ndots:2\n";
        assert_eq!(
            upstreams_from_resolv_conf(text),
            vec![
                "10.255.255.53:53".parse().unwrap(),
                "127.0.0.53:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }
}
