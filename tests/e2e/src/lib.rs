//! End-to-end test harness for berth.
//!
//! [`TestDaemon::start`] runs a private `berthd` (its own data root `root/`, exec root `r/` and
//! API socket `berthd.sock` under `/tmp/berth-e2e-<pid>-<n>/`) and offers ways to drive it: the
//! `berth` CLI, the real `docker` CLI (when installed) and raw Engine API calls. Dropping the daemon removes its
//! containers, stops it, kills the processes it left (only those that point back at its own
//! directory), unmounts everything below the directory, removes the cgroups named after its
//! containers and deletes the directory, even when the test panicked.
//!
//! The binaries are looked up in `$BERTH_BIN_DIR`, else next to the test executable's target
//! directory (`target/debug`); run `cargo build --workspace` before the tests.
//! The tests need root; without it [`TestDaemon::start`] prints a loud notice and returns `None`.

pub mod cleanup;
pub mod fixtures;
pub mod http;
pub mod process;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, Once};
use std::thread;
use std::time::{Duration, Instant};

pub use process::{DEFAULT_TIMEOUT, OutputExt};

/// Where test directories are created.
const TEST_PARENT: &str = "/tmp";
/// The name prefix of test directories: `berth-e2e-<test pid>-<n>`.
const TEST_PREFIX: &str = "berth-e2e-";
/// How long the daemon may take to answer `/_ping` after it was started, by default.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the daemon may take to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Timeout for single API requests made by the harness.
const API_TIMEOUT: Duration = Duration::from_secs(60);

/// Locks a mutex even if a panicking test poisoned it: the harness must still clean up.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long berthd may take to answer `/_ping`: 10 s, or `$BERTH_E2E_START_TIMEOUT` seconds.
fn start_timeout() -> Duration {
    std::env::var("BERTH_E2E_START_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(START_TIMEOUT, Duration::from_secs)
}

/// Whether the test process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Prints a notice that cannot be missed in test output.
pub fn loud(message: &str) {
    let bar = "!".repeat(78);
    eprintln!("\n{bar}\n!!! {message}\n{bar}\n");
    println!("\n{bar}\n!!! {message}\n{bar}\n");
}

/// Polls `check` every 50 ms until it returns true; panics after `timeout` naming `what`.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The directory holding `berthd`, `berth` and `berth-shim`.
///
/// `$BERTH_BIN_DIR`, else the cargo target directory this test executable was built into,
/// else `$CARGO_TARGET_DIR/debug`, else the workspace's `target/debug`.
pub fn bin_dir() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("BERTH_BIN_DIR") {
        return PathBuf::from(dir);
    }
    if let Ok(exe) = std::env::current_exe() {
        // target/debug/deps/e2e-<hash> → target/debug
        let mut dir = exe.parent().map(Path::to_path_buf);
        if dir.as_deref().and_then(Path::file_name) == Some(OsStr::new("deps")) {
            dir = dir.and_then(|d| d.parent().map(Path::to_path_buf));
        }
        candidates.extend(dir);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(target).join("debug"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug"));
    for dir in &candidates {
        if dir.join("berthd").is_file() {
            return dir.clone();
        }
    }
    panic!(
        "berthd not found in any of {candidates:?}; build it first with `cargo build --workspace` \
         (or point BERTH_BIN_DIR at the directory holding berthd, berth and berth-shim)"
    );
}

/// Whether the real docker CLI is on PATH.
pub fn docker_available() -> bool {
    static WARN: Once = Once::new();
    let found = find_on_path("docker").is_some();
    if !found {
        WARN.call_once(|| {
            loud("docker CLI not found on PATH: the docker-CLI compatibility tests are SKIPPED")
        });
    }
    found
}

/// The first executable called `name` on PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| {
                use std::os::unix::fs::PermissionsExt;
                p.metadata()
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    })
}

/// A private `berthd` for one test.
pub struct TestDaemon {
    dir: PathBuf,
    root: PathBuf,
    exec_root: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    bins: PathBuf,
    child: Mutex<Option<Child>>,
    /// Container ids and init pids learnt from the API, kept for the final cleanup.
    seen_ids: Mutex<BTreeSet<String>>,
    seen_pids: Mutex<BTreeSet<i32>>,
    /// This daemon's slice of the address space and its bridge/firewall names.
    net: NetSlot,
    /// Flags added to berthd's command line at every start.
    extra_args: Vec<String>,
}

