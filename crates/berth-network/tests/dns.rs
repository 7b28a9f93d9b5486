//! The embedded DNS server against real namespaces (needs root): containers resolve peers on
//! their own networks only, other names are forwarded to a fake upstream on the host's
//! loopback, over UDP (busybox nslookup) and TCP.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_network::bridge::{self, BridgeConfig, VethConfig};
use berth_network::dns::{DnsEndpoint, DnsServer, DnsTable};
use berth_network::netlink::Netlink;
use common::Lab;
use ipnet::Ipv4Net;

const OUTSIDE_NAME: &str = "outside.test";
const OUTSIDE_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

/// A bridge network with containers (namespaces) at host numbers 2, 3, ...
struct Net {
    subnet: Ipv4Net,
    members: Vec<PathBuf>,
}

impl Net {
    async fn new(lab: &Lab, netlink: &Netlink, label: &str, count: u8) -> Self {
        let subnet = lab.subnet().await;
        let bridge = lab.link_name(&format!("d{label}"));
        let gateway = Ipv4Net::new(Lab::host(subnet, 1), 24).unwrap();
        bridge::ensure_bridge(
            netlink,
            &BridgeConfig {
                name: bridge.clone(),
                gateway,
                mtu: None,
                route_localnet: false,
            },
        )
        .await
        .unwrap();
        let mut members = Vec::new();
        for i in 0..count {
            let netns = lab.netns(&format!("{label}{i}")).await;
            let host_name = bridge::host_veth_name(&format!("{}{label}{i}", lab.tag), &bridge);
            lab.track_link(&host_name);
            let config = VethConfig {
                host_name,
                bridge: bridge.clone(),
                netns: netns.clone(),
                ifname: "eth0".into(),
                address: Ipv4Net::new(Lab::host(subnet, i + 2), 24).unwrap(),
                gateway: Some(Lab::host(subnet, 1)),
                mac: None,
                mtu: None,
            };
            bridge::attach(netlink, &config).await.unwrap();
            members.push(netns);
        }
        Self { subnet, members }
    }

    fn gateway(&self) -> Ipv4Addr {
        Lab::host(self.subnet, 1)
    }

    fn addr(&self, member: u8) -> Ipv4Addr {
        Lab::host(self.subnet, member + 2)
    }

    fn endpoint(&self, member: u8, names: &[&str]) -> DnsEndpoint {
        DnsEndpoint {
            container_id: format!("id-{}", names[0]),
            names: names.iter().map(|s| s.to_string()).collect(),
            addresses: vec![IpAddr::V4(self.addr(member))],
            upstreams: Vec::new(),
        }
    }
}

/// The reply of the fake upstream: `outside.test` A is 203.0.113.7, anything else NXDOMAIN.
fn fake_reply(q: &[u8]) -> Vec<u8> {
    let mut pos = 12;
    let mut labels = Vec::new();
    while q[pos] != 0 {
        let l = q[pos] as usize;
        labels.push(String::from_utf8_lossy(&q[pos + 1..pos + 1 + l]).to_string());
        pos += 1 + l;
    }
    let question_end = pos + 5;
    let qtype = u16::from_be_bytes([q[pos + 1], q[pos + 2]]);
    let known = labels.join(".") == OUTSIDE_NAME;
    let answers = u8::from(known && qtype == 1);
    let rcode = if known { 0 } else { 3 };
    let mut reply = vec![q[0], q[1], 0x81, 0x80 | rcode, 0, 1, 0, answers, 0, 0, 0, 0];
    reply.extend_from_slice(&q[12..question_end]);
    if answers == 1 {
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        reply.extend_from_slice(&OUTSIDE_ADDR.octets());
    }
    reply
}

/// A fake upstream resolver on the host's loopback, UDP and TCP on the same port.
async fn fake_upstream() -> (SocketAddr, Vec<tokio::task::JoinHandle<()>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
    let udp_task = tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((len, from)) = udp.recv_from(&mut buf).await {
            let _ = udp.send_to(&fake_reply(&buf[..len]), from).await;
        }
    });
    let tcp_task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            let Ok(len) = stream.read_u16().await else {
                continue;
            };
            let mut q = vec![0u8; len as usize];
            if stream.read_exact(&mut q).await.is_err() {
                continue;
            }
            let reply = fake_reply(&q);
            let _ = stream.write_u16(reply.len() as u16).await;
            let _ = stream.write_all(&reply).await;
        }
    });
    (addr, vec![udp_task, tcp_task])
}

