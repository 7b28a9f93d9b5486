//! Container lifecycle through the berth CLI: detached runs, ps, logs, stop/kill/restart, rm,
//! prune, rename, wait, inspect and the errors users see.

use std::time::Duration;

use berth_e2e::{OutputExt, TestDaemon};

use crate::util::{
    daemon_or_skip, daemon_with_busybox, inspect_field, is_id, lines, wait_for_status,
};

#[test]
fn version_and_info() {
    let d = daemon_or_skip!(TestDaemon::start());
    let out = d.berth(&["version"]).ok("version");
    assert!(out.contains("Client"), "{out}");
    assert!(out.contains("Server"), "{out}");
    let out = d.berth(&["info"]).ok("info");
    assert!(out.contains("Containers:"), "{out}");
    assert!(out.contains("Images:"), "{out}");
    assert!(
        out.contains(&d.root().display().to_string()),
        "info shows the data root: {out}"
    );

    let (status, body) = d.api_get("/_ping");
    assert_eq!((status, body.as_str()), (200, "OK"));
    let version = d.api("GET", "/version", None);
    assert_eq!(version.status, 200);
    assert!(
        version.json()["ApiVersion"].is_string(),
        "{}",
        version.text()
    );
    assert!(
        version.header("Api-Version").is_some(),
        "every response carries Api-Version"
    );
}

#[test]
fn detached_container_lifecycle() {
    let d = daemon_or_skip!(daemon_with_busybox());

    let id = d
        .berth(&["run", "-d", "--name", "web", "busybox", "sleep", "1000"])
        .ok("run -d");
    assert!(
        is_id(&id),
        "run -d prints the full container id, got {id:?}"
    );

    let ps = d.berth(&["ps"]).ok("ps");
    let row = ps
        .lines()
        .find(|l| l.contains("web"))
        .unwrap_or_else(|| panic!("web missing from ps:\n{ps}"));
    assert!(row.contains("Up"), "web is Up: {row}");
    assert!(
        row.starts_with(&id[..12]),
        "ps shows the short id first: {row}"
    );
    assert!(ps.lines().next().unwrap().contains("CONTAINER ID"), "{ps}");

    assert_eq!(inspect_field(&d, "web", "{{.State.Running}}"), "true");
    assert_eq!(inspect_field(&d, "web", "{{.State.Status}}"), "running");
    assert_eq!(inspect_field(&d, "web", "{{.Id}}"), id);
    // A unique id prefix names the container too.
    assert_eq!(inspect_field(&d, &id[..8], "{{.Name}}"), "/web");

    assert_eq!(
        d.berth(&["logs", "web"]).ok("logs of a silent container"),
        ""
    );

    let started = std::time::Instant::now();
    assert_eq!(d.berth(&["stop", "-t", "1", "web"]).ok("stop -t 1"), "web");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stop -t 1 took {:?}",
        started.elapsed()
    );
    let code = inspect_field(&d, "web", "{{.State.ExitCode}}");
    assert!(
        code == "137" || code == "143",
        "stopped sleep exits by SIGKILL or SIGTERM, got {code}"
    );
    assert_eq!(inspect_field(&d, "web", "{{.State.Running}}"), "false");
    let ps = d.berth(&["ps", "-a"]).ok("ps -a");
    assert!(
        ps.lines()
            .any(|l| l.contains("web") && l.contains(&format!("Exited ({code})"))),
        "{ps}"
    );
    assert!(
        !d.berth(&["ps"]).ok("ps").contains("web"),
        "a stopped container is not in plain ps"
    );

    // Stopping a stopped container is not an error.
    d.berth(&["stop", "web"]).ok("stop twice");
    assert_eq!(d.berth(&["rm", "web"]).ok("rm"), "web");
    d.berth(&["inspect", "web"])
        .expect_failure("inspect after rm");
    assert_eq!(d.berth(&["ps", "-aq"]).ok("ps -aq"), "");
}

