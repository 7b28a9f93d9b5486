//! Namespaces, bridges and veths against the real kernel (needs root).

mod common;

use berth_network::bridge::{self, BridgeConfig, VethConfig};
use berth_network::netlink::Netlink;
use berth_network::netns;
use common::Lab;
use ipnet::Ipv4Net;

#[tokio::test]
async fn a_namespace_is_pinned_with_loopback_up_and_removed() {
    let lab = Lab::new();
    let path = lab.netns("ns").await;
    let out = Lab::busybox_in(&path, &["ip", "-o", "link", "show"]);
    let links = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        links.lines().count(),
        1,
        "only lo in a fresh namespace: {links}"
    );
    assert!(links.contains("lo:") && links.contains("UP"), "{links}");
    assert!(Lab::ping(&path, "127.0.0.1".parse().unwrap()));

    let err = netns::create(&path).await.unwrap_err();
    assert!(matches!(err, netns::NetnsError::Exists(_)), "{err}");

    netns::remove(&path).unwrap();
    assert!(!path.exists());
    netns::remove(&path).unwrap();
}

#[tokio::test]
async fn the_namespace_directory_becomes_a_shared_mount() {
    let lab = Lab::new();
    let dir = lab.dir().join("netns");
    netns::prepare_dir(&dir).unwrap();
    let is_shared_mount = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                fields.get(4) == Some(&dir.to_str().unwrap()) && l.contains(" shared:")
            })
    };
    let shared = is_shared_mount();
    // Idempotent, then undone (the lab dir must be unmountable before it is deleted).
    netns::prepare_dir(&dir).unwrap();
    netns::release_dir(&dir).unwrap();
    netns::release_dir(&dir).unwrap();
    let still_mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(dir.to_str().unwrap()));
    assert!(shared, "{} is not a shared mount point", dir.display());
    assert!(!still_mounted);
}

fn bridge_config(name: &str, subnet: Ipv4Net) -> BridgeConfig {
    BridgeConfig {
        name: name.to_string(),
        gateway: Ipv4Net::new(Lab::host(subnet, 1), subnet.prefix_len()).unwrap(),
        mtu: None,
        route_localnet: false,
    }
}

fn veth(
    lab: &Lab,
    name: &str,
    bridge: &str,
    netns: &std::path::Path,
    subnet: Ipv4Net,
    host: u8,
) -> VethConfig {
    let host_name = bridge::host_veth_name(&format!("{}{name}", lab.tag), bridge);
    lab.track_link(&host_name);
    VethConfig {
        host_name,
        bridge: bridge.to_string(),
        netns: netns.to_path_buf(),
        ifname: "eth0".into(),
        address: Ipv4Net::new(Lab::host(subnet, host), subnet.prefix_len()).unwrap(),
        gateway: Some(Lab::host(subnet, 1)),
        mac: None,
        mtu: None,
    }
}

