//! More of operating containers: `commit` and `diff` (berth and the real docker CLI),
//! `system prune`, the detach keys of `run -it` and `attach` driven through a real pseudo
//! terminal, and a container killed by the OOM killer.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_e2e::{OutputExt, TestDaemon, docker_available, wait_until};

use crate::util::{
    build_via_api, daemon_or_skip, daemon_with_busybox, inspect_field, is_id, lines,
    wait_for_status,
};

/// ctrl-p ctrl-q, the default detach keys.
const DETACH: &[u8] = &[0x10, 0x11];

/// A command running on the slave side of a pseudo terminal, as in a user's terminal.
struct PtySession {
    master: File,
    child: Child,
    /// Everything read from the terminal so far.
    seen: Vec<u8>,
}

impl PtySession {
    /// Starts `cmd` as a session leader with the terminal as its controlling terminal and
    /// stdin, stdout and stderr.
    fn spawn(mut cmd: Command) -> PtySession {
        let (mut master, mut slave) = (-1, -1);
        let size = libc::winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty stores two new descriptors in `master` and `slave`; the name and
        // termios pointers may be null, and `size` is only read during the call.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", io::Error::last_os_error());
        // SAFETY: both descriptors were just opened by openpty and nothing else owns them.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        cmd.stdin(Stdio::from(slave.try_clone().expect("dup the pty slave")))
            .stdout(Stdio::from(slave.try_clone().expect("dup the pty slave")))
            .stderr(Stdio::from(slave));
        // SAFETY: between fork and exec the child only calls setsid and ioctl, both
        // async-signal-safe, and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn a command on the pty");
        // `cmd` (and with it the parent's copies of the slave) is dropped here, so reads
        // of the master end once the child is gone.
        PtySession {
            master: File::from(master),
            child,
            seen: Vec::new(),
        }
    }

    /// Types `bytes`.
    fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).expect("write to the pty");
    }

    /// Reads until the output (since the last match) contains `needle`; panics after
    /// `timeout` with what was seen.
    fn read_until(&mut self, needle: &str, timeout: Duration) {
        let start = self.seen.len();
        let deadline = Instant::now() + timeout;
        let found = |seen: &[u8]| String::from_utf8_lossy(&seen[start..]).contains(needle);
        loop {
            if found(&self.seen) {
                return;
            }
            let open = self.read_some(Duration::from_millis(100));
            if found(&self.seen) {
                return;
            }
            if !open || Instant::now() >= deadline {
                panic!(
                    "no {needle:?} on the terminal (closed: {}, waited up to {timeout:?}); seen:\n{}",
                    !open,
                    String::from_utf8_lossy(&self.seen)
                );
            }
        }
    }

    /// Reads what is available within `wait`; false once the terminal is closed.
    fn read_some(&mut self, wait: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd that lives across the call.
        let n = unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as libc::c_int) };
        if n <= 0 {
            return true;
        }
        let mut buf = [0u8; 4096];
        match self.master.read(&mut buf) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.seen.extend_from_slice(&buf[..n]);
                true
            }
        }
    }

    /// Waits for the command to exit, reading its output meanwhile.
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the pty command") {
                // What it wrote last may still be in the terminal; the master reports the
                // end once it is read.
                let drained_by = Instant::now() + Duration::from_secs(2);
                while Instant::now() < drained_by && self.read_some(Duration::from_millis(50)) {}
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the command on the terminal still runs after {timeout:?}; seen:\n{}",
                    String::from_utf8_lossy(&self.seen)
                );
            }
            self.read_some(Duration::from_millis(50));
        }
    }

    /// Whether the command is still running.
    fn running(&mut self) -> bool {
        self.child
            .try_wait()
            .expect("poll the pty command")
            .is_none()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }
}

