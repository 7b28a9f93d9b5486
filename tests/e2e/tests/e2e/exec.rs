//! `exec`: extra processes in running containers, through berth and the real docker CLI.

use berth_e2e::{OutputExt, docker_available};

use crate::util::{daemon_or_skip, daemon_with_busybox};

#[test]
fn exec_output_exit_codes_and_options() {
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&["run", "-d", "--name", "ex", "busybox", "sleep", "1000"])
        .ok("run -d");

    let out = d.berth(&["exec", "ex", "sh", "-c", "echo out; echo err >&2; exit 5"]);
    out.expect_code(5, "exec exit 5");
    assert_eq!(out.stdout_text().trim(), "out");
    assert_eq!(out.stderr_text().trim(), "err");

    let who = d
        .berth(&[
            "exec",
            "-u",
            "nobody",
            "-w",
            "/tmp",
            "-e",
            "X=1",
            "ex",
            "sh",
            "-c",
            "id -u; pwd; echo $X",
        ])
        .ok("exec with user, workdir, env");
    assert_eq!(who.lines().collect::<Vec<_>>(), ["65534", "/tmp", "1"]);

    let piped = d.berth_with(
        &["exec", "-i", "ex", "cat"],
        Some(b"through stdin\n"),
        std::time::Duration::from_secs(30),
    );
    assert_eq!(piped.ok("exec -i cat").trim(), "through stdin");

    let missing = d.berth(&["exec", "ex", "nosuchcmd"]);
    missing.expect_code(127, "exec of a missing command");
    assert!(
        missing.stdout_text().contains("executable file not found"),
        "{missing:?}"
    );

    d.berth(&["stop", "-t", "0", "ex"]).ok("stop");
    let stopped = d.berth(&["exec", "ex", "true"]);
    stopped.expect_failure("exec into a stopped container");
    assert!(
        stopped.stderr_text().contains("is not running"),
        "{stopped:?}"
    );
}

#[test]
fn docker_cli_exec() {
    if !docker_available() {
        return;
    }
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&["run", "-d", "--name", "dex", "busybox", "sleep", "1000"])
        .ok("run -d");
    let docker = |args: &[&str]| d.docker(args).expect("docker_available() was checked");
    let out = docker(&["exec", "dex", "sh", "-c", "echo from-docker; exit 3"]);
    out.expect_code(3, "docker exec exit code");
    assert_eq!(out.stdout_text().trim(), "from-docker");
    docker(&["exec", "-d", "dex", "touch", "/tmp/detached"]).ok("docker exec -d");
    berth_e2e::wait_until(
        std::time::Duration::from_secs(10),
        "detached exec to run",
        || {
            d.berth(&["exec", "dex", "test", "-e", "/tmp/detached"])
                .status
                .success()
        },
    );
    docker(&["exec", "dex", "nosuch"]).expect_code(127, "docker exec of a missing command");
}
