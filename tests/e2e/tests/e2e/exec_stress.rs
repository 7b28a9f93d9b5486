//! Exec under load, seccomp in exec'd processes, and server-side detach keys, driven through
//! the Engine API on the daemon's unix socket (hijacked streams read by hand).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use berth_e2e::{OutputExt, TestDaemon, wait_until};
use serde_json::{Value, json};

use crate::util::{daemon_or_skip, daemon_with_busybox};

/// Read and write timeout of a hijacked connection.
const STREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// A hijacked connection after its `101` answer.
struct Hijacked {
    sock: UnixStream,
    /// Bytes that arrived with the response headers.
    pending: Vec<u8>,
}

/// Sends `POST path` with a JSON `body` asking for the connection to be upgraded, and
/// returns the raw stream once the daemon answered `101`; panics on any other answer.
fn hijack(socket: &Path, path: &str, body: &[u8]) -> Hijacked {
    let mut sock =
        UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    sock.set_read_timeout(Some(STREAM_TIMEOUT)).unwrap();
    sock.set_write_timeout(Some(STREAM_TIMEOUT)).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: berth\r\nUser-Agent: berth-e2e\r\nConnection: Upgrade\r\n\
         Upgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).unwrap();
    sock.write_all(body).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = sock
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("POST {path}: reading the answer: {e}"));
        assert!(
            n > 0,
            "POST {path}: connection closed in the headers: {}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "POST {path}: expected 101, got {head}{}",
        String::from_utf8_lossy(&raw[end..])
    );
    Hijacked {
        sock,
        pending: raw[end..].to_vec(),
    }
}

impl Hijacked {
    /// Everything the daemon sends until it closes the stream.
    fn read_to_end(mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.pending);
        self.sock
            .read_to_end(&mut out)
            .unwrap_or_else(|e| panic!("reading a hijacked stream to its end: {e}"));
        out
    }

    /// Reads until the received bytes contain `needle`; returns everything received.
    fn read_until(&mut self, needle: &[u8]) -> Vec<u8> {
        let mut buf = [0u8; 4096];
        while !contains(&self.pending, needle) {
            let n = self.sock.read(&mut buf).unwrap_or_else(|e| {
                panic!(
                    "waiting for {:?}: {e}; received {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&self.pending)
                )
            });
            assert!(
                n > 0,
                "stream ended before {:?} arrived; received {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&self.pending)
            );
            self.pending.extend_from_slice(&buf[..n]);
        }
        std::mem::take(&mut self.pending)
    }

    fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).unwrap();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Splits a stdcopy-framed stream into stdout and stderr.
fn demux(mut raw: &[u8]) -> (String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while !raw.is_empty() {
        assert!(raw.len() >= 8, "truncated frame header: {raw:?}");
        let len = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]) as usize;
        assert!(raw.len() >= 8 + len, "truncated frame: {raw:?}");
        match raw[0] {
            1 => out.extend_from_slice(&raw[8..8 + len]),
            2 => err.extend_from_slice(&raw[8..8 + len]),
            other => panic!("unexpected stream id {other}"),
        }
        raw = &raw[8 + len..];
    }
    (
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// `POST /containers/{container}/exec`; returns the exec id.
fn create_exec(d: &TestDaemon, container: &str, body: &Value) -> String {
    let r = d.api(
        "POST",
        &format!("/containers/{container}/exec"),
        Some(("application/json", body.to_string().as_bytes())),
    );
    assert_eq!(r.status, 201, "exec create: {}", r.text());
    r.json()["Id"].as_str().expect("exec id").to_string()
}

/// `POST /exec/{id}/start`, attached and without a terminal: stdout and stderr.
fn run_exec(d: &TestDaemon, id: &str) -> (String, String) {
    let conn = hijack(
        d.socket(),
        &format!("/exec/{id}/start"),
        br#"{"Detach":false,"Tty":false}"#,
    );
    demux(&conn.read_to_end())
}

fn inspect_exec(d: &TestDaemon, id: &str) -> Value {
    let r = d.api("GET", &format!("/exec/{id}/json"), None);
    assert_eq!(r.status, 200, "exec inspect {id}: {}", r.text());
    r.json()
}

/// Creates, starts and inspects an exec printing `tag` on both streams and exiting with
/// `code`; checks all three.
fn exec_cycle(d: &TestDaemon, container: &str, tag: &str, code: u8) {
    let id = create_exec(
        d,
        container,
        &json!({
            "AttachStdout": true,
            "AttachStderr": true,
            "Cmd": ["sh", "-c", "echo out-$0; echo err-$0 >&2; exit $1", tag, code.to_string()],
        }),
    );
    let (out, err) = run_exec(d, &id);
    assert_eq!(out, format!("out-{tag}\n"), "stdout of exec {tag}");
    assert_eq!(err, format!("err-{tag}\n"), "stderr of exec {tag}");
    let inspect = inspect_exec(d, &id);
    assert_eq!(
        inspect["ExitCode"],
        i64::from(code),
        "exec {tag}: {inspect}"
    );
    assert_eq!(inspect["Running"], false, "exec {tag}: {inspect}");
}

/// Resource use of a process.
#[derive(Debug, Clone, Copy)]
struct Usage {
    fds: usize,
    threads: usize,
    rss_kib: u64,
    /// The anonymous part of the RSS: the heap, without the file pages a shim gives back
    /// and faults in again as it works.
    anon_kib: u64,
}

fn usage(pid: i32) -> Usage {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("list /proc/{pid}/fd: {e}"))
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    Usage {
        fds,
        threads: field("Threads:") as usize,
        rss_kib: field("VmRSS:"),
        anon_kib: field("RssAnon:"),
    }
}