#[test]
fn ps_filters_and_format() {
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&[
        "run",
        "--name",
        "f-exited",
        "-l",
        "team=blue",
        "busybox",
        "true",
    ])
    .ok("run f-exited");
    d.berth(&[
        "run",
        "-d",
        "--name",
        "f-running",
        "-l",
        "team=red",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok("run f-running");
    let exited = d.inspect_container("f-exited")["Id"].as_str().unwrap()[..12].to_string();
    let running = d.inspect_container("f-running")["Id"].as_str().unwrap()[..12].to_string();

    let q = |args: &[&str]| {
        let mut out = lines(&d.berth(args).ok(&args.join(" ")));
        out.sort();
        out
    };
    let mut both = vec![exited.clone(), running.clone()];
    both.sort();
    assert_eq!(q(&["ps", "-q"]), [running.as_str()]);
    assert_eq!(q(&["ps", "-aq"]), both);
    assert_eq!(
        q(&["ps", "-a", "-q", "--filter", "status=exited"]),
        [exited.as_str()]
    );
    assert_eq!(
        q(&["ps", "-a", "-q", "--filter", "status=running"]),
        [running.as_str()]
    );
    assert_eq!(
        q(&["ps", "-a", "-q", "--filter", "name=f-run"]),
        [running.as_str()]
    );
    assert_eq!(
        q(&["ps", "-a", "-q", "--filter", "label=team=blue"]),
        [exited.as_str()]
    );
    assert_eq!(q(&["ps", "-a", "-q", "--filter", "label=team"]), both);
    assert_eq!(
        q(&[
            "ps",
            "-a",
            "-q",
            "--filter",
            "label=team=red",
            "--filter",
            "status=exited"
        ]),
        Vec::<String>::new()
    );

    let out = d
        .berth(&["ps", "-a", "--format", "{{.Names}} {{.Image}} {{.Command}}"])
        .ok("ps --format");
    let mut rows = lines(&out);
    rows.sort();
    assert_eq!(
        rows,
        [
            r#"f-exited busybox "true""#,
            r#"f-running busybox "sleep 1000""#
        ]
    );
    let full = d.berth(&["ps", "-q", "--no-trunc"]).ok("ps --no-trunc");
    assert!(is_id(&full) && full.starts_with(&running), "{full}");
}

#[test]
fn logs_follow_tail_and_streams() {
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&[
        "run",
        "-d",
        "--name",
        "talker",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo line$i; usleep 300000; done",
    ])
    .ok("run talker");
    // -f returns by itself once the container exits.
    let out = d.berth_with(&["logs", "-f", "talker"], None, Duration::from_secs(30));
    out.expect_code(0, "logs -f");
    assert_eq!(out.stdout_text(), "line1\nline2\nline3\nline4\nline5\n");
    wait_for_status(&d, "talker", "exited", Duration::from_secs(10));

    assert_eq!(
        d.berth(&["logs", "--tail", "2", "talker"])
            .ok("logs --tail 2"),
        "line4\nline5"
    );
    assert_eq!(d.berth(&["logs", "talker"]).ok("logs").lines().count(), 5);
    let stamped = d.berth(&["logs", "-t", "talker"]).ok("logs -t");
    for line in stamped.lines() {
        let (stamp, text) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("no timestamp in {line:?}"));
        assert!(
            stamp.contains('T') && stamp.ends_with('Z'),
            "RFC 3339 timestamp expected in {line:?}"
        );
        assert!(text.starts_with("line"), "{line:?}");
    }

    d.berth(&[
        "run",
        "--name",
        "split",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2",
    ])
    .ok("run split");
    let out = d.berth(&["logs", "split"]);
    out.expect_code(0, "logs split");
    assert_eq!(out.stdout_text(), "out\n");
    assert_eq!(out.stderr_text(), "err\n");
}

#[test]
fn errors_users_see() {
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&["run", "-d", "--name", "dup", "busybox", "sleep", "1000"])
        .ok("run dup");
    let out = d.berth(&["run", "--name", "dup", "busybox", "true"]);
    out.expect_code(125, "name conflict");
    assert!(
        out.stderr_text().contains("Conflict"),
        "{}",
        out.stderr_text()
    );
    assert!(
        out.stderr_text().contains("already in use"),
        "{}",
        out.stderr_text()
    );
    let out = d.berth(&["create", "--name", "dup", "busybox", "true"]);
    out.expect_failure("create with a taken name");
    assert!(
        out.stderr_text().contains("Conflict"),
        "{}",
        out.stderr_text()
    );

    // Docker names are at least two characters from [a-zA-Z0-9][a-zA-Z0-9_.-].
    let out = d.berth(&["run", "--name", "x", "busybox", "true"]);
    out.expect_code(125, "invalid container name");
    assert!(
        out.stderr_text().contains("Invalid container name"),
        "{}",
        out.stderr_text()
    );

    let out = d.berth(&["run", "--rm", "nosuchimage-e2e", "true"]);
    out.expect_code(125, "unknown image");
    assert!(
        out.stderr_text()
            .contains("Unable to find image 'nosuchimage-e2e:latest' locally"),
        "{}",
        out.stderr_text()
    );

    let out = d.berth(&["rm", "nosuch-container"]);
    out.expect_failure("rm of an unknown container");
    assert!(
        out.stderr_text().contains("No such container"),
        "{}",
        out.stderr_text()
    );
    d.berth(&["inspect", "nosuch-container"])
        .expect_failure("inspect of an unknown container");

    let out = d.berth(&["rm", "dup"]);
    out.expect_failure("rm of a running container without -f");
    assert!(
        out.stderr_text().to_lowercase().contains("running"),
        "{}",
        out.stderr_text()
    );
    assert!(
        d.berth(&["ps"]).ok("ps").contains("dup"),
        "the refused rm left the container alone"
    );

    let out = d.berth(&["kill", "-s", "KILL", "dup"]).ok("kill");
    assert_eq!(out, "dup");
    wait_for_status(&d, "dup", "exited", Duration::from_secs(10));
    d.berth(&["kill", "dup"])
        .expect_failure("kill of a stopped container");
}

