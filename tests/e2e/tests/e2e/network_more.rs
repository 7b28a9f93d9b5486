//! More of Docker's networking: `--network container:<name>` (inspect's paths, the start
//! order at daemon start, an owner's restart), `--dns*` and the daemon's `dns*` defaults,
//! `--add-host` and `host-gateway-ip`, the /etc files of running containers following
//! `network connect`/`disconnect`, and `network prune` filters; through berth and the real
//! docker CLI.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use berth_e2e::{OutputExt, TestDaemon, docker_available};

use crate::util::{daemon_or_skip, daemon_with_busybox, interfaces};

fn create_network(d: &TestDaemon, name: &str) -> String {
    d.berth(&["network", "create", name])
        .ok(&format!("network create {name}"))
}

fn container_ip(d: &TestDaemon, name: &str, network: &str) -> String {
    d.inspect_container(name)["NetworkSettings"]["Networks"][network]["IPAddress"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn network_gateway(d: &TestDaemon, network: &str) -> String {
    d.berth(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
        network,
    ])
    .ok(&format!("gateway of {network}"))
}

/// The directive lines of a resolv.conf (no comments, no blank lines).
fn directives(resolv: &str) -> Vec<String> {
    resolv
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Runs a one-off busybox command with `args` before the image, returning its stdout.
fn run_out(d: &TestDaemon, args: &[&str], command: &[&str]) -> String {
    let mut all = vec!["run", "--rm"];
    all.extend_from_slice(args);
    all.push("busybox");
    all.extend_from_slice(command);
    d.berth(&all).ok(&format!("run {args:?} {command:?}"))
}

#[test]
fn container_network_mode_shares_the_owners_namespace_and_files() {
    let d = daemon_or_skip!(daemon_with_busybox());
    create_network(&d, "sharenet");
    d.berth(&[
        "run",
        "-d",
        "--name",
        "owner",
        "--network",
        "sharenet",
        "--hostname",
        "ownerhost",
        "--add-host",
        "extra:10.9.9.9",
        "--dns-search",
        "share.test",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok("run the owner");
    let owner_id = d.inspect_container("owner")["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let owner_ip = container_ip(&d, "owner", "sharenet");
    let owner_netns = d
        .berth(&["exec", "owner", "readlink", "/proc/self/ns/net"])
        .ok("owner's netns");
    let owner_resolv = d
        .berth(&["exec", "owner", "cat", "/etc/resolv.conf"])
        .ok("owner's resolv.conf");

    // A joining container: the owner's namespace, address, hostname and files.
    let script = "readlink /proc/self/ns/net; hostname; ip -o -4 addr show eth0; \
                  echo ---; cat /etc/hosts; echo ---; cat /etc/resolv.conf";
    let out = run_out(&d, &["--network", "container:owner"], &["sh", "-c", script]);
    let mut parts = out.split("---\n");
    let head = parts.next().unwrap_or_default();
    let hosts = parts.next().unwrap_or_default();
    let resolv = parts.next().unwrap_or_default();
    let mut head_lines = head.lines();
    assert_eq!(head_lines.next(), Some(owner_netns.as_str()), "{out}");
    assert_eq!(head_lines.next(), Some("ownerhost"), "{out}");
    assert!(
        head_lines
            .next()
            .is_some_and(|l| l.contains(&format!("inet {owner_ip}/"))),
        "{out}"
    );
    assert!(hosts.contains(&format!("{owner_ip}\townerhost")), "{hosts}");
    assert!(hosts.contains("10.9.9.9\textra"), "{hosts}");
    assert_eq!(resolv.trim(), owner_resolv.trim());

    // Inspect: the mode names the owner by id, and there are no endpoints of its own.
    d.berth(&[
        "create",
        "--name",
        "dep",
        "--network",
        "container:owner",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok("create dep");
    let dep = d.inspect_container("dep");
    assert_eq!(
        dep["HostConfig"]["NetworkMode"],
        format!("container:{owner_id}"),
        "{dep}"
    );
    assert_eq!(
        dep["NetworkSettings"]["Networks"],
        serde_json::json!({}),
        "{dep}"
    );
    let out = d.berth(&["network", "connect", "sharenet", "dep"]);
    out.expect_failure("connect a namespace-sharing container");
    assert!(
        out.stderr_text()
            .contains("container sharing network namespace with another container"),
        "{}",
        out.stderr_text()
    );

    // Options that would change a network the container does not own are refused.
    for (flags, message) in [
        (
            &["--hostname", "x"][..],
            "conflicting options: hostname and the network mode",
        ),
        (
            &["--dns", "1.1.1.1"],
            "conflicting options: dns and the network mode",
        ),
        (
            &["--add-host", "a:1.2.3.4"],
            "conflicting options: custom host-to-IP mapping and the network mode",
        ),
        (
            &["-p", "8080:80"],
            "conflicting options: port publishing and the container type network mode",
        ),
        (
            &["--expose", "80"],
            "conflicting options: port exposing and the container type network mode",
        ),
        (
            &["--mac-address", "02:42:ac:11:00:09"],
            "conflicting options: mac-address and the network mode",
        ),
    ] {
        let mut args = vec!["run", "--rm", "--network", "container:owner"];
        args.extend_from_slice(flags);
        args.extend(["busybox", "true"]);
        let out = d.berth(&args);
        out.expect_code(125, &format!("berth run {flags:?}"));
        assert!(
            out.stderr_text().contains(message),
            "{flags:?}: {}",
            out.stderr_text()
        );
        if let Some(out) = d.docker(&args) {
            out.expect_code(125, &format!("docker run {flags:?}"));
            assert!(
                out.stderr_text().contains(message),
                "docker {flags:?}: {}",
                out.stderr_text()
            );
        }
    }
    let out = d.berth(&["run", "--rm", "--network", "container", "busybox", "true"]);
    out.expect_code(125, "--network container");
    assert!(
        out.stderr_text()
            .contains("invalid container format container:<name|id>"),
        "{}",
        out.stderr_text()
    );

    if docker_available() {
        let name = d
            .docker(&[
                "run",
                "--rm",
                "--network",
                "container:owner",
                "busybox",
                "hostname",
            ])
            .unwrap()
            .ok("docker run --network container:owner");
        assert_eq!(name, "ownerhost");
        let mode = d
            .docker(&["inspect", "-f", "{{.HostConfig.NetworkMode}}", "dep"])
            .unwrap()
            .ok("docker inspect dep");
        assert_eq!(mode, format!("container:{owner_id}"));
    }

    // While the owner runs, a dependent keeps its network; once the owner stops, the
    // dependent is left with loopback only, and cannot start without a running owner.
    d.berth(&["start", "dep"]).ok("start dep");
    let dev = d
        .berth(&["exec", "dep", "cat", "/proc/net/dev"])
        .ok("dep's interfaces");
    assert_eq!(interfaces(&dev), ["eth0", "lo"], "{dev}");
    d.berth(&["stop", "-t", "0", "owner"]).ok("stop owner");
    let dev = d
        .berth(&["exec", "dep", "cat", "/proc/net/dev"])
        .ok("dep's interfaces after the owner stopped");
    assert_eq!(interfaces(&dev), ["lo"], "{dev}");
    d.berth(&["rm", "-f", "dep"]).ok("rm dep");
    d.berth(&[
        "create",
        "--name",
        "dep2",
        "--network",
        "container:owner",
        "busybox",
        "true",
    ])
    .ok("create dep2");
    let out = d.berth(&["start", "dep2"]);
    out.expect_failure("start with the owner stopped");
    assert!(
        out.stderr_text().contains(
            "cannot join network namespace of a non running container: container owner is exited"
        ),
        "{}",
        out.stderr_text()
    );
    // The owner can be removed while a stopped container names it (moby does not refuse).
    d.berth(&["rm", "owner"]).ok("rm owner");
    let out = d.berth(&["start", "dep2"]);
    out.expect_failure("start with the owner gone");
    assert!(
        out.stderr_text()
            .contains("joining network namespace of container"),
        "{}",
        out.stderr_text()
    );
    d.berth(&["rm", "-f", "dep2"]).ok("rm dep2");
    d.berth(&["network", "rm", "sharenet"]).ok("network rm");
}

/// A one-shot DNS server on `addr`:53 answering every A query with `answer`; stops when
/// `stop` is set.
fn fake_upstream(
    addr: &str,
    answer: [u8; 4],
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u32> {
    let socket = UdpSocket::bind((addr, 53)).expect("bind the fake upstream");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    std::thread::spawn(move || {
        let mut served = 0;
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::SeqCst) {
            let Ok((len, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            if len < 12 {
                continue;
            }
            let query = &buf[..len];
            let Some(name_len) = query[12..].iter().position(|b| *b == 0) else {
                continue;
            };
            let question_end = 12 + name_len + 1 + 4;
            if len < question_end {
                continue;
            }
            let is_a = query[question_end - 4..question_end - 2] == [0, 1];
            // The question only (any EDNS record the client added is dropped).
            let mut reply = query[..question_end].to_vec();
            reply[2] = 0x81; // response, recursion desired
            reply[3] = 0x80; // recursion available, NOERROR
            reply[6..8].copy_from_slice(&u16::from(is_a).to_be_bytes());
            reply[8..12].fill(0);
            if is_a {
                reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                reply.extend_from_slice(&answer);
            }
            let _ = socket.send_to(&reply, from);
            served += 1;
        }
        served
    })
}

#[test]
fn dns_flags_shape_resolv_conf_and_feed_the_embedded_server() {
    let d = daemon_or_skip!(daemon_with_busybox());
    // The default bridge: the given servers replace the host's.
    let resolv = run_out(
        &d,
        &[
            "--dns",
            "10.0.0.53",
            "--dns",
            "10.0.0.54",
            "--dns-search",
            "a.test",
            "--dns-option",
            "ndots:3",
        ],
        &["cat", "/etc/resolv.conf"],
    );
    assert_eq!(
        directives(&resolv),
        [
            "nameserver 10.0.0.53",
            "nameserver 10.0.0.54",
            "search a.test",
            "options ndots:3"
        ],
        "{resolv}"
    );
    // `--dns-search .` clears the host's search domains.
    let resolv = run_out(&d, &["--dns-search", "."], &["cat", "/etc/resolv.conf"]);
    assert!(
        !directives(&resolv).iter().any(|l| l.starts_with("search")),
        "{resolv}"
    );

    // A user network: the embedded server stays the nameserver and relays to the
    // container's own servers.
    create_network(&d, "dnsnet");
    let gateway = network_gateway(&d, "dnsnet");
    let resolv = run_out(
        &d,
        &[
            "--network",
            "dnsnet",
            "--dns",
            "127.0.0.77",
            "--dns-search",
            "b.test",
        ],
        &["cat", "/etc/resolv.conf"],
    );
    assert_eq!(
        directives(&resolv),
        [
            format!("nameserver {gateway}"),
            "search b.test".to_string(),
            "options ndots:0".to_string()
        ],
        "{resolv}"
    );
    assert!(resolv.contains("# ExtServers: [127.0.0.77]"), "{resolv}");

    let stop = Arc::new(AtomicBool::new(false));
    let upstream = fake_upstream("127.0.0.77", [10, 77, 0, 1], stop.clone());
    let out = d.berth(&[
        "run",
        "--rm",
        "--network",
        "dnsnet",
        "--dns",
        "127.0.0.77",
        "busybox",
        "nslookup",
        "anything.example",
    ]);
    let other = d.berth(&[
        "run",
        "--rm",
        "--network",
        "dnsnet",
        "busybox",
        "nslookup",
        "anything.example",
    ]);
    stop.store(true, Ordering::SeqCst);
    let served = upstream.join().expect("the fake upstream");
    assert!(
        out.stdout_text().contains("10.77.0.1"),
        "answered by the container's --dns server: {}\n{}",
        out.stdout_text(),
        out.stderr_text()
    );
    assert!(
        !other.stdout_text().contains("10.77.0.1"),
        "a container without --dns does not use it: {}",
        other.stdout_text()
    );
    assert!(served >= 1, "the fake upstream served {served} queries");

    let r = d.api(
        "POST",
        "/containers/create",
        Some((
            "application/json",
            br#"{"Image":"busybox","Cmd":["true"],"HostConfig":{"Dns":["not-an-ip"]}}"#,
        )),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("bad nameserver address"), "{}", r.text());

    if docker_available() {
        let resolv = d
            .docker(&[
                "run",
                "--rm",
                "--dns",
                "10.0.0.53",
                "--dns-option",
                "timeout:2",
                "busybox",
                "cat",
                "/etc/resolv.conf",
            ])
            .unwrap()
            .ok("docker run --dns");
        let lines = directives(&resolv);
        assert_eq!(lines[0], "nameserver 10.0.0.53", "{resolv}");
        assert_eq!(lines.last().unwrap(), "options timeout:2", "{resolv}");
        d.docker(&[
            "create",
            "--name",
            "dnsc",
            "--dns",
            "10.0.0.53",
            "--dns-search",
            "c.test",
            "busybox",
            "true",
        ])
        .unwrap()
        .ok("docker create --dns");
        let dns = d
            .docker(&[
                "inspect",
                "-f",
                "{{.HostConfig.Dns}} {{.HostConfig.DnsSearch}}",
                "dnsc",
            ])
            .unwrap()
            .ok("docker inspect dns");
        assert_eq!(dns, "[10.0.0.53] [c.test]");
        d.berth(&["rm", "dnsc"]).ok("rm dnsc");
    }
    d.berth(&["network", "rm", "dnsnet"]).ok("network rm");
}

#[test]
fn add_host_accepts_dockers_forms_and_host_gateway() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let gateway = network_gateway(&d, "bridge");
    d.berth(&[
        "create",
        "--name",
        "ah",
        "--add-host",
        "a:10.1.1.1",
        "--add-host",
        "b=10.2.2.2",
        "--add-host",
        "c:[fd00::1]",
        "--add-host",
        "gw:host-gateway",
        "busybox",
        "cat",
        "/etc/hosts",
    ])
    .ok("create with --add-host");
    let extra = &d.inspect_container("ah")["HostConfig"]["ExtraHosts"];
    assert_eq!(
        extra,
        &serde_json::json!(["a:10.1.1.1", "b:10.2.2.2", "c:fd00::1", "gw:host-gateway"])
    );
    let hosts = d.berth(&["start", "-a", "ah"]).ok("start -a ah");
    for line in [
        "10.1.1.1\ta".to_string(),
        "10.2.2.2\tb".to_string(),
        "fd00::1\tc".to_string(),
        format!("{gateway}\tgw"),
    ] {
        assert!(hosts.lines().any(|l| l == line), "{line:?} in {hosts}");
    }
    d.berth(&["rm", "ah"]).ok("rm ah");

    let out = d.berth(&["run", "--rm", "--add-host", "a:notanip", "busybox", "true"]);
    out.expect_code(125, "a bad --add-host");
    assert!(
        out.stderr_text()
            .contains(r#"invalid IP address in add-host: "notanip""#),
        "{}",
        out.stderr_text()
    );
    let r = d.api(
        "POST",
        "/containers/create",
        Some((
            "application/json",
            br#"{"Image":"busybox","HostConfig":{"ExtraHosts":["nocolon"]}}"#,
        )),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("bad format for add-host"), "{}", r.text());

    // The host's network keeps the host's hosts file, unless names are added.
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let hosts = d
        .berth(&[
            "run",
            "--rm",
            "--network",
            "host",
            "busybox",
            "cat",
            "/etc/hosts",
        ])
        .ok("hosts on the host network");
    assert_eq!(hosts.trim(), host_hosts.trim());
    let hosts = run_out(
        &d,
        &["--network", "host", "--add-host", "only:10.3.3.3"],
        &["cat", "/etc/hosts"],
    );
    assert!(hosts.contains("10.3.3.3\tonly"), "{hosts}");

    if docker_available() {
        let hosts = d
            .docker(&[
                "run",
                "--rm",
                "--add-host",
                "gw:host-gateway",
                "--add-host",
                "v6=[fd00::2]",
                "busybox",
                "cat",
                "/etc/hosts",
            ])
            .unwrap()
            .ok("docker run --add-host");
        assert!(hosts.contains(&format!("{gateway}\tgw")), "{hosts}");
        assert!(hosts.contains("fd00::2\tv6"), "{hosts}");
        let out = d
            .docker(&["run", "--rm", "--add-host", "a:notanip", "busybox", "true"])
            .unwrap();
        out.expect_code(125, "docker's own check of --add-host");
        assert!(
            out.stderr_text()
                .contains(r#"invalid IP address in add-host: "notanip""#),
            "{}",
            out.stderr_text()
        );
    }
}

#[test]
fn running_containers_files_follow_connect_and_disconnect() {
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&["run", "-d", "--name", "hc", "busybox", "sleep", "1000"])
        .ok("run hc on the default bridge");
    let hostname = d.inspect_container("hc")["Config"]["Hostname"]
        .as_str()
        .unwrap()
        .to_string();
    let legacy_resolv = d
        .berth(&["exec", "hc", "cat", "/etc/resolv.conf"])
        .ok("resolv.conf before");
    create_network(&d, "hnet");
    let gateway = network_gateway(&d, "hnet");
    d.berth(&[
        "run",
        "-d",
        "--name",
        "peer",
        "--network",
        "hnet",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok("run peer");
    let peer_ip = container_ip(&d, "peer", "hnet");

    d.berth(&["network", "connect", "hnet", "hc"])
        .ok("connect hnet");
    let ip = container_ip(&d, "hc", "hnet");
    assert!(!ip.is_empty());
    let hosts = d
        .berth(&["exec", "hc", "cat", "/etc/hosts"])
        .ok("hosts after connect");
    assert!(
        hosts.lines().any(|l| l == format!("{ip}\t{hostname}")),
        "{hosts}"
    );
    let resolv = d
        .berth(&["exec", "hc", "cat", "/etc/resolv.conf"])
        .ok("resolv.conf after connect");
    assert_eq!(
        directives(&resolv).first().map(String::as_str),
        Some(format!("nameserver {gateway}").as_str()),
        "{resolv}"
    );
    let lookup = d
        .berth(&["exec", "hc", "nslookup", "peer"])
        .ok("resolve peer through hnet's server");
    assert!(lookup.contains(&peer_ip), "{lookup}");

    // More networks on free interface names, also after one in the middle left.
    create_network(&d, "hnet2");
    create_network(&d, "hnet3");
    d.berth(&["network", "connect", "hnet2", "hc"])
        .ok("connect hnet2");
    d.berth(&["network", "disconnect", "hnet", "hc"])
        .ok("disconnect hnet");
    d.berth(&["network", "connect", "hnet3", "hc"])
        .ok("connect hnet3 into the freed eth1");
    let dev = d
        .berth(&["exec", "hc", "cat", "/proc/net/dev"])
        .ok("interfaces");
    assert_eq!(interfaces(&dev), ["eth0", "eth1", "eth2", "lo"], "{dev}");
    let hosts = d
        .berth(&["exec", "hc", "cat", "/etc/hosts"])
        .ok("hosts after disconnect");
    assert!(!hosts.contains(&format!("{ip}\t")), "{hosts}");
    let hnet2_gateway = network_gateway(&d, "hnet2");
    let resolv = d
        .berth(&["exec", "hc", "cat", "/etc/resolv.conf"])
        .ok("resolv.conf with hnet gone");
    assert_eq!(
        directives(&resolv).first().map(String::as_str),
        Some(format!("nameserver {hnet2_gateway}").as_str()),
        "the next network's server: {resolv}"
    );

    let disconnect = |network: &str| {
        match d.docker(&["network", "disconnect", "--force", network, "hc"]) {
            Some(out) => out.ok("docker network disconnect --force"),
            None => d
                .berth(&["network", "disconnect", "--force", network, "hc"])
                .ok("berth network disconnect --force"),
        };
    };
    disconnect("hnet2");
    disconnect("hnet3");
    let resolv = d
        .berth(&["exec", "hc", "cat", "/etc/resolv.conf"])
        .ok("resolv.conf back on the bridge only");
    assert_eq!(directives(&resolv), directives(&legacy_resolv));
    let hosts = d
        .berth(&["exec", "hc", "cat", "/etc/hosts"])
        .ok("hosts back on the bridge only");
    assert_eq!(
        hosts.lines().filter(|l| l.ends_with(&hostname)).count(),
        1,
        "{hosts}"
    );

    // A stale endpoint of a container that is gone goes with --force only.
    let out = d.berth(&["network", "disconnect", "hnet", "nosuchcontainer"]);
    out.expect_failure("disconnect a missing container");
    d.berth(&["rm", "-f", "hc", "peer"]).ok("rm");
    for net in ["hnet", "hnet2", "hnet3"] {
        d.berth(&["network", "rm", net]).ok("network rm");
    }
}

#[test]
fn network_prune_honours_until_and_label_filters() {
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&["network", "create", "--label", "team=a", "old-a"])
        .ok("create old-a");
    d.berth(&["network", "create", "old-b"]).ok("create old-b");
    std::thread::sleep(Duration::from_millis(1200));
    let cutoff = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    std::thread::sleep(Duration::from_millis(1100));
    d.berth(&["network", "create", "--label", "team=a", "new-a"])
        .ok("create new-a");
    d.berth(&["network", "create", "busy"]).ok("create busy");
    d.berth(&[
        "run",
        "-d",
        "--name",
        "user",
        "--network",
        "busy",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok("a container on busy");

    let names = |d: &TestDaemon| {
        let mut names: Vec<String> = d
            .berth(&["network", "ls", "--format", "{{.Name}}"])
            .ok("network ls")
            .lines()
            .map(str::to_string)
            .collect();
        names.sort();
        names
    };
    let out = d.berth(&["network", "prune", "-f", "--filter", "name=x"]);
    out.expect_failure("an unknown prune filter");
    let until = format!("until={cutoff}");
    let pruned = match d.docker(&["network", "prune", "-f", "--filter", &until]) {
        Some(out) => out.ok("docker network prune --filter until"),
        None => d
            .berth(&["network", "prune", "-f", "--filter", &until])
            .ok("berth network prune --filter until"),
    };
    assert!(
        pruned.contains("old-a") && pruned.contains("old-b"),
        "{pruned}"
    );
    assert_eq!(names(&d), ["bridge", "busy", "new-a"]);

    d.berth(&["network", "create", "--label", "team=b", "other-b"])
        .ok("create other-b");
    d.berth(&["network", "prune", "-f", "--filter", "label!=team=a"])
        .ok("prune label!=team=a");
    assert_eq!(names(&d), ["bridge", "busy", "new-a"], "other-b pruned");
    d.berth(&["network", "prune", "-f", "--filter", "label=team=a"])
        .ok("prune label=team=a");
    assert_eq!(names(&d), ["bridge", "busy"], "busy has a container");
    d.berth(&["rm", "-f", "user"]).ok("rm user");
    d.berth(&["network", "prune", "-f"]).ok("prune");
    assert_eq!(names(&d), ["bridge"]);
}

/// A daemon.json with `config` (kept until the returned file is dropped) and a daemon
/// started with it and busybox imported.
fn daemon_with_config(config: &str) -> Option<(TestDaemon, tempfile::NamedTempFile)> {
    let file = tempfile::NamedTempFile::new().expect("a daemon.json");
    std::fs::write(file.path(), config).expect("write daemon.json");
    let path = file.path().to_str().expect("utf-8 path").to_string();
    let d = TestDaemon::start_with_args(&["--config-file", &path])?;
    d.busybox_image();
    Some((d, file))
}

#[test]
fn daemon_dns_defaults_and_host_gateway_ip_stand_in_for_missing_settings() {
    let (d, _config) = daemon_or_skip!(daemon_with_config(
        r#"{"dns": ["127.0.0.78"], "dns-search": ["daemon.test"], "dns-opts": ["ndots:2"],
            "host-gateway-ip": "192.0.2.10"}"#
    ));
    // The default bridge: the daemon's settings as they are (a server the daemon names is
    // kept even when it is loopback, like a container's own).
    let resolv = run_out(&d, &[], &["cat", "/etc/resolv.conf"]);
    assert_eq!(
        directives(&resolv),
        [
            "nameserver 127.0.0.78",
            "search daemon.test",
            "options ndots:2"
        ],
        "{resolv}"
    );
    // Each list the container gives replaces only the daemon's list of that kind.
    let resolv = run_out(&d, &["--dns", "10.0.0.99"], &["cat", "/etc/resolv.conf"]);
    assert_eq!(
        directives(&resolv),
        [
            "nameserver 10.0.0.99",
            "search daemon.test",
            "options ndots:2"
        ],
        "{resolv}"
    );
    let resolv = run_out(
        &d,
        &["--dns-search", "own.test", "--dns-option", "timeout:3"],
        &["cat", "/etc/resolv.conf"],
    );
    assert_eq!(
        directives(&resolv),
        [
            "nameserver 127.0.0.78",
            "search own.test",
            "options timeout:3"
        ],
        "{resolv}"
    );
    // The host's network gets them too.
    let resolv = run_out(&d, &["--network", "host"], &["cat", "/etc/resolv.conf"]);
    assert!(
        directives(&resolv).contains(&"search daemon.test".to_string()),
        "{resolv}"
    );
    // The defaults are the daemon's, not the container's: inspect shows none.
    d.berth(&["create", "--name", "plain", "busybox", "true"])
        .ok("create plain");
    let host = &d.inspect_container("plain")["HostConfig"];
    for key in ["Dns", "DnsSearch", "DnsOptions"] {
        assert!(
            host[key].is_null() || host[key] == serde_json::json!([]),
            "{key}: {host}"
        );
    }
    d.berth(&["rm", "plain"]).ok("rm plain");

    // `host-gateway` is the configured address.
    let hosts = run_out(
        &d,
        &["--add-host", "gw:host-gateway"],
        &["cat", "/etc/hosts"],
    );
    assert!(hosts.lines().any(|l| l == "192.0.2.10\tgw"), "{hosts}");

    // A user network: the embedded server relays to the daemon's servers.
    create_network(&d, "defnet");
    let gateway = network_gateway(&d, "defnet");
    let resolv = run_out(&d, &["--network", "defnet"], &["cat", "/etc/resolv.conf"]);
    assert_eq!(
        directives(&resolv),
        [
            format!("nameserver {gateway}"),
            "search daemon.test".to_string(),
            "options ndots:2".to_string()
        ],
        "{resolv}"
    );
    assert!(resolv.contains("# ExtServers: [127.0.0.78]"), "{resolv}");
    let stop = Arc::new(AtomicBool::new(false));
    let upstream = fake_upstream("127.0.0.78", [10, 78, 0, 1], stop.clone());
    let out = d.berth(&[
        "run",
        "--rm",
        "--network",
        "defnet",
        "busybox",
        "nslookup",
        "anything.example.",
    ]);
    stop.store(true, Ordering::SeqCst);
    let served = upstream.join().expect("the fake upstream");
    assert!(
        out.stdout_text().contains("10.78.0.1"),
        "answered by the daemon's dns server: {}\n{}",
        out.stdout_text(),
        out.stderr_text()
    );
    assert!(served >= 1, "the fake upstream served {served} queries");

    if docker_available() {
        let resolv = d
            .docker(&["run", "--rm", "busybox", "cat", "/etc/resolv.conf"])
            .unwrap()
            .ok("docker run with the daemon's dns");
        assert_eq!(
            directives(&resolv),
            [
                "nameserver 127.0.0.78",
                "search daemon.test",
                "options ndots:2"
            ],
            "{resolv}"
        );
        let hosts = d
            .docker(&[
                "run",
                "--rm",
                "--add-host",
                "gw:host-gateway",
                "busybox",
                "cat",
                "/etc/hosts",
            ])
            .unwrap()
            .ok("docker run --add-host host-gateway");
        assert!(hosts.lines().any(|l| l == "192.0.2.10\tgw"), "{hosts}");
    }
    d.berth(&["network", "rm", "defnet"]).ok("network rm");
}

/// Runs berthd on scratch directories with `args` and waits for it to exit; returns its
/// exit code and stderr.
fn berthd_refusing(d: &TestDaemon, args: &[&str]) -> (i32, String) {
    let dir = d.scratch().join("refused");
    let out = std::process::Command::new(d.bin_dir().join("berthd"))
        .arg("-H")
        .arg(format!("unix://{}", dir.join("berthd.sock").display()))
        .arg("--data-root")
        .arg(dir.join("root"))
        .arg("--exec-root")
        .arg(dir.join("r"))
        .arg("--bridge-name")
        .arg("none")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run berthd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_daemon_dns_settings_stop_berthd_naming_the_key() {
    let d = daemon_or_skip!(TestDaemon::start());
    let config = d.scratch().join("daemon.json");
    for (json, message) in [
        (
            r#"{"dns": ["1.1.1.1", "dns.example"]}"#,
            r#"invalid dns "dns.example": not an IP address"#,
        ),
        (r#"{"dns": "1.1.1.1"}"#, r#""dns": invalid type"#),
        (
            r#"{"dns-search": ["-bad.example"]}"#,
            r#"invalid dns-search "-bad.example""#,
        ),
        (
            r#"{"dns-opts": ["ndots:1 x"]}"#,
            r#"invalid dns-opts "ndots:1 x""#,
        ),
        (
            r#"{"host-gateway-ip": "gateway"}"#,
            r#"invalid host-gateway-ip "gateway": not an IP address"#,
        ),
    ] {
        std::fs::write(&config, json).unwrap();
        let (code, stderr) = berthd_refusing(&d, &["--config-file", config.to_str().unwrap()]);
        assert_ne!(code, 0, "{json}: {stderr}");
        assert!(stderr.contains(message), "{json}: {stderr}");
    }
    // The flags are checked the same way.
    let (code, stderr) = berthd_refusing(&d, &["--dns", "nope"]);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains(r#"invalid dns "nope""#), "{stderr}");
    assert!(
        !d.scratch().join("refused/berthd.sock").exists(),
        "berthd must stop before serving"
    );
}

#[test]
fn containers_sharing_a_namespace_show_the_owners_files_in_inspect() {
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&["run", "-d", "--name", "fowner", "busybox", "sleep", "1000"])
        .ok("run the owner");
    d.berth(&[
        "run",
        "-d",
        "--name",
        "fjoin",
        "--network",
        "container:fowner",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok("run a joiner");
    // A joiner of a joiner shares the first owner's files in turn.
    d.berth(&[
        "create",
        "--name",
        "fjoin2",
        "--network",
        "container:fjoin",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok("create a joiner of the joiner");
    let paths = |name: &str| {
        let c = d.inspect_container(name);
        ["HostsPath", "ResolvConfPath", "HostnamePath"].map(|k| {
            c[k].as_str()
                .unwrap_or_else(|| panic!("{name} has no {k}: {c}"))
                .to_string()
        })
    };
    let owner = paths("fowner");
    let owner_id = d.inspect_container("fowner")["Id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        owner[0].ends_with(&format!("/{owner_id}/hosts")),
        "{owner:?}"
    );
    assert_eq!(paths("fjoin"), owner);
    assert_eq!(paths("fjoin2"), owner);
    d.berth(&["start", "fjoin2"]).ok("start fjoin2");
    assert_eq!(paths("fjoin2"), owner);
    // The files named are the ones mounted.
    let hosts = d
        .berth(&["exec", "fjoin2", "cat", "/etc/hosts"])
        .ok("fjoin2's hosts");
    assert_eq!(hosts, std::fs::read_to_string(&owner[0]).unwrap().trim());
    if docker_available() {
        let shown = d
            .docker(&[
                "inspect",
                "-f",
                "{{.HostsPath}} {{.ResolvConfPath}} {{.HostnamePath}}",
                "fjoin",
            ])
            .unwrap()
            .ok("docker inspect fjoin");
        assert_eq!(shown, owner.join(" "));
    }
    d.berth(&["rm", "-f", "fjoin2", "fjoin", "fowner"]).ok("rm");
}

/// The network namespace a running container's processes are in.
fn netns_of(d: &TestDaemon, name: &str) -> String {
    d.berth(&["exec", name, "readlink", "/proc/self/ns/net"])
        .ok(&format!("{name}'s namespace"))
}

#[test]
fn joiners_come_back_after_their_owner_and_follow_a_restarted_one() {
    let d = daemon_or_skip!(daemon_with_busybox());
    create_network(&d, "ordnet");
    let run = |name: &str, network: &str| {
        d.berth(&[
            "run",
            "-d",
            "--name",
            name,
            "--restart",
            "always",
            "--network",
            network,
            "busybox",
            "sleep",
            "1000",
        ])
        .ok(&format!("run {name}"));
    };
    run("rowner", "ordnet");
    let joiners = ["rjoin1", "rjoin2", "rjoin3"];
    for name in joiners {
        run(name, "container:rowner");
    }
    // The daemon goes away and takes the processes and their shims with it, as a reboot
    // would: at its start every policy brings its container back, the joiners after the
    // owner whose namespace they join.
    let pid = |name: &str| {
        d.inspect_container(name)["State"]["Pid"]
            .as_i64()
            .filter(|p| *p > 0)
            .unwrap_or_else(|| panic!("{name} has no pid")) as i32
    };
    let processes: Vec<i32> = std::iter::once("rowner").chain(joiners).map(pid).collect();
    let parent = |pid: i32| -> i32 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0)
    };
    let shims: Vec<i32> = processes.iter().map(|p| parent(*p)).collect();
    d.kill_daemon();
    for (shim, process) in shims.iter().zip(&processes) {
        berth_e2e::cleanup::send_signal(*shim, libc::SIGKILL);
        berth_e2e::cleanup::send_signal(*process, libc::SIGKILL);
    }
    d.start_daemon();
    for name in std::iter::once("rowner").chain(joiners) {
        let c = d.inspect_container(name);
        assert_eq!(
            c["State"]["Status"],
            "running",
            "{name} must be back once berthd answers: {c}\n{}",
            d.log_tail(40)
        );
    }
    let owner_ns = netns_of(&d, "rowner");
    for name in joiners {
        assert_eq!(netns_of(&d, name), owner_ns, "{name}");
        let dev = d
            .berth(&["exec", name, "cat", "/proc/net/dev"])
            .ok("joiner's interfaces");
        assert_eq!(interfaces(&dev), ["eth0", "lo"], "{name}: {dev}");
    }

    // A user's restart of the owner leaves its joiners running in the old namespace (moby
    // does not restart them)...
    let started_before = d.inspect_container("rjoin1")["State"]["StartedAt"].clone();
    d.berth(&["restart", "-t", "0", "rowner"])
        .ok("restart the owner");
    let new_ns = netns_of(&d, "rowner");
    assert_ne!(new_ns, owner_ns, "a restarted owner has a new namespace");
    let j = d.inspect_container("rjoin1");
    assert_eq!(j["State"]["Status"], "running", "{j}");
    assert_eq!(j["State"]["StartedAt"], started_before, "{j}");
    assert_eq!(netns_of(&d, "rjoin1"), owner_ns);
    let dev = d
        .berth(&["exec", "rjoin1", "cat", "/proc/net/dev"])
        .ok("interfaces left in the old namespace");
    assert_eq!(interfaces(&dev), ["lo"], "{dev}");
    // ...and one started again joins the new one, with the owner's new address.
    d.berth(&["restart", "-t", "0", "rjoin1"])
        .ok("restart a joiner");
    assert_eq!(netns_of(&d, "rjoin1"), new_ns);
    let owner_ip = container_ip(&d, "rowner", "ordnet");
    let addr = d
        .berth(&["exec", "rjoin1", "ip", "-o", "-4", "addr", "show", "eth0"])
        .ok("joiner's address");
    assert!(addr.contains(&format!("inet {owner_ip}/")), "{addr}");
    d.berth(&["stop", "-t", "0", "rjoin2"]).ok("stop rjoin2");
    d.berth(&["start", "rjoin2"]).ok("start rjoin2");
    assert_eq!(netns_of(&d, "rjoin2"), new_ns);

    let mut all = vec!["rm", "-f"];
    all.extend(joiners);
    all.push("rowner");
    d.berth(&all).ok("rm");
    d.berth(&["network", "rm", "ordnet"]).ok("network rm");
}

/// The issue's bad input for networks and volumes: each refused with a clear message and exit
/// 125 from berth, nothing half-created (no network, bridge or volume left behind).
#[test]
fn bad_network_and_volume_input_exits_125_and_creates_nothing() {
    let d = daemon_or_skip!(daemon_with_busybox());
    // A /24 inside this daemon's own /22 pool, far from what automatic subnets take first.
    let pool = d.address_pool();
    let third: u8 = pool
        .trim_start_matches("base=10.213.")
        .split('.')
        .next()
        .and_then(|t| t.parse().ok())
        .expect("the test daemon's pool is 10.213.X.0/22");
    let taken = format!("10.213.{}.0/25", third + 3);
    let overlapping = format!("10.213.{}.64/26", third + 3);
    d.berth(&["network", "create", "--subnet", &taken, "taken"])
        .ok("create the first network");
    let networks_before = d.berth(&["network", "ls", "-q"]).ok("network ls");
    let volumes_before = d.berth(&["volume", "ls", "-q"]).ok("volume ls");
    let cases: [(&[&str], &str); 4] = [
        (
            &["network", "create", "--subnet", "10.0.0.0/33", "bad-cidr"],
            "10.0.0.0/33",
        ),
        (
            &["network", "create", "--subnet", &overlapping, "overlap"],
            "overlap",
        ),
        (
            &[
                "network",
                "create",
                "--subnet",
                "10.213.250.0/24",
                "--gateway",
                "10.213.251.1",
                "bad-gw",
            ],
            "10.213.251.1",
        ),
        (&["volume", "create", "a/b"], "a/b"),
    ];
    for (args, named) in cases {
        let out = d.berth(args);
        out.expect_code(125, &format!("berth {args:?}"));
        let err = out.stderr_text();
        assert!(err.contains(named), "berth {args:?} names {named}: {err}");
    }
    assert_eq!(
        d.berth(&["network", "ls", "-q"]).ok("network ls"),
        networks_before
    );
    assert_eq!(
        d.berth(&["volume", "ls", "-q"]).ok("volume ls"),
        volumes_before
    );

    // Bad port specs and a relative bind source fail `run` with 125 and leave no container.
    let containers_before = d.berth(&["ps", "-aq"]).ok("ps");
    for args in [
        &["run", "--rm", "-p", "99999:80", "busybox", "true"][..],
        &["run", "--rm", "-p", "80:80/sctpx", "busybox", "true"][..],
        &[
            "run",
            "--rm",
            "--mount",
            "type=bind,src=rel,dst=/x",
            "busybox",
            "true",
        ][..],
    ] {
        d.berth(args).expect_code(125, &format!("berth {args:?}"));
    }
    assert_eq!(d.berth(&["ps", "-aq"]).ok("ps"), containers_before);

    // A network with containers attached is refused, naming them.
    d.berth(&[
        "run",
        "-d",
        "--name",
        "holder",
        "--network",
        "taken",
        "busybox",
        "sleep",
        "60",
    ])
    .ok("run on the network");
    let out = d.berth(&["network", "rm", "taken"]);
    out.expect_failure("network rm with a container attached");
    assert!(
        out.stderr_text().contains("holder"),
        "the refusal names the container: {}",
        out.stderr_text()
    );
    d.berth(&["rm", "-f", "holder"]).ok("rm holder");
    d.berth(&["network", "rm", "taken"])
        .ok("network rm after the container left");
}