impl Drop for PtySession {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `berth <args>` against the test daemon, to run on a terminal.
fn berth_command(d: &TestDaemon, args: &[&str]) -> Command {
    let mut cmd = Command::new(d.bin_dir().join("berth"));
    cmd.arg("-H")
        .arg(d.host())
        .arg("--no-autostart")
        .args(args)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .env("DOCKER_CONFIG", d.dir().join("client-config"))
        .env("NO_COLOR", "1");
    cmd
}

/// `docker <args>` against the test daemon, to run on a terminal.
fn docker_command(d: &TestDaemon, args: &[&str]) -> Command {
    let mut cmd = Command::new("docker");
    cmd.args(args)
        .env("DOCKER_HOST", d.host())
        .env("DOCKER_CONFIG", d.dir().join("docker-config"))
        .env("DOCKER_CLI_HINTS", "false")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_API_VERSION");
    cmd
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The events of container `name` between `since` and now, as (action, attributes).
fn container_events(d: &TestDaemon, name: &str, since: u64) -> Vec<(String, serde_json::Value)> {
    let filters = serde_json::json!({"container": [name]}).to_string();
    let path = format!(
        "/events?since={since}&until={}&filters={}",
        unix_now() + 1,
        berth_e2e::http::encode_query(&filters)
    );
    let r = d.api("GET", &path, None);
    assert_eq!(r.status, 200, "events: {}", r.text());
    r.text()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("an event is JSON");
            (
                v["Action"].as_str().unwrap_or_default().to_string(),
                v["Actor"]["Attributes"].clone(),
            )
        })
        .collect()
}

