//! Our client against our server, in process, on 127.0.0.1.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_registry::server::{AuthMode, Htpasswd, TokenService};
use berth_registry::{
    Client, ClientOptions, CredentialStore, Credentials, ProgressEvent, PullOptions, PushOptions,
};
use berth_store::ContentStore;
use common::*;

#[tokio::test]
async fn push_pull_round_trip_with_mount_and_chunks() {
    let srv = start_server(AuthMode::None, None, None).await;
    let src_dir = tempfile::tempdir().unwrap();
    let src = ContentStore::open(src_dir.path()).unwrap();
    let img = make_image(&src, &[100 << 10, 1 << 20, 3 << 20]);
    let c = client(CredentialStore::empty());

    let r1 = reference(srv.addr, "team/app:v1");
    let (progress, events) = recorder();
    let pushed = c
        .push(
            &r1,
            &src,
            &img.manifest,
            &PushOptions {
                progress: Some(progress),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(pushed, img.manifest);
    let pushed_events = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.event == ProgressEvent::Pushed)
        .count();
    assert_eq!(pushed_events, 4, "config + 3 layers uploaded");

    // Same blobs into a second repository: mounted, not uploaded; chunked for the rest.
    let r2 = reference(srv.addr, "other/app:v2");
    let (progress, events) = recorder();
    let opts = PushOptions {
        chunk_size: Some(256 << 10),
        mount_from: vec!["team/app".to_string()],
        progress: Some(progress),
    };
    assert_eq!(
        c.push(&r2, &src, &img.manifest, &opts).await.unwrap(),
        img.manifest
    );
    let mounted = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e.event, ProgressEvent::Mounted { .. }))
        .count();
    assert_eq!(mounted, 4);
    // Pushing again uploads nothing.
    let (progress, events) = recorder();
    c.push(
        &r1,
        &src,
        &img.manifest,
        &PushOptions {
            progress: Some(progress),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.event != ProgressEvent::Waiting)
            .all(|e| e.event == ProgressEvent::AlreadyExists)
    );

    // Chunked upload of a fresh image.
    let img2 = make_image(&src, &[700 << 10]);
    let r3 = reference(srv.addr, "team/app:chunked");
    let opts = PushOptions {
        chunk_size: Some(100 << 10),
        ..Default::default()
    };
    assert_eq!(
        c.push(&r3, &src, &img2.manifest, &opts).await.unwrap(),
        img2.manifest
    );

    for (r, image) in [(&r1, &img), (&r2, &img), (&r3, &img2)] {
        let dst_dir = tempfile::tempdir().unwrap();
        let dst = ContentStore::open(dst_dir.path()).unwrap();
        let (progress, events) = recorder();
        let pulled = c
            .pull(
                r,
                &dst,
                &PullOptions {
                    progress: Some(progress),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(pulled.digest, image.manifest);
        assert_eq!(pulled.config.digest, image.config);
        let mut want = image.all_digests();
        want.sort();
        assert_eq!(dst.list().unwrap(), want);
        for d in image.all_digests() {
            assert_eq!(dst.read_to_vec(&d).unwrap(), src.read_to_vec(&d).unwrap());
        }
        let complete = events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.event == ProgressEvent::DownloadComplete)
            .count();
        assert_eq!(complete, image.layers.len());
        // Everything present: the second pull downloads nothing.
        let (progress, events) = recorder();
        c.pull(
            r,
            &dst,
            &PullOptions {
                progress: Some(progress),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(
            events
                .lock()
                .unwrap()
                .iter()
                .all(|e| e.event == ProgressEvent::AlreadyExists)
        );
    }
    let mut tags = c.list_tags(&reference(srv.addr, "team/app")).await.unwrap();
    tags.sort();
    assert_eq!(tags, ["chunked", "v1"]);
}

#[tokio::test]
async fn basic_auth_requires_credentials() {
    let users = Htpasswd::parse(&Htpasswd::line("alice", "s3cret")).unwrap();
    let srv = start_server(AuthMode::Basic(users), None, None).await;
    let src_dir = tempfile::tempdir().unwrap();
    let src = ContentStore::open(src_dir.path()).unwrap();
    let img = make_image(&src, &[4096]);
    let r = reference(srv.addr, "private/app:1");

    let anonymous = client(CredentialStore::empty());
    let err = anonymous
        .push(&r, &src, &img.manifest, &PushOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "unauthorized: authentication required");
    let err = anonymous
        .login(&srv.addr.to_string(), Credentials::basic("alice", "wrong"))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "unauthorized: authentication required");

    let mut creds = CredentialStore::empty();
    creds.insert(&srv.addr.to_string(), Credentials::basic("alice", "s3cret"));
    let c = client(creds);
    assert_eq!(
        c.push(&r, &src, &img.manifest, &PushOptions::default())
            .await
            .unwrap(),
        img.manifest
    );
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = ContentStore::open(dst_dir.path()).unwrap();
    c.pull(&r, &dst, &PullOptions::default()).await.unwrap();
    assert!(dst.exists(&img.manifest));
    let fresh = client(CredentialStore::empty());
    fresh
        .login(&srv.addr.to_string(), Credentials::basic("alice", "s3cret"))
        .await
        .unwrap();
    fresh.pull(&r, &dst, &PullOptions::default()).await.unwrap();
}

#[tokio::test]
async fn token_auth_like_docker_hub() {
    let mut svc = TokenService::new(b"test-secret", "berth-test");
    svc.users = Some(Htpasswd::parse(&Htpasswd::line("bob", "pw")).unwrap());
    svc.anonymous_pull = true;
    let srv = start_server(AuthMode::Token(svc), None, None).await;

    let (status, head, _) = raw(srv.addr, "GET", "/v2/lib/app/manifests/latest", &[], b"").await;
    assert_eq!(status, 401);
    assert_eq!(
        header(&head, "www-authenticate").unwrap(),
        format!(
            "Bearer realm=\"http://{}/token\",service=\"berth-test\",scope=\"repository:lib/app:pull\"",
            srv.addr
        )
    );

    let src_dir = tempfile::tempdir().unwrap();
    let src = ContentStore::open(src_dir.path()).unwrap();
    let img = make_image(&src, &[10_000, 20_000]);
    let r = reference(srv.addr, "lib/app:latest");
    let anonymous = client(CredentialStore::empty());
    let err = anonymous
        .push(&r, &src, &img.manifest, &PushOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "unauthorized: authentication required");
    let err = anonymous
        .login(&srv.addr.to_string(), Credentials::basic("bob", "nope"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unauthorized: incorrect username or password"
    );

    let mut creds = CredentialStore::empty();
    creds.insert(&srv.addr.to_string(), Credentials::basic("bob", "pw"));
    let bob = client(creds);
    bob.login(&srv.addr.to_string(), Credentials::basic("bob", "pw"))
        .await
        .unwrap();
    assert_eq!(
        bob.push(&r, &src, &img.manifest, &PushOptions::default())
            .await
            .unwrap(),
        img.manifest
    );

    // Anonymous pull works through the token flow (pull-only token).
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = ContentStore::open(dst_dir.path()).unwrap();
    let pulled = anonymous
        .pull(&r, &dst, &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(pulled.manifest_digest, img.manifest);
}

#[tokio::test]
async fn corrupt_blob_fails_the_pull_and_stores_nothing() {
    let srv = start_server(AuthMode::None, None, None).await;
    let src_dir = tempfile::tempdir().unwrap();
    let src = ContentStore::open(src_dir.path()).unwrap();
    let img = make_image(&src, &[50_000]);
    let r = reference(srv.addr, "x/corrupt:1");
    let c = client(CredentialStore::empty());
    c.push(&r, &src, &img.manifest, &PushOptions::default())
        .await
        .unwrap();

    // Flip bytes of the layer in the registry's storage (same size, other digest).
    let path = srv.registry.storage().content().path(&img.layers[0]);
    let mut bytes = std::fs::read(&path).unwrap();
    for b in bytes.iter_mut().skip(100).take(16) {
        *b ^= 0xff;
    }
    std::fs::write(&path, &bytes).unwrap();

    let dst_dir = tempfile::tempdir().unwrap();
    let dst = ContentStore::open(dst_dir.path()).unwrap();
    let err = c.pull(&r, &dst, &PullOptions::default()).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("blob {}", img.layers[0])) && msg.contains("digest mismatch"),
        "{msg}"
    );
    assert!(!dst.exists(&img.layers[0]));
    assert!(!dst.exists(&img.manifest), "no manifest without its blobs");
    assert_eq!(ingest_leftovers(dst_dir.path()), 0);
}

#[tokio::test]
async fn dropped_connection_resumes_with_range() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = ContentStore::open(src_dir.path()).unwrap();
    let img = make_image(&src, &[2 << 20]);
    let target = img.layers[0].to_string();
    let cut = Arc::new(AtomicUsize::new(0));
    let ranged = Arc::new(AtomicUsize::new(0));
    let (cut2, ranged2) = (cut.clone(), ranged.clone());
    // Cut the first download of the layer after 300 KB.
    let srv = start_with(AuthMode::None, None, None, move |router| {
        router.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let (cut, ranged, target) = (cut2.clone(), ranged2.clone(), target.clone());
                async move {
                    let is_layer = req.method() == axum::http::Method::GET
                        && req.uri().path().ends_with(&target);
                    if is_layer && req.headers().contains_key("range") {
                        ranged.fetch_add(1, Ordering::SeqCst);
                    }
                    let resp = next.run(req).await;
                    if !is_layer || cut.fetch_add(1, Ordering::SeqCst) > 0 {
                        return resp;
                    }
                    let (parts, body) = resp.into_parts();
                    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                    let head = bytes.slice(..300_000);
                    // Let the first bytes reach the client before the connection breaks.
                    let stream = futures_util::stream::unfold(0, move |step| {
                        let head = head.clone();
                        async move {
                            match step {
                                0 => Some((Ok(head), 1)),
                                1 => {
                                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                                    Some((Err(std::io::Error::other("connection cut by test")), 2))
                                }
                                _ => None,
                            }
                        }
                    });
                    axum::response::Response::from_parts(
                        parts,
                        axum::body::Body::from_stream(stream),
                    )
                }
            },
        ))
    })
    .await;
    let r = reference(srv.addr, "flaky/app:1");
    let c = client(CredentialStore::empty());
    c.push(&r, &src, &img.manifest, &PushOptions::default())
        .await
        .unwrap();

    let dst_dir = tempfile::tempdir().unwrap();
    let dst = ContentStore::open(dst_dir.path()).unwrap();
    let (progress, events) = recorder();
    c.pull(
        &r,
        &dst,
        &PullOptions {
            progress: Some(progress),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(dst.exists(&img.layers[0]));
    assert_eq!(
        dst.read_to_vec(&img.layers[0]).unwrap(),
        src.read_to_vec(&img.layers[0]).unwrap()
    );
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e.event, ProgressEvent::Retrying { attempt: 1, .. }))
    );
    assert_eq!(
        ranged.load(Ordering::SeqCst),
        1,
        "the retry asked for the rest only"
    );
}

