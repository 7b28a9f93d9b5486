//! nftables rules against the real kernel (needs root): masquerade, isolation, internal
//! networks and published ports, each in a table of its own that the lab deletes.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use berth_network::bridge::{self, BridgeConfig, VethConfig};
use berth_network::firewall::{Firewall, NetworkRules, NftFirewall, PortForward, Protocol};
use berth_network::netlink::Netlink;
use berth_network::ports::{self, HostPorts};
use common::Lab;
use ipnet::Ipv4Net;

/// A bridge with one namespace attached at host number 2.
struct Segment {
    bridge: String,
    subnet: Ipv4Net,
    netns: std::path::PathBuf,
}

impl Segment {
    async fn new(
        lab: &Lab,
        netlink: &Netlink,
        label: &str,
        default_route: bool,
        route_localnet: bool,
    ) -> Self {
        let subnet = lab.subnet().await;
        let bridge = lab.link_name(&format!("b{label}"));
        let netns = lab.netns(label).await;
        let gateway = Ipv4Net::new(Lab::host(subnet, 1), 24).unwrap();
        bridge::ensure_bridge(
            netlink,
            &BridgeConfig {
                name: bridge.clone(),
                gateway,
                mtu: None,
                route_localnet,
            },
        )
        .await
        .unwrap();
        let host_name = bridge::host_veth_name(&format!("{}{label}", lab.tag), &bridge);
        lab.track_link(&host_name);
        let config = VethConfig {
            host_name,
            bridge: bridge.clone(),
            netns: netns.clone(),
            ifname: "eth0".into(),
            address: Ipv4Net::new(Lab::host(subnet, 2), 24).unwrap(),
            gateway: default_route.then(|| Lab::host(subnet, 1)),
            mac: None,
            mtu: None,
        };
        bridge::attach(netlink, &config).await.unwrap();
        Self {
            bridge,
            subnet,
            netns,
        }
    }

    fn rules(&self, internal: bool) -> NetworkRules {
        NetworkRules {
            bridge: self.bridge.clone(),
            subnet: self.subnet,
            internal,
        }
    }

    fn addr(&self) -> Ipv4Addr {
        Lab::host(self.subnet, 2)
    }
}

