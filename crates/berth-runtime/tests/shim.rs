//! Integration tests of berth-shim with both runtimes (needs root, runc, busybox).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use berth_runtime::logs::{LogReadOptions, LogReader, LogStream};
use berth_runtime::protocol::RunArgs;
use berth_runtime::{
    ErrorKind, RunConfig, ShimClient, ShimOptions, Status, cgroups, generate, read_exit_file,
    write_bundle,
};
use tokio::io::AsyncWriteExt;

/// `exec` into running containers.
#[path = "shim/exec.rs"]
mod exec;

const RUNC: &str = "/usr/sbin/runc";
const BUSYBOX: &str = "/usr/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "cat", "true", "false", "id", "hostname", "tty", "ls", "grep", "wc",
    "stty",
];

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn runtimes() -> Vec<Option<PathBuf>> {
    let mut v = vec![None];
    if Path::new(RUNC).exists() {
        v.push(Some(PathBuf::from(RUNC)));
    }
    v
}

/// A container under test; Drop kills whatever is left and removes its cgroups.
struct Fixture {
    dir: tempfile::TempDir,
    id: String,
    cgroup_parent: String,
    cgroups_path: String,
    shim_pid: Option<i32>,
    container_pid: Option<i32>,
    runtime: Option<PathBuf>,
}

impl Fixture {
    fn new(runtime: Option<PathBuf>) -> Fixture {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("berth-test-{}-{n}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
        for a in APPLETS {
            symlink("busybox", rootfs.join("bin").join(a)).unwrap();
        }
        let cgroup_parent = format!(
            "{}/berth-test-{}-{n}",
            cgroups::daemon_cgroup_parent()
                .unwrap()
                .trim_end_matches('/'),
            std::process::id()
        );
        let cgroups_path = format!("{cgroup_parent}/{id}");
        Fixture {
            dir,
            id,
            cgroup_parent,
            cgroups_path,
            shim_pid: None,
            container_pid: None,
            runtime,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn config(&self, args: &[&str]) -> RunConfig {
        RunConfig {
            id: self.id.clone(),
            rootfs: self.path("rootfs"),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            hostname: "testhost".into(),
            cgroups_path: self.cgroups_path.clone(),
            ..Default::default()
        }
    }

    fn options(&self, cfg: &RunConfig) -> ShimOptions {
        ShimOptions {
            shim_binary: PathBuf::from(env!("CARGO_BIN_EXE_berth-shim")),
            run: RunArgs {
                id: self.id.clone(),
                bundle: self.path("bundle"),
                state_dir: self.path("state"),
                log_path: self.path("logs/container.log"),
                log_max_size: None,
                log_max_file: 1,
                tty: cfg.tty,
                stdin: cfg.open_stdin,
                runtime: self.runtime.clone(),
            },
        }
    }

    async fn spawn(&mut self, cfg: &RunConfig) -> berth_runtime::Result<ShimClient> {
        let spec = generate(cfg).unwrap();
        write_bundle(&self.path("bundle"), &spec).unwrap();
        let client = within("spawn", ShimClient::spawn(&self.options(cfg))).await?;
        self.shim_pid = Some(client.shim_pid());
        self.container_pid = Some(client.state().await?.pid);
        Ok(client)
    }

    /// Deletes through the shim and checks that the shim and the cgroups are gone.
    async fn delete(&mut self, client: &ShimClient) {
        within("delete", client.delete()).await.unwrap();
        let shim = self.shim_pid.take().unwrap();
        self.container_pid = None;
        wait_gone(shim).await;
        assert!(
            cgroups::existing_dirs(&self.cgroups_path)
                .unwrap()
                .is_empty(),
            "cgroup {} left behind",
            self.cgroups_path
        );
        assert!(matches!(
            ShimClient::connect(&self.path("state")).await,
            Err(berth_runtime::RuntimeError::ShimNotRunning(_))
        ));
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for pid in [self.container_pid, self.shim_pid].into_iter().flatten() {
            // SAFETY: kill takes plain integers; these pids were started by this test.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if self.container_pid.is_some() || self.shim_pid.is_some() {
            std::thread::sleep(Duration::from_millis(200));
            let _ = cgroups::remove_cgroup(&self.cgroups_path);
        }
        for dir in cgroups::existing_dirs(&self.cgroup_parent).unwrap_or_default() {
            let _ = fs::remove_dir(dir);
        }
    }
}

async fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        // The shim is reparented to init (or a subreaper); a zombie has no cmdline.
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if status.contains("State:\tZ") {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Bounds every await on the shim so a broken shim fails the test instead of hanging it.
async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} timed out"))
}

async fn collect(attach: &mut berth_runtime::AttachStream) -> (Vec<u8>, Vec<u8>) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let res = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some((stream, bytes)) = attach.next_frame().await.unwrap() {
            if stream == 1 {
                out.extend_from_slice(&bytes)
            } else {
                err.extend_from_slice(&bytes)
            }
        }
    })
    .await;
    assert!(
        res.is_ok(),
        "attach stream did not end; got {:?}",
        String::from_utf8_lossy(&out)
    );
    (out, err)
}