#[test]
fn operate_more_commit_then_run_the_new_image() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let since = unix_now();
    d.berth(&[
        "run",
        "-d",
        "--name",
        "src",
        "-e",
        "STAGE=one",
        "busybox",
        "sh",
        "-c",
        "echo committed > /hello; sleep 1000",
    ])
    .ok("run -d");
    wait_until(Duration::from_secs(10), "/hello to be written", || {
        d.berth(&["exec", "src", "cat", "/hello"])
            .stdout_text()
            .trim()
            == "committed"
    });

    let id = d
        .berth(&[
            "commit",
            "-a",
            "E2E <e2e@example.com>",
            "-m",
            "first snapshot",
            "--change",
            r#"CMD ["cat", "/hello"]"#,
            "-c",
            "ENV STAGE=two",
            "src",
            "snap:1",
        ])
        .ok("commit");
    assert!(
        is_id(&id) && id.starts_with("sha256:"),
        "commit prints the image id: {id}"
    );
    // Paused while committing, running again afterwards.
    assert_eq!(inspect_field(&d, "src", "{{.State.Status}}"), "running");

    assert_eq!(
        d.berth(&["run", "--rm", "snap:1"])
            .ok("run the committed image"),
        "committed"
    );
    assert_eq!(
        inspect_field(&d, "snap:1", "{{json .Config.Cmd}}"),
        r#"["cat","/hello"]"#
    );
    assert_eq!(inspect_field(&d, "snap:1", "{{.Id}}"), id);
    assert_eq!(
        inspect_field(&d, "snap:1", "{{.Comment}}"),
        "first snapshot"
    );
    assert_eq!(
        inspect_field(&d, "snap:1", "{{.Author}}"),
        "E2E <e2e@example.com>"
    );
    let env = inspect_field(&d, "snap:1", "{{json .Config.Env}}");
    assert!(
        env.contains("\"STAGE=two\"") && !env.contains("STAGE=one"),
        "{env}"
    );
    let base_layers = d.inspect_image("busybox").unwrap()["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .len();
    let layers = d.inspect_image("snap:1").unwrap()["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        layers,
        base_layers + 1,
        "the writable layer is one new layer"
    );
    let history = d
        .berth(&[
            "history",
            "--no-trunc",
            "--format",
            "{{.CreatedBy}}|{{.Comment}}",
            "snap:1",
        ])
        .ok("history");
    assert!(
        lines(&history)[0].starts_with("sh -c echo committed > /hello; sleep 1000|first snapshot"),
        "{history}"
    );

    // pause, tag, commit, unpause: Docker's order.
    let actions: Vec<String> = container_events(&d, "src", since)
        .into_iter()
        .map(|(a, _)| a)
        .filter(|a| ["pause", "commit", "unpause"].contains(&a.as_str()))
        .collect();
    assert_eq!(actions, ["pause", "commit", "unpause"]);
    let commit = container_events(&d, "src", since)
        .into_iter()
        .find(|(a, _)| a == "commit")
        .unwrap()
        .1;
    assert_eq!(commit["imageID"], serde_json::json!(id));
    assert_eq!(commit["imageRef"], serde_json::json!("snap:1"));
    assert_eq!(commit["comment"], serde_json::json!("first snapshot"));

    // A stopped container commits too; without changes the image gets no new layer.
    d.berth(&["run", "--name", "idle", "busybox", "true"])
        .ok("run idle");
    let idle = d
        .berth(&["commit", "--pause=false", "idle"])
        .ok("commit idle");
    assert!(is_id(&idle), "{idle}");
    let idle_layers = d.inspect_image(&idle).unwrap()["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(idle_layers, base_layers, "nothing changed, so no layer");
    assert_eq!(inspect_field(&d, &idle, "{{.RepoTags}}"), "[]");

    let bad = d.berth(&["commit", "-c", "RUN echo no", "src", "snap:2"]);
    bad.expect_failure("commit with a RUN change");
    assert!(
        bad.stderr_text()
            .contains("run is not a valid change command"),
        "{}",
        bad.stderr_text()
    );
    let missing = d.berth(&["commit", "nosuch"]);
    missing.expect_failure("commit of a missing container");
    assert!(
        missing.stderr_text().contains("No such container: nosuch"),
        "{}",
        missing.stderr_text()
    );
}

#[test]
fn operate_more_diff_shows_added_changed_and_deleted() {
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&[
        "run", "-d", "--name", "dif", "-v", "/data", "busybox", "sh", "-c",
        "echo x > /etc/x; rm /bin/vi; mkdir -p /srv/new; echo d > /data/file; touch /ready; sleep 1000",
    ])
    .ok("run -d");
    wait_until(Duration::from_secs(10), "the container's changes", || {
        d.berth(&["exec", "dif", "test", "-e", "/ready"])
            .status
            .success()
    });
    let out = d.berth(&["diff", "dif"]).ok("diff");
    // Mount points (/etc/hosts, /proc, /data...) are not changes, as with Docker.
    assert_eq!(
        lines(&out),
        [
            "C /bin",
            "D /bin/vi",
            "C /etc",
            "A /etc/x",
            "A /ready",
            "A /srv",
            "A /srv/new"
        ]
    );
    let r = d.api("GET", "/containers/dif/changes", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()[1],
        serde_json::json!({"Path": "/bin/vi", "Kind": 2})
    );

    // A fresh container changed nothing.
    d.berth(&[
        "run", "-d", "--name", "fresh", "--init", "busybox", "sleep", "1000",
    ])
    .ok("run fresh");
    assert_eq!(d.berth(&["diff", "fresh"]).ok("diff fresh"), "");

    // The committed image holds exactly those changes.
    d.berth(&["commit", "dif", "diffed"]).ok("commit");
    let listing = d
        .berth(&[
            "run",
            "--rm",
            "diffed",
            "sh",
            "-c",
            "cat /etc/x; test -e /bin/vi || echo no-vi; ls /srv; ls /data",
        ])
        .ok("run diffed");
    assert_eq!(lines(&listing), ["x", "no-vi", "new"]);

    if let Some(out) = d.docker(&["diff", "dif"]) {
        assert_eq!(
            out.ok("docker diff"),
            d.berth(&["diff", "dif"]).ok("diff again")
        );
    }
    d.berth(&["diff", "nosuch"])
        .expect_failure("diff of a missing container");
}