/// A network slot `n` held by one test daemon across concurrently running test processes:
/// bridge and nftables table `be2e<n>`, default pool `10.213.<4n>.0/22` cut into /26s (room
/// for 16 networks of 61 containers), so daemons never share kernel state nor touch the host's
/// own interfaces.
struct NetSlot {
    n: u32,
    bridge: String,
    lock_file: PathBuf,
}

impl NetSlot {
    const DIR: &'static str = "/tmp/berth-e2e-netslots";

    /// Takes the first free slot; a slot whose holder process is gone is free.
    fn acquire() -> NetSlot {
        fs::create_dir_all(Self::DIR).expect("cannot create the network slot directory");
        let me = std::process::id();
        for n in 0..64u32 {
            let lock_file = Path::new(Self::DIR).join(n.to_string());
            let taken = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock_file);
            match taken {
                Ok(_) => {
                    fs::write(&lock_file, me.to_string()).expect("cannot write a network slot");
                    return NetSlot {
                        n,
                        bridge: format!("be2e{n}"),
                        lock_file,
                    };
                }
                Err(_) => {
                    let holder = fs::read_to_string(&lock_file).unwrap_or_default();
                    let alive = holder
                        .trim()
                        .parse::<u32>()
                        .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                    if !alive && !holder.is_empty() {
                        // Stale: take it over by removing and retrying this number once.
                        let _ = fs::remove_file(&lock_file);
                        if fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .open(&lock_file)
                            .is_ok()
                        {
                            fs::write(&lock_file, me.to_string())
                                .expect("cannot write a network slot");
                            return NetSlot {
                                n,
                                bridge: format!("be2e{n}"),
                                lock_file,
                            };
                        }
                    }
                }
            }
        }
        panic!("no free network slot under {}", Self::DIR);
    }

    /// Removes what a dead or stopped daemon may have left: its bridge and firewall table.
    fn clean_kernel_state(&self) {
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for NetSlot {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.lock_file);
    }
}

impl TestDaemon {
    /// Starts a daemon on a fresh data root, or returns `None` (after a loud notice) when the
    /// tests do not run as root. Panics when berthd is missing or does not come up in 10 s.
    pub fn start() -> Option<Self> {
        // The exec root's name is kept short: berthd puts sockets below it and unix socket paths
        // are limited to 107 bytes (faults::long_data_and_exec_root_paths_work tests long ones).
        Self::start_with_dirs("root", "r")
    }

    /// Like [`TestDaemon::start`], with the data root and exec root named `root_name` and
    /// `run_name` inside the test directory (names may contain `/` for deeper paths).
    pub fn start_with_dirs(root_name: &str, run_name: &str) -> Option<Self> {
        Self::start_configured(root_name, run_name, &[])
    }

    /// Like [`TestDaemon::start`], with `args` added to berthd's flags (at every start).
    pub fn start_with_args(args: &[&str]) -> Option<Self> {
        Self::start_configured("root", "r", args)
    }

    fn start_configured(root_name: &str, run_name: &str, args: &[&str]) -> Option<Self> {
        if !is_root() {
            loud("berth e2e tests need root: SKIPPED (run them as root, e.g. via scripts/test.sh)");
            return None;
        }
        static REAP: Once = Once::new();
        REAP.call_once(|| {
            let lock = fixtures::FileLock::acquire(Path::new("/tmp/berth-e2e.lock"));
            cleanup::reap_stale_dirs(Path::new(TEST_PARENT), TEST_PREFIX);
            drop(lock);
        });
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = Path::new(TEST_PARENT).join(format!("{TEST_PREFIX}{}-{n}", std::process::id()));
        if dir.exists() {
            cleanup::teardown_dir(&dir, &BTreeSet::new(), &BTreeSet::new());
        }
        let daemon = Self {
            root: dir.join(root_name),
            exec_root: dir.join(run_name),
            socket: dir.join("berthd.sock"),
            log: dir.join("berthd.log"),
            bins: bin_dir(),
            dir,
            child: Mutex::new(None),
            seen_ids: Mutex::new(BTreeSet::new()),
            seen_pids: Mutex::new(BTreeSet::new()),
            net: NetSlot::acquire(),
            extra_args: args.iter().map(|a| a.to_string()).collect(),
        };
        // A previous holder of the slot may have died before cleaning up.
        daemon.net.clean_kernel_state();
        for d in [&daemon.root, &daemon.exec_root, &daemon.scratch()] {
            fs::create_dir_all(d).unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
        }
        daemon.start_daemon();
        Some(daemon)
    }