#[tokio::test]
async fn output_logs_and_exit_code() {
    for rt in runtimes() {
        let mut fx = Fixture::new(rt.clone());
        let cfg = fx.config(&["sh", "-c", "echo hello; echo err >&2; exit 3"]);
        let client = fx.spawn(&cfg).await.unwrap();
        let st = client.state().await.unwrap();
        assert_eq!(st.status, Status::Created, "{rt:?}");
        assert!(st.pid > 0);
        let mut attach = client.attach(false, true, true).await.unwrap();
        client.start().await.unwrap();
        let (out, err) = collect(&mut attach).await;
        assert_eq!(out, b"hello\n", "{rt:?}");
        assert_eq!(err, b"err\n", "{rt:?}");
        let exit = within("wait", client.wait()).await.unwrap();
        assert_eq!(exit.code, 3, "{rt:?}");
        assert_eq!(exit.signal, None);
        assert!(!exit.oom_killed);
        assert_eq!(read_exit_file(&fx.path("state")).unwrap(), exit);
        let st = client.state().await.unwrap();
        assert_eq!(st.status, Status::Stopped);
        assert_eq!(st.exit.as_ref(), Some(&exit));
        let entries = LogReader::new(fx.path("logs/container.log"))
            .read(&LogReadOptions::default())
            .unwrap();
        let got: Vec<(LogStream, &[u8])> = entries
            .iter()
            .map(|e| (e.stream, e.bytes.as_slice()))
            .collect();
        assert!(
            got.contains(&(LogStream::Stdout, b"hello\n".as_slice())),
            "{got:?}"
        );
        assert!(
            got.contains(&(LogStream::Stderr, b"err\n".as_slice())),
            "{got:?}"
        );
        assert_eq!(got.len(), 2);
        // a second start is refused
        let e = client.start().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidState);
        fx.delete(&client).await;
        // exit.json outlives the shim
        assert_eq!(read_exit_file(&fx.path("state")).unwrap().code, 3);
    }
}

#[tokio::test]
async fn stdin_through_attach() {
    for rt in runtimes() {
        let mut fx = Fixture::new(rt.clone());
        let mut cfg = fx.config(&["cat"]);
        cfg.open_stdin = true;
        let client = fx.spawn(&cfg).await.unwrap();
        let attach = client.attach(true, true, true).await.unwrap();
        client.start().await.unwrap();
        let (mut output, mut input) = attach.into_split();
        input.write_all(b"ping\n").await.unwrap();
        let (stream, bytes) = tokio::time::timeout(Duration::from_secs(10), output.next_frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            (stream, bytes.as_ref()),
            (1, b"ping\n".as_slice()),
            "{rt:?}"
        );
        input.shutdown().await.unwrap();
        let end = tokio::time::timeout(Duration::from_secs(10), output.next_frame())
            .await
            .unwrap()
            .unwrap();
        assert!(end.is_none());
        assert_eq!(within("wait", client.wait()).await.unwrap().code, 0);
        fx.delete(&client).await;
    }
}

#[tokio::test]
async fn sigkill_gives_137_and_delete_kills_running() {
    for rt in runtimes() {
        let mut fx = Fixture::new(rt.clone());
        let client = fx.spawn(&fx.config(&["sleep", "100"])).await.unwrap();
        client.start().await.unwrap();
        assert_eq!(client.state().await.unwrap().status, Status::Running);
        client.kill(9).await.unwrap();
        let exit = within("wait", client.wait()).await.unwrap();
        assert_eq!((exit.code, exit.signal), (137, Some(9)), "{rt:?}");
        let e = client.kill(15).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidState);
        fx.delete(&client).await;

        // Delete of a running container kills it first.
        let mut fx = Fixture::new(rt.clone());
        let client = fx.spawn(&fx.config(&["sleep", "100"])).await.unwrap();
        client.start().await.unwrap();
        fx.delete(&client).await;
        assert_eq!(read_exit_file(&fx.path("state")).unwrap().code, 137);
    }
}

