//! Push and pull through berthd against a real registry on loopback: berth's own
//! `berth-registry`, and Debian's `docker-registry` (distribution) when installed.
//! Built images are pushed with layers compressed once (a second push uploads nothing),
//! `pull -a`, zstd layers (made by skopeo), login against htpasswd, Docker Hub mirrors.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_e2e::{OutputExt, TestDaemon, docker_available, find_on_path, wait_until};

use crate::util::{daemon_or_skip, daemon_with_busybox};

/// A registry process on a free loopback port, killed (by its PID) when dropped.
/// A registry process on a free loopback port, killed (by its PID) when dropped; other test
/// modules use it too.
pub(crate) struct Registry {
    child: Child,
    pub(crate) addr: String,
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

/// A berth-registry on a free port, with extra `serve` flags.
pub(crate) fn berth_registry(extra: &[String]) -> Registry {
    let program = berth_e2e::bin_dir().join("berth-registry");
    let extra = extra.to_vec();
    Registry::start(&program, move |addr, dir| {
        let mut args = vec![
            "serve".to_string(),
            "--addr".into(),
            addr.into(),
            "--root".into(),
            dir.join("storage").display().to_string(),
        ];
        args.extend(extra.iter().cloned());
        args
    })
}

/// A raw HTTP GET against a registry on loopback; `auth` is a full `Authorization` value.
fn registry_get(addr: &str, path: &str, auth: Option<&str>) -> berth_e2e::http::Response {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the registry");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
    let mut head =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n");
    if let Some(a) = auth {
        head.push_str(&format!("Authorization: {a}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    berth_e2e::http::parse_response(&raw, false).expect("an HTTP response")
}

/// The manifest of `repo:tag` in the registry, parsed.
fn registry_manifest(addr: &str, repo: &str, tag: &str) -> serde_json::Value {
    let r = registry_get(addr, &format!("/v2/{repo}/manifests/{tag}"), None);
    assert_eq!(r.status, 200, "manifest {repo}:{tag}: {}", r.text());
    r.json()
}

/// Builds `FROM busybox` plus one COPY layer of `size` random bytes as `tag`.
fn build_image(d: &TestDaemon, tag: &str, size: usize) {
    let ctx = d
        .scratch()
        .join(format!("ctx-{}", tag.replace(['/', ':'], "-")));
    std::fs::create_dir_all(&ctx).expect("context dir");
    let mut data = vec![0u8; size];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut data))
        .expect("random data");
    std::fs::write(ctx.join("data.bin"), &data).expect("context file");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY data.bin /data.bin\n",
    )
    .expect("Dockerfile");
    d.berth(&["build", "-q", "-t", tag, &ctx.display().to_string()])
        .ok("build");
}

/// The JSON messages of `POST /images/create` (a pull through the API).
fn api_pull(d: &TestDaemon, image: &str, tag: Option<&str>) -> Vec<serde_json::Value> {
    let mut path = format!(
        "/images/create?fromImage={}",
        berth_e2e::http::encode_query(image)
    );
    if let Some(t) = tag {
        path.push_str(&format!("&tag={t}"));
    }
    let r = d.api("POST", &path, None);
    assert_eq!(r.status, 200, "pull {image}: {}", r.text());
    r.body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("a JSON progress message"))
        .collect()
}

