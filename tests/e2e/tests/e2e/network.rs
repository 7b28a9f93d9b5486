//! Bridge networks: user networks with names and aliases, isolation between networks,
//! published ports, and what is left on the host afterwards.

use std::process::Command;
use std::time::Duration;

use berth_e2e::{OutputExt, TestDaemon, docker_available, wait_until};

use crate::util::{daemon_or_skip, daemon_with_busybox};

fn create_network(d: &TestDaemon, name: &str) -> String {
    let body = format!(r#"{{"Name":"{name}","Driver":"bridge"}}"#);
    let r = d.api(
        "POST",
        "/networks/create",
        Some(("application/json", body.as_bytes())),
    );
    assert_eq!(r.status, 201, "create network {name}: {}", r.text());
    r.json()["Id"].as_str().expect("network id").to_string()
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn nft_table_exists(name: &str) -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Resolves `name` with busybox's own DNS client (`nslookup`; the glibc-static `wget` cannot
/// resolve names inside a container) from a fresh container on `network`.
fn resolve(d: &TestDaemon, network: &str, name: &str) -> Option<String> {
    let out = d.berth(&[
        "run",
        "--rm",
        "--network",
        network,
        "busybox",
        "nslookup",
        name,
    ]);
    let text = out.stdout_text();
    let mut answer = text.lines().skip_while(|l| !l.starts_with("Name:"));
    answer.next()?;
    answer
        .find_map(|l| l.strip_prefix("Address:"))
        .map(|a| a.trim().to_string())
}

/// Fetches `/hostname` from `ip` port 80 with `busybox nc` (the glibc-static `wget` crashes
/// looking up services inside a container) from a fresh container on `network`.
fn fetch(d: &TestDaemon, network: &str, ip: &str) -> std::process::Output {
    let script = format!("printf 'GET /hostname HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 80");
    d.berth(&[
        "run",
        "--rm",
        "--network",
        network,
        "busybox",
        "sh",
        "-c",
        &script,
    ])
}

#[test]
fn user_network_names_aliases_isolation_and_cleanup() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let app_id = create_network(&d, "appnet");
    create_network(&d, "othernet");

    d.berth(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "appnet",
        "--network-alias",
        "www",
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/etc",
    ])
    .ok("run the server on appnet");
    let hostname = d.inspect_container("web")["Config"]["Hostname"]
        .as_str()
        .expect("hostname")
        .to_string();
    let web = d.inspect_container("web");
    let ip = web["NetworkSettings"]["Networks"]["appnet"]["IPAddress"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for name in ["web", "www"] {
        assert_eq!(
            resolve(&d, "appnet", name).as_deref(),
            Some(ip.as_str()),
            "{name} resolves"
        );
    }
    let mut reply = String::new();
    wait_until(
        Duration::from_secs(20),
        &format!("http://{ip}/hostname"),
        || {
            reply = fetch(&d, "appnet", &ip).stdout_text();
            reply.contains("200 OK")
        },
    );
    assert!(
        reply.trim_end().ends_with(&hostname),
        "served the hostname: {reply}"
    );

    // Another network neither resolves nor reaches it.
    assert_eq!(resolve(&d, "othernet", "web"), None, "web from othernet");
    let reply = fetch(&d, "othernet", &ip).stdout_text();
    assert!(
        !reply.contains("200 OK"),
        "reached web from othernet: {reply}"
    );

    let web = d.inspect_container("web");
    let ep = &web["NetworkSettings"]["Networks"]["appnet"];
    let ip = ep["IPAddress"].as_str().unwrap_or_default();
    assert!(
        ip.starts_with("10.213."),
        "address from the test pool: {ep}"
    );
    assert_eq!(ep["IPPrefixLen"], 26, "{ep}");
    assert_eq!(ep["NetworkID"], app_id.as_str(), "{ep}");
    assert!(
        ep["Gateway"]
            .as_str()
            .is_some_and(|g| g.starts_with("10.213.")),
        "{ep}"
    );
    assert!(
        ep["MacAddress"].as_str().is_some_and(|m| m.len() == 17),
        "{ep}"
    );
    assert!(
        ep["EndpointID"].as_str().is_some_and(|e| e.len() == 64),
        "{ep}"
    );
    assert_eq!(ep["Aliases"], serde_json::json!(["www"]), "{ep}");
    let hosts = d
        .berth(&["exec", "web", "cat", "/etc/hosts"])
        .ok("cat /etc/hosts");
    assert!(hosts.contains(&format!("{ip}\t{hostname}")), "{hosts}");

    // The network lists the container, and refuses removal while it is attached.
    let r = d.api("GET", "/networks/appnet", None);
    assert_eq!(r.status, 200);
    let net = r.json();
    assert!(
        net["Containers"][web["Id"].as_str().unwrap()]["Name"] == "web",
        "{net}"
    );
    let r = d.api("DELETE", "/networks/appnet", None);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.text().contains("web"),
        "the refusal names the container: {}",
        r.text()
    );

    let bridge = format!("br-{}", &app_id[..12]);
    assert!(link_exists(&bridge), "appnet's bridge {bridge} exists");
    d.berth(&["rm", "-f", "web"]).ok("rm -f web");
    for name in ["appnet", "othernet"] {
        let r = d.api("DELETE", &format!("/networks/{name}"), None);
        assert_eq!(r.status, 204, "remove {name}: {}", r.text());
    }
    assert!(!link_exists(&bridge), "appnet's bridge is gone with it");
    let netns: Vec<_> = std::fs::read_dir(d.exec_root().join("netns"))
        .map(|dir| dir.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(netns.is_empty(), "no namespaces left: {netns:?}");

    let default_bridge = d.bridge_name().to_string();
    assert!(
        link_exists(&default_bridge),
        "the default bridge exists while the daemon runs"
    );
    drop(d);
    assert!(
        !link_exists(&default_bridge),
        "the default bridge is gone after teardown"
    );
    assert!(
        !nft_table_exists(&default_bridge),
        "the firewall table is gone after teardown"
    );
}

#[test]
fn published_ports_reach_the_container_and_conflicts_are_refused() {
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&[
        "run",
        "-d",
        "--name",
        "pweb",
        "-p",
        "127.0.0.1:0:80",
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/etc",
    ])
    .ok("run with -p 127.0.0.1:0:80");
    let inspect = d.inspect_container("pweb");
    let binding = &inspect["NetworkSettings"]["Ports"]["80/tcp"][0];
    assert_eq!(binding["HostIp"], "127.0.0.1", "{inspect}");
    let port: u16 = binding["HostPort"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .expect("a host port");
    assert_ne!(port, 0);
    let hostname = inspect["Config"]["Hostname"].as_str().unwrap().to_string();
    let url = format!("http://127.0.0.1:{port}/hostname");
    let mut body = String::new();
    wait_until(Duration::from_secs(20), &format!("curl {url}"), || {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "3", &url])
            .output()
            .expect("curl runs");
        body = String::from_utf8_lossy(&out.stdout).to_string();
        out.status.success()
    });
    assert_eq!(body.trim(), hostname);

    let (status, list) = d.api_get("/containers/json");
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let ports = &list[0]["Ports"];
    assert_eq!(ports[0]["PrivatePort"], 80, "{list}");
    assert_eq!(ports[0]["PublicPort"], port, "{list}");
    assert_eq!(ports[0]["Type"], "tcp", "{list}");
    let out = d.berth(&["port", "pweb"]).ok("berth port");
    assert_eq!(out, format!("80/tcp -> 127.0.0.1:{port}"));
    let out = d.berth(&["port", "pweb", "80"]).ok("berth port pweb 80");
    assert_eq!(out, format!("127.0.0.1:{port}"));
    let ps = d.berth(&["ps", "--format", "{{.Ports}}"]).ok("berth ps");
    assert_eq!(ps, format!("127.0.0.1:{port}->80/tcp"));
    if docker_available() {
        let out = d.docker(&["port", "pweb"]).unwrap().ok("docker port");
        assert!(
            out.contains(&format!("80/tcp -> 127.0.0.1:{port}")),
            "{out}"
        );
    }

    // -P publishes every exposed port on a random host port.
    d.berth(&[
        "run", "-d", "--name", "pall", "--expose", "81", "--expose", "82/udp", "-P", "busybox",
        "sleep", "100",
    ])
    .ok("run -P");
    let ports = &d.inspect_container("pall")["NetworkSettings"]["Ports"];
    for key in ["81/tcp", "82/udp"] {
        let host_port = ports[key][0]["HostPort"].as_str().unwrap_or_default();
        assert!(
            host_port.parse::<u16>().is_ok_and(|p| p > 0),
            "{key}: {ports}"
        );
        assert_eq!(ports[key][0]["HostIp"], "0.0.0.0", "{ports}");
    }

    // A host port in use: a clear error naming it, and the container does not run.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = listener.local_addr().unwrap().port();
    let out = d.berth(&[
        "run",
        "-d",
        "--name",
        "clash",
        "-p",
        &format!("127.0.0.1:{taken}:80"),
        "busybox",
        "sleep",
        "100",
    ]);
    out.expect_failure("publishing a port in use");
    assert!(
        out.stderr_text().contains(&format!("127.0.0.1:{taken}")),
        "{}",
        out.stderr_text()
    );
    assert_ne!(d.inspect_container("clash")["State"]["Status"], "running");

    d.berth(&["rm", "-f", "pweb", "pall", "clash"]).ok("rm");
    let table = Command::new("nft")
        .args(["list", "table", "inet", d.bridge_name()])
        .output()
        .expect("nft runs");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        !table.contains(&format!("dport {port}")),
        "DNAT left behind: {table}"
    );
}