#[tokio::test]
async fn missing_executable_is_not_found() {
    for rt in runtimes() {
        let mut fx = Fixture::new(rt.clone());
        let err = fx.spawn(&fx.config(&["nosuchcmd"])).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{rt:?}: {err}");
        assert_eq!(
            err.to_string(),
            "exec: \"nosuchcmd\": executable file not found in $PATH"
        );
        let rootfs = fx.path("rootfs");
        fs::write(rootfs.join("bin/notexec"), "data").unwrap();
        let err = fx.spawn(&fx.config(&["/bin/notexec"])).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotExecutable, "{rt:?}: {err}");
        assert_eq!(err.kind().docker_exit_code(), 126);
        assert!(
            cgroups::existing_dirs(&fx.cgroups_path).unwrap().is_empty(),
            "{rt:?}"
        );
    }
}

#[tokio::test]
async fn memory_limit_in_container_cgroup() {
    for rt in runtimes() {
        let mut fx = Fixture::new(rt.clone());
        let mut cfg = fx.config(&["sleep", "100"]);
        cfg.resources.memory = Some(64 << 20);
        let client = fx.spawn(&cfg).await.unwrap();
        let hs = cgroups::hierarchies().unwrap();
        let mem = hs
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == "memory"));
        if let Some(mem) = mem {
            let rel = fx.cgroups_path.trim_start_matches('/');
            let limit = fs::read_to_string(mem.mount_point.join(rel).join("memory.limit_in_bytes"))
                .unwrap();
            assert_eq!(limit.trim(), (64u64 << 20).to_string(), "{rt:?}");
        }
        // One cgroups path serves every v1 controller: libcontainer and runc create it
        // under each hierarchy (here below the memory controller's /process_api/<hash>).
        let dirs = cgroups::existing_dirs(&fx.cgroups_path).unwrap();
        for h in hs.iter().filter(|h| !h.unified) {
            for c in ["memory", "pids", "devices", "cpuset", "freezer"] {
                if h.controllers.iter().any(|x| x == c) {
                    let rel = fx.cgroups_path.trim_start_matches('/');
                    assert!(
                        dirs.contains(&h.mount_point.join(rel)),
                        "{rt:?}: no {c} cgroup in {dirs:?}"
                    );
                }
            }
        }
        eprintln!("{rt:?}: container cgroup in {dirs:?}");
        fx.delete(&client).await;
    }
}

#[tokio::test]
async fn oom_kill_is_reported() {
    for rt in runtimes() {
        let mut fx = Fixture::new(rt.clone());
        // A string doubling forever outgrows any limit.
        let mut cfg = fx.config(&["sh", "-c", "x=a; while true; do x=$x$x; done"]);
        cfg.resources.memory = Some(16 << 20);
        cfg.resources.memory_swap = Some(16 << 20);
        let client = fx.spawn(&cfg).await.unwrap();
        client.start().await.unwrap();
        let exit = within("wait", client.wait()).await.unwrap();
        assert!(exit.oom_killed, "{rt:?}: {exit:?}");
        assert_eq!(exit.code, 137, "{rt:?}: {exit:?}");
        fx.delete(&client).await;
    }
}

#[tokio::test]
async fn tty_gets_a_pty() {
    for rt in runtimes() {
        let mut fx = Fixture::new(rt.clone());
        let mut cfg = fx.config(&["sh", "-c", "tty; echo err >&2"]);
        cfg.tty = true;
        let client = fx.spawn(&cfg).await.unwrap();
        let mut attach = client.attach(false, true, true).await.unwrap();
        client.resize(40, 100).await.unwrap();
        client.start().await.unwrap();
        let (out, err) = collect(&mut attach).await;
        assert!(err.is_empty());
        // the pty turns \n into \r\n and merges stderr into the one stream
        assert_eq!(
            String::from_utf8_lossy(&out),
            "/dev/pts/0\r\nerr\r\n",
            "{rt:?}"
        );
        assert_eq!(within("wait", client.wait()).await.unwrap().code, 0);
        fx.delete(&client).await;
    }
}