#[tokio::test]
async fn two_namespaces_on_a_bridge_reach_each_other_and_the_gateway() {
    let lab = Lab::new();
    let netlink = Netlink::host().unwrap();
    let subnet = lab.subnet().await;
    let br = lab.link_name("bt");
    let a = lab.netns("a").await;
    let b = lab.netns("b").await;

    let config = bridge_config(&br, subnet);
    bridge::ensure_bridge(&netlink, &config).await.unwrap();
    // A second call (daemon restart) is harmless.
    bridge::ensure_bridge(&netlink, &config).await.unwrap();

    let va = veth(&lab, "a", &br, &a, subnet, 2);
    let mut vb = veth(&lab, "b", &br, &b, subnet, 3);
    vb.mac = Some(bridge::parse_mac("02:aa:bb:cc:dd:ee").unwrap());
    let mac_a = bridge::attach(&netlink, &va).await.unwrap();
    let mac_b = bridge::attach(&netlink, &vb).await.unwrap();
    assert_eq!(
        bridge::format_mac(mac_a),
        format!("02:42:0a:d5:{:02x}:02", subnet.network().octets()[2])
    );
    assert_eq!(bridge::format_mac(mac_b), "02:aa:bb:cc:dd:ee");

    let shown = Lab::busybox_in(&b, &["ip", "-o", "link", "show", "eth0"]);
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("02:aa:bb:cc:dd:ee"),
        "{shown:?}"
    );
    let routes = Lab::busybox_in(&a, &["ip", "route"]);
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(
        routes.contains(&format!("default via {}", Lab::host(subnet, 1))),
        "{routes}"
    );

    assert!(
        netlink.ipv4_routes().await.unwrap().contains(&subnet),
        "the bridge's subnet route is not seen"
    );
    assert!(Lab::ping(&a, Lab::host(subnet, 3)), "a cannot reach b");
    assert!(Lab::ping(&b, Lab::host(subnet, 2)), "b cannot reach a");
    assert!(
        Lab::ping(&a, Lab::host(subnet, 1)),
        "a cannot reach the gateway"
    );

    let mut ports = bridge::bridge_ports(&netlink, &br).await.unwrap();
    ports.sort();
    let mut want = vec![va.host_name.clone(), vb.host_name.clone()];
    want.sort();
    assert_eq!(ports, want);

    // Attaching the same container twice fails cleanly and leaves the first attachment alone.
    let err = bridge::attach(&netlink, &va).await.unwrap_err();
    assert!(err.to_string().contains(&va.host_name), "{err}");
    assert!(Lab::ping(&a, Lab::host(subnet, 3)));

    assert!(
        !bridge::remove_bridge_if_unused(&netlink, &br)
            .await
            .unwrap(),
        "still in use"
    );
    assert!(bridge::detach(&netlink, &va.host_name).await.unwrap());
    assert!(
        !bridge::detach(&netlink, &va.host_name).await.unwrap(),
        "already gone"
    );
    let inside = Lab::busybox_in(&a, &["ip", "-o", "link", "show"]);
    assert!(
        !String::from_utf8_lossy(&inside.stdout).contains("eth0"),
        "peer went with the host end"
    );
    assert!(!Lab::ping(&b, Lab::host(subnet, 2)));

    // Destroying a namespace takes its veth with it; the bridge is then unused.
    netns::remove(&b).unwrap();
    for _ in 0..50 {
        if bridge::bridge_ports(&netlink, &br)
            .await
            .unwrap()
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        bridge::remove_bridge_if_unused(&netlink, &br)
            .await
            .unwrap()
    );
    assert!(
        netlink
            .ipv4_routes()
            .await
            .unwrap()
            .iter()
            .all(|r| *r != subnet),
        "subnet route left behind"
    );
}

#[tokio::test]
async fn a_failed_attach_leaves_nothing_behind() {
    let lab = Lab::new();
    let netlink = Netlink::host().unwrap();
    let subnet = lab.subnet().await;
    let br = lab.link_name("bt");
    let ns = lab.netns("c").await;
    bridge::ensure_bridge(&netlink, &bridge_config(&br, subnet))
        .await
        .unwrap();

    // A gateway outside the container's subnet makes the route step fail after the veth exists.
    let mut bad = veth(&lab, "c", &br, &ns, subnet, 2);
    bad.gateway = Some("192.0.2.77".parse().unwrap());
    let err = bridge::attach(&netlink, &bad).await.unwrap_err();
    assert!(err.to_string().contains("192.0.2.77"), "{err}");
    assert!(
        !netlink.link_exists(&bad.host_name).await.unwrap(),
        "host end left behind"
    );
    assert!(
        bridge::bridge_ports(&netlink, &br)
            .await
            .unwrap()
            .is_empty()
    );

    let missing = VethConfig {
        bridge: "nosuchbr0".into(),
        ..veth(&lab, "d", &br, &ns, subnet, 3)
    };
    let err = bridge::attach(&netlink, &missing).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "network interface nosuchbr0 does not exist"
    );

    let err = bridge::ensure_bridge(&netlink, &bridge_config("lo", subnet))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "network interface lo exists and is not a bridge"
    );
    assert!(bridge::remove_bridge(&netlink, &br).await.unwrap());
    assert!(!bridge::remove_bridge(&netlink, &br).await.unwrap());
}