#[tokio::test]
async fn tls_with_verification_and_insecure_loopback() {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let tls = berth_registry::server::load_tls(&cert_path, &key_path).unwrap();
    let srv = start_server(AuthMode::None, None, Some(tls)).await;

    let src_dir = tempfile::tempdir().unwrap();
    let src = ContentStore::open(src_dir.path()).unwrap();
    let img = make_image(&src, &[30_000]);
    let r = reference(srv.addr, "secure/app:1");
    // Loopback is insecure by default: HTTPS without verification.
    client(CredentialStore::empty())
        .push(&r, &src, &img.manifest, &PushOptions::default())
        .await
        .unwrap();

    // Verified: the CA from certs.d makes it work, without it the handshake fails.
    let certs = dir.path().join("certs.d");
    let strict = |certs_dir| {
        berth_registry::Client::new(
            berth_registry::ClientOptions {
                loopback_insecure: false,
                certs_dir,
                ..fast_options()
            },
            CredentialStore::empty(),
        )
        .unwrap()
    };
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = ContentStore::open(dst_dir.path()).unwrap();
    let err = strict(None)
        .pull(&r, &dst, &PullOptions::default())
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
    std::fs::create_dir_all(certs.join(srv.addr.to_string())).unwrap();
    std::fs::write(
        certs.join(srv.addr.to_string()).join("ca.crt"),
        cert.cert.pem(),
    )
    .unwrap();
    let pulled = strict(Some(certs))
        .pull(&r, &dst, &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(pulled.manifest_digest, img.manifest);
}

#[tokio::test]
async fn index_resolves_to_the_requested_platform() {
    let srv = start_server(AuthMode::None, None, None).await;
    let src_dir = tempfile::tempdir().unwrap();
    let src = ContentStore::open(src_dir.path()).unwrap();
    let amd = make_image(&src, &[1000]);
    let arm = make_image(&src, &[2000]);
    let size = |d| src.size(d).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd.manifest.to_string(), "size": size(&amd.manifest), "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm.manifest.to_string(), "size": size(&arm.manifest), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ]
    });
    let index_digest = src.put_bytes(&serde_json::to_vec(&index).unwrap()).unwrap();
    let r = reference(srv.addr, "multi/app:latest");
    let c = client(CredentialStore::empty());
    assert_eq!(
        c.push(&r, &src, &index_digest, &PushOptions::default())
            .await
            .unwrap(),
        index_digest
    );

    let dst_dir = tempfile::tempdir().unwrap();
    let dst = ContentStore::open(dst_dir.path()).unwrap();
    let opts = PullOptions {
        platform: berth_registry::Platform::parse("linux/arm64"),
        ..Default::default()
    };
    let pulled = c.pull(&r, &dst, &opts).await.unwrap();
    assert_eq!(pulled.digest, index_digest);
    assert_eq!(pulled.manifest_digest, arm.manifest);
    assert!(dst.exists(&arm.layers[0]) && !dst.exists(&amd.layers[0]));
    let opts = PullOptions {
        platform: berth_registry::Platform::parse("linux/s390x"),
        ..Default::default()
    };
    let err = c.pull(&r, &dst, &opts).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("no matching manifest for linux/s390x"),
        "{err}"
    );
}