/// `(id, status)` of the messages that have an id.
fn statuses(messages: &[serde_json::Value]) -> Vec<(String, String)> {
    messages
        .iter()
        .filter_map(|m| {
            Some((
                m["id"].as_str()?.to_string(),
                m["status"].as_str()?.to_string(),
            ))
        })
        .collect()
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

/// Pushing a built image (uncompressed local layers) sends gzip layers, compressed once:
/// the second push (same repository) uploads nothing, a third (another repository of the
/// same registry) mounts; the local image does not change; the pull shows docker's
/// per-layer lines and gives back the same image.
#[test]
fn built_images_push_compressed_once_and_pull_back() {
    let a = daemon_or_skip!(daemon_with_busybox());
    let b = daemon_or_skip!(TestDaemon::start());
    let registry = berth_registry(&[]);
    let name = format!("{}/e2e/built:v1", registry.addr);
    build_image(&a, &name, 2 << 20);
    let before = a.inspect_image(&name).expect("built image");
    let local_layers: Vec<String> = before["RootFS"]["Layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l.as_str().expect("diff id").to_string())
        .collect();
    assert_eq!(local_layers.len(), 2, "busybox + COPY");

    let first = a.berth(&["push", &name]).ok("first push");
    assert_eq!(first.matches(": Pushed").count(), 2, "{first}");
    let digest_line = |out: &str| {
        out.lines()
            .find(|l| l.contains("digest: sha256:"))
            .unwrap_or_else(|| panic!("no digest line in {out}"))
            .to_string()
    };
    let manifest = registry_manifest(&registry.addr, "e2e/built", "v1");
    for (layer, diff_id) in manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .zip(&local_layers)
    {
        assert_eq!(
            layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip",
            "{manifest}"
        );
        assert_ne!(
            layer["digest"].as_str(),
            Some(diff_id.as_str()),
            "compressed"
        );
    }
    let compressions = || a.log_tail(100_000).matches("compressed layer").count();
    assert_eq!(compressions(), 2, "one compression per layer");

    let second = a.berth(&["push", &name]).ok("second push");
    assert_eq!(
        second.matches("Layer already exists").count(),
        2,
        "{second}"
    );
    assert!(!second.contains(": Pushed"), "{second}");
    assert_eq!(digest_line(&first), digest_line(&second), "same manifest");
    let other = format!("{}/e2e/other:v1", registry.addr);
    a.berth(&["tag", &name, &other]).ok("tag");
    let third = a.berth(&["push", &other]).ok("push to another repository");
    assert_eq!(
        third.matches("Mounted from e2e/built").count(),
        2,
        "{third}"
    );
    assert_eq!(compressions(), 2, "pushing again compresses nothing");
    let after = a.inspect_image(&name).expect("still there");
    assert_eq!(after["Id"], before["Id"]);
    assert_eq!(
        after["RootFS"], before["RootFS"],
        "the local image is unchanged"
    );

    let messages = api_pull(&b, &format!("{}/e2e/built", registry.addr), Some("v1"));
    let lines = statuses(&messages);
    for layer in manifest["layers"].as_array().expect("layers") {
        let id = &layer["digest"].as_str().expect("digest")[7..19];
        let order: Vec<&str> = lines
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, s)| s.as_str())
            .collect();
        let pos = |want: &str| {
            order
                .iter()
                .position(|s| *s == want)
                .unwrap_or_else(|| panic!("no {want:?} for {id} in {order:?}"))
        };
        assert!(pos("Pulling fs layer") < pos("Downloading"), "{order:?}");
        assert!(pos("Downloading") < pos("Verifying Checksum"), "{order:?}");
        assert!(
            pos("Verifying Checksum") < pos("Download complete"),
            "{order:?}"
        );
        assert!(pos("Download complete") < pos("Extracting"), "{order:?}");
        assert!(pos("Extracting") < pos("Pull complete"), "{order:?}");
    }
    assert_eq!(image_id(&b, &name), before["Id"].as_str().expect("id"));
    assert_eq!(
        b.berth(&["run", "--rm", &name, "wc", "-c", "/data.bin"])
            .ok("run the pulled image")
            .split_whitespace()
            .next(),
        Some((2u32 << 20).to_string().as_str())
    );
    // Everything present: nothing is downloaded or extracted.
    let again = statuses(&api_pull(
        &b,
        &format!("{}/e2e/built", registry.addr),
        Some("v1"),
    ));
    assert!(
        again
            .iter()
            .all(|(_, s)| s == "Already exists" || s.starts_with("Pulling from")),
        "{again:?}"
    );

    if docker_available() {
        let via = format!("{}/e2e/viadocker:v1", registry.addr);
        a.berth(&["tag", &name, &via]).ok("tag");
        a.docker(&["push", &via]).expect("docker").ok("docker push");
        let again = a
            .docker(&["push", &via])
            .expect("docker")
            .ok("docker push again");
        assert_eq!(again.matches("Layer already exists").count(), 2, "{again}");
    }
}