#[test]
fn operate_more_docker_cli_commit() {
    if !docker_available() {
        return;
    }
    let d = daemon_or_skip!(daemon_with_busybox());
    let docker = |args: &[&str]| d.docker(args).expect("docker_available() was checked");
    docker(&[
        "run",
        "-d",
        "--name",
        "dsrc",
        "busybox",
        "sh",
        "-c",
        "echo from-docker > /f; sleep 1000",
    ])
    .ok("docker run -d");
    wait_until(Duration::from_secs(10), "/f to be written", || {
        d.berth(&["exec", "dsrc", "cat", "/f"]).stdout_text().trim() == "from-docker"
    });
    let id = docker(&[
        "commit",
        "-c",
        "CMD [\"cat\", \"/f\"]",
        "-c",
        "LABEL made=docker",
        "-m",
        "via docker",
        "dsrc",
        "dsnap:v1",
    ])
    .ok("docker commit");
    assert!(id.starts_with("sha256:") && is_id(&id), "{id}");
    assert_eq!(
        docker(&["run", "--rm", "dsnap:v1"]).ok("docker run the commit"),
        "from-docker"
    );
    assert_eq!(
        docker(&[
            "image",
            "inspect",
            "-f",
            "{{json .Config.Cmd}} {{.Config.Labels.made}} {{.Comment}}",
            "dsnap:v1"
        ])
        .ok("docker image inspect"),
        r#"["cat","/f"] docker via docker"#
    );
    // --pause=false leaves the container alone; the image is untagged.
    let untagged = docker(&["commit", "--pause=false", "dsrc"]).ok("docker commit --pause=false");
    assert!(is_id(&untagged), "{untagged}");
    assert_eq!(inspect_field(&d, "dsrc", "{{.State.Status}}"), "running");
    let out = docker(&["commit", "dsrc", "Bad:Name"]);
    out.expect_failure("docker commit to an invalid name");
}

