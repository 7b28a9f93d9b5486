//! `exec` into running containers, with both runtimes.

use std::sync::Arc;

use berth_runtime::{ExecSpec, ExecStream, ProcessUser, RuntimeError};

use super::*;

fn spec(id: &str, args: &[&str]) -> ExecSpec {
    ExecSpec {
        exec_id: id.to_string(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        cwd: String::new(),
        user: ProcessUser::default(),
        tty: false,
        stdin: false,
        privileged: false,
    }
}

/// A started `sleep` container to exec into.
async fn running(rt: &Option<PathBuf>, cfg: impl FnOnce(&mut RunConfig)) -> (Fixture, ShimClient) {
    let mut fx = Fixture::new(rt.clone());
    let mut c = fx.config(&["sleep", "1000"]);
    cfg(&mut c);
    let client = fx.spawn(&c).await.unwrap();
    client.start().await.unwrap();
    (fx, client)
}

/// Reads an exec stream to its end: (stdout, stderr, exit code).
async fn collect_exec(stream: &mut ExecStream) -> (String, String, Option<i32>) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    within("exec output", async {
        while let Some((s, bytes)) = stream.next_frame().await.unwrap() {
            match s {
                1 => out.extend_from_slice(&bytes),
                2 => err.extend_from_slice(&bytes),
                other => panic!("unexpected stream {other}"),
            }
        }
    })
    .await;
    (
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
        stream.exit_code(),
    )
}

async fn run_exec(client: &ShimClient, spec: &ExecSpec) -> (String, String, Option<i32>) {
    let mut stream = within("exec", client.exec(spec)).await.unwrap();
    collect_exec(&mut stream).await
}

fn fd_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

fn status_kb(pid: i32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn exec_streams_output_and_exit_code() {
    for rt in runtimes() {
        let (mut fx, client) = running(&rt, |_| {}).await;
        let s = spec("e1", &["sh", "-c", "echo out; echo err >&2; exit 5"]);
        let mut stream = client.exec(&s).await.unwrap();
        assert!(stream.pid() > 0);
        let (out, err, code) = collect_exec(&mut stream).await;
        assert_eq!(
            (out.as_str(), err.as_str(), code),
            ("out\n", "err\n", Some(5)),
            "{rt:?}"
        );
        let state = client.exec_state("e1").await.unwrap();
        assert_eq!((state.running, state.exit_code), (false, Some(5)), "{rt:?}");
        assert_eq!(state.pid, stream.pid());
        // exec ids are unique
        let e = client.exec(&s).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidState, "{rt:?}: {e}");
        assert!(client.exec_state("nosuch").await.is_err());

        // detached: output discarded, exit code recorded
        let pid = client
            .exec_detached(&spec("d1", &["sh", "-c", "echo lost; sleep 0.2; exit 7"]))
            .await
            .unwrap();
        let st = client.exec_state("d1").await.unwrap();
        assert_eq!(
            (st.pid, st.running, st.exit_code),
            (pid, true, None),
            "{rt:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let st = loop {
            let st = client.exec_state("d1").await.unwrap();
            if !st.running {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "{rt:?}: detached exec did not end"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(st.exit_code, Some(7), "{rt:?}");
        // exec output stays out of the container's log
        let logs = LogReader::new(fx.path("logs/container.log"))
            .read(&LogReadOptions::default())
            .unwrap();
        assert!(logs.is_empty(), "{rt:?}: {logs:?}");
        fx.delete(&client).await;
    }
}

#[tokio::test]
async fn exec_stdin_reaches_the_process() {
    for rt in runtimes() {
        let (mut fx, client) = running(&rt, |_| {}).await;
        let mut s = spec("cat", &["cat"]);
        s.stdin = true;
        let (mut output, mut input) = client.exec(&s).await.unwrap().into_split();
        input.write_all(b"ping\n").await.unwrap();
        let frame = within("cat echo", output.next_frame()).await.unwrap();
        assert_eq!(
            frame,
            Some((1, bytes::Bytes::from_static(b"ping\n"))),
            "{rt:?}"
        );
        input.shutdown().await.unwrap();
        assert_eq!(within("cat end", output.next_frame()).await.unwrap(), None);
        assert_eq!(output.exit_code(), Some(0), "{rt:?}");
        fx.delete(&client).await;
    }
}

#[tokio::test]
async fn exec_with_tty_and_resize() {
    for rt in runtimes() {
        let (mut fx, client) = running(&rt, |_| {}).await;
        let mut s = spec("t1", &["sh", "-c", "tty; read x; stty size; echo err >&2"]);
        s.tty = true;
        s.stdin = true;
        let mut stream = client.exec(&s).await.unwrap();
        client.resize_exec("t1", 40, 100).await.unwrap();
        stream.write_all(b"go\n").await.unwrap();
        let (out, err, code) = collect_exec(&mut stream).await;
        assert_eq!(code, Some(0), "{rt:?}: {out}");
        assert!(err.is_empty(), "{rt:?}: tty output is one stream");
        // "go" is echoed by the terminal whenever it arrives
        let lines: Vec<&str> = out.split("\r\n").collect();
        assert!(
            lines.iter().any(|l| l
                .strip_prefix("/dev/pts/")
                .is_some_and(|n| n.parse::<u32>().is_ok())),
            "{rt:?}: {out:?}"
        );
        assert!(lines.contains(&"40 100"), "{rt:?}: {out:?}");
        assert!(lines.contains(&"err"), "{rt:?}: {out:?}");
        // a finished exec, or one without a terminal, cannot be resized
        let e = client.resize_exec("t1", 1, 1).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidState);
        let _plain = client.exec(&spec("p1", &["sleep", "10"])).await.unwrap();
        let e = client.resize_exec("p1", 1, 1).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidState, "{e}");
        fx.delete(&client).await;
    }
}