/// `pull -a` pulls every tag; the API does so for a bare name without `tag`.
#[test]
fn pull_all_tags() {
    let a = daemon_or_skip!(daemon_with_busybox());
    let b = daemon_or_skip!(TestDaemon::start());
    let registry = berth_registry(&[]);
    let repo = format!("{}/e2e/multi", registry.addr);
    build_image(&a, &format!("{repo}:one"), 64 << 10);
    build_image(&a, &format!("{repo}:two"), 64 << 10);
    a.berth(&["tag", &format!("{repo}:one"), &format!("{repo}:three")])
        .ok("tag");
    for tag in ["one", "two", "three"] {
        a.berth(&["push", &format!("{repo}:{tag}")]).ok("push");
    }
    let out = b.berth(&["pull", "-a", &repo]).ok("pull -a");
    for tag in ["one", "two", "three"] {
        assert!(
            out.contains(&format!("{tag}: Pulling from e2e/multi")),
            "{out}"
        );
        assert_eq!(
            image_id(&b, &format!("{repo}:{tag}")),
            image_id(&a, &format!("{repo}:{tag}"))
        );
    }
    assert!(
        out.contains(&format!("Status: Downloaded newer image for {repo}")),
        "{out}"
    );
    b.berth(&["pull", "-a", &format!("{repo}:one")])
        .expect_failure("pull -a with a tag");
    let again = b.berth(&["pull", "--all-tags", &repo]).ok("pull -a again");
    assert!(
        again.contains(&format!("Status: Image is up to date for {repo}")),
        "{again}"
    );
    if docker_available() {
        let c = daemon_or_skip!(TestDaemon::start());
        c.docker(&["pull", "-a", &repo])
            .expect("docker")
            .ok("docker pull -a");
        for tag in ["one", "two", "three"] {
            assert_eq!(
                image_id(&c, &format!("{repo}:{tag}")),
                image_id(&a, &format!("{repo}:{tag}"))
            );
        }
    }
}

/// A pulled image whose layers skopeo recompressed with zstd runs.
#[test]
fn zstd_layers_pull() {
    let Some(skopeo) = find_on_path("skopeo") else {
        berth_e2e::loud("skopeo is not installed: zstd layer pull test SKIPPED");
        return;
    };
    let a = daemon_or_skip!(daemon_with_busybox());
    let b = daemon_or_skip!(TestDaemon::start());
    let registry = berth_registry(&[]);
    let gz = format!("{}/e2e/gz:v1", registry.addr);
    build_image(&a, &gz, 256 << 10);
    a.berth(&["push", &gz]).ok("push");
    let policy = a.scratch().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .expect("policy");
    let copied = Command::new(skopeo)
        .args([
            "copy",
            "--policy",
            &policy.display().to_string(),
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--format",
            "oci",
            "--dest-compress-format",
            "zstd",
            &format!("docker://{gz}"),
            &format!("docker://{}/e2e/zstd:v1", registry.addr),
        ])
        .output()
        .expect("run skopeo");
    assert!(copied.status.success(), "skopeo: {}", copied.stderr_text());
    let manifest = registry_manifest(&registry.addr, "e2e/zstd", "v1");
    let layers = manifest["layers"].as_array().expect("layers");
    assert!(
        layers
            .iter()
            .all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"),
        "{manifest}"
    );
    let name = format!("{}/e2e/zstd:v1", registry.addr);
    let out = b.berth(&["pull", &name]).ok("pull the zstd image");
    assert!(out.contains("Downloaded newer image"), "{out}");
    assert_eq!(
        image_id(&b, &name),
        image_id(&a, &gz),
        "same config, same image"
    );
    assert_eq!(
        b.berth(&["run", "--rm", &name, "wc", "-c", "/data.bin"])
            .ok("run")
            .split_whitespace()
            .next(),
        Some((256u32 << 10).to_string().as_str())
    );
}

