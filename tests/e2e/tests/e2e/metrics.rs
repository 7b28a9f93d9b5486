//! `--metrics-addr`: berthd's Prometheus endpoint, scraped over plain TCP the way Prometheus
//! does, while the daemon is driven with `berth`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_e2e::{OutputExt, TestDaemon, wait_until};

use crate::util::{daemon_or_skip, wait_for_status};

/// A loopback address with a port nobody listens on right now.
fn free_loopback_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    listener.local_addr().expect("local address").to_string()
}

/// `GET path` over HTTP/1.1 on `addr`: the status code, the headers and the body.
fn http_get(addr: &str, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .unwrap_or_else(|e| panic!("read the reply from {addr}: {e}"));
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {reply:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head.to_string(), body.to_string())
}

/// The exposition text of `GET /metrics`.
fn scrape(addr: &str) -> String {
    let (status, head, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    body
}

/// The value of the sample named `name` carrying every label of `labels`; 0 when absent
/// (a series appears with its first observation). Panics when several samples match.
fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    let matching: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .collect();
    match matching.as_slice() {
        [] => 0.0,
        [line] => line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no value in {line:?}")),
        _ => panic!(
            "several samples of {name} {labels:?}:\n{}",
            matching.join("\n")
        ),
    }
}

fn containers_in(text: &str, state: &str) -> f64 {
    sample(
        text,
        "engine_daemon_container_states_containers",
        &[&format!("state=\"{state}\"")],
    )
}

fn requests(text: &str, method: &str, route: &str, code: u16) -> f64 {
    sample(
        text,
        "berth_api_requests_total",
        &[
            &format!("method=\"{method}\""),
            &format!("route=\"{route}\""),
            &format!("code=\"{code}\""),
        ],
    )
}