/// Pids of the live processes in the pid namespace of `init`.
fn pid_namespace_members(init: i32) -> Vec<i32> {
    let ns = std::fs::read_link(format!("/proc/{init}/ns/pid")).unwrap();
    let mut members: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|l| l == ns))
        .collect();
    members.sort_unstable();
    members
}

/// Children of `pid` (zombies included: they stay children until reaped).
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn parent_of(pid: i32) -> i32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("PPid in /proc status")
}

/// Waits (up to 10 s) for a sampled figure to come back to at most `limit`; returns the last
/// sample.
fn settle(what: &str, limit: usize, mut sample: impl FnMut() -> usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = sample();
        if now <= limit || Instant::now() >= deadline {
            eprintln!("{what}: {now} (limit {limit})");
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (a) 100 exec sessions at once into one container each get their own output and exit code;
/// (b) 1000 create/start/inspect cycles leave berthd's and the shim's descriptors, threads
/// and memory where they were, and no process behind in the container.
#[test]
fn exec_sessions_under_load_leak_nothing() {
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&["run", "-d", "--name", "load", "busybox", "sleep", "100000"])
        .ok("run -d");
    let started = Instant::now();

    let gate = Barrier::new(100);
    std::thread::scope(|s| {
        for i in 0..100u8 {
            let (d, gate) = (&d, &gate);
            s.spawn(move || {
                gate.wait();
                exec_cycle(d, "load", &format!("c{i}"), i);
            });
        }
    });
    eprintln!("100 concurrent execs: {:?}", started.elapsed());

    let daemon_pid = d.daemon_pid().expect("berthd runs") as i32;
    let init = d.inspect_container("load")["State"]["Pid"]
        .as_i64()
        .expect("State.Pid") as i32;
    let shim = parent_of(init);
    let cycles = |from: u32, to: u32| {
        std::thread::scope(|s| {
            for worker in 0..4 {
                let d = &d;
                s.spawn(move || {
                    for n in (from..to).filter(|n| n % 4 == worker) {
                        exec_cycle(d, "load", &format!("s{n}"), (n % 256) as u8);
                    }
                });
            }
        });
    };
    cycles(0, 100);
    // Let idle connections and tasks of the warm-up go before measuring.
    std::thread::sleep(Duration::from_millis(500));
    let daemon_before = usage(daemon_pid);
    let shim_before = usage(shim);
    let t = Instant::now();
    cycles(100, 1100);
    eprintln!("1000 exec cycles: {:?}", t.elapsed());
    std::thread::sleep(Duration::from_millis(500));
    let fds = settle("berthd fds", daemon_before.fds, || usage(daemon_pid).fds);
    let threads = settle("berthd threads", daemon_before.threads, || {
        usage(daemon_pid).threads
    });
    let shim_fds = settle("shim fds", shim_before.fds, || usage(shim).fds);
    let daemon_after = usage(daemon_pid);
    let shim_after = usage(shim);
    eprintln!("berthd before {daemon_before:?} after {daemon_after:?}");
    eprintln!("shim before {shim_before:?} after {shim_after:?}");
    assert!(
        fds <= daemon_before.fds,
        "berthd holds {fds} descriptors after the cycles, {} before",
        daemon_before.fds
    );
    assert!(
        threads <= daemon_before.threads,
        "berthd runs {threads} threads after the cycles, {} before",
        daemon_before.threads
    );
    assert!(
        shim_fds <= shim_before.fds,
        "the shim holds {shim_fds} descriptors after the cycles, {} before",
        shim_before.fds
    );
    assert!(
        daemon_after.rss_kib < daemon_before.rss_kib + 3 * 1024,
        "berthd's RSS grew from {} KiB to {} KiB",
        daemon_before.rss_kib,
        daemon_after.rss_kib
    );
    assert!(
        shim_after.anon_kib < shim_before.anon_kib + 256,
        "the shim's anonymous memory grew from {} KiB to {} KiB",
        shim_before.anon_kib,
        shim_after.anon_kib
    );
    assert_eq!(
        pid_namespace_members(init),
        [init],
        "only the container's init is left in its pid namespace"
    );
    assert_eq!(children(shim), [init], "the shim reaped every exec");
    let inspect = d.inspect_container("load");
    assert_eq!(inspect["State"]["Running"], true);
    assert!(
        inspect["ExecIDs"].is_null(),
        "finished execs are not listed: {}",
        inspect["ExecIDs"]
    );
    eprintln!("whole test: {:?}", started.elapsed());
}

/// Detached execs started in a burst each get their own exit code in inspect, however many
/// finish while the daemon waits for them.
#[test]
fn detached_exec_burst_reports_every_exit_code() {
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&["run", "-d", "--name", "burst", "busybox", "sleep", "100000"])
        .ok("run -d");
    let t = Instant::now();
    let ids: Vec<(String, u8)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8u32)
            .map(|w| {
                let d = &d;
                s.spawn(move || {
                    (0..25u32)
                        .map(|n| {
                            let code = (w * 25 + n) as u8;
                            let id = create_exec(
                                d,
                                "burst",
                                &json!({"Cmd": ["sh", "-c", format!("exit {code}")]}),
                            );
                            let r = d.api(
                                "POST",
                                &format!("/exec/{id}/start"),
                                Some(("application/json", br#"{"Detach":true}"#)),
                            );
                            assert_eq!(r.status, 200, "detached start: {}", r.text());
                            (id, code)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    eprintln!("200 detached starts: {:?}", t.elapsed());
    for (id, code) in &ids {
        wait_until(Duration::from_secs(30), "detached exec to finish", || {
            inspect_exec(&d, id)["Running"] == false
        });
        let inspect = inspect_exec(&d, id);
        assert_eq!(inspect["ExitCode"], i64::from(*code), "{inspect}");
    }
}

/// The `Seccomp:` mode of a process started by `berth exec <flags> <container>`: 2 when a
/// filter is installed, 0 without one.
fn exec_seccomp_mode(d: &TestDaemon, container: &str, flags: &[&str]) -> String {
    let mut args = vec!["exec"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[container, "grep", "^Seccomp:", "/proc/self/status"]);
    let out = d
        .berth(&args)
        .ok(&format!("exec {flags:?} into {container}"));
    out.trim()
        .strip_prefix("Seccomp:")
        .unwrap_or_else(|| panic!("no Seccomp line: {out:?}"))
        .trim()
        .to_string()
}

/// Processes started by exec (and healthcheck probes, which are execs) run under the
/// container's seccomp filter, as the container's own process does; an unconfined container's
/// do not.
#[test]
fn exec_processes_run_under_the_container_seccomp_filter() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let run = |args: &[&str]| {
        let mut all = vec!["run", "-d"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["busybox", "sleep", "100000"]);
        d.berth(&all).ok(&format!("run {args:?}"));
    };
    run(&["--name", "filtered"]);
    run(&["--name", "nnp", "--security-opt", "no-new-privileges"]);
    run(&["--name", "open", "--security-opt", "seccomp=unconfined"]);
    run(&[
        "--name",
        "probed",
        "--health-cmd",
        "grep -q '^Seccomp:[[:space:]]*2$' /proc/self/status",
        "--health-interval",
        "1s",
    ]);

    let init = d
        .berth(&["exec", "filtered", "grep", "^Seccomp:", "/proc/1/status"])
        .ok("read the init's seccomp mode");
    assert!(
        init.ends_with('2'),
        "the container's init is filtered: {init:?}"
    );
    for flags in [
        &[][..],
        &["-u", "nobody"],
        &["-t"],
        &["--privileged"],
        &["-e", "X=1", "-w", "/tmp"],
    ] {
        assert_eq!(
            exec_seccomp_mode(&d, "filtered", flags),
            "2",
            "exec {flags:?} runs under the filter"
        );
    }
    assert_eq!(exec_seccomp_mode(&d, "nnp", &[]), "2");
    assert_eq!(exec_seccomp_mode(&d, "nnp", &["-u", "nobody"]), "2");
    assert_eq!(exec_seccomp_mode(&d, "open", &[]), "0");

    // Creating a user namespace takes no capability: only the filter (Docker's profile
    // allows unshare with CAP_SYS_ADMIN alone) refuses it.
    let refused = d.berth(&["exec", "filtered", "unshare", "-U", "true"]);
    refused.expect_failure("unshare -U under the default profile");
    assert!(
        refused.stderr_text().contains("Operation not permitted"),
        "{refused:?}"
    );
    assert!(
        !d.berth(&["exec", "-u", "nobody", "filtered", "unshare", "-U", "true"])
            .status
            .success(),
        "unshare -U as nobody under the default profile"
    );
    d.berth(&["exec", "open", "unshare", "-U", "true"])
        .ok("unshare -U without a filter");

    wait_until(
        Duration::from_secs(30),
        "the probe to see its filter",
        || d.inspect_container("probed")["State"]["Health"]["Status"] == "healthy",
    );
}

/// How many times `needle` occurs in `haystack`.
fn occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// Reads until the stream ends; panics if it does not end within 10 s.
fn expect_end(mut conn: Hijacked, what: &str) -> Vec<u8> {
    conn.sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut out = std::mem::take(&mut conn.pending);
    if let Err(e) = conn.sock.read_to_end(&mut out) {
        panic!(
            "{what}: the stream did not end ({e}); received {:?}",
            String::from_utf8_lossy(&out)
        );
    }
    out
}

/// `POST /containers/{id}/attach` with stdin, stdout and stderr, streaming.
fn attach(d: &TestDaemon, container: &str, detach_keys: Option<&str>) -> Hijacked {
    let keys = detach_keys
        .map(|k| format!("&detachKeys={k}"))
        .unwrap_or_default();
    hijack(
        d.socket(),
        &format!("/containers/{container}/attach?stream=1&stdin=1&stdout=1&stderr=1{keys}"),
        b"",
    )
}

/// The daemon watches an attached terminal's input for the detach keys (the client's, or
/// ctrl-p,ctrl-q): the stream ends, the keys never reach the container, and the container
/// (or exec) goes on. Without a terminal the bytes are plain input, as with moby.
#[test]
fn detach_keys_end_attach_and_exec_streams_server_side() {
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&["run", "-d", "-i", "-t", "--name", "cat", "busybox", "cat"])
        .ok("run -dit cat");

    let mut conn = attach(&d, "cat", Some("ctrl-x,ctrl-y"));
    conn.send(b"hello\n");
    conn.read_until(b"hello\r\n");
    conn.send(&[0x18, 0x19]);
    expect_end(conn, "attach after ctrl-x,ctrl-y");
    assert_eq!(d.inspect_container("cat")["State"]["Running"], true);

    // The keys were not typed into the terminal: cat's next line holds only what follows.
    let mut conn = attach(&d, "cat", None);
    conn.send(b"after\n");
    let mut seen = conn.read_until(b"after\r\n");
    while occurrences(&seen, b"after\r\n") < 2 {
        seen.extend(conn.read_until(b"\r\n"));
    }
    assert!(
        !seen.contains(&0x18) && !contains(&seen, b"^X"),
        "the detach keys reached the container: {:?}",
        String::from_utf8_lossy(&seen)
    );
    // ctrl-p,ctrl-q by default.
    conn.send(&[0x10, 0x11]);
    expect_end(conn, "attach after ctrl-p,ctrl-q");
    assert_eq!(d.inspect_container("cat")["State"]["Running"], true);

    // An exec's DetachKeys; the process keeps running, its terminal not closed.
    let exec = create_exec(
        &d,
        "cat",
        &json!({
            "AttachStdin": true, "AttachStdout": true, "AttachStderr": true, "Tty": true,
            "DetachKeys": "ctrl-x,ctrl-y", "Cmd": ["cat"],
        }),
    );
    let mut conn = hijack(
        d.socket(),
        &format!("/exec/{exec}/start"),
        br#"{"Detach":false,"Tty":true}"#,
    );
    conn.send(b"in-exec\n");
    conn.read_until(b"in-exec\r\n");
    conn.send(b"typed\x18\x19");
    expect_end(conn, "exec stream after ctrl-x,ctrl-y");
    std::thread::sleep(Duration::from_millis(500));
    let inspect = inspect_exec(&d, &exec);
    assert_eq!(inspect["Running"], true, "the exec goes on: {inspect}");
    let pid = inspect["Pid"].as_i64().expect("exec Pid");
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert!(
        !state.contains(") Z "),
        "the exec's process is alive: {state}"
    );

    // Malformed keys are refused before anything starts.
    let r = d.api(
        "POST",
        "/containers/cat/exec",
        Some((
            "application/json",
            br#"{"Cmd":["true"],"DetachKeys":"ctrl-1"}"#,
        )),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("Invalid escape keys (ctrl-1)"),
        "{}",
        r.text()
    );
    let r = d.api(
        "POST",
        "/containers/cat/attach?stream=1&stdin=1&detachKeys=nope",
        None,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("Invalid detach keys (nope)"),
        "{}",
        r.text()
    );

    // Without a terminal the keys are data.
    d.berth(&["run", "-d", "-i", "--name", "plain", "busybox", "cat"])
        .ok("run -di cat");
    let mut conn = attach(&d, "plain", None);
    conn.send(b"a\x10\x11b\n");
    conn.read_until(b"a\x10\x11b\n");
    assert_eq!(d.inspect_container("plain")["State"]["Running"], true);
}