#[test]
fn docker_cli_networks() {
    if !docker_available() {
        return;
    }
    let d = daemon_or_skip!(daemon_with_busybox());
    let docker = |args: &[&str]| d.docker(args).expect("docker is installed");
    docker(&["network", "create", "--label", "team=a", "dnet"]).ok("docker network create");
    let ls = docker(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]).ok("network ls");
    assert!(ls.lines().any(|l| l == "dnet bridge"), "{ls}");
    assert!(ls.lines().any(|l| l == "bridge bridge"), "{ls}");
    let ls = docker(&["network", "ls", "-q", "-f", "label=team=a"]).ok("network ls -f");
    assert_eq!(ls.lines().count(), 1, "{ls}");
    let subnet = docker(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Subnet}}",
        "dnet",
    ])
    .ok("network inspect");
    assert!(subnet.starts_with("10.213."), "{subnet}");

    docker(&[
        "run",
        "-d",
        "--name",
        "dc",
        "--network",
        "dnet",
        "busybox",
        "sleep",
        "100",
    ])
    .ok("docker run --network");
    let ip = docker(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.dnet.IPAddress}}",
        "dc",
    ])
    .ok("inspect ip");
    assert!(ip.starts_with("10.213."), "{ip}");
    let out = docker(&["network", "rm", "dnet"]);
    out.expect_failure("network rm while attached");
    assert!(out.stderr_text().contains("dc"), "{}", out.stderr_text());

    // Connecting a created container, as compose does, takes effect when it starts.
    docker(&["create", "--name", "dc2", "busybox", "sleep", "100"]).ok("docker create");
    docker(&["network", "connect", "--alias", "extra", "dnet", "dc2"]).ok("network connect");
    docker(&["start", "dc2"]).ok("docker start");
    let nets = docker(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}};{{end}}",
        "dc2",
    ])
    .ok("inspect networks");
    assert!(
        nets.contains("bridge=10.213.") && nets.contains("dnet=10.213."),
        "{nets}"
    );
    let aliases = docker(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.dnet.Aliases}}",
        "dc2",
    ])
    .ok("inspect aliases");
    assert_eq!(aliases, "[extra]");
    docker(&["network", "disconnect", "dnet", "dc2"]).ok("network disconnect");
    let nets = docker(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}};{{end}}",
        "dc2",
    ])
    .ok("inspect networks after disconnect");
    assert_eq!(nets, "bridge;");
    docker(&["rm", "-f", "dc", "dc2"]).ok("docker rm");
    docker(&["network", "rm", "dnet"]).ok("docker network rm");

    // `--until 0s` is truncated to whole seconds: let the last event's second pass.
    std::thread::sleep(Duration::from_millis(1100));
    let events = docker(&[
        "events",
        "--since",
        "1m",
        "--until",
        "0s",
        "--filter",
        "type=network",
        "--format",
        "{{.Action}} {{.Actor.Attributes.name}}",
    ])
    .ok("docker events for networks");
    let actions: Vec<&str> = events
        .lines()
        .filter_map(|l| l.strip_suffix(" dnet"))
        .collect();
    assert_eq!(
        actions,
        [
            "create",
            "connect",
            "connect",
            "disconnect",
            "disconnect",
            "destroy"
        ],
        "{events}"
    );
}

#[test]
fn running_containers_keep_names_and_addresses_across_a_daemon_restart() {
    let d = daemon_or_skip!(daemon_with_busybox());
    create_network(&d, "rnet");
    d.berth(&[
        "run",
        "-d",
        "--name",
        "keep",
        "--network",
        "rnet",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok("run keep");
    let address = |name: &str| {
        d.inspect_container(name)["NetworkSettings"]["Networks"]["rnet"]["IPAddress"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let ip = address("keep");
    assert!(!ip.is_empty());

    d.stop_daemon();
    d.start_daemon();
    assert_eq!(address("keep"), ip, "the address survives the restart");
    assert_eq!(resolve(&d, "rnet", "keep").as_deref(), Some(ip.as_str()));
    d.berth(&[
        "run",
        "-d",
        "--name",
        "other",
        "--network",
        "rnet",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok("run other");
    assert_ne!(
        address("other"),
        ip,
        "a running container's address is not handed out again"
    );

    d.berth(&["rm", "-f", "keep", "other"]).ok("rm");
    let r = d.api("DELETE", "/networks/rnet", None);
    assert_eq!(r.status, 204, "{}", r.text());
}