#[tokio::test]
async fn oversized_unknown_and_truncated_content_is_refused() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = ContentStore::open(src_dir.path()).unwrap();
    let img = make_image(&src, &[40_000]);
    let layer = img.layers[0].to_string();
    // A registry that lies: huge or odd manifests, and a short layer with a matching length.
    let srv = start_with(AuthMode::None, None, None, move |router| {
        router.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let layer = layer.clone();
                async move {
                    let path = req.uri().path().to_string();
                    if path.starts_with("/v2/bad/big/manifests/") {
                        return axum::response::Response::builder()
                            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                            .body(axum::body::Body::from(vec![b' '; (4 << 20) + 10]))
                            .unwrap();
                    }
                    if path.starts_with("/v2/bad/odd/manifests/") {
                        return axum::response::Response::builder()
                            .header("content-type", "application/vnd.example.thing+json")
                            .body(axum::body::Body::from(r#"{"schemaVersion":2}"#))
                            .unwrap();
                    }
                    let resp = next.run(req).await;
                    if !(path.starts_with("/v2/bad/short/") && path.ends_with(&layer)) {
                        return resp;
                    }
                    let (mut parts, body) = resp.into_parts();
                    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                    let short = bytes.slice(..bytes.len() - 100);
                    parts.headers.insert("content-length", short.len().into());
                    axum::response::Response::from_parts(parts, axum::body::Body::from(short))
                }
            },
        ))
    })
    .await;
    let c = client(CredentialStore::empty());
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = ContentStore::open(dst_dir.path()).unwrap();

    let err = c
        .pull(
            &reference(srv.addr, "bad/big:1"),
            &dst,
            &PullOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("is larger than 4194304 bytes"),
        "{err}"
    );
    let err = c
        .pull(
            &reference(srv.addr, "bad/odd:1"),
            &dst,
            &PullOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("unsupported manifest media type"),
        "{err}"
    );

    let r = reference(srv.addr, "bad/short:1");
    c.push(&r, &src, &img.manifest, &PushOptions::default())
        .await
        .unwrap();
    let err = c.pull(&r, &dst, &PullOptions::default()).await.unwrap_err();
    assert!(err.to_string().contains("truncated: got"), "{err}");
    assert!(
        dst.list().unwrap().iter().all(|d| *d == img.config),
        "only the verified config may stay"
    );
    assert_eq!(ingest_leftovers(dst_dir.path()), 0);
}