fn build_cache_count(d: &TestDaemon) -> usize {
    let r = d.api("GET", "/system/df", None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["BuildCache"].as_array().map_or(0, Vec::len)
}

#[test]
fn operate_more_system_prune_all() {
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&["run", "-d", "--name", "keeper", "busybox", "sleep", "1000"])
        .ok("run keeper");
    d.berth(&["run", "--name", "stopped", "busybox", "true"])
        .ok("run stopped");
    let stopped = inspect_field(&d, "stopped", "{{.Id}}");
    d.berth(&["network", "create", "prunenet"])
        .ok("network create");
    let built = build_via_api(&d, "built:1", "FROM busybox\nRUN echo cached > /c\n");
    assert!(build_cache_count(&d) > 0, "the build left cache entries");

    // Without -f it asks first, and "n" leaves everything in place.
    let out = d.berth_with(
        &["system", "prune", "-a"],
        Some(b"n\n"),
        Duration::from_secs(30),
    );
    assert_eq!(
        out.ok("system prune answered no"),
        "WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n  - all images without at least one container associated to them\n  - all build cache\n\nAre you sure you want to continue? [y/N]"
    );
    assert_eq!(inspect_field(&d, "stopped", "{{.State.Status}}"), "exited");

    let out = d.berth(&["system", "prune", "-af"]).ok("system prune -af");
    let sections: Vec<&str> = out.split("\n\n").collect();
    assert_eq!(
        sections[0],
        format!("Deleted Containers:\n{stopped}"),
        "{out}"
    );
    assert_eq!(sections[1], "Deleted Networks:\nprunenet", "{out}");
    assert!(
        sections[2].starts_with("Deleted Images:\nuntagged: built:1\n"),
        "{out}"
    );
    assert!(sections[2].contains(&format!("deleted: {built}")), "{out}");
    assert!(
        sections[3].starts_with("Deleted build cache objects:\n"),
        "{out}"
    );
    assert!(sections[4].starts_with("Total reclaimed space: "), "{out}");

    assert_eq!(
        lines(&d.berth(&["ps", "-aq", "--no-trunc"]).ok("ps")),
        [inspect_field(&d, "keeper", "{{.Id}}")]
    );
    assert_eq!(
        lines(
            &d.berth(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
                .ok("images")
        ),
        ["busybox:latest"],
        "the image in use stays"
    );
    assert!(
        !d.berth(&["network", "ls"])
            .ok("network ls")
            .contains("prunenet")
    );
    assert_eq!(build_cache_count(&d), 0, "the build cache is empty");

    // Nothing left to prune: only the total.
    assert_eq!(
        d.berth(&["system", "prune", "-f"]).ok("prune again"),
        "Total reclaimed space: 0B"
    );
    if let Some(out) = d.docker(&["system", "prune", "-af"]) {
        assert_eq!(
            out.ok("docker system prune -af"),
            "Total reclaimed space: 0B"
        );
    }
}

#[test]
fn operate_more_detach_keys_leave_the_container_running() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let mut run = PtySession::spawn(berth_command(
        &d,
        &["run", "-it", "--name", "dk", "busybox", "sh"],
    ));
    // The arithmetic makes the answer differ from the typed (echoed) command.
    run.send(b"echo ready-$((40+2))\r");
    run.read_until("ready-42", Duration::from_secs(20));
    run.send(DETACH);
    let status = run.wait(Duration::from_secs(10));
    assert!(
        status.success(),
        "berth run -it detaches with status 0: {status}\n{}",
        run.text()
    );
    wait_for_status(&d, "dk", "running", Duration::from_secs(5));
    let started = inspect_field(&d, "dk", "{{.State.StartedAt}}");

    // attach with other keys: ctrl-p ctrl-q now reach the shell, ctrl-x detaches.
    let mut attach = PtySession::spawn(berth_command(
        &d,
        &["attach", "--detach-keys", "ctrl-x", "dk"],
    ));
    attach.send(b"echo again-$((1+1))\r");
    attach.read_until("again-2", Duration::from_secs(20));
    attach.send(DETACH);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        attach.running(),
        "ctrl-p ctrl-q are not the detach keys here\n{}",
        attach.text()
    );
    attach.send(&[0x18]);
    let status = attach.wait(Duration::from_secs(10));
    // Like docker attach: the detach is reported as the stream's error.
    assert_eq!(status.code(), Some(1), "{}", attach.text());
    assert!(
        attach.text().contains("read escape sequence"),
        "{}",
        attach.text()
    );
    wait_for_status(&d, "dk", "running", Duration::from_secs(5));

    // The same process all along: the shell was never restarted.
    assert_eq!(inspect_field(&d, "dk", "{{.State.StartedAt}}"), started);

    if docker_available() {
        let mut run = PtySession::spawn(docker_command(
            &d,
            &["run", "-it", "--name", "ddk", "busybox", "sh"],
        ));
        run.send(b"echo docker-$((6*7))\r");
        run.read_until("docker-42", Duration::from_secs(20));
        run.send(DETACH);
        let status = run.wait(Duration::from_secs(10));
        assert!(
            status.success(),
            "docker run -it detaches: {status}\n{}",
            run.text()
        );
        wait_for_status(&d, "ddk", "running", Duration::from_secs(5));
        let mut attach = PtySession::spawn(docker_command(&d, &["attach", "ddk"]));
        attach.send(b"echo back-$((2+3))\r");
        attach.read_until("back-5", Duration::from_secs(20));
        attach.send(DETACH);
        assert_eq!(
            attach.wait(Duration::from_secs(10)).code(),
            Some(1),
            "{}",
            attach.text()
        );
        wait_for_status(&d, "ddk", "running", Duration::from_secs(5));
    }
}

#[test]
fn operate_more_oom_kill_is_reported() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let since = unix_now();
    let out = d.berth(&[
        "run",
        "--name",
        "oom",
        "--memory",
        "16m",
        "busybox",
        "sh",
        "-c",
        "x=a; while true; do x=$x$x; done",
    ]);
    out.expect_code(137, "a container over its memory limit is killed");
    assert_eq!(
        inspect_field(&d, "oom", "{{.State.OOMKilled}} {{.State.ExitCode}}"),
        "true 137"
    );
    let actions: Vec<String> = container_events(&d, "oom", since)
        .into_iter()
        .map(|(a, _)| a)
        .filter(|a| a == "oom" || a == "die")
        .collect();
    assert_eq!(actions, ["oom", "die"]);

    // A container that stays within its limit is not marked.
    d.berth(&[
        "run", "--name", "fine", "--memory", "16m", "busybox", "true",
    ])
    .ok("run within the limit");
    assert_eq!(inspect_field(&d, "fine", "{{.State.OOMKilled}}"), "false");
}
