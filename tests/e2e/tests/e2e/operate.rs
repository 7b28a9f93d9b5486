//! Operating running containers: `cp` both ways (running and stopped containers, volumes),
//! `top`, `pause`/`unpause`, `stats` and `update`, through berth and the real docker CLI.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_e2e::{OutputExt, TestDaemon, docker_available, wait_until};

use crate::util::{daemon_or_skip, daemon_with_busybox, inspect_field, wait_for_status};

/// A local tree to copy: `src/a.txt`, `src/sub/b.txt` and `src/link -> a.txt`.
fn local_tree(d: &TestDaemon) -> PathBuf {
    let base = d.scratch().join("local");
    let src = base.join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a.txt"), "alpha\n").unwrap();
    fs::write(src.join("sub/b.txt"), "beta\n").unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    base
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The names in a tar stream, with GNU `tar` (which reads what docker's clients read).
fn tar_names(tar: &[u8]) -> Vec<String> {
    let mut cmd = std::process::Command::new("tar");
    cmd.arg("-t");
    let out = berth_e2e::process::run_with_timeout(cmd, Some(tar), Duration::from_secs(30));
    out.ok("tar -t").lines().map(str::to_string).collect()
}

/// A file of the container's cgroup for `controller` (v1), or of its unified cgroup (v2).
fn cgroup_file(pid: &str, controller: &str, v1_file: &str, v2_file: &str) -> PathBuf {
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        if controllers.split(',').any(|c| c == controller) {
            return Path::new(berth_e2e::cleanup::CGROUP_ROOT)
                .join(controller)
                .join(path.trim_start_matches('/'))
                .join(v1_file);
        }
    }
    let unified = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("no cgroup v2 line");
    Path::new(berth_e2e::cleanup::CGROUP_ROOT)
        .join(unified.trim_start_matches('/'))
        .join(v2_file)
}

#[test]
fn operate_cp_with_berth_on_running_and_stopped_containers() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let local = local_tree(&d);
    let src = local.join("src");
    d.berth(&[
        "run",
        "-d",
        "--name",
        "cpr",
        "-v",
        "cpvol:/data",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok("run -d");

    // A file into a directory, a directory under a new name, a directory's contents.
    d.berth(&["cp", path_str(&src.join("a.txt")), "cpr:/tmp/"])
        .ok("cp file into /tmp/");
    d.berth(&["cp", path_str(&src), "cpr:/tmp/dir"])
        .ok("cp dir");
    d.berth(&["cp", &format!("{}/.", path_str(&src)), "cpr:/tmp/contents"])
        .ok("cp dir/.");
    let listing = d
        .berth(&[
            "exec",
            "cpr",
            "sh",
            "-c",
            "cat /tmp/a.txt /tmp/dir/sub/b.txt; readlink /tmp/dir/link; ls /tmp/contents",
        ])
        .ok("exec to check the copies");
    assert_eq!(
        listing.lines().collect::<Vec<_>>(),
        ["alpha", "beta", "a.txt", "a.txt", "link", "sub"]
    );

    // And back: a directory, a single file under a new name, a tar on stdout.
    let back = local.join("back");
    d.berth(&["cp", "cpr:/tmp/dir", path_str(&back)])
        .ok("cp dir out");
    assert_eq!(
        fs::read_to_string(back.join("sub/b.txt")).unwrap(),
        "beta\n"
    );
    assert_eq!(
        fs::read_link(back.join("link")).unwrap(),
        Path::new("a.txt")
    );
    d.berth(&["cp", "cpr:/etc/hostname", path_str(&local.join("hn"))])
        .ok("cp file out");
    let id = inspect_field(&d, "cpr", "{{.Id}}");
    assert_eq!(
        fs::read_to_string(local.join("hn")).unwrap().trim(),
        &id[..12]
    );
    let tar = d.berth(&["cp", "cpr:/tmp/dir", "-"]);
    assert!(tar.status.success(), "cp to stdout: {tar:?}");
    assert_eq!(
        tar_names(&tar.stdout),
        ["dir/", "dir/a.txt", "dir/link", "dir/sub/", "dir/sub/b.txt"]
    );

    // The stat header: std base64 of JSON with a Go FileMode (directory bit set).
    let head = d.api("HEAD", "/containers/cpr/archive?path=/tmp/dir", None);
    assert_eq!(head.status, 200);
    let stat = head
        .header("X-Docker-Container-Path-Stat")
        .expect("path stat header");
    let decoded = base64_decode(stat);
    let stat: serde_json::Value = serde_json::from_slice(&decoded).unwrap();
    assert_eq!(stat["name"], "dir");
    assert_ne!(stat["mode"].as_u64().unwrap() & (1 << 31), 0, "{stat}");
    assert_eq!(
        d.api("HEAD", "/containers/cpr/archive?path=/nope", None)
            .status,
        404
    );
    let missing = d.berth(&["cp", "cpr:/nope", path_str(&local.join("x"))]);
    missing.expect_failure("cp of a missing path");
    assert!(
        missing
            .stderr_text()
            .contains("Could not find the file /nope in container cpr"),
        "{missing:?}"
    );

    // Into the volume while running; out of it, and into it, once stopped.
    d.berth(&["cp", path_str(&src.join("a.txt")), "cpr:/data/running.txt"])
        .ok("cp into the volume");
    d.berth(&["stop", "-t", "0", "cpr"]).ok("stop");
    d.berth(&[
        "cp",
        "cpr:/data/running.txt",
        path_str(&local.join("vol.txt")),
    ])
    .ok("cp out of a stopped container's volume");
    assert_eq!(
        fs::read_to_string(local.join("vol.txt")).unwrap(),
        "alpha\n"
    );
    // The generated /etc files are part of the view, as in moby.
    let hosts = d.berth(&["cp", "cpr:/etc/hosts", "-"]);
    assert!(
        hosts.status.success(),
        "cp /etc/hosts of a stopped container: {hosts:?}"
    );
    assert_eq!(tar_names(&hosts.stdout), ["hosts"]);
    assert!(
        String::from_utf8_lossy(&hosts.stdout).contains(&id[..12]),
        "the hosts file names the container"
    );
    d.berth(&["cp", path_str(&src.join("sub")), "cpr:/data/stopped"])
        .ok("cp into a stopped container's volume");
    d.berth(&["cp", path_str(&src.join("a.txt")), "cpr:/root/layer.txt"])
        .ok("cp into a stopped container's layer");
    d.berth(&["start", "cpr"]).ok("start again");
    let seen = d
        .berth(&[
            "exec",
            "cpr",
            "cat",
            "/data/stopped/b.txt",
            "/root/layer.txt",
        ])
        .ok("files copied while stopped");
    assert_eq!(seen, "beta\nalpha");
    // Nothing of the stopped copies stays mounted on the host.
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(path_str(&d.exec_root().join("cp-"))),
        "a copy root stayed mounted"
    );
}

fn base64_decode(text: &str) -> Vec<u8> {
    let mut cmd = std::process::Command::new("base64");
    cmd.arg("-d");
    berth_e2e::process::run_with_timeout(cmd, Some(text.as_bytes()), Duration::from_secs(10)).stdout
}

#[test]
fn operate_cp_with_the_docker_cli() {
    if !docker_available() {
        return;
    }
    let d = daemon_or_skip!(daemon_with_busybox());
    let local = local_tree(&d);
    let src = local.join("src");
    let docker = |args: &[&str]| d.docker(args).expect("docker_available() was checked");
    d.berth(&["run", "-d", "--name", "dcp", "busybox", "sleep", "1000"])
        .ok("run -d");
    docker(&["cp", path_str(&src), "dcp:/tmp/"]).ok("docker cp dir in");
    docker(&["cp", path_str(&src.join("a.txt")), "dcp:/tmp/renamed.txt"])
        .ok("docker cp file to a new name");
    let seen = d
        .berth(&[
            "exec",
            "dcp",
            "cat",
            "/tmp/src/sub/b.txt",
            "/tmp/renamed.txt",
        ])
        .ok("check");
    assert_eq!(seen, "beta\nalpha");
    let out = local.join("out");
    fs::create_dir_all(&out).unwrap();
    docker(&["cp", "dcp:/tmp/src", path_str(&out)]).ok("docker cp dir out");
    assert_eq!(
        fs::read_to_string(out.join("src/a.txt")).unwrap(),
        "alpha\n"
    );
    docker(&["cp", "dcp:/tmp/src/.", path_str(&out.join("flat"))]).ok("docker cp dir/. out");
    assert!(out.join("flat/sub/b.txt").is_file());
    let missing = docker(&["cp", "dcp:/nope", path_str(&out)]);
    missing.expect_failure("docker cp of a missing file");
    assert!(
        missing
            .stderr_text()
            .contains("Could not find the file /nope"),
        "{missing:?}"
    );

    d.berth(&["stop", "-t", "0", "dcp"]).ok("stop");
    docker(&["cp", path_str(&src.join("a.txt")), "dcp:/tmp/while-stopped"])
        .ok("docker cp into a stopped container");
    docker(&["cp", "dcp:/tmp/while-stopped", path_str(&out.join("ws"))])
        .ok("docker cp out of a stopped container");
    assert_eq!(fs::read_to_string(out.join("ws")).unwrap(), "alpha\n");
    // A directory cannot replace a file (docker's own check, before any request).
    docker(&["cp", path_str(&src), "dcp:/tmp/while-stopped"])
        .expect_failure("a directory over a file");
}

#[test]
fn operate_top_shows_the_containers_processes() {
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&["run", "-d", "--name", "topc", "busybox", "sleep", "4242"])
        .ok("run -d");
    let pid = inspect_field(&d, "topc", "{{.State.Pid}}");
    let top = d.berth(&["top", "topc"]).ok("top");
    let lines: Vec<&str> = top.lines().collect();
    assert!(lines[0].starts_with("UID"), "{top}");
    assert!(
        lines[0].contains("PID") && lines[0].contains("CMD"),
        "{top}"
    );
    assert_eq!(lines.len(), 2, "only the container's process: {top}");
    assert!(
        lines[1].contains("sleep 4242") && lines[1].contains(&pid),
        "{top}"
    );
    let custom = d.berth(&["top", "topc", "-o", "pid,comm"]).ok("top -o");
    assert_eq!(
        custom
            .lines()
            .map(str::split_whitespace)
            .map(Iterator::collect::<Vec<_>>)
            .collect::<Vec<_>>(),
        [vec!["PID", "COMMAND"], vec![pid.as_str(), "sleep"]]
    );
    // An exec'd process joins the list.
    d.berth(&["exec", "-d", "topc", "sleep", "4343"])
        .ok("exec -d");
    wait_until(Duration::from_secs(10), "the exec in top", || {
        d.berth(&["top", "topc"])
            .stdout_text()
            .contains("sleep 4343")
    });
    if let Some(out) = d.docker(&["top", "topc"]) {
        let text = out.ok("docker top");
        assert!(
            text.contains("sleep 4242") && text.contains("sleep 4343"),
            "{text}"
        );
    }
    d.berth(&["stop", "-t", "0", "topc"]).ok("stop");
    let stopped = d.berth(&["top", "topc"]);
    stopped.expect_failure("top of a stopped container");
    assert!(
        stopped.stderr_text().contains("is not running"),
        "{stopped:?}"
    );
}

