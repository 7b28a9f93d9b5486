//! Push and pull through berthd against a real registry on loopback: berth's own
//! `berth-registry`, and Debian's `docker-registry` (distribution) when installed.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_e2e::{OutputExt, TestDaemon, docker_available, find_on_path, wait_until};

use crate::util::{daemon_or_skip, daemon_with_busybox};

/// A registry process on a free loopback port, killed (by its PID) when dropped.
struct Registry {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start(
        program: &std::path::Path,
        args: impl Fn(&str, &std::path::Path) -> Vec<String>,
    ) -> Registry {
        let dir = tempfile::tempdir().expect("registry dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(program)
            .args(args(&addr, dir.path()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start registry");
        wait_until(Duration::from_secs(10), "registry to listen", || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
        Registry {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn image_id(d: &TestDaemon, name: &str) -> String {
    d.berth(&["image", "inspect", "-f", "{{.Id}}", name])
        .ok("image inspect")
        .trim()
        .to_string()
}

/// Pushes busybox from one daemon, pulls it into another (which has no layers), runs it.
fn round_trip(registry: &Registry) {
    let a = daemon_or_skip!(daemon_with_busybox());
    let b = daemon_or_skip!(TestDaemon::start());
    let name = format!("{}/e2e/bb:v1", registry.addr);
    a.berth(&["tag", "busybox", &name]).ok("tag");
    let pushed = a.berth(&["push", &name]).ok("push");
    assert!(pushed.contains("digest: sha256:"), "{pushed}");
    let pulled = b.berth(&["pull", &name]).ok("pull");
    assert!(pulled.contains("Downloaded newer image"), "{pulled}");
    assert_eq!(
        image_id(&a, &name),
        image_id(&b, &name),
        "the same image on both sides"
    );
    assert_eq!(
        b.berth(&["run", "--rm", &name, "echo", "pulled"])
            .ok("run pulled")
            .trim(),
        "pulled"
    );
    let missing = b.berth(&["pull", &format!("{}/e2e/none:1", registry.addr)]);
    missing.expect_failure("pull of a missing image");
    assert!(
        missing.stderr_text().contains("manifest unknown"),
        "{missing:?}"
    );
    if docker_available() {
        let docker_name = format!("{}/e2e/viadocker:1", registry.addr);
        a.berth(&["tag", "busybox", &docker_name]).ok("tag");
        a.docker(&["push", &docker_name])
            .expect("docker")
            .ok("docker push");
        b.docker(&["pull", &docker_name])
            .expect("docker")
            .ok("docker pull");
        b.docker(&["run", "--rm", &docker_name, "true"])
            .expect("docker")
            .ok("docker run pulled");
    }
}

#[test]
fn push_pull_with_berth_registry() {
    let program = berth_e2e::bin_dir().join("berth-registry");
    let registry = Registry::start(&program, |addr, dir| {
        vec![
            "serve".into(),
            "--addr".into(),
            addr.into(),
            "--root".into(),
            dir.display().to_string(),
        ]
    });
    round_trip(&registry);
}

#[test]
fn push_pull_with_distribution_registry() {
    let Some(program) = find_on_path("docker-registry") else {
        berth_e2e::loud("docker-registry is not installed: distribution interop test SKIPPED");
        return;
    };
    let registry = Registry::start(&program, |addr, dir| {
        let config = dir.join("config.yml");
        let yaml = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.join("data").display()
        );
        std::fs::write(&config, yaml).expect("registry config");
        vec!["serve".into(), config.display().to_string()]
    });
    round_trip(&registry);
}
