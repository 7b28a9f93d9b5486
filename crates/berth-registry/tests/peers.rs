//! Interop with real peers on loopback: Debian's `docker-registry` (distribution 2.8) as the
//! server for our client, and `skopeo` as the client of our server. Each test skips, saying
//! so on stderr, when its binary is missing.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_registry::server::{AuthMode, Htpasswd, TokenService};
use berth_registry::{CredentialStore, Credentials, PullOptions, PushOptions};
use berth_store::{ContentStore, Digest};
use common::*;

fn find_binary(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn skip(binary: &str) {
    eprintln!("SKIPPED: {binary} is not installed; interop test not run");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `docker-registry` child process, killed by PID when dropped.
struct Distribution {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_distribution(binary: &Path, htpasswd: Option<&str>) -> Distribution {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
        dir.path().join("data").display()
    );
    if let Some(line) = htpasswd {
        let file = dir.path().join("htpasswd");
        std::fs::write(&file, format!("{line}\n")).unwrap();
        config.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
            file.display()
        ));
    }
    let config_path = dir.path().join("config.yml");
    std::fs::write(&config_path, config).unwrap();
    let child = Command::new(binary)
        .arg("serve")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let peer = Distribution {
        child,
        addr,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "docker-registry did not start on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    peer
}

#[tokio::test]
async fn pull_and_push_against_distribution() {
    let Some(binary) = find_binary("docker-registry") else {
        return skip("docker-registry");
    };
    let peer = start_distribution(&binary, None).await;
    let src_dir = tempfile::tempdir().unwrap();
    let src = ContentStore::open(src_dir.path()).unwrap();
    let img = make_image(&src, &[200 << 10, 2 << 20]);
    let c = client(CredentialStore::empty());

    let r1 = reference(peer.addr, "berth/interop:v1");
    assert_eq!(
        c.push(&r1, &src, &img.manifest, &PushOptions::default())
            .await
            .unwrap(),
        img.manifest
    );
    let r2 = reference(peer.addr, "berth/copy:chunked");
    let opts = PushOptions {
        chunk_size: Some(64 << 10),
        mount_from: vec!["berth/interop".to_string()],
        ..Default::default()
    };
    assert_eq!(
        c.push(&r2, &src, &img.manifest, &opts).await.unwrap(),
        img.manifest
    );
    let img2 = make_image(&src, &[300 << 10]);
    let r3 = reference(peer.addr, "berth/interop:chunked");
    let opts = PushOptions {
        chunk_size: Some(50 << 10),
        ..Default::default()
    };
    assert_eq!(
        c.push(&r3, &src, &img2.manifest, &opts).await.unwrap(),
        img2.manifest
    );

    for (r, image) in [(&r1, &img), (&r2, &img), (&r3, &img2)] {
        let dst_dir = tempfile::tempdir().unwrap();
        let dst = ContentStore::open(dst_dir.path()).unwrap();
        let pulled = c.pull(r, &dst, &PullOptions::default()).await.unwrap();
        assert_eq!(pulled.digest, image.manifest);
        let mut want = image.all_digests();
        want.sort();
        assert_eq!(dst.list().unwrap(), want);
    }
    let mut tags = c
        .list_tags(&reference(peer.addr, "berth/interop"))
        .await
        .unwrap();
    tags.sort();
    assert_eq!(tags, ["chunked", "v1"]);
    let err = c
        .pull(
            &reference(peer.addr, "berth/interop:missing"),
            &src,
            &PullOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "manifest unknown: manifest unknown");
}

#[tokio::test]
async fn basic_auth_against_distribution() {
    let Some(binary) = find_binary("docker-registry") else {
        return skip("docker-registry");
    };
    let peer = start_distribution(&binary, Some(&Htpasswd::line("carol", "pw"))).await;
    let src_dir = tempfile::tempdir().unwrap();
    let src = ContentStore::open(src_dir.path()).unwrap();
    let img = make_image(&src, &[10_000]);
    let r = reference(peer.addr, "auth/app:1");
    let err = client(CredentialStore::empty())
        .push(&r, &src, &img.manifest, &PushOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "unauthorized: authentication required");
    let anonymous = client(CredentialStore::empty());
    assert!(
        anonymous
            .login(&peer.addr.to_string(), Credentials::basic("carol", "bad"))
            .await
            .is_err()
    );
    let mut creds = CredentialStore::empty();
    creds.insert(&peer.addr.to_string(), Credentials::basic("carol", "pw"));
    let c = client(creds);
    c.push(&r, &src, &img.manifest, &PushOptions::default())
        .await
        .unwrap();
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = ContentStore::open(dst_dir.path()).unwrap();
    assert_eq!(
        c.pull(&r, &dst, &PullOptions::default())
            .await
            .unwrap()
            .digest,
        img.manifest
    );
}

/// Writes an OCI image layout with the image tagged `tag`.
fn write_oci_layout(src: &ContentStore, img: &TestImage, dir: &Path, tag: &str) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    for d in img.all_digests() {
        std::fs::write(
            dir.join("blobs/sha256").join(d.hex()),
            src.read_to_vec(&d).unwrap(),
        )
        .unwrap();
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": img.manifest.to_string(),
            "size": src.size(&img.manifest).unwrap(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

async fn skopeo(binary: &Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(binary)
        .arg("--insecure-policy")
        .args(args)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn skopeo_copies_into_and_out_of_our_registry_with_tokens() {
    let Some(binary) = find_binary("skopeo") else {
        return skip("skopeo");
    };
    let mut svc = TokenService::new(b"skopeo-secret", "berth-test");
    svc.users = Some(Htpasswd::parse(&Htpasswd::line("dora", "pw")).unwrap());
    svc.anonymous_pull = true;
    let srv = start_server(AuthMode::Token(svc), None, None).await;
    let src_dir = tempfile::tempdir().unwrap();
    let src = ContentStore::open(src_dir.path()).unwrap();
    let work = tempfile::tempdir().unwrap();

    // skopeo pushes an OCI layout into our registry (token flow with credentials).
    let img = make_image(&src, &[100 << 10, 1 << 20]);
    let layout = work.path().join("in");
    write_oci_layout(&src, &img, &layout, "v1");
    let from = format!("oci:{}:v1", layout.display());
    let to = format!("docker://{}/skopeo/in:v1", srv.addr);
    let out = skopeo(&binary, &["copy", "--dest-tls-verify=false", &from, &to]).await;
    assert!(!out.status.success(), "anonymous push must be refused");
    let out = skopeo(
        &binary,
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "dora:pw",
            &from,
            &to,
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "skopeo copy in: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = ContentStore::open(dst_dir.path()).unwrap();
    let pulled = client(CredentialStore::empty())
        .pull(
            &reference(srv.addr, "skopeo/in:v1"),
            &dst,
            &PullOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        pulled.digest, img.manifest,
        "skopeo kept the manifest as it was"
    );
    for d in img.all_digests() {
        assert!(dst.exists(&d), "{d}");
    }

    // Our client pushes, skopeo pulls anonymously into an OCI layout.
    let img2 = make_image(&src, &[64 << 10]);
    let mut creds = CredentialStore::empty();
    creds.insert(&srv.addr.to_string(), Credentials::basic("dora", "pw"));
    client(creds)
        .push(
            &reference(srv.addr, "ours/out:v1"),
            &src,
            &img2.manifest,
            &PushOptions::default(),
        )
        .await
        .unwrap();
    let out_dir = work.path().join("out");
    let from = format!("docker://{}/ours/out:v1", srv.addr);
    let to = format!("oci:{}:v1", out_dir.display());
    let out = skopeo(&binary, &["copy", "--src-tls-verify=false", &from, &to]).await;
    assert!(
        out.status.success(),
        "skopeo copy out: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], img2.manifest.to_string());
    for d in img2.all_digests() {
        let blob = std::fs::read(out_dir.join("blobs/sha256").join(d.hex())).unwrap();
        assert_eq!(Digest::from_bytes(&blob), d);
    }
}