#[tokio::test]
async fn shim_outlives_its_spawner() {
    let mut fx = Fixture::new(None);
    let cfg = fx.config(&["sh", "-c", "echo started; sleep 100"]);
    let spec = generate(&cfg).unwrap();
    write_bundle(&fx.path("bundle"), &spec).unwrap();
    let opts = fx.options(&cfg);
    // Spawn from a separate process (its own tokio runtime) that exits right away.
    let spawner = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "spawn_helper",
            "--nocapture",
            "--include-ignored",
        ])
        .env(
            "BERTH_SPAWN_HELPER",
            serde_json::to_string(&[
                opts.shim_binary.to_str().unwrap(),
                &opts.run.id,
                opts.run.bundle.to_str().unwrap(),
                opts.run.state_dir.to_str().unwrap(),
                opts.run.log_path.to_str().unwrap(),
            ])
            .unwrap(),
        )
        .status()
        .unwrap();
    assert!(spawner.success());
    let client = ShimClient::connect(&fx.path("state")).await.unwrap();
    fx.shim_pid = Some(client.shim_pid());
    let st = client.state().await.unwrap();
    fx.container_pid = Some(st.pid);
    assert_eq!(st.status, Status::Running);
    // The shim is not a child of this process.
    let ppid: i32 = fs::read_to_string(format!("/proc/{}/stat", client.shim_pid()))
        .unwrap()
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(ppid, std::process::id() as i32);
    let logs = LogReader::new(fx.path("logs/container.log"))
        .read(&LogReadOptions::default())
        .unwrap();
    assert_eq!(logs[0].bytes, b"started\n");
    fx.delete(&client).await;
}

/// Run by `shim_outlives_its_spawner` in a child process.
#[tokio::test]
#[ignore = "helper run by shim_outlives_its_spawner"]
async fn spawn_helper() {
    let Ok(args) = std::env::var("BERTH_SPAWN_HELPER") else {
        return;
    };
    let a: Vec<String> = serde_json::from_str(&args).unwrap();
    let opts = ShimOptions {
        shim_binary: a[0].clone().into(),
        run: RunArgs {
            id: a[1].clone(),
            bundle: a[2].clone().into(),
            state_dir: a[3].clone().into(),
            log_path: a[4].clone().into(),
            log_max_size: None,
            log_max_file: 1,
            tty: false,
            stdin: false,
            runtime: None,
        },
    };
    let client = ShimClient::spawn(&opts).await.unwrap();
    client.start().await.unwrap();
    // wait for the first log line so the parent can check it
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(&opts.run.log_path)
        .unwrap_or_default()
        .contains("started")
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn timing_true_and_idle_rss() {
    let mut fx = Fixture::new(None);
    let cfg = fx.config(&["true"]);
    let t0 = Instant::now();
    let client = fx.spawn(&cfg).await.unwrap();
    let spawned = t0.elapsed();
    client.start().await.unwrap();
    let exit = within("wait", client.wait()).await.unwrap();
    assert_eq!(exit.code, 0);
    let total = t0.elapsed();
    // the shim gives back start-up memory after a short idle time
    tokio::time::sleep(Duration::from_millis(800)).await;
    let field = |file: &str, name: &str| {
        fs::read_to_string(format!("/proc/{}/{file}", client.shim_pid()))
            .unwrap()
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().nth(1).unwrap().to_string() + " kB")
            .unwrap()
    };
    let rss = format!(
        "VmRSS {} (RssAnon {}, RssFile {}), Pss {}",
        field("status", "VmRSS:"),
        field("status", "RssAnon:"),
        field("status", "RssFile:"),
        field("smaps_rollup", "Pss:")
    );
    let t1 = Instant::now();
    fx.delete(&client).await;
    let total = total + t1.elapsed();
    eprintln!("spawn {spawned:?}, spawn→start→exit→delete {total:?}, idle shim {rss}");
}

#[tokio::test]
async fn init_forwards_sigterm_and_reaps() {
    for rt in runtimes() {
        let mut fx = Fixture::new(rt.clone());
        let mut cfg = fx.config(&["sleep", "100"]);
        cfg.init = true;
        cfg.init_binary = Some(berth_runtime::install_init_binary(&fx.path("init")).unwrap());
        let client = fx.spawn(&cfg).await.unwrap();
        client.start().await.unwrap();
        // give the init a moment to spawn its child before signalling
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.kill(15).await.unwrap();
        let exit = within("wait", client.wait()).await.unwrap();
        assert_eq!(exit.code, 143, "{rt:?}");
        fx.delete(&client).await;
    }
}

