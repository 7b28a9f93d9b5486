//! A scratch "lab" for root tests against the real kernel: unique names, unique subnets in
//! 10.213.0.0/16, and a Drop that removes every namespace, link, nftables table and process
//! the test registered, even when the test panics.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use berth_network::netlink::Netlink;
use berth_network::netns;
use ipnet::Ipv4Net;

static COUNTER: AtomicU32 = AtomicU32::new(0);
static TAKEN_SUBNETS: Mutex<Vec<Ipv4Net>> = Mutex::new(Vec::new());

pub const BUSYBOX: &str = "/usr/bin/busybox";

/// Everything one test creates, removed on drop.
pub struct Lab {
    /// A short tag unique to this test in this process (also across concurrent processes,
    /// by way of the pid): 6 hex digits.
    pub tag: String,
    dir: tempfile::TempDir,
    netns: Mutex<Vec<PathBuf>>,
    links: Mutex<Vec<String>>,
    tables: Mutex<Vec<String>>,
    children: Mutex<Vec<Child>>,
    subnets: Mutex<Vec<Ipv4Net>>,
}

impl Lab {
    pub fn new() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{:04x}{:02x}", std::process::id() & 0xffff, n & 0xff);
        Self {
            tag,
            dir: tempfile::Builder::new()
                .prefix("berth-net-test")
                .tempdir()
                .expect("tempdir"),
            netns: Mutex::default(),
            links: Mutex::default(),
            tables: Mutex::default(),
            children: Mutex::default(),
            subnets: Mutex::default(),
        }
    }

    /// A scratch directory removed with the lab.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Creates a namespace named `name` in the lab directory.
    pub async fn netns(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        self.netns.lock().unwrap().push(path.clone());
        netns::create(&path).await.expect("create netns");
        path
    }

    /// A unique interface name `<prefix><tag>`, removed at the end.
    pub fn link_name(&self, prefix: &str) -> String {
        let name = format!("{prefix}{}", self.tag);
        assert!(name.len() <= 15, "{name} too long");
        self.track_link(&name);
        name
    }

    /// Registers an interface created by the code under test for removal.
    pub fn track_link(&self, name: &str) {
        self.links.lock().unwrap().push(name.to_string());
    }

    /// Registers an nftables table (`"inet name"`) for removal.
    pub fn track_table(&self, family_and_name: &str) {
        self.tables
            .lock()
            .unwrap()
            .push(family_and_name.to_string());
    }

    /// A unique nftables table name for this test, registered for removal.
    pub fn table_name(&self) -> String {
        let name = format!("berth_test_{}", self.tag);
        self.track_table(&format!("inet {name}"));
        name
    }

    /// A /24 in 10.213.0.0/16 that no route on the host and no other lab test uses.
    pub async fn subnet(&self) -> Ipv4Net {
        let routes = Netlink::host()
            .expect("netlink")
            .ipv4_routes()
            .await
            .expect("routes");
        let mut taken = TAKEN_SUBNETS.lock().unwrap();
        let start = (std::process::id() * 7 + COUNTER.fetch_add(1, Ordering::SeqCst) * 13) % 250;
        for step in 0..250 {
            let third = ((start + step) % 250 + 1) as u8;
            let net = Ipv4Net::new(Ipv4Addr::new(10, 213, third, 0), 24).unwrap();
            let busy = taken
                .iter()
                .chain(routes.iter())
                .any(|u| berth_network::ipam::overlaps(u, &net));
            if !busy {
                taken.push(net);
                self.subnets.lock().unwrap().push(net);
                return net;
            }
        }
        panic!("no free test subnet in 10.213.0.0/16");
    }

    /// Host number `n` of `subnet`.
    pub fn host(subnet: Ipv4Net, n: u8) -> Ipv4Addr {
        let [a, b, c, _] = subnet.network().octets();
        Ipv4Addr::new(a, b, c, n)
    }

    /// A command that runs inside the namespace at `netns`.
    pub fn command_in(netns: &Path, program: &str, args: &[&str]) -> Command {
        let ns = std::fs::File::open(netns).expect("open netns");
        let mut cmd = Command::new(program);
        cmd.args(args);
        // SAFETY: the closure only calls setns(2), which is async-signal-safe, on a descriptor
        // it owns; it allocates nothing between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Runs busybox `args` inside `netns` to completion (10 s at most).
    pub fn busybox_in(netns: &Path, args: &[&str]) -> Output {
        let mut full = vec!["timeout", "10", BUSYBOX];
        full.extend_from_slice(args);
        Self::command_in(netns, BUSYBOX, &full)
            .stdin(Stdio::null())
            .output()
            .expect("run busybox")
    }

    /// Starts busybox `args` inside `netns` in the background, killed at the end.
    pub fn spawn_in(&self, netns: &Path, args: &[&str]) {
        let child = Self::command_in(netns, BUSYBOX, args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn busybox");
        self.children.lock().unwrap().push(child);
    }

    /// Whether one ping from `netns` to `target` gets an answer.
    pub fn ping(netns: &Path, target: Ipv4Addr) -> bool {
        Self::busybox_in(netns, &["ping", "-c", "1", "-W", "2", &target.to_string()])
            .status
            .success()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for mut child in self.children.lock().unwrap().drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        for table in self.tables.lock().unwrap().drain(..) {
            let mut args = vec!["delete", "table"];
            args.extend(table.split_whitespace());
            let _ = Command::new("nft")
                .args(&args)
                .stderr(Stdio::null())
                .status();
        }
        for path in self.netns.lock().unwrap().drain(..) {
            if let Err(e) = netns::remove(&path) {
                eprintln!("lab cleanup: {e}");
            }
        }
        for link in self.links.lock().unwrap().drain(..) {
            let _ = Command::new("ip")
                .args(["link", "del", &link])
                .stderr(Stdio::null())
                .status();
        }
        let mine: Vec<Ipv4Net> = self.subnets.lock().unwrap().drain(..).collect();
        TAKEN_SUBNETS.lock().unwrap().retain(|n| !mine.contains(n));
    }
}