fn table_json(fw: &NftFirewall) -> String {
    fw.list()
        .unwrap()
        .map(|v| v.to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn rules_follow_the_rule_set_and_the_table_goes_when_empty() {
    let lab = Lab::new();
    let fw = NftFirewall::new(lab.table_name());
    let a: Ipv4Net = "10.213.250.0/24".parse().unwrap();
    let b: Ipv4Net = "10.213.251.0/24".parse().unwrap();
    // Bridges need not exist for rules to name them.
    let (br_a, br_b) = (format!("ba{}", lab.tag), format!("bb{}", lab.tag));
    fw.add_network(&NetworkRules {
        bridge: br_a.clone(),
        subnet: a,
        internal: false,
    })
    .unwrap();
    let listing = table_json(&fw);
    assert!(
        listing.contains(r#""prefix":{"addr":"10.213.250.0","len":24}"#),
        "{listing}"
    );
    assert!(listing.contains(r#""masquerade":null"#), "{listing}");

    fw.add_network(&NetworkRules {
        bridge: br_b.clone(),
        subnet: b,
        internal: true,
    })
    .unwrap();
    let listing: serde_json::Value = fw.list().unwrap().unwrap();
    let rules: Vec<&serde_json::Value> = listing["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x.get("rule"))
        .collect();
    let masquerades = |net: &str| {
        rules.iter().any(|r| {
            r["chain"] == "postrouting"
                && r["expr"][0]["match"]["right"]["prefix"]["addr"] == net
                && r["expr"][1]["match"]["op"] == "!="
        })
    };
    assert!(masquerades("10.213.250.0"));
    assert!(
        !masquerades("10.213.251.0"),
        "internal networks are not NATed"
    );
    // nft prints a one-element set as a plain name: match "iifname X oifname == Y drop".
    let isolation = rules
        .iter()
        .filter(|r| {
            r["chain"] == "forward"
                && r["expr"][1]["match"]["left"]["meta"]["key"] == "oifname"
                && r["expr"][1]["match"]["op"] == "=="
                && r["expr"][2]["drop"].is_null()
                && r["expr"].as_array().unwrap().len() == 3
        })
        .count();
    assert_eq!(isolation, 2, "one isolation rule per bridge");

    fw.publish(
        "c1",
        &[PortForward {
            protocol: Protocol::Tcp,
            host_ip: None,
            host_port: 18080,
            container_ip: Lab::host(a, 2),
            container_port: 80,
        }],
    )
    .unwrap();
    assert!(table_json(&fw).contains(r#""dnat":{"addr":"10.213.250.2","family":"ip","port":80}"#));
    fw.remove_network(&br_a).unwrap();
    fw.remove_network(&br_b).unwrap();
    assert!(
        fw.list().unwrap().is_some(),
        "a published port still needs the table"
    );
    fw.unpublish("c1").unwrap();
    assert!(
        fw.list().unwrap().is_none(),
        "the table is deleted once empty"
    );
    fw.sync().unwrap();
    assert!(fw.list().unwrap().is_none());

    // A restarted daemon's sync replaces a stale table left by a crash.
    let stale = NftFirewall::new(fw.table());
    stale
        .add_network(&NetworkRules {
            bridge: br_a.clone(),
            subnet: a,
            internal: false,
        })
        .unwrap();
    let restarted = NftFirewall::new(fw.table());
    restarted.sync().unwrap();
    assert!(restarted.list().unwrap().is_none());
}

#[tokio::test]
async fn outbound_traffic_is_masqueraded_unless_the_network_is_internal() {
    let lab = Lab::new();
    let netlink = Netlink::host().unwrap();
    bridge::enable_ip_forwarding().unwrap();
    let inside = Segment::new(&lab, &netlink, "in", true, false).await;
    // "Outside": a namespace with no route back to the container subnet, so it can only
    // answer if the host rewrites the source to its own address.
    let outside = Segment::new(&lab, &netlink, "out", false, false).await;
    let fw = NftFirewall::new(lab.table_name());

    assert!(
        !Lab::ping(&inside.netns, outside.addr()),
        "reachable without NAT: the test proves nothing"
    );
    fw.add_network(&inside.rules(false)).unwrap();
    assert!(
        Lab::ping(&inside.netns, outside.addr()),
        "masquerade does not work"
    );
    fw.add_network(&inside.rules(true)).unwrap();
    assert!(
        !Lab::ping(&inside.netns, outside.addr()),
        "an internal network got out"
    );
    assert!(
        Lab::ping(&inside.netns, Lab::host(inside.subnet, 1)),
        "the gateway stays reachable"
    );
    fw.remove_network(&inside.bridge).unwrap();
    assert!(fw.list().unwrap().is_none());
}

#[tokio::test]
async fn containers_on_different_networks_cannot_reach_each_other() {
    let lab = Lab::new();
    let netlink = Netlink::host().unwrap();
    bridge::enable_ip_forwarding().unwrap();
    let one = Segment::new(&lab, &netlink, "one", true, false).await;
    let two = Segment::new(&lab, &netlink, "two", true, false).await;
    assert!(
        Lab::ping(&one.netns, two.addr()),
        "plain routing between the bridges should work first"
    );
    let fw = NftFirewall::new(lab.table_name());
    fw.add_network(&one.rules(false)).unwrap();
    fw.add_network(&two.rules(false)).unwrap();
    assert!(!Lab::ping(&one.netns, two.addr()), "one reached two");
    assert!(!Lab::ping(&two.netns, one.addr()), "two reached one");
    fw.remove_network(&two.bridge).unwrap();
    assert!(
        Lab::ping(&one.netns, two.addr()),
        "isolation outlived the network"
    );
    fw.remove_network(&one.bridge).unwrap();
}

/// Answers one UDP datagram on `addr` inside `netns`, echoing it back.
fn udp_echo_in(netns: &Path, addr: SocketAddrV4) -> std::thread::JoinHandle<()> {
    let ns = std::fs::File::open(netns).unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        // SAFETY: setns on this dedicated thread only, with a descriptor it owns.
        let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0, "setns");
        let socket = UdpSocket::bind(addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 512];
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            socket.send_to(&buf[..n], from).unwrap();
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("udp echo did not start");
    handle
}

fn curl(url: &str) -> Option<String> {
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "3", url])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn published_ports_are_reachable_from_the_hosts_loopback() {
    let lab = Lab::new();
    let netlink = Netlink::host().unwrap();
    let web = Segment::new(&lab, &netlink, "web", true, true).await;
    let fw = NftFirewall::new(lab.table_name());
    fw.add_network(&web.rules(false)).unwrap();

    let docroot = lab.dir().join("www");
    std::fs::create_dir(&docroot).unwrap();
    std::fs::write(
        docroot.join("index.html"),
        format!("hello from {}\n", lab.tag),
    )
    .unwrap();
    lab.spawn_in(
        &web.netns,
        &[
            "httpd",
            "-f",
            "-p",
            &format!("{}:80", web.addr()),
            "-h",
            docroot.to_str().unwrap(),
        ],
    );

    let tcp = ports::reserve(Protocol::Tcp, Some(Ipv4Addr::LOCALHOST), HostPorts::Random).unwrap();
    let udp = ports::reserve(Protocol::Udp, None, HostPorts::Random).unwrap();
    let everywhere = ports::reserve(Protocol::Tcp, None, HostPorts::Random).unwrap();
    let forwards = [
        PortForward {
            protocol: Protocol::Tcp,
            host_ip: Some(Ipv4Addr::LOCALHOST),
            host_port: tcp.port(),
            container_ip: web.addr(),
            container_port: 80,
        },
        PortForward {
            protocol: Protocol::Udp,
            host_ip: None,
            host_port: udp.port(),
            container_ip: web.addr(),
            container_port: 9999,
        },
        PortForward {
            protocol: Protocol::Tcp,
            host_ip: None,
            host_port: everywhere.port(),
            container_ip: web.addr(),
            container_port: 80,
        },
    ];
    fw.publish("web", &forwards).unwrap();

    let url = format!("http://127.0.0.1:{}/index.html", tcp.port());
    let mut body = None;
    for _ in 0..50 {
        body = curl(&url);
        if body.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        body.as_deref(),
        Some(format!("hello from {}\n", lab.tag).as_str()),
        "GET {url}"
    );

    let echo = udp_echo_in(&web.netns, SocketAddrV4::new(web.addr(), 9999));
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.send_to(b"ping", ("127.0.0.1", udp.port())).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = client
        .recv_from(&mut buf)
        .expect("no udp reply through the published port");
    assert_eq!(&buf[..n], b"ping");
    echo.join().unwrap();

    // From "another host" (a namespace behind another bridge) through the host's address on
    // its side: the PREROUTING path. The 127.0.0.1-only port must not answer there.
    bridge::enable_ip_forwarding().unwrap();
    let client = Segment::new(&lab, &netlink, "cli", true, false).await;
    let host_side = Lab::host(client.subnet, 1);
    let fetch = |port: u16| {
        // (No `-T`: this busybox build crashes on it; busybox_in already times out.)
        Lab::busybox_in(
            &client.netns,
            &[
                "wget",
                "-q",
                "-O",
                "-",
                &format!("http://{host_side}:{port}/index.html"),
            ],
        )
    };
    let got = fetch(everywhere.port());
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        format!("hello from {}\n", lab.tag),
        "{got:?}"
    );
    assert!(
        !fetch(tcp.port()).status.success(),
        "a 127.0.0.1 binding answered on another address"
    );

    // The reservation keeps anyone else off the port while it is published.
    let err = ports::reserve(
        Protocol::Tcp,
        Some(Ipv4Addr::LOCALHOST),
        HostPorts::Fixed(tcp.port()),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("host port {}/tcp", tcp.port())),
        "{err}"
    );

    fw.unpublish("web").unwrap();
    assert!(curl(&url).is_none(), "still forwarded after unpublish");
    fw.remove_network(&web.bridge).unwrap();
    assert!(fw.list().unwrap().is_none());
}