#[tokio::test]
async fn privileged_gets_the_bounding_set_and_default_is_confined() {
    let host_bnd = fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:").map(|v| v.trim().to_string()))
        .unwrap();
    for rt in runtimes() {
        for privileged in [true, false] {
            let mut fx = Fixture::new(rt.clone());
            let mut cfg = fx.config(&[
                "sh",
                "-c",
                "grep CapEff /proc/self/status; cat /proc/kcore | wc -c",
            ]);
            cfg.capabilities.privileged = privileged;
            let client = fx.spawn(&cfg).await.unwrap();
            let mut attach = client.attach(false, true, true).await.unwrap();
            client.start().await.unwrap();
            let (out, err) = collect(&mut attach).await;
            let out = String::from_utf8_lossy(&out);
            assert_eq!(
                within("wait", client.wait()).await.unwrap().code,
                0,
                "{rt:?} {out} {}",
                String::from_utf8_lossy(&err)
            );
            let cap_eff = out
                .lines()
                .next()
                .unwrap()
                .trim_start_matches("CapEff:")
                .trim()
                .to_string();
            if privileged {
                assert_eq!(cap_eff, host_bnd, "{rt:?}");
            } else {
                assert_eq!(cap_eff, "00000000a80425fb", "{rt:?}: docker's default set");
                // /proc/kcore is masked (bind of /dev/null): reads as empty
                assert_eq!(out.lines().nth(1).map(str::trim), Some("0"), "{rt:?}");
            }
            fx.delete(&client).await;
        }
    }
}

/// The default profile reaches the container as the daemon's precompiled program (for
/// the built-in runtime) or through runc: either way the command runs filtered, with
/// no_new_privs unset and without the capability the shim needs to install the program.
#[tokio::test]
async fn seccomp_is_enforced_without_extra_capabilities() {
    for rt in runtimes() {
        for uid in [0, 1000] {
            let mut fx = Fixture::new(rt.clone());
            let mut cfg = fx.config(&[
                "sh",
                "-c",
                "grep -E '^(Seccomp|NoNewPrivs|CapEff|CapPrm):' /proc/self/status",
            ]);
            cfg.user.uid = uid;
            cfg.user.gid = uid;
            let client = fx.spawn(&cfg).await.unwrap();
            let config = fs::read_to_string(fx.path("bundle/config.json")).unwrap();
            if rt.is_none() {
                assert!(fx.path("bundle/seccomp.bpf").exists());
                assert!(
                    !config.contains("\"seccomp\""),
                    "libcontainer got the profile to compile"
                );
            } else {
                assert!(config.contains("\"seccomp\""), "runc lost the profile");
            }
            let mut attach = client.attach(false, true, true).await.unwrap();
            client.start().await.unwrap();
            let (out, err) = collect(&mut attach).await;
            let out = String::from_utf8_lossy(&out).into_owned();
            assert_eq!(
                within("wait", client.wait()).await.unwrap().code,
                0,
                "{rt:?} uid {uid}: {out} {}",
                String::from_utf8_lossy(&err)
            );
            let field = |name: &str| {
                out.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_string())
                    .unwrap_or_else(|| panic!("{rt:?} uid {uid}: no {name} in {out}"))
            };
            assert_eq!(field("Seccomp:"), "2", "{rt:?} uid {uid}: not filtered");
            assert_eq!(field("NoNewPrivs:"), "0", "{rt:?} uid {uid}");
            let (eff, prm) = (field("CapEff:"), field("CapPrm:"));
            if uid == 0 {
                assert_eq!(eff, "00000000a80425fb", "{rt:?}: docker's default set");
                assert_eq!(prm, "00000000a80425fb", "{rt:?}: docker's default set");
            } else {
                assert_eq!(eff, "0000000000000000", "{rt:?} uid {uid}");
                assert_eq!(prm, "0000000000000000", "{rt:?} uid {uid}");
            }
            fx.delete(&client).await;
        }
    }
}

/// A denied system call fails with the profile's errno in a container started from
/// the precompiled program.
#[tokio::test]
async fn precompiled_filter_denies_what_the_profile_denies() {
    let mut fx = Fixture::new(None);
    // Creating a user namespace needs no capability, but Docker's profile only allows
    // `unshare` to containers with CAP_SYS_ADMIN.
    let cfg = fx.config(&["busybox", "unshare", "-U", "true"]);
    let client = fx.spawn(&cfg).await.unwrap();
    let mut attach = client.attach(false, true, true).await.unwrap();
    client.start().await.unwrap();
    let (out, err) = collect(&mut attach).await;
    let status = within("wait", client.wait()).await.unwrap();
    let err = String::from_utf8_lossy(&err);
    assert_ne!(
        status.code,
        0,
        "unshare -U ran: {}",
        String::from_utf8_lossy(&out)
    );
    assert!(
        err.contains("Operation not permitted") || err.contains("not permitted"),
        "unexpected error: {err}"
    );
    fx.delete(&client).await;
}
