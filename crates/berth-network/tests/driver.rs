//! The bridge driver end to end against the real kernel (needs root): two containers on a
//! user network find each other by name, one publishes a port on the host's loopback, and
//! when both leave nothing of the network is left.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use berth_network::driver::{BridgeDriver, EndpointSpec, NetworkSpec};
use berth_network::firewall::{Firewall, NftFirewall, NoopFirewall, PortForward, Protocol};
use berth_network::ipam::{self, Addresses, SubnetRequest};
use berth_network::netlink::Netlink;
use berth_network::ports::{self, HostPorts};
use common::Lab;

fn endpoint(
    id: &str,
    names: &[&str],
    netns: std::path::PathBuf,
    address: Ipv4Addr,
) -> EndpointSpec {
    EndpointSpec {
        container_id: id.to_string(),
        names: names.iter().map(|s| s.to_string()).collect(),
        netns,
        ifname: "eth0".into(),
        address,
        default_route: true,
        mac: None,
        ports: Vec::new(),
        dns_servers: Vec::new(),
    }
}

async fn network(lab: &Lab, dns: bool) -> NetworkSpec {
    let subnet = lab.subnet().await;
    let request = SubnetRequest {
        subnet: Some(subnet.to_string()),
        ..Default::default()
    };
    NetworkSpec {
        id: format!("net{}", lab.tag),
        name: format!("app-{}", lab.tag),
        bridge: lab.link_name("bd"),
        addressing: ipam::configure(&request, &ipam::default_pools(), &[], &[]).unwrap(),
        internal: false,
        dns,
        mtu: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_connect_find_each_other_publish_and_leave_nothing_behind() {
    let lab = Lab::new();
    let netlink = Netlink::host().unwrap();
    let net = network(&lab, true).await;
    let firewall = Arc::new(NftFirewall::new(lab.table_name()));
    let driver = BridgeDriver::new(firewall.clone(), Vec::new()).unwrap();
    let mut addresses = Addresses::new(net.addressing);

    let (web_ns, db_ns) = (lab.netns("web").await, lab.netns("db").await);
    let (web_ip, db_ip) = (addresses.allocate().unwrap(), addresses.allocate().unwrap());
    let port = ports::reserve(Protocol::Tcp, Some(Ipv4Addr::LOCALHOST), HostPorts::Random).unwrap();
    let mut web = endpoint(
        &format!("web{}", lab.tag),
        &["web", "frontend"],
        web_ns.clone(),
        web_ip,
    );
    web.ports = vec![PortForward {
        protocol: Protocol::Tcp,
        host_ip: Some(Ipv4Addr::LOCALHOST),
        host_port: port.port(),
        container_ip: web_ip,
        container_port: 80,
    }];
    let db = endpoint(&format!("db{}", lab.tag), &["db"], db_ns.clone(), db_ip);
    for id in [&web.container_id, &db.container_id] {
        lab.track_link(&berth_network::bridge::host_veth_name(id, &net.id));
    }

    let attached = driver.connect(&net, &web).await.unwrap();
    assert_eq!(attached.gateway, net.addressing.gateway);
    assert_eq!(attached.address.addr(), web_ip);
    driver.connect(&net, &db).await.unwrap();
    assert_eq!(driver.dns_networks().await, vec![net.id.clone()]);

    let docroot = lab.dir().join("www");
    std::fs::create_dir(&docroot).unwrap();
    std::fs::write(docroot.join("index.html"), "served by web\n").unwrap();
    lab.spawn_in(
        &web_ns,
        &["httpd", "-f", "-p", "80", "-h", docroot.to_str().unwrap()],
    );

    let gateway = net.addressing.gateway;
    let url = format!("http://127.0.0.1:{}/", port.port());
    let db_ns2 = db_ns.clone();
    tokio::task::spawn_blocking(move || {
        let out = Lab::busybox_in(&db_ns2, &["nslookup", "frontend", &gateway.to_string()]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains(&web_ip.to_string()),
            "db cannot resolve frontend: {text}"
        );
        let mut body = String::new();
        for _ in 0..50 {
            let out = Lab::busybox_in(
                &db_ns2,
                &["wget", "-q", "-O", "-", &format!("http://{web_ip}/")],
            );
            if out.status.success() {
                body = String::from_utf8_lossy(&out.stdout).into_owned();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(body, "served by web\n", "db cannot fetch from web");
        let out = std::process::Command::new("curl")
            .args(["-s", "--max-time", "3", &url])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "served by web\n",
            "published port from the host"
        );
    })
    .await
    .unwrap();
    assert_eq!(firewall.rules().ports().count(), 1);

    driver.disconnect(&net, &web.container_id).await.unwrap();
    assert!(
        firewall.rules().ports().next().is_none(),
        "web's port outlived it"
    );
    assert!(
        netlink.link_exists(&net.bridge).await.unwrap(),
        "db still uses the bridge"
    );
    assert_eq!(driver.dns_table().resolve(db_ip.into(), "web"), None);
    driver.disconnect(&net, &db.container_id).await.unwrap();
    driver.disconnect(&net, &db.container_id).await.unwrap();

    assert!(
        !netlink.link_exists(&net.bridge).await.unwrap(),
        "bridge left behind"
    );
    assert!(
        firewall.list().unwrap().is_none(),
        "nftables table left behind"
    );
    assert!(
        driver.dns_networks().await.is_empty(),
        "dns server still running"
    );
    let freed = tokio::net::UdpSocket::bind(SocketAddr::new(gateway.into(), 53)).await;
    assert!(
        freed.is_err(),
        "the gateway address should be gone with the bridge"
    );
}

#[tokio::test]
async fn a_failed_connect_undoes_itself() {
    let lab = Lab::new();
    let netlink = Netlink::host().unwrap();
    let net = network(&lab, false).await;
    let firewall = Arc::new(NoopFirewall::new());
    let driver = BridgeDriver::new(firewall.clone(), Vec::new()).unwrap();
    let ns = lab.netns("c").await;
    let held = PortForward {
        protocol: Protocol::Tcp,
        host_ip: None,
        host_port: 18081,
        container_ip: ipam::parse_ipv4("10.213.0.9", "address").unwrap(),
        container_port: 80,
    };
    firewall.publish("someone-else", &[held]).unwrap();
    let mut ep = endpoint(
        &format!("c{}", lab.tag),
        &["c"],
        ns.clone(),
        Lab::host(net.addressing.subnet, 2),
    );
    lab.track_link(&berth_network::bridge::host_veth_name(
        &ep.container_id,
        &net.id,
    ));
    ep.ports = vec![held];
    let err = driver.connect(&net, &ep).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "host port 0.0.0.0:18081/tcp is already published by someone-else"
    );
    assert!(
        !netlink.link_exists(&net.bridge).await.unwrap(),
        "bridge left behind"
    );
    assert!(
        firewall.rules().networks().next().is_none(),
        "network rules left behind"
    );
    let inside = Lab::busybox_in(&ns, &["ip", "-o", "link"]);
    assert!(
        !String::from_utf8_lossy(&inside.stdout).contains("eth0"),
        "veth left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_networks_stay_until_removed_and_released_containers_can_come_back() {
    let lab = Lab::new();
    let netlink = Netlink::host().unwrap();
    let net = network(&lab, true).await;
    let firewall = Arc::new(NftFirewall::new(lab.table_name()));
    let driver = BridgeDriver::new(firewall.clone(), Vec::new())
        .unwrap()
        .keep_idle_networks(true);
    driver.setup_network(&net).await.unwrap();
    assert!(
        netlink.link_exists(&net.bridge).await.unwrap(),
        "network create makes the bridge"
    );
    assert!(firewall.list().unwrap().is_some());

    let id = format!("r{}", lab.tag);
    lab.track_link(&berth_network::bridge::host_veth_name(&id, &net.id));
    let addr = Lab::host(net.addressing.subnet, 2);
    for round in 0..3 {
        // A restart: same container id, a fresh namespace each time, no pause in between.
        let ns = lab.netns(&format!("r{round}")).await;
        driver
            .connect(&net, &endpoint(&id, &["again"], ns.clone(), addr))
            .await
            .unwrap();
        assert_eq!(
            driver.dns_table().resolve(addr.into(), "again"),
            Some(vec![addr.into()])
        );
        assert!(Lab::ping(&ns, net.addressing.gateway), "round {round}");
        driver.release(&net, &id).await.unwrap();
        assert_eq!(driver.dns_table().resolve(addr.into(), "again"), None);
        berth_network::netns::remove(&ns).unwrap();
    }
    assert!(
        netlink.link_exists(&net.bridge).await.unwrap(),
        "the idle bridge stays"
    );
    assert_eq!(driver.dns_networks().await, vec![net.id.clone()]);
    driver.remove_network(&net).await.unwrap();
    driver.remove_network(&net).await.unwrap();
    assert!(!netlink.link_exists(&net.bridge).await.unwrap());
    assert!(firewall.list().unwrap().is_none());
    assert!(driver.dns_networks().await.is_empty());
}
