//! Daemon crashes and restarts: containers outlive the daemon, exits that happen while it is
//! down are recorded with their real code, and removal leaves nothing behind.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use berth_e2e::cleanup::{cgroups_named_after, ids_named_under, mounts_under, pid_gone};
use berth_e2e::{OutputExt, TestDaemon, wait_until};

use crate::util::{daemon_or_skip, daemon_with_busybox, inspect_field, wait_for_status};

/// Pids of processes whose command line mentions `needle` (read-only scan of /proc).
fn processes_mentioning(needle: &str) -> Vec<(i32, String)> {
    let own = std::process::id() as i32;
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|&pid| pid != own && !pid_gone(pid))
        .filter_map(|pid| {
            let cmd = berth_e2e::cleanup::cmdline(pid);
            cmd.contains(needle).then_some((pid, cmd))
        })
        .collect()
}

#[test]
fn containers_survive_daemon_restart_and_crash() {
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&[
        "run", "-d", "--name", "survivor", "busybox", "sleep", "1000",
    ])
    .ok("run survivor");
    let pid = d.inspect_container("survivor")["State"]["Pid"]
        .as_i64()
        .expect("State.Pid") as i32;
    assert!(!pid_gone(pid));

    d.restart();
    assert!(
        !pid_gone(pid),
        "a graceful daemon restart does not stop containers"
    );
    assert_eq!(inspect_field(&d, "survivor", "{{.State.Running}}"), "true");

    d.crash_and_restart();
    assert!(!pid_gone(pid), "a daemon crash does not stop containers");
    let ps = d.berth(&["ps"]).ok("ps after crash");
    assert!(
        ps.lines()
            .any(|l| l.contains("survivor") && l.contains("Up")),
        "survivor is Up after the crash:\n{ps}"
    );
    assert_eq!(
        inspect_field(&d, "survivor", "{{.State.Pid}}"),
        pid.to_string(),
        "the same process is still running"
    );

    // The recovered container is fully controllable.
    d.berth(&["stop", "-t", "1", "survivor"])
        .ok("stop after crash");
    wait_until(
        Duration::from_secs(10),
        "the container process to exit",
        || pid_gone(pid),
    );
    let code = inspect_field(&d, "survivor", "{{.State.ExitCode}}");
    assert!(
        code == "137" || code == "143",
        "exit code after stop: {code}"
    );
    d.berth(&["start", "survivor"])
        .ok("start again after crash");
    assert_eq!(inspect_field(&d, "survivor", "{{.State.Running}}"), "true");
    d.berth(&["rm", "-f", "survivor"]).ok("rm -f");
    assert_eq!(
        d.berth(&["run", "--rm", "busybox", "echo", "still works"])
            .ok("run after crash"),
        "still works"
    );
}

#[test]
fn exit_while_daemon_is_down_is_recorded() {
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&[
        "run",
        "-d",
        "--name",
        "quitter",
        "busybox",
        "sh",
        "-c",
        "sleep 2; exit 7",
    ])
    .ok("run quitter");
    d.berth(&["run", "-d", "--name", "steady", "busybox", "sleep", "1000"])
        .ok("run steady");
    let pid = d.inspect_container("quitter")["State"]["Pid"]
        .as_i64()
        .expect("State.Pid") as i32;
    d.kill_daemon();
    wait_until(
        Duration::from_secs(20),
        "quitter to exit while the daemon is down",
        || pid_gone(pid),
    );
    d.start_daemon();

    wait_for_status(&d, "quitter", "exited", Duration::from_secs(15));
    assert_eq!(
        inspect_field(&d, "quitter", "{{.State.ExitCode}}"),
        "7",
        "the real exit code is recorded"
    );
    let ps = d.berth(&["ps", "-a"]).ok("ps -a");
    assert!(
        ps.lines()
            .any(|l| l.contains("quitter") && l.contains("Exited (7)")),
        "{ps}"
    );
    assert!(
        ps.lines().any(|l| l.contains("steady") && l.contains("Up")),
        "{ps}"
    );
    let logs_ok = d.berth(&["logs", "quitter"]);
    logs_ok.expect_code(
        0,
        "logs of a container that exited while the daemon was down",
    );
    assert_eq!(d.berth(&["wait", "quitter"]).ok("wait"), "7");
}