    /// The test directory holding everything else.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The daemon's `--data-root`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The daemon's `--exec-root`.
    pub fn exec_root(&self) -> &Path {
        &self.exec_root
    }

    /// The API socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `unix://<socket>`, for `-H` and `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// A directory for the test's own files, outside the data and exec roots.
    pub fn scratch(&self) -> PathBuf {
        self.dir.join("scratch")
    }

    /// The directory holding the binaries under test.
    pub fn bin_dir(&self) -> &Path {
        &self.bins
    }

    /// The default network's bridge device (also the daemon's nftables table name).
    pub fn bridge_name(&self) -> &str {
        &self.net.bridge
    }

    /// The daemon's `--default-address-pool` (`base=10.213.<4n>.0/22,size=26`).
    pub fn address_pool(&self) -> String {
        format!("base=10.213.{}.0/22,size=26", self.net.n * 4)
    }

    /// The daemon's pid, while it runs.
    pub fn daemon_pid(&self) -> Option<u32> {
        lock(&self.child).as_ref().map(Child::id)
    }

    /// Starts berthd on this daemon's directories and waits until `/_ping` answers.
    pub fn start_daemon(&self) {
        assert!(
            lock(&self.child).is_none(),
            "the test daemon is already running"
        );
        let berthd = self.bins.join("berthd");
        assert!(
            berthd.is_file(),
            "{} is missing; run `cargo build --workspace`",
            berthd.display()
        );
        let _ = fs::remove_file(&self.socket);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log.display()));
        let mut cmd = Command::new(&berthd);
        cmd.arg("-H")
            .arg(self.host())
            .arg("--data-root")
            .arg(&self.root)
            .arg("--exec-root")
            .arg(&self.exec_root)
            .arg("--bridge-name")
            .arg(&self.net.bridge)
            .arg("--default-address-pool")
            .arg(self.address_pool())
            .args(&self.extra_args)
            .env("PATH", self.path_env())
            .env("RUST_BACKTRACE", "1")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file handle clones"))
            .stderr(log);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env(
                "RUST_LOG",
                "info,berth=debug,berthd=debug,berth_daemon=debug,berth_runtime=debug",
            );
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", berthd.display()));
        let _ = fs::write(self.dir.join("berthd.pid"), child.id().to_string());

        let timeout = start_timeout();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "berthd exited during startup with {status}\n--- {} ---\n{}",
                    self.log.display(),
                    self.log_tail(60)
                );
            }
            if let Ok(r) =
                http::request(&self.socket, "GET", "/_ping", None, Duration::from_secs(2))
                && r.status == 200
            {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "berthd did not answer GET /_ping on {} within {timeout:?}\n--- log ---\n{}",
                    self.socket.display(),
                    self.log_tail(60)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        *lock(&self.child) = Some(child);
    }

    /// Sends SIGTERM and waits for the daemon to exit (SIGKILL after 5 s). Containers keep running.
    pub fn stop_daemon(&self) {
        self.signal_daemon(libc::SIGTERM, STOP_GRACE);
    }

    /// Kills the daemon with SIGKILL, as a crash would. Containers keep running.
    pub fn kill_daemon(&self) {
        self.signal_daemon(libc::SIGKILL, STOP_GRACE);
    }

    fn signal_daemon(&self, signal: i32, grace: Duration) {
        let Some(mut child) = lock(&self.child).take() else {
            return;
        };
        cleanup::send_signal(child.id() as i32, signal);
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    eprintln!(
                        "berth-e2e: berthd did not exit within {grace:?} of signal {signal}; killing it"
                    );
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                Ok(None) => thread::sleep(Duration::from_millis(25)),
            }
        }
    }

    /// Stops the daemon gracefully and starts it again on the same root.
    pub fn restart(&self) {
        self.stop_daemon();
        self.start_daemon();
    }

    /// Kills the daemon with SIGKILL and starts it again on the same root.
    pub fn crash_and_restart(&self) {
        self.kill_daemon();
        self.start_daemon();
    }

    /// The last `lines` lines of the daemon's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn path_env(&self) -> std::ffi::OsString {
        let mut paths = vec![self.bins.clone()];
        if let Some(existing) = std::env::var_os("PATH") {
            paths.extend(std::env::split_paths(&existing));
        } else {
            paths.extend(
                [
                    "/usr/local/sbin",
                    "/usr/local/bin",
                    "/usr/sbin",
                    "/usr/bin",
                    "/sbin",
                    "/bin",
                ]
                .map(PathBuf::from),
            );
        }
        std::env::join_paths(paths).expect("PATH entries have no colons")
    }

    /// Runs `berth -H unix://<sock> --no-autostart <args>` (90 s timeout, stdin from /dev/null).
    pub fn berth(&self, args: &[&str]) -> Output {
        self.berth_with(args, None, DEFAULT_TIMEOUT)
    }

    /// Runs the berth CLI with `stdin` bytes and a timeout.
    pub fn berth_with(&self, args: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> Output {
        let mut cmd = Command::new(self.bins.join("berth"));
        cmd.arg("-H")
            .arg(self.host())
            .arg("--no-autostart")
            .args(args);
        cmd.env("PATH", self.path_env())
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_CONFIG", self.dir.join("client-config"))
            .env("BERTH_CONFIG", self.dir.join("client-config/berth.json"))
            .env("NO_COLOR", "1");
        process::run_with_timeout(cmd, stdin, timeout)
    }

    /// Runs the real docker CLI against this daemon (`DOCKER_HOST=unix://<sock>`), or returns
    /// `None` after a loud notice when docker is not installed.
    pub fn docker(&self, args: &[&str]) -> Option<Output> {
        self.docker_with(args, None, DEFAULT_TIMEOUT)
    }

    /// Runs the docker CLI with `stdin` bytes and a timeout; `None` when docker is not installed.
    pub fn docker_with(
        &self,
        args: &[&str],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Option<Output> {
        if !docker_available() {
            return None;
        }
        let mut cmd = Command::new("docker");
        cmd.args(args)
            .env("DOCKER_HOST", self.host())
            .env("DOCKER_CONFIG", self.dir.join("docker-config"))
            .env("DOCKER_CLI_HINTS", "false")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("DOCKER_API_VERSION");
        Some(process::run_with_timeout(cmd, stdin, timeout))
    }

    /// One API request; panics when the daemon cannot be reached.
    pub fn api(&self, method: &str, path: &str, body: Option<(&str, &[u8])>) -> http::Response {
        http::request(&self.socket, method, path, body, API_TIMEOUT).unwrap_or_else(|e| {
            panic!(
                "{method} {path} on {}: {e}\n--- log ---\n{}",
                self.socket.display(),
                self.log_tail(40)
            )
        })
    }

    /// `GET path`, returning the status and the body as text.
    pub fn api_get(&self, path: &str) -> (u16, String) {
        let r = self.api("GET", path, None);
        (r.status, r.text())
    }

    /// `GET /containers/<name>/json` parsed; panics unless the status is 200.
    pub fn inspect_container(&self, name: &str) -> serde_json::Value {
        let r = self.api(
            "GET",
            &format!("/containers/{}/json", http::encode_query(name)),
            None,
        );
        assert_eq!(r.status, 200, "inspect container {name}: {}", r.text());
        let v = r.json();
        if let Some(id) = v["Id"].as_str() {
            lock(&self.seen_ids).insert(id.to_string());
        }
        if let Some(pid) = v["State"]["Pid"].as_i64().filter(|&p| p > 0) {
            lock(&self.seen_pids).insert(pid as i32);
        }
        v
    }

    /// `GET /images/<name>/json` parsed, or `None` on 404.
    pub fn inspect_image(&self, name: &str) -> Option<serde_json::Value> {
        let r = self.api("GET", &format!("/images/{name}/json"), None);
        match r.status {
            200 => Some(r.json()),
            404 => None,
            other => panic!(
                "inspect image {name}: unexpected status {other}: {}",
                r.text()
            ),
        }
    }

    /// Imports the busybox rootfs fixture as `busybox:latest` (if not present) and returns the
    /// image id. Uses the API the way `docker import` does (`POST /images/create?fromSrc=-`).
    pub fn busybox_image(&self) -> String {
        self.import_image("busybox:latest", &fixtures::busybox_rootfs_tar())
    }

    /// Imports a rootfs tar under `reference` via the API unless that reference exists already;
    /// returns the image id.
    pub fn import_image(&self, reference: &str, tar: &Path) -> String {
        if let Some(image) = self.inspect_image(reference) {
            return image["Id"]
                .as_str()
                .expect("image Id is a string")
                .to_string();
        }
        let data = fs::read(tar).unwrap_or_else(|e| panic!("cannot read {}: {e}", tar.display()));
        let path = format!(
            "/images/create?fromSrc=-&repo={}",
            http::encode_query(reference)
        );
        let r = http::request(
            &self.socket,
            "POST",
            &path,
            Some(("application/x-tar", &data)),
            Duration::from_secs(300),
        )
        .unwrap_or_else(|e| panic!("importing {} as {reference}: {e}", tar.display()));
        assert_eq!(
            r.status,
            200,
            "importing {} as {reference}: {}",
            tar.display(),
            r.text()
        );
        assert!(
            !r.text().contains("errorDetail"),
            "importing {} as {reference}: {}",
            tar.display(),
            r.text()
        );
        let image = self
            .inspect_image(reference)
            .unwrap_or_else(|| panic!("{reference} is missing after import: {}", r.text()));
        image["Id"]
            .as_str()
            .expect("image Id is a string")
            .to_string()
    }

    /// Ids of all containers (running or not), from the API.
    pub fn container_ids(&self) -> Vec<String> {
        let r = self.api("GET", "/containers/json?all=1", None);
        assert_eq!(r.status, 200, "list containers: {}", r.text());
        let ids: Vec<String> = r
            .json()
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["Id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        lock(&self.seen_ids).extend(ids.iter().cloned());
        ids
    }

    /// Deletes every user network (their bridges go with them).
    fn remove_all_networks(&self) {
        let Ok(r) = http::request(
            &self.socket,
            "GET",
            "/networks",
            None,
            Duration::from_secs(20),
        ) else {
            return;
        };
        let Ok(serde_json::Value::Array(list)) =
            serde_json::from_slice::<serde_json::Value>(&r.body)
        else {
            return;
        };
        for net in list {
            if let Some(id) = net["Id"].as_str()
                && net["Name"] != "bridge"
            {
                let _ = http::request(
                    &self.socket,
                    "DELETE",
                    &format!("/networks/{id}"),
                    None,
                    Duration::from_secs(20),
                );
            }
        }
    }

    /// Force-removes every container through the API, remembering ids and pids for cleanup.
    fn remove_all_containers(&self) {
        let Ok(r) = http::request(
            &self.socket,
            "GET",
            "/containers/json?all=1",
            None,
            Duration::from_secs(20),
        ) else {
            return;
        };
        if r.status != 200 {
            return;
        }
        let Ok(serde_json::Value::Array(list)) =
            serde_json::from_slice::<serde_json::Value>(&r.body)
        else {
            return;
        };
        for c in list {
            let Some(id) = c["Id"].as_str() else { continue };
            lock(&self.seen_ids).insert(id.to_string());
            if let Ok(r) = http::request(
                &self.socket,
                "GET",
                &format!("/containers/{id}/json"),
                None,
                Duration::from_secs(20),
            ) && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.body)
                && let Some(pid) = v["State"]["Pid"].as_i64().filter(|&p| p > 0)
            {
                lock(&self.seen_pids).insert(pid as i32);
            }
            let _ = http::request(
                &self.socket,
                "DELETE",
                &format!("/containers/{id}?force=1&v=1"),
                None,
                Duration::from_secs(30),
            );
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- berthd log ({}), last 80 lines ---\n{}\n--- end of berthd log ---",
                self.log.display(),
                self.log_tail(80)
            );
        }
        // A panic inside a destructor that runs during unwinding aborts the whole test binary.
        let teardown = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.teardown()));
        if teardown.is_err() {
            eprintln!(
                "berth-e2e: teardown of {} panicked; some state may be left behind",
                self.dir.display()
            );
        }
    }
}

impl TestDaemon {
    fn teardown(&self) {
        if self.daemon_pid().is_some() {
            self.remove_all_containers();
            self.remove_all_networks();
        }
        self.stop_daemon();
        self.net.clean_kernel_state();
        let ids = lock(&self.seen_ids).clone();
        let pids = lock(&self.seen_pids).clone();
        if std::env::var_os("BERTH_E2E_KEEP").is_some() {
            eprintln!(
                "berth-e2e: BERTH_E2E_KEEP is set, leaving {}",
                self.dir.display()
            );
            return;
        }
        cleanup::teardown_dir(&self.dir, &ids, &pids);
    }
}