#[tokio::test]
async fn exec_env_cwd_user_and_capabilities() {
    let host_bnd = fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:").map(|v| v.trim().to_string()))
        .unwrap();
    for rt in runtimes() {
        let (mut fx, client) = running(&rt, |c| {
            c.env.extend([
                "FROM_CONTAINER=yes".into(),
                "FOO=old".into(),
                "GONE=1".into(),
            ]);
            c.cwd = "/etc".into();
        })
        .await;
        let script = "echo $FOO $FROM_CONTAINER ${GONE:-unset} $PATH; pwd; id -u; id -g; id -G; \
                      grep CapEff /proc/self/status";
        let mut s = spec("u1", &["sh", "-c", script]);
        s.env = vec!["FOO=bar".into(), "GONE".into()];
        s.cwd = "/tmp".into();
        s.user = ProcessUser {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![10],
        };
        let (out, err, code) = run_exec(&client, &s).await;
        assert_eq!(code, Some(0), "{rt:?}: {err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            &lines[..5],
            ["bar yes unset /bin", "/tmp", "1000", "1000", "1000 10"],
            "{rt:?}"
        );
        // the container's own defaults: its cwd and root
        let (out, _, _) = run_exec(&client, &spec("u2", &["sh", "-c", script])).await;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(&lines[..4], ["old yes 1 /bin", "/etc", "0", "0"], "{rt:?}");
        assert_eq!(
            lines[5], "CapEff:\t00000000a80425fb",
            "{rt:?}: docker's default set"
        );
        let mut s = spec("u3", &["grep", "CapEff", "/proc/self/status"]);
        s.privileged = true;
        let (out, _, _) = run_exec(&client, &s).await;
        assert_eq!(out.trim(), format!("CapEff:\t{host_bnd}"), "{rt:?}");
        // the shim's blocked SIGCHLD and Rust's ignored SIGPIPE do not leak into execs
        let s = spec(
            "sig",
            &["grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"],
        );
        let (out, _, _) = run_exec(&client, &s).await;
        let mask = |name: &str| {
            let line = out.lines().find_map(|l| l.strip_prefix(name)).unwrap();
            u64::from_str_radix(line.trim(), 16).unwrap()
        };
        assert_eq!(mask("SigBlk:"), 0, "{rt:?}: {out}");
        assert_eq!(
            mask("SigIgn:") & (1 << (libc::SIGPIPE - 1)),
            0,
            "{rt:?}: {out}"
        );
        if rt.is_some() {
            // runc confines execs with the container's seccomp profile; libcontainer 0.7's
            // tenant builder drops `linux.seccomp` from the exec's spec.
            let s = spec("u4", &["grep", "^Seccomp:", "/proc/self/status"]);
            let (out, _, _) = run_exec(&client, &s).await;
            assert_eq!(out.trim(), "Seccomp:\t2", "{rt:?}");
        }
        fx.delete(&client).await;
    }
}

