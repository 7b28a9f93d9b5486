//! Restart policies and healthchecks, through berth, the API and the real docker CLI:
//! on-failure's retry limit, always and unless-stopped across user stops and daemon
//! restarts (with and without the shim surviving), and a healthcheck going from starting to
//! healthy to unhealthy with its events, `ps` column, filters and inspect fields.

use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_e2e::{OutputExt, TestDaemon, docker_available, wait_until};

use crate::util::{daemon_or_skip, daemon_with_busybox, lines, wait_for_status};

/// Unix time now as `seconds.nanoseconds`, for the events API.
fn unix_now() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

/// The actions of the events about container `name` from `since` until now.
fn actions(d: &TestDaemon, since: &str, name: &str) -> Vec<String> {
    let filters = format!(r#"{{"container":["{name}"]}}"#);
    let path = format!(
        "/events?since={since}&until={}&filters={}",
        unix_now(),
        berth_e2e::http::encode_query(&filters)
    );
    let r = d.api("GET", &path, None);
    assert_eq!(r.status, 200, "events: {}", r.text());
    lines(&r.text())
        .iter()
        .map(|l| {
            let event: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            event["Action"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

fn count(actions: &[String], action: &str) -> usize {
    actions.iter().filter(|a| *a == action).count()
}

/// `ps -a` STATUS of one container, by name.
fn ps_status(d: &TestDaemon, name: &str) -> String {
    let out = d
        .berth(&["ps", "-a", "--format", "{{.Names}}\t{{.Status}}"])
        .ok("ps --format");
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}\t")))
        .unwrap_or_else(|| panic!("{name} is not listed:\n{out}"))
        .to_string()
}

/// The host pid of a running container's process.
fn pid_of(d: &TestDaemon, name: &str) -> i32 {
    let pid = d.inspect_container(name)["State"]["Pid"]
        .as_i64()
        .unwrap_or(0);
    assert!(pid > 0, "{name} has no pid");
    pid as i32
}

/// The shim of a container's process: its parent, checked to be a `berth-shim`.
fn shim_of(pid: i32) -> i32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let parent = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no PPid for {pid}"));
    let comm = std::fs::read_to_string(format!("/proc/{parent}/comm")).unwrap_or_default();
    assert_eq!(
        comm.trim(),
        "berth-shim",
        "the parent {parent} of {pid} is no shim"
    );
    parent
}

fn kill(pid: i32) {
    berth_e2e::cleanup::send_signal(pid, libc::SIGKILL);
}

#[test]
fn lifecycle_policies_on_failure_restarts_exactly_its_maximum() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let since = unix_now();
    d.berth(&[
        "run",
        "-d",
        "--name",
        "of",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "exit 3",
    ])
    .ok("run --restart on-failure:2");
    // Back-off 100 ms, then 200 ms.
    let gave_up = |d: &TestDaemon| {
        let c = d.inspect_container("of");
        c["State"]["Status"] == "exited" && c["RestartCount"] == 2
    };
    wait_until(
        Duration::from_secs(10),
        "of to give up after two restarts",
        || gave_up(&d),
    );
    // Longer than a third back-off (400 ms) would be: it stays exited.
    thread::sleep(Duration::from_secs(1));
    let c = d.inspect_container("of");
    assert_eq!(c["State"]["Status"], "exited", "{c}");
    assert_eq!(c["RestartCount"], 2, "{c}");
    assert_eq!(c["State"]["ExitCode"], 3, "{c}");
    assert_eq!(c["State"]["Restarting"], false, "{c}");
    assert_eq!(c["State"]["Running"], false, "{c}");
    let seen = actions(&d, &since, "of");
    assert_eq!(count(&seen, "start"), 3, "{seen:?}");
    assert_eq!(count(&seen, "die"), 3, "{seen:?}");
    // moby's policy restarts are die then start, never a `restart` event.
    assert_eq!(count(&seen, "restart"), 0, "{seen:?}");
    let lifecycle: Vec<&str> = seen
        .iter()
        .map(String::as_str)
        .filter(|a| ["create", "start", "die"].contains(a))
        .collect();
    assert_eq!(
        lifecycle,
        ["create", "start", "die", "start", "die", "start", "die"]
    );

    // A user's start begins the count again (moby's ResetRestartManager).
    let since = unix_now();
    d.berth(&["start", "of"]).ok("start of");
    wait_until(Duration::from_secs(10), "of to give up again", || {
        gave_up(&d)
    });
    assert_eq!(count(&actions(&d, &since, "of"), "start"), 3);

    // A clean exit is no failure.
    d.berth(&[
        "run",
        "-d",
        "--name",
        "clean",
        "--restart",
        "on-failure",
        "busybox",
        "true",
    ])
    .ok("run --restart on-failure true");
    wait_for_status(&d, "clean", "exited", Duration::from_secs(10));
    thread::sleep(Duration::from_millis(500));
    let c = d.inspect_container("clean");
    assert_eq!(
        (c["State"]["Status"].as_str(), c["RestartCount"].as_i64()),
        (Some("exited"), Some(0)),
        "{c}"
    );

    // --rm with a restart policy: refused by the CLI, and by the daemon for API clients.
    let out = d.berth(&["run", "--rm", "--restart", "always", "busybox", "true"]);
    out.expect_failure("run --rm --restart always");
    assert!(
        out.stderr_text()
            .contains("conflicting options: cannot specify both --restart and --rm"),
        "{out:?}"
    );
    let body = br#"{"Image":"busybox","Cmd":["true"],"HostConfig":{"AutoRemove":true,"RestartPolicy":{"Name":"always"}}}"#;
    let r = d.api(
        "POST",
        "/containers/create",
        Some(("application/json", &body[..])),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text()
            .contains("can't create 'AutoRemove' container with restart policy"),
        "{}",
        r.text()
    );

    // The docker CLI's flag and inspect field agree.
    if docker_available() {
        let docker = |args: &[&str]| d.docker(args).expect("docker_available() was checked");
        docker(&[
            "run",
            "-d",
            "--name",
            "dof",
            "--restart",
            "on-failure:1",
            "busybox",
            "sh",
            "-c",
            "exit 1",
        ])
        .ok("docker run --restart on-failure:1");
        wait_until(Duration::from_secs(10), "dof to give up", || {
            docker(&[
                "inspect",
                "-f",
                "{{.State.Status}} {{.RestartCount}} {{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}}",
                "dof",
            ])
            .ok("docker inspect dof")
                == "exited 1 on-failure:1"
        });
    }
}

#[test]
fn lifecycle_policies_always_restarts_until_stopped_and_after_a_daemon_crash() {
    let d = daemon_or_skip!(daemon_with_busybox());
    // A process that keeps failing: the back-off grows until the waits are long enough to
    // see the container restarting.
    d.berth(&[
        "run",
        "-d",
        "--name",
        "flap",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "exit 1",
    ])
    .ok("run --restart always (failing)");
    let mut restarting = serde_json::Value::Null;
    wait_until(
        Duration::from_secs(15),
        "flap to wait for a restart",
        || {
            restarting = d.inspect_container("flap");
            restarting["State"]["Status"] == "restarting"
                && restarting["RestartCount"].as_i64() >= Some(4)
        },
    );
    let c = restarting;
    assert_eq!(c["State"]["Restarting"], true, "{c}");
    assert_eq!(
        c["State"]["Running"], true,
        "moby counts restarting as running: {c}"
    );
    assert_eq!(c["State"]["Pid"], 0, "{c}");
    assert_eq!(c["State"]["ExitCode"], 1, "{c}");
    wait_until(
        Duration::from_secs(10),
        "ps to show flap restarting",
        || ps_status(&d, "flap").starts_with("Restarting (1) "),
    );
    // A stop calls the pending restart off: exited for good.
    d.berth(&["stop", "flap"]).ok("stop flap");
    let c = d.inspect_container("flap");
    assert_eq!(c["State"]["Status"], "exited", "{c}");
    let count_after_stop = c["RestartCount"].clone();
    thread::sleep(Duration::from_millis(1800));
    let c = d.inspect_container("flap");
    assert_eq!(c["State"]["Status"], "exited", "{c}");
    assert_eq!(c["RestartCount"], count_after_stop, "{c}");

    // A process killed behind the daemon's back comes back.
    d.berth(&[
        "run",
        "-d",
        "--name",
        "always",
        "--restart",
        "always",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok("run --restart always");
    let first = pid_of(&d, "always");
    kill(first);
    wait_until(Duration::from_secs(10), "always to be restarted", || {
        let c = d.inspect_container("always");
        c["State"]["Status"] == "running" && c["State"]["Pid"].as_i64() != Some(i64::from(first))
    });
    assert_eq!(d.inspect_container("always")["RestartCount"], 1);

    // The daemon crashes; meanwhile the process dies (its shim records the exit), and the
    // other container loses its shim too, as after a reboot.
    d.berth(&[
        "run",
        "-d",
        "--name",
        "reboot",
        "--restart",
        "always",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok("run --restart always (reboot)");
    let (process, rebooted) = (pid_of(&d, "always"), pid_of(&d, "reboot"));
    let shim = shim_of(rebooted);
    d.kill_daemon();
    kill(process);
    kill(shim);
    kill(rebooted);
    d.start_daemon();
    for (name, old) in [("always", process), ("reboot", rebooted)] {
        wait_until(
            Duration::from_secs(10),
            &format!("{name} to run again after the daemon restart"),
            || {
                let c = d.inspect_container(name);
                c["State"]["Status"] == "running"
                    && c["State"]["Pid"].as_i64() != Some(i64::from(old))
            },
        );
    }

    // `stop` stops it for good while the daemon runs...
    d.berth(&["stop", "-t", "1", "always"]).ok("stop always");
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        d.inspect_container("always")["State"]["Status"],
        "exited",
        "always must stay stopped"
    );
    // ...and, as docker documents for `always`, it comes back when the daemon starts again.
    d.restart();
    wait_for_status(&d, "always", "running", Duration::from_secs(10));
    // `kill` also stops it for good.
    d.berth(&["kill", "always"]).ok("kill always");
    wait_for_status(&d, "always", "exited", Duration::from_secs(10));
    thread::sleep(Duration::from_millis(500));
    assert_eq!(d.inspect_container("always")["State"]["Status"], "exited");
    // `kill` and `rm -f` of a restarting container call its restart off. (`flap` came back
    // at the daemon start too: `always`.)
    let flap_restarting = || {
        wait_until(
            Duration::from_secs(10),
            "flap to wait for a restart",
            || d.inspect_container("flap")["State"]["Status"] == "restarting",
        );
    };
    flap_restarting();
    d.berth(&["kill", "flap"]).ok("kill a restarting container");
    // (Had the restart just happened, the kill met a running process.)
    wait_for_status(&d, "flap", "exited", Duration::from_secs(10));
    let count_after_kill = d.inspect_container("flap")["RestartCount"].clone();
    thread::sleep(Duration::from_millis(800));
    let c = d.inspect_container("flap");
    assert_eq!(
        (&c["State"]["Status"], &c["RestartCount"]),
        (&serde_json::json!("exited"), &count_after_kill),
        "{c}"
    );
    d.berth(&["start", "flap"]).ok("start flap");
    flap_restarting();
    d.berth(&["rm", "-f", "flap"])
        .ok("rm -f a restarting container");
    let r = d.api("GET", "/containers/flap/json", None);
    assert_eq!(r.status, 404, "{}", r.text());
}

#[test]
fn lifecycle_policies_unless_stopped_respects_the_users_stop() {
    let d = daemon_or_skip!(daemon_with_busybox());
    for name in ["stopped", "kept"] {
        d.berth(&[
            "run",
            "-d",
            "--name",
            name,
            "--restart",
            "unless-stopped",
            "busybox",
            "sleep",
            "1000",
        ])
        .ok("run --restart unless-stopped");
    }
    d.berth(&["stop", "-t", "1", "stopped"]).ok("stop");
    let kept = pid_of(&d, "kept");
    d.kill_daemon();
    kill(kept);
    d.start_daemon();
    wait_until(Duration::from_secs(10), "kept to run again", || {
        let c = d.inspect_container("kept");
        c["State"]["Status"] == "running" && c["State"]["Pid"].as_i64() != Some(i64::from(kept))
    });
    thread::sleep(Duration::from_millis(500));
    let c = d.inspect_container("stopped");
    assert_eq!(c["State"]["Status"], "exited", "{c}");

    // `update --restart` changes the policy of a container as it runs.
    d.berth(&["update", "--restart", "no", "kept"])
        .ok("update --restart no");
    assert_eq!(
        d.inspect_container("kept")["HostConfig"]["RestartPolicy"]["Name"],
        "no"
    );
    kill(pid_of(&d, "kept"));
    wait_for_status(&d, "kept", "exited", Duration::from_secs(10));
    thread::sleep(Duration::from_millis(500));
    assert_eq!(d.inspect_container("kept")["State"]["Status"], "exited");
    d.berth(&["update", "--restart", "always", "stopped"])
        .ok("update --restart always");
    d.berth(&["start", "stopped"]).ok("start stopped");
    let first = pid_of(&d, "stopped");
    kill(first);
    wait_until(
        Duration::from_secs(10),
        "the updated policy to restart",
        || {
            let c = d.inspect_container("stopped");
            c["State"]["Status"] == "running"
                && c["State"]["Pid"].as_i64() != Some(i64::from(first))
        },
    );
}

#[test]
fn lifecycle_policies_healthcheck_goes_starting_healthy_unhealthy() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let since = unix_now();
    // Failures do not count while starting within the start period, so it stays starting
    // until the file exists.
    d.berth(&[
        "run",
        "-d",
        "--name",
        "hc",
        "--health-cmd",
        "test -f /tmp/ok",
        "--health-interval",
        "200ms",
        "--health-start-period",
        "60s",
        "--health-start-interval",
        "100ms",
        "--health-retries",
        "2",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok("run with a healthcheck");
    d.berth(&["run", "-d", "--name", "plain", "busybox", "sleep", "1000"])
        .ok("run without a healthcheck");
    let health = |d: &TestDaemon| d.inspect_container("hc")["State"]["Health"].clone();
    wait_until(
        Duration::from_secs(10),
        "failing probes while starting",
        || health(&d)["Log"].as_array().is_some_and(|l| l.len() >= 2),
    );
    let h = health(&d);
    assert_eq!(h["Status"], "starting", "{h}");
    assert_eq!(h["FailingStreak"], 0, "{h}");
    assert_eq!(h["Log"][0]["ExitCode"], 1, "{h}");
    assert!(
        h["Log"][0]["Start"]
            .as_str()
            .is_some_and(|s| s.contains('T')),
        "{h}"
    );
    let status = ps_status(&d, "hc");
    assert!(status.ends_with("(health: starting)"), "{status}");
    assert!(
        d.inspect_container("plain")["State"]["Health"].is_null(),
        "no healthcheck, no Health"
    );

    d.berth(&["exec", "hc", "touch", "/tmp/ok"])
        .ok("exec touch");
    wait_until(Duration::from_secs(10), "hc to be healthy", || {
        health(&d)["Status"] == "healthy"
    });
    let status = ps_status(&d, "hc");
    assert!(
        status.starts_with("Up ") && status.ends_with("(healthy)"),
        "{status}"
    );
    let filtered = |value: &str| {
        lines(
            &d.berth(&[
                "ps",
                "--filter",
                &format!("health={value}"),
                "--format",
                "{{.Names}}",
            ])
            .ok("ps --filter health"),
        )
    };
    assert_eq!(filtered("healthy"), ["hc"]);
    assert_eq!(filtered("none"), ["plain"]);
    assert!(filtered("unhealthy").is_empty());
    let bad = d.berth(&["ps", "--filter", "health=fine"]);
    bad.expect_failure("ps --filter health=fine");
    assert!(
        bad.stderr_text().contains("invalid filter 'health=fine'"),
        "{bad:?}"
    );
    if docker_available() {
        let status = d
            .docker(&["inspect", "-f", "{{.State.Health.Status}}", "hc"])
            .unwrap()
            .ok("docker inspect health");
        assert_eq!(status, "healthy");
        let listed = d
            .docker(&[
                "ps",
                "--filter",
                "health=healthy",
                "--format",
                "{{.Names}} {{.Status}}",
            ])
            .unwrap()
            .ok("docker ps --filter health=healthy");
        assert!(
            listed.starts_with("hc Up ") && listed.ends_with("(healthy)"),
            "{listed}"
        );
    }

    // Once healthy the start period forgives nothing: two failures make it unhealthy.
    d.berth(&["exec", "hc", "rm", "/tmp/ok"]).ok("exec rm");
    wait_until(Duration::from_secs(10), "hc to be unhealthy", || {
        health(&d)["Status"] == "unhealthy"
    });
    let h = health(&d);
    assert!(h["FailingStreak"].as_i64() >= Some(2), "{h}");
    assert!(h["Log"].as_array().is_some_and(|l| l.len() <= 5), "{h}");
    assert!(ps_status(&d, "hc").ends_with("(unhealthy)"));
    assert_eq!(filtered("unhealthy"), ["hc"]);
    if docker_available() {
        let status = d
            .docker(&["inspect", "-f", "{{.State.Health.Status}}", "hc"])
            .unwrap()
            .ok("docker inspect health");
        assert_eq!(status, "unhealthy");
    }
    let seen = actions(&d, &since, "hc");
    assert_eq!(count(&seen, "health_status: healthy"), 1, "{seen:?}");
    assert_eq!(count(&seen, "health_status: unhealthy"), 1, "{seen:?}");
    assert!(
        seen.iter()
            .any(|a| a == "exec_create: /bin/sh -c test -f /tmp/ok"),
        "{seen:?}"
    );
    assert!(seen.iter().any(|a| a == "exec_die"), "{seen:?}");
    // moby's prefix match of `event=health_status`.
    let filters = r#"{"event":["health_status"]}"#;
    let r = d.api(
        "GET",
        &format!(
            "/events?since={since}&until={}&filters={}",
            unix_now(),
            berth_e2e::http::encode_query(filters)
        ),
        None,
    );
    assert_eq!(lines(&r.text()).len(), 2, "{}", r.text());

    // A stop ends the monitor (unhealthy, kept for inspect); a start begins again.
    d.berth(&["exec", "hc", "touch", "/tmp/ok"])
        .ok("exec touch");
    wait_until(Duration::from_secs(10), "hc to be healthy again", || {
        health(&d)["Status"] == "healthy"
    });
    d.berth(&["stop", "-t", "1", "hc"]).ok("stop hc");
    assert_eq!(health(&d)["Status"], "unhealthy");
    d.berth(&["start", "hc"]).ok("start hc");
    assert_eq!(health(&d)["Status"], "starting");
    // Health survives a daemon restart in the record.
    d.berth(&["stop", "-t", "1", "hc"]).ok("stop hc");
    d.restart();
    let h = health(&d);
    assert_eq!(h["Status"], "unhealthy", "{h}");
    assert!(!h["Log"].as_array().unwrap().is_empty(), "{h}");
}

#[test]
fn lifecycle_policies_healthcheck_timeouts_and_image_checks() {
    let d = daemon_or_skip!(daemon_with_busybox());
    // A probe that outlives its timeout fails with moby's message and is killed.
    d.berth(&[
        "run",
        "-d",
        "--name",
        "slow",
        "--health-cmd",
        "sleep 7",
        "--health-interval",
        "100ms",
        "--health-timeout",
        "100ms",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok("run with a slow probe");
    wait_until(Duration::from_secs(10), "slow to be unhealthy", || {
        d.inspect_container("slow")["State"]["Health"]["Status"] == "unhealthy"
    });
    let h = d.inspect_container("slow")["State"]["Health"].clone();
    assert_eq!(h["Log"][0]["ExitCode"], -1, "{h}");
    assert_eq!(
        h["Log"][0]["Output"], "Health check exceeded timeout (100ms)",
        "{h}"
    );
    thread::sleep(Duration::from_secs(1));
    // Unkilled, some ten probes would still sleep now.
    let processes = d
        .berth(&["exec", "slow", "ps", "-o", "args"])
        .ok("ps in slow");
    let probes = processes.lines().filter(|l| l.contains("sleep 7")).count();
    assert!(probes <= 2, "{probes} probes still run:\n{processes}");

    // An image's HEALTHCHECK (shell form: CMD-SHELL) applies; the request overrides it
    // field by field, and
    // --no-healthcheck turns it off.
    d.berth(&["create", "--name", "base", "busybox", "true"])
        .ok("create base");
    d.berth(&[
        "commit",
        "-c",
        "HEALTHCHECK --interval=100ms --retries=1 CMD test -f /etc/passwd",
        "base",
        "checked:1",
    ])
    .ok("commit with a HEALTHCHECK");
    d.berth(&["run", "-d", "--name", "img", "checked:1", "sleep", "1000"])
        .ok("run the image's check");
    wait_until(Duration::from_secs(10), "the image's check to pass", || {
        d.inspect_container("img")["State"]["Health"]["Status"] == "healthy"
    });
    let probe = d.inspect_container("img")["Config"]["Healthcheck"].clone();
    assert_eq!(
        probe["Test"],
        serde_json::json!(["CMD-SHELL", "test -f /etc/passwd"]),
        "{probe}"
    );
    d.berth(&[
        "run",
        "-d",
        "--name",
        "over",
        "--health-retries",
        "9",
        "checked:1",
        "sleep",
        "1000",
    ])
    .ok("run with --health-retries over the image's check");
    let probe = d.inspect_container("over")["Config"]["Healthcheck"].clone();
    assert_eq!(probe["Retries"], 9, "{probe}");
    assert_eq!(probe["Interval"], 100_000_000, "{probe}");
    assert_eq!(probe["Test"][0], "CMD-SHELL", "{probe}");
    d.berth(&[
        "run",
        "-d",
        "--name",
        "off",
        "--no-healthcheck",
        "checked:1",
        "sleep",
        "1000",
    ])
    .ok("run --no-healthcheck");
    thread::sleep(Duration::from_millis(400));
    assert!(d.inspect_container("off")["State"]["Health"].is_null());
    let status = ps_status(&d, "off");
    assert!(!status.contains("health"), "{status}");
}
