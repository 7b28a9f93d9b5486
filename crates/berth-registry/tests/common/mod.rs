//! Shared helpers of the integration tests: an in-process server on 127.0.0.1:0, random
//! images in a content store, and raw HTTP for protocol-level checks.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use berth_registry::manifest::OCI_MANIFEST;
use berth_registry::server::{self, AuthMode, Registry, ServerConfig};
use berth_registry::{Client, ClientOptions, CredentialStore, Progress, ProgressFn};
use berth_store::{ContentStore, Digest, Reference};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// Our registry running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub root: tempfile::TempDir,
    pub registry: Registry,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Starts a server with `auth`, an upload limit and optional TLS.
pub async fn start_server(
    auth: AuthMode,
    max_upload_size: Option<u64>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> TestServer {
    start_with(auth, max_upload_size, tls, |r| r).await
}

/// Like [`start_server`] but lets the test wrap the router (fault injection).
pub async fn start_with(
    auth: AuthMode,
    max_upload_size: Option<u64>,
    tls: Option<Arc<rustls::ServerConfig>>,
    wrap: impl FnOnce(axum::Router) -> axum::Router,
) -> TestServer {
    let root = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        root: root.path().to_path_buf(),
        auth,
        max_upload_size,
        tls: tls.is_some(),
        proxy: None,
    };
    run(root, config, tls, wrap).await
}

/// A pull-through cache of `upstream`.
pub async fn start_proxy(upstream: SocketAddr) -> TestServer {
    let root = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        root: root.path().to_path_buf(),
        proxy: Some(server::ProxyConfig {
            remote_url: format!("http://{upstream}"),
            credentials: None,
        }),
        ..ServerConfig::default()
    };
    run(root, config, None, |r| r).await
}

async fn run(
    root: tempfile::TempDir,
    config: ServerConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
    wrap: impl FnOnce(axum::Router) -> axum::Router,
) -> TestServer {
    let registry = Registry::open(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let router = wrap(registry.router());
    tokio::spawn(async move {
        server::serve(listener, router, tls, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    TestServer {
        addr,
        root,
        registry,
        stop: Some(tx),
    }
}

pub fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    getrandom::fill(&mut v).unwrap();
    v
}

/// A test image in a content store: its manifest and the blobs it refers to.
pub struct TestImage {
    pub manifest: Digest,
    pub config: Digest,
    pub layers: Vec<Digest>,
}

impl TestImage {
    pub fn all_digests(&self) -> Vec<Digest> {
        let mut v = vec![self.manifest.clone(), self.config.clone()];
        v.extend(self.layers.iter().cloned());
        v
    }
}

/// Writes an OCI image of gzip-compressed random layers of the given uncompressed sizes.
pub fn make_image(cs: &ContentStore, layer_sizes: &[usize]) -> TestImage {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    let mut descs = Vec::new();
    for &n in layer_sizes {
        let raw = random(n);
        diff_ids.push(Digest::from_bytes(&raw).to_string());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        let blob = gz.finish().unwrap();
        let d = cs.put_bytes(&blob).unwrap();
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": d.to_string(),
            "size": blob.len(),
        }));
        layers.push(d);
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Labels": {"nonce": hex::encode(random(8))}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = cs.put_bytes(&config_bytes).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.to_string(),
            "size": config_bytes.len(),
        },
        "layers": descs,
    });
    let manifest_digest = cs
        .put_bytes(&serde_json::to_vec(&manifest).unwrap())
        .unwrap();
    TestImage {
        manifest: manifest_digest,
        config: config_digest,
        layers,
    }
}

pub fn client(credentials: CredentialStore) -> Client {
    Client::new(fast_options(), credentials).unwrap()
}

pub fn fast_options() -> ClientOptions {
    ClientOptions {
        retry_delay: std::time::Duration::from_millis(20),
        ..ClientOptions::default()
    }
}

pub fn reference(addr: SocketAddr, path: &str) -> Reference {
    Reference::parse(&format!("{addr}/{path}")).unwrap()
}

/// A progress callback that records every event.
pub fn recorder() -> (ProgressFn, Arc<Mutex<Vec<Progress>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (Arc::new(move |p| sink.lock().unwrap().push(p)), events)
}

/// A raw HTTP/1.1 exchange (no client-side path normalisation): status, head, body.
pub async fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    // The server may answer (and close) before reading an oversized body: keep what came.
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let mut body = out[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n =
            usize::from_str_radix(std::str::from_utf8(&b[..line_end]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[line_end + 2..line_end + 2 + n]);
        b = &b[line_end + 2 + n + 2..];
    }
}

/// A header value from a raw response head (case-insensitive name).
pub fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Files left in a content store's ingest directory.
pub fn ingest_leftovers(root: &std::path::Path) -> usize {
    std::fs::read_dir(root.join("content/ingest"))
        .map(|d| d.count())
        .unwrap_or(0)
}