fn nslookup(netns: &Path, name: &str, server: Ipv4Addr) -> (bool, String) {
    let out = Lab::busybox_in(netns, &["nslookup", name, &server.to_string()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Sends one A query over TCP from inside `netns` and returns (rcode, answer addresses).
fn tcp_query_in(netns: &Path, server: SocketAddr, name: &str) -> (u8, Vec<Ipv4Addr>) {
    let ns = std::fs::File::open(netns).unwrap();
    let name = name.to_string();
    std::thread::spawn(move || {
        // SAFETY: setns on this dedicated thread only, with a descriptor it owns.
        let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0, "setns");
        let mut query = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            query.push(label.len() as u8);
            query.extend_from_slice(label.as_bytes());
        }
        query.extend_from_slice(&[0, 0, 1, 0, 1]);
        let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(5)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut framed = (query.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&query);
        stream.write_all(&framed).unwrap();
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).unwrap();
        let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut reply).unwrap();
        assert_eq!(&reply[..2], &[0xab, 0xcd]);
        let count = u16::from_be_bytes([reply[6], reply[7]]) as usize;
        let answers = &reply[query.len()..];
        let addrs = (0..count)
            .map(|i| {
                let rdata = &answers[i * 16 + 12..i * 16 + 16];
                Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3])
            })
            .collect();
        (reply[3] & 0xf, addrs)
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_resolve_peers_on_their_networks_only() {
    let lab = Lab::new();
    let netlink = Netlink::host().unwrap();
    let app = Net::new(&lab, &netlink, "app", 2).await;
    let other = Net::new(&lab, &netlink, "oth", 1).await;
    let (upstream, _fake) = fake_upstream().await;

    let table = DnsTable::new();
    table.add_endpoint("app", app.endpoint(0, &["web", "frontend"]));
    table.add_endpoint("app", app.endpoint(1, &["db", "database", "db-host"]));
    table.add_endpoint("other", other.endpoint(0, &["lonely"]));
    let app_dns = DnsServer::start(
        SocketAddr::new(app.gateway().into(), 53),
        table.clone(),
        vec![upstream],
    )
    .await
    .unwrap();
    let _other_dns = DnsServer::start(
        SocketAddr::new(other.gateway().into(), 53),
        table.clone(),
        vec![upstream],
    )
    .await
    .unwrap();
    assert_eq!(app_dns.local_addr().port(), 53);

    let (web, db, lonely) = (
        app.members[0].clone(),
        app.members[1].clone(),
        other.members[0].clone(),
    );
    let gw = app.gateway();
    let db_addr = app.addr(1).to_string();
    let checks = tokio::task::spawn_blocking(move || {
        for name in ["db", "database", "DB-Host"] {
            let (ok, out) = nslookup(&web, name, gw);
            assert!(
                ok && out.contains(&db_addr),
                "web cannot resolve {name}: {out}"
            );
        }
        let (ok, out) = nslookup(&db, "frontend", gw);
        assert!(
            ok && out.contains(&app.addr(0).to_string()),
            "db cannot resolve frontend: {out}"
        );
        let (ok, out) = nslookup(&web, &db_addr, gw);
        assert!(ok && out.contains("db"), "reverse lookup of db: {out}");

        let (ok, out) = nslookup(&web, "lonely", gw);
        assert!(
            !ok && out.contains("NXDOMAIN"),
            "a name on another network resolved: {out}"
        );
        let (ok, out) = nslookup(&lonely, "web", other.gateway());
        assert!(
            !ok && out.contains("NXDOMAIN"),
            "lonely resolved web: {out}"
        );
        // Even asking the other network's server does not help.
        let (ok, out) = nslookup(&lonely, "web", gw);
        assert!(
            !ok && out.contains("NXDOMAIN"),
            "lonely resolved web through app's server: {out}"
        );

        let (ok, out) = nslookup(&web, OUTSIDE_NAME, gw);
        assert!(
            ok && out.contains(&OUTSIDE_ADDR.to_string()),
            "not forwarded: {out}"
        );
        let (ok, out) = nslookup(&web, "nowhere.test", gw);
        assert!(!ok && out.contains("NXDOMAIN"), "{out}");

        let server = SocketAddr::new(gw.into(), 53);
        assert_eq!(tcp_query_in(&web, server, "db"), (0, vec![app.addr(1)]));
        assert_eq!(
            tcp_query_in(&web, server, OUTSIDE_NAME),
            (0, vec![OUTSIDE_ADDR]),
            "tcp forwarding"
        );
        assert_eq!(tcp_query_in(&web, server, "lonely"), (3, vec![]));
        (web, gw)
    })
    .await
    .unwrap();

    // The daemon takes db away: its name goes at once.
    assert!(table.remove_endpoint("app", "id-db"));
    let (web, gw) = checks;
    let (ok, out) = tokio::task::spawn_blocking(move || nslookup(&web, "db", gw))
        .await
        .unwrap();
    assert!(
        !ok && out.contains("NXDOMAIN"),
        "db still resolves after removal: {out}"
    );
}

#[tokio::test]
async fn a_server_cannot_start_on_an_address_the_host_lacks() {
    // TEST-NET-3: not configured here, so the bind fails; nothing is sent anywhere.
    let err = DnsServer::start(
        "203.0.113.1:53".parse().unwrap(),
        DnsTable::new(),
        Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot listen for DNS on 203.0.113.1:53/udp"),
        "{err}"
    );
}