#[test]
fn rename_wait_kill_restart() {
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&["run", "-d", "--name", "old", "busybox", "sleep", "1000"])
        .ok("run old");
    d.berth(&["rename", "old", "new"]).ok("rename");
    assert_eq!(inspect_field(&d, "new", "{{.Name}}"), "/new");
    d.berth(&["inspect", "old"])
        .expect_failure("the old name is gone");

    let before_started = inspect_field(&d, "new", "{{.State.StartedAt}}");
    let before_pid = inspect_field(&d, "new", "{{.State.Pid}}");
    assert_eq!(d.berth(&["restart", "-t", "1", "new"]).ok("restart"), "new");
    wait_for_status(&d, "new", "running", Duration::from_secs(10));
    assert_ne!(
        inspect_field(&d, "new", "{{.State.StartedAt}}"),
        before_started,
        "restart starts the process again"
    );
    assert_ne!(inspect_field(&d, "new", "{{.State.Pid}}"), before_pid);

    d.berth(&["kill", "-s", "KILL", "new"]).ok("kill -s KILL");
    wait_for_status(&d, "new", "exited", Duration::from_secs(10));
    assert_eq!(inspect_field(&d, "new", "{{.State.ExitCode}}"), "137");

    d.berth(&["start", "new"]).ok("start a stopped container");
    assert_eq!(inspect_field(&d, "new", "{{.State.Running}}"), "true");

    d.berth(&[
        "run",
        "-d",
        "--name",
        "waiter",
        "busybox",
        "sh",
        "-c",
        "sleep 1; exit 4",
    ])
    .ok("run waiter");
    let out = d
        .berth_with(&["wait", "waiter"], None, Duration::from_secs(30))
        .ok("wait");
    assert_eq!(out, "4");
    // wait on an already exited container returns at once with the same code.
    assert_eq!(d.berth(&["wait", "waiter"]).ok("wait again"), "4");
}

#[test]
fn rm_force_and_container_prune() {
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&["run", "-d", "--name", "r1", "busybox", "sleep", "1000"])
        .ok("run r1");
    assert_eq!(d.berth(&["rm", "-f", "r1"]).ok("rm -f running"), "r1");
    assert_eq!(d.berth(&["ps", "-aq"]).ok("ps -aq"), "");

    d.berth(&["run", "--name", "p1", "busybox", "true"])
        .ok("run p1");
    d.berth(&["run", "--name", "p2", "busybox", "false"])
        .expect_code(1, "run p2");
    d.berth(&["create", "--name", "p3", "busybox", "true"])
        .ok("create p3");
    d.berth(&["run", "-d", "--name", "keep", "busybox", "sleep", "1000"])
        .ok("run keep");
    let p1 = d.inspect_container("p1")["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let p2 = d.inspect_container("p2")["Id"]
        .as_str()
        .unwrap()
        .to_string();

    let out = d
        .berth(&["container", "prune", "-f"])
        .ok("container prune -f");
    assert!(
        out.contains(&p1) && out.contains(&p2),
        "prune lists what it deleted: {out}"
    );
    let names = d
        .berth(&["ps", "-a", "--format", "{{.Names}}"])
        .ok("ps -a after prune");
    assert_eq!(
        lines(&names),
        ["keep"],
        "prune removes stopped and created containers only"
    );
}

#[test]
fn inspect_container_document() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let image_id = d.busybox_image();
    d.berth(&[
        "run", "-d", "--name", "insp", "-e", "A=1", "-l", "k=v", "busybox", "sleep", "1000",
    ])
    .ok("run insp");
    let out = d.berth(&["inspect", "insp"]).ok("inspect");
    let doc: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("inspect prints JSON ({e}): {out}"));
    let c = &doc.as_array().expect("inspect prints an array")[0];
    assert_eq!(c["Name"], "/insp");
    assert!(is_id(c["Id"].as_str().unwrap()));
    assert_eq!(
        c["Image"].as_str(),
        Some(image_id.as_str()),
        "Image is the image id"
    );
    assert_eq!(c["Config"]["Image"], "busybox");
    assert_eq!(c["Config"]["Cmd"], serde_json::json!(["sleep", "1000"]));
    assert_eq!(c["Path"], "sleep");
    assert_eq!(c["Args"], serde_json::json!(["1000"]));
    assert_eq!(c["Config"]["Labels"]["k"], "v");
    assert!(
        c["Config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "A=1"),
        "{}",
        c["Config"]["Env"]
    );
    assert_eq!(c["State"]["Status"], "running");
    let pid = c["State"]["Pid"].as_i64().expect("State.Pid");
    assert!(
        pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "State.Pid {pid} is a live host pid"
    );
    assert_eq!(c["HostConfig"]["LogConfig"]["Type"], "json-file");
    assert_eq!(
        inspect_field(
            &d,
            "insp",
            "{{.Config.Image}} {{index .Config.Labels \"k\"}}"
        ),
        "busybox v"
    );
    assert_eq!(
        inspect_field(&d, "insp", "{{json .Config.Cmd}}"),
        r#"["sleep","1000"]"#
    );
}