/// The counter a container writes to /tmp/n every 100 ms.
fn counter(d: &TestDaemon, name: &str) -> u64 {
    let out = d.berth(&["cp", &format!("{name}:/tmp/n"), "-"]);
    assert!(out.status.success(), "cp the counter: {out:?}");
    // The tar holds one small file: its text sits after the 512-byte header.
    let body = &out.stdout[512..1024];
    String::from_utf8_lossy(body)
        .trim_matches(char::from(0))
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn operate_pause_freezes_and_unpause_resumes() {
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&[
        "run",
        "-d",
        "--name",
        "pz",
        "busybox",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.1; done",
    ])
    .ok("run -d");
    wait_until(Duration::from_secs(10), "the counter to start", || {
        counter(&d, "pz") > 2
    });
    assert_eq!(d.berth(&["pause", "pz"]).ok("pause"), "pz");
    assert_eq!(inspect_field(&d, "pz", "{{.State.Status}}"), "paused");
    assert_eq!(
        inspect_field(&d, "pz", "{{.State.Paused}} {{.State.Running}}"),
        "true true"
    );
    let ps = d.berth(&["ps", "--format", "{{.Status}}"]).ok("ps");
    assert!(ps.ends_with("(Paused)"), "{ps}");
    let frozen = counter(&d, "pz");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(counter(&d, "pz"), frozen, "the counter moved while paused");
    let exec = d.berth(&["exec", "pz", "true"]);
    exec.expect_failure("exec into a paused container");
    assert!(
        exec.stderr_text()
            .contains("Container pz is paused, unpause the container before exec"),
        "{exec:?}"
    );
    let again = d.berth(&["pause", "pz"]);
    again.expect_failure("pause twice");
    assert!(
        again.stderr_text().contains("is already paused"),
        "{again:?}"
    );

    assert_eq!(d.berth(&["unpause", "pz"]).ok("unpause"), "pz");
    assert_eq!(inspect_field(&d, "pz", "{{.State.Status}}"), "running");
    wait_until(Duration::from_secs(10), "the counter to move again", || {
        counter(&d, "pz") > frozen + 2
    });
    let events = d
        .berth(&[
            "events",
            "--since",
            "0",
            "--until",
            &format!("{}", now_secs() + 1),
            "--filter",
            "container=pz",
            "--format",
            "{{.Action}}",
        ])
        .ok("events");
    let actions: Vec<&str> = events.lines().collect();
    let pause_at = actions
        .iter()
        .position(|a| *a == "pause")
        .expect("pause event");
    let unpause_at = actions
        .iter()
        .position(|a| *a == "unpause")
        .expect("unpause event");
    assert!(pause_at < unpause_at, "{actions:?}");

    // A paused container can still be stopped (and killed): the signal is let through.
    d.berth(&["pause", "pz"]).ok("pause before stop");
    d.berth(&["stop", "-t", "5", "pz"])
        .ok("stop a paused container");
    assert_eq!(inspect_field(&d, "pz", "{{.State.Status}}"), "exited");
    d.berth(&["start", "pz"]).ok("start again");
    d.berth(&["pause", "pz"]).ok("pause before kill");
    d.berth(&["kill", "pz"]).ok("kill a paused container");
    wait_for_status(&d, "pz", "exited", Duration::from_secs(10));
    let unpaused = d.berth(&["unpause", "pz"]);
    unpaused.expect_failure("unpause of a stopped container");
    assert!(
        unpaused.stderr_text().contains("is not paused"),
        "{unpaused:?}"
    );

    if docker_available() {
        d.berth(&["start", "pz"]).ok("start for docker");
        let docker = |args: &[&str]| d.docker(args).expect("docker_available() was checked");
        docker(&["pause", "pz"]).ok("docker pause");
        let ps = docker(&["ps", "--format", "{{.Status}}"]).ok("docker ps");
        assert!(ps.ends_with("(Paused)"), "{ps}");
        let exec = docker(&["exec", "pz", "true"]);
        exec.expect_failure("docker exec into a paused container");
        assert!(exec.stderr_text().contains("is paused"), "{exec:?}");
        docker(&["unpause", "pz"]).ok("docker unpause");
        docker(&["rm", "-f", "pz"]).ok("docker rm -f");
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn operate_stats_reports_the_cgroup_figures() {
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&["run", "-d", "--name", "st", "busybox", "sleep", "1000"])
        .ok("run -d");
    let r = d.api("GET", "/containers/st/stats?stream=0", None);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["name"], "/st");
    assert!(v["memory_stats"]["usage"].as_u64().unwrap() > 0, "{v}");
    assert!(v["memory_stats"]["limit"].as_u64().unwrap() > 0, "{v}");
    assert!(v["pids_stats"]["current"].as_u64().unwrap() >= 1, "{v}");
    assert!(
        v["cpu_stats"]["system_cpu_usage"].as_u64().unwrap() > 0,
        "{v}"
    );
    assert!(v["cpu_stats"]["online_cpus"].as_u64().unwrap() >= 1, "{v}");
    // stream=0 primes precpu_stats with an earlier reading.
    assert!(
        v["precpu_stats"]["system_cpu_usage"].as_u64().unwrap()
            < v["cpu_stats"]["system_cpu_usage"].as_u64().unwrap(),
        "{v}"
    );
    assert!(v["networks"]["eth0"]["rx_bytes"].is_u64(), "{v}");

    let table = d
        .berth(&["stats", "--no-stream", "st"])
        .ok("stats --no-stream");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("CONTAINER ID   NAME      CPU %     MEM USAGE / LIMIT"),
        "{table}"
    );
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(cells[1], "st", "{table}");
    assert!(
        cells[3] != "0B" && !cells[3].starts_with('-'),
        "memory usage: {table}"
    );
    assert_eq!(cells.last(), Some(&"1"), "pids: {table}");
    let json = d
        .berth(&[
            "stats",
            "--no-stream",
            "--no-trunc",
            "--format",
            "{{.ID}} {{.MemUsage}}",
            "st",
        ])
        .ok("stats --format");
    assert_eq!(json.split_whitespace().next().unwrap().len(), 64, "{json}");
    let missing = d.berth(&["stats", "--no-stream", "nosuch"]);
    missing.expect_failure("stats of a missing container");

    if let Some(out) = d.docker(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.MemUsage}} {{.PIDs}}",
    ]) {
        let text = out.ok("docker stats --no-stream");
        let cells: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(cells[0], "st", "{text}");
        assert!(cells[1] != "0B" && cells[1] != "--", "{text}");
        assert_eq!(cells.last(), Some(&"1"), "{text}");
    }
}