/// Login against htpasswd (Basic) and token mode: refused without or with wrong
/// credentials (nothing saved), accepted with the right ones; logout forgets them.
#[test]
fn login_with_htpasswd() {
    let a = daemon_or_skip!(daemon_with_busybox());
    let dir = tempfile::tempdir().expect("dir");
    let htpasswd = dir.path().join("htpasswd");
    let hash = bcrypt::hash("s3cret", 4).expect("bcrypt");
    std::fs::write(&htpasswd, format!("alice:{hash}\n")).expect("htpasswd");
    let basic = vec!["--htpasswd".to_string(), htpasswd.display().to_string()];
    let mut token = basic.clone();
    token.extend(["--token-secret".to_string(), "e2e-not-secret".to_string()]);
    for (mode, flags) in [("basic", basic), ("token", token)] {
        let registry = berth_registry(&flags);
        let name = format!("{}/e2e/private:{mode}", registry.addr);
        a.berth(&["tag", "busybox", &name]).ok("tag");
        let denied = a.berth(&["push", &name]);
        denied.expect_failure("push without login");
        assert!(
            denied
                .stderr_text()
                .contains("unauthorized: authentication required")
                || denied
                    .stdout_text()
                    .contains("unauthorized: authentication required"),
            "{mode}: {denied:?}"
        );
        let wrong = a.berth_with(
            &["login", "-u", "alice", "--password-stdin", &registry.addr],
            Some(b"wrong"),
            berth_e2e::DEFAULT_TIMEOUT,
        );
        wrong.expect_failure("login with a wrong password");
        let config = a.dir().join("client-config/config.json");
        let saved = || std::fs::read_to_string(&config).unwrap_or_default();
        assert!(
            !saved().contains(&registry.addr),
            "{mode}: nothing saved: {}",
            saved()
        );
        let ok = a
            .berth_with(
                &["login", "-u", "alice", "--password-stdin", &registry.addr],
                Some(b"s3cret"),
                berth_e2e::DEFAULT_TIMEOUT,
            )
            .ok("login");
        assert!(ok.contains("Login Succeeded"), "{ok}");
        assert!(saved().contains(&registry.addr), "{}", saved());
        a.berth(&["push", &name]).ok("push after login");
        a.berth(&["rmi", &name]).ok("rmi");
        a.berth(&["pull", &name]).ok("pull after login");
        a.berth(&["logout", &registry.addr]).ok("logout");
        assert!(!saved().contains(&registry.addr), "{}", saved());
        a.berth(&["pull", &name])
            .expect_failure("pull after logout");
    }
}

/// berthd started by hand with a daemon.json (the harness has no flag for one); stopped
/// by its PID when dropped, before the harness tears the directory down.
struct ConfiguredDaemon {
    child: Child,
}

impl ConfiguredDaemon {
    fn start(d: &TestDaemon, config: &serde_json::Value) -> ConfiguredDaemon {
        d.stop_daemon();
        let file = d.dir().join("daemon.json");
        std::fs::write(&file, config.to_string()).expect("daemon.json");
        let log = std::fs::File::create(d.dir().join("berthd-configured.log")).expect("log");
        let child = Command::new(d.bin_dir().join("berthd"))
            .arg("-H")
            .arg(d.host())
            .arg("--data-root")
            .arg(d.root())
            .arg("--exec-root")
            .arg(d.exec_root())
            .arg("--bridge-name")
            .arg(d.bridge_name())
            .arg("--default-address-pool")
            .arg(d.address_pool())
            .arg("--config-file")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start berthd");
        let socket = d.socket().to_path_buf();
        wait_until(
            Duration::from_secs(20),
            "configured berthd to answer",
            || ping(&socket),
        );
        ConfiguredDaemon { child }
    }
}

fn ping(socket: &Path) -> bool {
    berth_e2e::http::request(socket, "GET", "/_ping", None, Duration::from_secs(2))
        .is_ok_and(|r| r.status == 200)
}

impl Drop for ConfiguredDaemon {
    fn drop(&mut self) {
        berth_e2e::cleanup::send_signal(self.child.id() as i32, libc::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// With `registry-mirrors` in daemon.json, Docker Hub names are pulled from the mirror
/// (no internet needed); a dead mirror listed first is skipped.
#[test]
fn docker_hub_pulls_go_through_registry_mirrors() {
    let a = daemon_or_skip!(daemon_with_busybox());
    let b = daemon_or_skip!(TestDaemon::start());
    let mirror = berth_registry(&[]);
    let on_mirror = format!("{}/library/busybox:latest", mirror.addr);
    a.berth(&["tag", "busybox", &on_mirror]).ok("tag");
    a.berth(&["push", &on_mirror]).ok("push to the mirror");
    let dead = TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr");
    let config = serde_json::json!({
        "registry-mirrors": [format!("http://{dead}"), format!("http://{}", mirror.addr)],
    });
    let configured = ConfiguredDaemon::start(&b, &config);
    let out = b
        .berth(&["pull", "busybox"])
        .ok("pull busybox via the mirror");
    assert!(
        out.contains("Downloaded newer image for busybox:latest"),
        "{out}"
    );
    assert_eq!(image_id(&b, "busybox"), image_id(&a, "busybox"));
    assert_eq!(
        b.berth(&["run", "--rm", "busybox", "echo", "mirrored"])
            .ok("run")
            .trim(),
        "mirrored"
    );
    drop(configured);
}