#[tokio::test]
async fn exec_start_failures() {
    for rt in runtimes() {
        let mut fx = Fixture::new(rt.clone());
        let client = fx.spawn(&fx.config(&["sleep", "1000"])).await.unwrap();
        // created, not started
        let e = client.exec(&spec("c", &["true"])).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidState, "{rt:?}: {e}");
        client.start().await.unwrap();
        let e = client.exec(&spec("m", &["nosuchcmd"])).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{rt:?}: {e}");
        assert_eq!(
            e.to_string(),
            "exec: \"nosuchcmd\": executable file not found in $PATH"
        );
        assert_eq!(e.kind().docker_exit_code(), 127);
        fs::write(fx.path("rootfs/bin/notexec"), "data").unwrap();
        let e = client
            .exec_detached(&spec("n", &["/bin/notexec"]))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotExecutable, "{rt:?}: {e}");
        assert_eq!(e.to_string(), "exec: \"/bin/notexec\": permission denied");
        // the container is unharmed
        let (out, _, code) = run_exec(&client, &spec("ok", &["echo", "fine"])).await;
        assert_eq!((out.as_str(), code), ("fine\n", Some(0)), "{rt:?}");
        client.kill(9).await.unwrap();
        within("wait", client.wait()).await.unwrap();
        let e = client.exec(&spec("s", &["true"])).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidState, "{rt:?}: {e}");
        assert!(matches!(e, RuntimeError::Shim { .. }));
        fx.delete(&client).await;
    }
}

#[tokio::test]
async fn container_exit_ends_pending_execs() {
    for rt in runtimes() {
        let (mut fx, client) = running(&rt, |_| {}).await;
        let mut stream = client
            .exec(&spec("long", &["sh", "-c", "echo started; sleep 1000"]))
            .await
            .unwrap();
        let first = within("first frame", stream.next_frame()).await.unwrap();
        assert_eq!(
            first.map(|f| f.1),
            Some(bytes::Bytes::from_static(b"started\n"))
        );
        client.kill(9).await.unwrap();
        let (_, _, code) = collect_exec(&mut stream).await;
        assert_eq!(code, Some(137), "{rt:?}");
        fx.delete(&client).await;
    }
}

#[tokio::test]
async fn concurrent_execs_keep_their_output_and_codes() {
    for rt in runtimes() {
        let (mut fx, client) = running(&rt, |_| {}).await;
        let client = Arc::new(client);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..50 {
            let client = client.clone();
            tasks.spawn(async move {
                let script = format!("echo out{i}; echo err{i} >&2; exit {i}");
                let got = run_exec(&client, &spec(&format!("c{i}"), &["sh", "-c", &script])).await;
                (i, got)
            });
        }
        let mut seen = 0;
        while let Some(res) = within("concurrent execs", tasks.join_next()).await {
            let (i, got) = res.unwrap();
            let want = (format!("out{i}\n"), format!("err{i}\n"), Some(i));
            assert_eq!(got, want, "{rt:?}");
            seen += 1;
        }
        assert_eq!(seen, 50);
        fx.delete(&client).await;
    }
}

#[tokio::test]
async fn exec_cycles_leak_no_fds_or_files() {
    for rt in runtimes() {
        let (mut fx, client) = running(&rt, |_| {}).await;
        let shim = client.shim_pid();
        // warm up: the first exec loads code and grows buffers once
        for i in 0..3 {
            run_exec(&client, &spec(&format!("w{i}"), &["true"])).await;
        }
        // a round trip lets the shim close the last exec connection
        client.exec_state("w2").await.unwrap();
        let fds = fd_count(shim);
        let rss = status_kb(shim, "VmRSS:");
        let cycles = if rt.is_none() { 200 } else { 50 };
        let t0 = Instant::now();
        for i in 0..cycles {
            let (_, _, code) = run_exec(&client, &spec(&format!("x{i}"), &["true"])).await;
            assert_eq!(code, Some(0), "{rt:?}");
        }
        let per_exec = t0.elapsed() / cycles;
        let state_dir = fx.path("state");
        let leftovers: Vec<_> = walk(&state_dir)
            .into_iter()
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.starts_with("exec-") || name.starts_with("tenant-")
            })
            .collect();
        assert!(leftovers.is_empty(), "{rt:?}: {leftovers:?}");
        let last = client
            .exec_state(&format!("x{}", cycles - 1))
            .await
            .unwrap();
        assert_eq!(last.exit_code, Some(0));
        assert_eq!(
            fd_count(shim),
            fds,
            "{rt:?}: shim fds before/after {cycles} execs"
        );
        let rss_after = status_kb(shim, "VmRSS:");
        eprintln!(
            "{rt:?}: exec `true` start→exit {per_exec:?} (debug build); shim fds {fds}; \
             VmRSS {rss} kB → {rss_after} kB after {cycles} execs"
        );
        assert!(
            rss_after < rss + 4096,
            "{rt:?}: shim grew from {rss} to {rss_after} kB"
        );
        fx.delete(&client).await;
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}