#[test]
fn operate_update_writes_the_live_cgroup() {
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&["run", "-d", "--name", "up", "busybox", "sleep", "1000"])
        .ok("run -d");
    let pid = inspect_field(&d, "up", "{{.State.Pid}}");
    // docker's rule: a memory limit above the swap limit needs a new swap limit too.
    let refused = d.berth(&["update", "--memory", "64m", "up"]);
    refused.expect_failure("update --memory alone");
    assert!(
        refused
            .stderr_text()
            .contains("update the memoryswap at the same time"),
        "{refused:?}"
    );
    assert_eq!(
        d.berth(&[
            "update",
            "--memory",
            "64m",
            "--memory-swap",
            "128m",
            "--pids-limit",
            "50",
            "up"
        ])
        .ok("update"),
        "up"
    );
    let limit = cgroup_file(&pid, "memory", "memory.limit_in_bytes", "memory.max");
    assert_eq!(fs::read_to_string(&limit).unwrap().trim(), "67108864");
    let pids = cgroup_file(&pid, "pids", "pids.max", "pids.max");
    assert_eq!(fs::read_to_string(&pids).unwrap().trim(), "50");
    assert_eq!(
        inspect_field(
            &d,
            "up",
            "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.PidsLimit}}"
        ),
        "67108864 134217728 50"
    );
    // The new limit is what stats reports.
    let r = d.api("GET", "/containers/up/stats?stream=0&one-shot=1", None);
    assert_eq!(r.json()["memory_stats"]["limit"], 67_108_864);

    if let Some(out) = d.docker(&["update", "--cpus", "0.5", "--cpu-shares", "512", "up"]) {
        assert_eq!(out.ok("docker update"), "up");
        let quota = cgroup_file(&pid, "cpu", "cpu.cfs_quota_us", "cpu.max");
        let text = fs::read_to_string(&quota).unwrap();
        assert!(
            text.trim() == "50000" || text.starts_with("50000 "),
            "{text}"
        );
        assert_eq!(
            inspect_field(&d, "up", "{{.HostConfig.NanoCpus}}"),
            "500000000"
        );
    }
    // A stopped container keeps the new values for its next start.
    d.berth(&["stop", "-t", "0", "up"]).ok("stop");
    d.berth(&["update", "--memory", "96m", "--memory-swap", "192m", "up"])
        .ok("update a stopped container");
    d.berth(&["start", "up"]).ok("start");
    let pid = inspect_field(&d, "up", "{{.State.Pid}}");
    let limit = cgroup_file(&pid, "memory", "memory.limit_in_bytes", "memory.max");
    assert_eq!(fs::read_to_string(&limit).unwrap().trim(), "100663296");
}
