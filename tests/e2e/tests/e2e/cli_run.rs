//! `berth run`: exit codes, output, and the options that shape the container's process.

use berth_e2e::OutputExt;

use crate::util::{daemon_or_skip, daemon_with_busybox, interfaces, lines};

#[test]
fn run_reports_output_and_exit_codes() {
    let d = daemon_or_skip!(daemon_with_busybox());

    let out = d.berth(&["run", "--rm", "busybox", "echo", "hi"]);
    out.expect_code(0, "run echo hi");
    assert_eq!(out.stdout_text(), "hi\n");

    let out = d.berth(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    out.expect_code(0, "run with stdout and stderr");
    assert_eq!(
        out.stdout_text(),
        "out\n",
        "stdout must carry only the container's stdout"
    );
    assert!(
        out.stderr_text().contains("err"),
        "stderr must carry the container's stderr: {:?}",
        out.stderr_text()
    );

    d.berth(&["run", "--rm", "busybox", "sh", "-c", "exit 3"])
        .expect_code(3, "exit 3 passes through");

    let out = d.berth(&["run", "--rm", "busybox", "nosuchcmd"]);
    out.expect_code(127, "missing executable");
    let all = out.stdout_text() + &out.stderr_text();
    assert!(
        all.contains("executable file not found"),
        "docker's message for a missing executable: {all}"
    );

    let out = d.berth(&["run", "--rm", "busybox", "/etc/passwd"]);
    out.expect_code(126, "non-executable file as command");
    let all = (out.stdout_text() + &out.stderr_text()).to_lowercase();
    assert!(
        all.contains("permission denied"),
        "docker's message for a non-executable file: {all}"
    );

    // --rm containers are gone once the CLI returns (it waits for condition=removed).
    let left = d.berth(&["ps", "-aq"]).ok("ps -aq");
    assert_eq!(left, "", "--rm containers must be removed");
}

#[test]
fn run_environment_user_workdir_hostname() {
    let d = daemon_or_skip!(daemon_with_busybox());
    const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    let out = d
        .berth(&[
            "run",
            "--rm",
            "-e",
            "FOO=bar",
            "-e",
            "EMPTY=",
            "busybox",
            "sh",
            "-c",
            r#"echo "$FOO|${EMPTY-unset}|$HOME|$PATH""#,
        ])
        .ok("run -e");
    assert_eq!(out, format!("bar||/root|{DEFAULT_PATH}"));

    assert_eq!(
        d.berth(&["run", "--rm", "-w", "/tmp", "busybox", "pwd"])
            .ok("run -w /tmp"),
        "/tmp"
    );
    // Docker creates a missing working directory.
    assert_eq!(
        d.berth(&["run", "--rm", "-w", "/new/work/dir", "busybox", "pwd"])
            .ok("run -w missing dir"),
        "/new/work/dir"
    );

    assert_eq!(
        d.berth(&["run", "--rm", "-u", "1000", "busybox", "id", "-u"])
            .ok("run -u 1000"),
        "1000"
    );
    let out = d
        .berth(&[
            "run",
            "--rm",
            "-u",
            "bbuser",
            "busybox",
            "sh",
            "-c",
            "id -u; id -g; echo $HOME",
        ])
        .ok("run -u bbuser");
    assert_eq!(lines(&out), ["1000", "1000", "/home/bbuser"]);
    assert_eq!(
        d.berth(&["run", "--rm", "-u", "nobody", "busybox", "id", "-u"])
            .ok("run -u nobody"),
        "65534"
    );
    let out = d
        .berth(&[
            "run",
            "--rm",
            "-u",
            "4242:4343",
            "busybox",
            "sh",
            "-c",
            "id -u; id -g; echo $HOME",
        ])
        .ok("run -u 4242:4343");
    assert_eq!(
        lines(&out),
        ["4242", "4343", "/"],
        "a uid missing from /etc/passwd gets HOME=/"
    );

    let out = d
        .berth(&[
            "run",
            "--rm",
            "-h",
            "myhost",
            "busybox",
            "sh",
            "-c",
            "hostname; cat /etc/hostname; echo $HOSTNAME",
        ])
        .ok("run -h myhost");
    assert_eq!(lines(&out), ["myhost", "myhost", "myhost"]);

    // Without -h the hostname is the short container id.
    let out = d
        .berth(&["run", "--name", "hn", "busybox", "hostname"])
        .ok("run default hostname");
    let id = d.inspect_container("hn")["Id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(out, id[..12]);
}

#[test]
fn run_read_only_and_tmpfs() {
    let d = daemon_or_skip!(daemon_with_busybox());

    let out = d.berth(&["run", "--rm", "--read-only", "busybox", "touch", "/x"]);
    out.expect_failure("writing to a --read-only rootfs");
    assert!(
        out.stderr_text().contains("Read-only file system"),
        "{}",
        out.stderr_text()
    );

    let out = d
        .berth(&[
            "run",
            "--rm",
            "--read-only",
            "--tmpfs",
            "/scratch",
            "busybox",
            "sh",
            "-c",
            "touch /scratch/x && echo written",
        ])
        .ok("--tmpfs on a read-only rootfs");
    assert_eq!(out, "written");

    let mounts = d
        .berth(&[
            "run",
            "--rm",
            "--tmpfs",
            "/scratch",
            "busybox",
            "cat",
            "/proc/mounts",
        ])
        .ok("--tmpfs");
    assert!(
        mounts
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("/scratch")
                && l.split_whitespace().nth(2) == Some("tmpfs")),
        "/scratch must be a tmpfs:\n{mounts}"
    );

    // A writable rootfs is the default.
    d.berth(&["run", "--rm", "busybox", "touch", "/x"])
        .ok("writing to the default rootfs");
}

#[test]
fn run_cgroup_limits() {
    let d = daemon_or_skip!(daemon_with_busybox());

    let out = d
        .berth(&[
            "run", "--rm", "--memory", "64m", "busybox", "sh", "-c",
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
        ])
        .ok("--memory 64m");
    assert_eq!(out, "67108864");

    let out = d
        .berth(&[
            "run",
            "--rm",
            "--pids-limit",
            "10",
            "busybox",
            "sh",
            "-c",
            "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max",
        ])
        .ok("--pids-limit 10");
    assert_eq!(out, "10");

    d.berth(&[
        "run",
        "-d",
        "--name",
        "limited",
        "--memory",
        "64m",
        "--pids-limit",
        "10",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok("run -d with limits");
    let v = d.inspect_container("limited");
    assert_eq!(v["HostConfig"]["Memory"].as_i64(), Some(67108864));
    assert_eq!(v["HostConfig"]["PidsLimit"].as_i64(), Some(10));
}

#[test]
fn run_cap_drop_and_cap_add() {
    let d = daemon_or_skip!(daemon_with_busybox());

    // The default set keeps CAP_CHOWN; dropping everything removes it.
    d.berth(&["run", "--rm", "busybox", "chown", "1000", "/tmp"])
        .ok("chown with default capabilities");
    d.berth(&[
        "run",
        "--rm",
        "--cap-drop",
        "ALL",
        "busybox",
        "chown",
        "1000",
        "/tmp",
    ])
    .expect_failure("chown without CAP_CHOWN");
    d.berth(&[
        "run",
        "--rm",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "CHOWN",
        "busybox",
        "chown",
        "1000",
        "/tmp",
    ])
    .ok("chown with only CAP_CHOWN");
    // CapEff of a default container is Docker's 14-capability set: 0x00000000a80425fb.
    let status = d
        .berth(&[
            "run",
            "--rm",
            "busybox",
            "grep",
            "CapEff",
            "/proc/self/status",
        ])
        .ok("default CapEff");
    assert!(
        status.ends_with("00000000a80425fb"),
        "default capabilities differ from Docker's: {status}"
    );
    let status = d
        .berth(&[
            "run",
            "--rm",
            "--cap-drop",
            "ALL",
            "busybox",
            "grep",
            "CapEff",
            "/proc/self/status",
        ])
        .ok("CapEff");
    assert!(
        status.ends_with("0000000000000000"),
        "--cap-drop ALL leaves no capability: {status}"
    );
}

/// On this machine root's bounding set lacks CAP_SYS_RESOURCE, so "all capabilities" must be
/// clamped to the bounding set (runc's dockerd fails here with "unable to apply caps").
#[test]
fn run_privileged() {
    let d = daemon_or_skip!(daemon_with_busybox());

    // Mounting needs CAP_SYS_ADMIN, which only --privileged grants here.
    d.berth(&[
        "run", "--rm", "busybox", "mount", "-t", "tmpfs", "none", "/tmp",
    ])
    .expect_failure("mount in an unprivileged container");
    let out = d
        .berth(&[
            "run",
            "--rm",
            "--privileged",
            "busybox",
            "sh",
            "-c",
            "mount -t tmpfs none /tmp && grep ' /tmp tmpfs ' /proc/mounts",
        ])
        .ok("mount in a privileged container");
    assert!(out.contains("/tmp tmpfs"), "{out}");
}

#[test]
fn run_init_is_pid_one() {
    let d = daemon_or_skip!(daemon_with_busybox());

    let out = d
        .berth(&["run", "--rm", "busybox", "sh", "-c", "echo $$"])
        .ok("run without --init");
    assert_eq!(out, "1", "without --init the command is pid 1");

    let out = d
        .berth(&[
            "run",
            "--rm",
            "--init",
            "busybox",
            "sh",
            "-c",
            "echo $$; cat /proc/1/comm",
        ])
        .ok("run --init");
    let got = lines(&out);
    assert_eq!(got.len(), 2, "{out}");
    assert_ne!(got[0], "1", "with --init the command is not pid 1");
    assert_eq!(
        got[1], "docker-init",
        "with --init pid 1 is docker-init, as in Docker"
    );

    // The init forwards the exit code.
    d.berth(&["run", "--rm", "--init", "busybox", "sh", "-c", "exit 9"])
        .expect_code(9, "--init exit code");
}

#[test]
fn run_network_none_and_host() {
    let d = daemon_or_skip!(daemon_with_busybox());

    let out = d
        .berth(&[
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "cat",
            "/proc/net/dev",
        ])
        .ok("--network none");
    assert_eq!(
        interfaces(&out),
        ["lo"],
        "--network none has only the loopback interface"
    );

    // Other tests' bridges and veths come and go meanwhile: leave them out.
    let stable = |names: Vec<String>| -> Vec<String> {
        names
            .into_iter()
            .filter(|n| !["veth", "br-", "be2e"].iter().any(|p| n.starts_with(p)))
            .collect()
    };
    let host = stable(interfaces(
        &std::fs::read_to_string("/proc/net/dev").expect("host /proc/net/dev"),
    ));
    let out = d
        .berth(&[
            "run",
            "--rm",
            "--network",
            "host",
            "busybox",
            "cat",
            "/proc/net/dev",
        ])
        .ok("--network host");
    assert_eq!(
        stable(interfaces(&out)),
        host,
        "--network host sees the host's interfaces"
    );

    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let out = d
        .berth(&["run", "--rm", "--network", "host", "busybox", "hostname"])
        .ok("hostname with --network host");
    assert_eq!(out, host_name, "--network host keeps the host's hostname");
}