#[tokio::test]
async fn pull_through_cache_serves_upstream_content_and_keeps_it() {
    let upstream = start_server(AuthMode::None, None, None).await;
    let src_dir = tempfile::tempdir().unwrap();
    let src = ContentStore::open(src_dir.path()).unwrap();
    let img = make_image(&src, &[300 << 10, 5000]);
    let c = client(CredentialStore::empty());
    c.push(
        &reference(upstream.addr, "lib/cached:1"),
        &src,
        &img.manifest,
        &PushOptions::default(),
    )
    .await
    .unwrap();

    let proxy = start_proxy(upstream.addr).await;
    let r = reference(proxy.addr, "lib/cached:1");
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = ContentStore::open(dst_dir.path()).unwrap();
    assert_eq!(
        c.pull(&r, &dst, &PullOptions::default())
            .await
            .unwrap()
            .digest,
        img.manifest
    );
    let err = c
        .push(&r, &src, &img.manifest, &PushOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.registry_code(), Some("UNSUPPORTED"));

    // With the upstream gone, the cache still serves the tag and its blobs.
    drop(upstream);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let again_dir = tempfile::tempdir().unwrap();
    let again = ContentStore::open(again_dir.path()).unwrap();
    let pulled = client(CredentialStore::empty())
        .pull(&r, &again, &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(pulled.digest, img.manifest);
    let mut want = img.all_digests();
    want.sort();
    assert_eq!(again.list().unwrap(), want);
    let err = c
        .pull(
            &reference(proxy.addr, "lib/absent:1"),
            &again,
            &PullOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("service unavailable")
            || err.to_string().contains("unavailable"),
        "{err}"
    );
}

#[tokio::test]
async fn docker_hub_pulls_use_the_first_answering_mirror() {
    let srv = start_server(AuthMode::None, None, None).await;
    let src_dir = tempfile::tempdir().unwrap();
    let src = ContentStore::open(src_dir.path()).unwrap();
    let img = make_image(&src, &[64 << 10, 128 << 10, 32 << 10]);
    client(CredentialStore::empty())
        .push(
            &reference(srv.addr, "library/busybox:latest"),
            &src,
            &img.manifest,
            &PushOptions::default(),
        )
        .await
        .unwrap();
    // A mirror that refuses connections comes first: it is skipped.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let options = ClientOptions {
        registry_mirrors: vec![format!("http://{dead}"), format!("http://{}/", srv.addr)],
        max_concurrent_downloads: 1,
        ..fast_options()
    };
    let c = Client::new(options, CredentialStore::empty()).unwrap();
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = ContentStore::open(dst_dir.path()).unwrap();
    let hub = berth_store::Reference::parse("busybox").unwrap();
    let (progress, events) = recorder();
    let opts = PullOptions {
        progress: Some(progress.clone()),
        ..Default::default()
    };
    let session = c.start_pull(&hub, &dst, &opts).await.unwrap();
    assert_eq!(session.source(), format!("http://{}", srv.addr));
    assert_eq!(session.layers().len(), 3);
    assert_eq!(session.config().digest, img.config);
    let ready = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = ready.clone();
    session
        .fetch_layers(&Some(progress), move |i| seen.lock().unwrap().push(i))
        .await
        .unwrap();
    let mut ready = ready.lock().unwrap().clone();
    ready.sort();
    assert_eq!(ready, [0, 1, 2], "every layer announced once");
    let pulled = session.finish().await.unwrap();
    assert_eq!(pulled.digest, img.manifest);
    let events = events.lock().unwrap().clone();
    let count = |want: ProgressEvent| events.iter().filter(|e| e.event == want).count();
    assert_eq!(count(ProgressEvent::Pending), 3, "{events:?}");
    assert_eq!(count(ProgressEvent::DownloadComplete), 3);
    // Names of other registries never go to a mirror.
    let elsewhere = berth_store::Reference::parse(&format!("{dead}/library/busybox")).unwrap();
    assert!(
        c.pull(&elsewhere, &dst, &PullOptions::default())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn pushing_a_manifest_given_as_bytes() {
    let srv = start_server(AuthMode::None, None, None).await;
    let src_dir = tempfile::tempdir().unwrap();
    let src = ContentStore::open(src_dir.path()).unwrap();
    let img = make_image(&src, &[10 << 10]);
    let bytes = src.read_to_vec(&img.manifest).unwrap();
    // Not in the content store: only its blobs are.
    src.delete(&img.manifest).unwrap();
    let c = client(CredentialStore::empty());
    let r = reference(srv.addr, "bytes/app:v1");
    let digest = c
        .push_manifest_bytes(&r, &src, bytes.into(), &PushOptions::default())
        .await
        .unwrap();
    assert_eq!(digest, img.manifest);
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = ContentStore::open(dst_dir.path()).unwrap();
    let pulled = c.pull(&r, &dst, &PullOptions::default()).await.unwrap();
    assert_eq!(pulled.digest, img.manifest);
}