#[test]
fn metrics_endpoint_counts_requests_containers_pulls_and_builds() {
    let addr = free_loopback_addr();
    let d = daemon_or_skip!(TestDaemon::start_with_args(&["--metrics-addr", &addr]));
    d.busybox_image();

    let before = scrape(&addr);
    assert_eq!(containers_in(&before, "running"), 0.0, "{before}");
    assert_eq!(containers_in(&before, "stopped"), 0.0, "{before}");
    assert!(
        before.contains("engine_daemon_engine_info{"),
        "no engine info in:\n{before}"
    );
    // The harness's own import was recorded under its route template.
    assert!(
        requests(&before, "POST", "/images/create", 200) >= 1.0,
        "{before}"
    );

    d.berth(&["ps"]).ok("ps");
    d.berth(&["run", "-d", "--name", "metered", "busybox", "sleep", "300"])
        .ok("run");
    d.berth(&["create", "--name", "idle", "busybox", "true"])
        .ok("create");
    d.berth(&["inspect", "no-such-container"])
        .expect_failure("inspect of a missing container");

    let after = scrape(&addr);
    assert_eq!(containers_in(&after, "running"), 1.0, "{after}");
    assert_eq!(containers_in(&after, "stopped"), 1.0, "{after}");
    assert_eq!(containers_in(&after, "paused"), 0.0, "{after}");
    let listed = requests(&after, "GET", "/containers/json", 200);
    assert!(
        listed >= requests(&before, "GET", "/containers/json", 200) + 1.0,
        "{after}"
    );
    assert_eq!(
        requests(&after, "POST", "/containers/create", 201),
        2.0,
        "{after}"
    );
    assert_eq!(
        requests(&after, "POST", "/containers/{id}/start", 204),
        1.0,
        "{after}"
    );
    assert!(
        requests(&after, "GET", "/containers/{id}/json", 404) >= 1.0,
        "{after}"
    );
    // Routes are templates, never the names or ids in the path, and never versioned.
    assert!(!after.contains("no-such-container"), "{after}");
    assert!(!after.contains("metered"), "{after}");
    assert!(!after.contains("route=\"/v1."), "{after}");
    assert!(
        sample(
            &after,
            "berth_api_request_duration_seconds_count",
            &[r#"method="GET""#, r#"route="/containers/json""#],
        ) >= 1.0,
        "{after}"
    );

    // A stopped container moves between the state gauges at the next scrape.
    d.berth(&["pause", "metered"]).ok("pause");
    assert_eq!(containers_in(&scrape(&addr), "paused"), 1.0);
    d.berth(&["unpause", "metered"]).ok("unpause");
    d.berth(&["kill", "metered"]).ok("kill");
    wait_for_status(&d, "metered", "exited", Duration::from_secs(20));
    let stopped = scrape(&addr);
    assert_eq!(containers_in(&stopped, "running"), 0.0, "{stopped}");
    assert_eq!(containers_in(&stopped, "stopped"), 2.0, "{stopped}");

    // A pull from a registry nobody serves fails and is counted as such.
    let nobody = free_loopback_addr();
    d.berth(&["pull", &format!("{nobody}/nothing:latest")])
        .expect_failure("pull from a dead registry");
    // A build that succeeds is timed; one with a broken Dockerfile counts a failure.
    let context = d.scratch().join("metrics-build");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nLABEL metered=yes\n",
    )
    .unwrap();
    let context_arg = context.to_str().unwrap().to_string();
    d.berth(&["build", "-q", "-t", "metered:1", &context_arg])
        .ok("build");
    std::fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nNOSUCHINSTRUCTION x\n",
    )
    .unwrap();
    d.berth(&["build", "-q", &context_arg])
        .expect_failure("build of a broken Dockerfile");
    let images = scrape(&addr);
    assert_eq!(
        sample(
            &images,
            "berth_image_action_failures_total",
            &[r#"action="pull""#]
        ),
        1.0,
        "{images}"
    );
    assert_eq!(
        sample(
            &images,
            "engine_daemon_image_actions_seconds_count",
            &[r#"action="build""#]
        ),
        1.0,
        "{images}"
    );
    assert_eq!(
        sample(
            &images,
            "berth_image_action_failures_total",
            &[r#"action="build""#]
        ),
        1.0,
        "{images}"
    );

    // Only /metrics is served there.
    let (status, _, _) = http_get(&addr, "/containers/json");
    assert_eq!(status, 404);
}

/// berthd with `args` added to a throw-away configuration; returns its exit status and
/// stderr once it exited (it must, within 20 s).
fn berthd_failing_with(d: &TestDaemon, args: &[&str]) -> (i32, String) {
    let dir = d.scratch().join("bad-metrics");
    let mut child = Command::new(d.bin_dir().join("berthd"))
        .arg("-H")
        .arg(format!("unix://{}", dir.join("berthd.sock").display()))
        .arg("--data-root")
        .arg(dir.join("root"))
        .arg("--exec-root")
        .arg(dir.join("r"))
        .arg("--bridge-name")
        .arg("none")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start berthd");
    let mut status = None;
    wait_until(Duration::from_secs(20), "berthd to exit", || {
        status = child.try_wait().expect("wait for berthd");
        status.is_some()
    });
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    (status.and_then(|s| s.code()).unwrap_or(-1), stderr)
}

#[test]
fn metrics_addr_that_cannot_be_served_stops_berthd_naming_it() {
    let d = daemon_or_skip!(TestDaemon::start());
    let (code, stderr) = berthd_failing_with(&d, &["--metrics-addr", "not-an-address"]);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("listen on metrics-addr not-an-address"),
        "{stderr}"
    );

    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = taken.local_addr().expect("local address").to_string();
    let (code, stderr) = berthd_failing_with(&d, &["--metrics-addr", &addr]);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!("listen on metrics-addr {addr}")),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("in use"), "{stderr}");
    drop(taken);

    // The daemon.json key works the same way.
    let config = d.scratch().join("daemon.json");
    std::fs::write(&config, r#"{"metrics-addr": "127.0.0.1:99999"}"#).unwrap();
    let (code, stderr) = berthd_failing_with(&d, &["--config-file", config.to_str().unwrap()]);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("listen on metrics-addr 127.0.0.1:99999"),
        "{stderr}"
    );
}