#[test]
fn rm_force_leaves_no_mounts_cgroups_or_processes() {
    let d = daemon_or_skip!(daemon_with_busybox());
    // Mounts the daemon keeps for itself (not per container) are the baseline.
    let baseline: BTreeSet<_> = mounts_under(d.root())
        .into_iter()
        .chain(mounts_under(d.exec_root()))
        .collect();
    let id = d
        .berth(&[
            "run", "-d", "--name", "gone", "--memory", "64m", "busybox", "sleep", "1000",
        ])
        .ok("run gone");
    let pid = d.inspect_container("gone")["State"]["Pid"]
        .as_i64()
        .expect("State.Pid") as i32;
    let ids: BTreeSet<String> = [id.clone()].into();
    let strictly_below = |dir: &Path| {
        mounts_under(dir)
            .into_iter()
            .filter(|m| m != dir)
            .collect::<Vec<_>>()
    };
    assert!(
        !cgroups_named_after(&ids).is_empty(),
        "a running container has a cgroup named after its id"
    );
    let helpers = processes_mentioning(&id);

    d.berth(&["rm", "-f", "gone"]).ok("rm -f");

    let mut last = String::new();
    let settled = (0..100).any(|_| {
        let mounts: Vec<_> = strictly_below(d.root())
            .into_iter()
            .chain(strictly_below(d.exec_root()))
            .filter(|m| !baseline.contains(m))
            .collect();
        let groups = cgroups_named_after(&ids);
        let procs = processes_mentioning(&id);
        let files: Vec<_> = ids_named_under(d.root(), 6)
            .into_iter()
            .chain(ids_named_under(d.exec_root(), 6))
            .filter(|found| *found == id)
            .collect();
        last = format!(
            "mounts {mounts:?}\ncgroups {groups:?}\nprocesses {procs:?}\nfiles named after the id {files:?}\ncontainer pid alive {}",
            !pid_gone(pid)
        );
        let clean = mounts.is_empty() && groups.is_empty() && procs.is_empty() && files.is_empty() && pid_gone(pid);
        if !clean {
            std::thread::sleep(Duration::from_millis(50));
        }
        clean
    });
    assert!(
        settled,
        "rm -f left things behind (helpers before rm: {helpers:?}):\n{last}"
    );
}

/// Unix socket paths are limited to 107 bytes. A 65-byte exec root works with dockerd (its own
/// sockets there have short names; containerd keeps shim sockets under /run/containerd/s/<hash>),
/// so berth must not put a socket at `<exec-root>/shims/<64-hex id>/shim.sock` (81 bytes more).
#[test]
fn long_data_and_exec_root_paths_work() {
    let long = "long-exec-root-for-the-socket-path-limit";
    let d = daemon_or_skip!(TestDaemon::start_with_dirs(
        &format!("{long}/root"),
        &format!("{long}/run")
    ));
    assert!(
        d.exec_root().as_os_str().len() > 60,
        "the exec root must be long for this test"
    );
    d.busybox_image();
    assert_eq!(
        d.berth(&["run", "--rm", "busybox", "echo", "long paths"])
            .ok("run with a long exec root"),
        "long paths"
    );
    d.berth(&["run", "-d", "--name", "lp", "busybox", "sleep", "1000"])
        .ok("run -d with a long exec root");
    d.crash_and_restart();
    assert_eq!(
        inspect_field(&d, "lp", "{{.State.Running}}"),
        "true",
        "recovery reconnects through the long path"
    );
    d.berth(&["stop", "-t", "1", "lp"]).ok("stop after restart");
}
