//! The server at the protocol level, with raw HTTP requests (so paths reach it unnormalised).

mod common;

use berth_registry::ErrorBody;
use berth_registry::server::AuthMode;
use berth_store::Digest;
use common::*;

fn code(body: &[u8]) -> String {
    serde_json::from_slice::<ErrorBody>(body).unwrap().errors[0]
        .code
        .clone()
}

/// Monolithic upload of `data` to `repo`; returns the status.
async fn upload(
    addr: std::net::SocketAddr,
    repo: &str,
    data: &[u8],
    digest: &Digest,
) -> (u16, Vec<u8>) {
    let (s, head, _) = raw(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        b"",
    )
    .await;
    assert_eq!(s, 202);
    let loc = header(&head, "location").unwrap();
    let (s, _, body) = raw(addr, "PUT", &format!("{loc}?digest={digest}"), &[], data).await;
    (s, body)
}

fn manifest(config: &Digest, config_size: usize, layer: &Digest, layer_size: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.to_string(), "size": layer_size}],
    }))
    .unwrap()
}

#[tokio::test]
async fn refuses_bad_names_methods_and_digests() {
    let srv = start_server(AuthMode::None, None, None).await;
    let a = srv.addr;
    let (s, head, _) = raw(a, "GET", "/v2/", &[], b"").await;
    assert_eq!(s, 200);
    assert_eq!(
        header(&head, "docker-distribution-api-version").as_deref(),
        Some("registry/2.0")
    );
    for path in [
        "/v2/a/../b/tags/list",
        "/v2/UPPER/tags/list",
        "/v2/a//b/manifests/x",
        "/v2/%2e%2e/tags/list",
        "/v2/-a/blobs/uploads/",
    ] {
        let method = if path.ends_with('/') { "POST" } else { "GET" };
        let (s, _, body) = raw(a, method, path, &[], b"").await;
        assert_eq!(
            (s, code(&body)),
            (400, "NAME_INVALID".to_string()),
            "{path}"
        );
    }
    let (s, _, body) = raw(a, "DELETE", "/v2/a/tags/list", &[], b"").await;
    assert_eq!((s, code(&body).as_str()), (405, "UNSUPPORTED"));
    let (s, _, body) = raw(a, "GET", "/v2/a/blobs/sha256:1234", &[], b"").await;
    assert_eq!((s, code(&body).as_str()), (400, "DIGEST_INVALID"));
    let (s, _, body) = raw(a, "GET", "/v2/a/manifests/latest", &[], b"").await;
    assert_eq!((s, code(&body).as_str()), (404, "MANIFEST_UNKNOWN"));
    let (s, _, body) = raw(a, "GET", "/v2/nobody/tags/list", &[], b"").await;
    assert_eq!((s, code(&body).as_str()), (404, "NAME_UNKNOWN"));

    // Digest mismatch on upload: refused, nothing stored.
    let data = random(1000);
    let wrong = Digest::from_bytes(b"something else");
    let (s, body) = upload(a, "a", &data, &wrong).await;
    assert_eq!((s, code(&body).as_str()), (400, "DIGEST_INVALID"));
    assert!(!srv.registry.storage().content().exists(&wrong));
    assert!(
        !srv.registry
            .storage()
            .content()
            .exists(&Digest::from_bytes(&data))
    );
    assert_eq!(ingest_leftovers(srv.root.path()), 0);
}

#[tokio::test]
async fn uploads_chunks_mounts_and_limits() {
    let srv = start_server(AuthMode::None, Some(64 << 10), None).await;
    let a = srv.addr;
    let data = random(30_000);
    let d = Digest::from_bytes(&data);

    // Chunked: PATCH with Content-Range, GET status, out-of-order chunk refused.
    let (_, head, _) = raw(a, "POST", "/v2/c/blobs/uploads/", &[], b"").await;
    let loc = header(&head, "location").unwrap();
    assert_eq!(header(&head, "range").as_deref(), Some("0-0"));
    assert!(header(&head, "docker-upload-uuid").is_some());
    let (s, head, _) = raw(
        a,
        "PATCH",
        &loc,
        &[("Content-Range", "0-9999")],
        &data[..10_000],
    )
    .await;
    assert_eq!(s, 202);
    assert_eq!(header(&head, "range").as_deref(), Some("0-9999"));
    let (s, _, body) = raw(a, "PATCH", &loc, &[("Content-Range", "5-9")], &data[5..10]).await;
    assert_eq!((s, code(&body).as_str()), (416, "RANGE_INVALID"));
    let (s, head, _) = raw(a, "GET", &loc, &[], b"").await;
    assert_eq!(
        (s, header(&head, "range").as_deref()),
        (204, Some("0-9999"))
    );
    let (s, _, _) = raw(a, "PATCH", &loc, &[], &data[10_000..]).await;
    assert_eq!(s, 202);
    let (s, head, _) = raw(a, "PUT", &format!("{loc}?digest={d}"), &[], b"").await;
    assert_eq!(s, 201);
    assert_eq!(header(&head, "docker-content-digest"), Some(d.to_string()));
    assert_eq!(header(&head, "location"), Some(format!("/v2/c/blobs/{d}")));
    let (s, head, body) = raw(a, "GET", &format!("/v2/c/blobs/{d}"), &[], b"").await;
    assert_eq!((s, body.as_slice()), (200, data.as_slice()));
    assert_eq!(header(&head, "content-length"), Some("30000".to_string()));
    let (s, head, body) = raw(
        a,
        "GET",
        &format!("/v2/c/blobs/{d}"),
        &[("Range", "bytes=29990-")],
        b"",
    )
    .await;
    assert_eq!((s, body.as_slice()), (206, &data[29_990..]));
    assert_eq!(
        header(&head, "content-range").as_deref(),
        Some("bytes 29990-29999/30000")
    );
    let (s, head, body) = raw(a, "HEAD", &format!("/v2/c/blobs/{d}"), &[], b"").await;
    assert_eq!((s, body.len()), (200, 0));
    assert_eq!(header(&head, "content-length").as_deref(), Some("30000"));
    assert_eq!(header(&head, "docker-content-digest"), Some(d.to_string()));

    // Another repository cannot read it until it mounts it.
    let (s, _, _) = raw(a, "HEAD", &format!("/v2/other/blobs/{d}"), &[], b"").await;
    assert_eq!(s, 404);
    let (s, head, _) = raw(
        a,
        "POST",
        &format!("/v2/other/blobs/uploads/?mount={d}&from=c"),
        &[],
        b"",
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(
        header(&head, "location"),
        Some(format!("/v2/other/blobs/{d}"))
    );
    // Mount of something the source lacks falls back to a session.
    let absent = Digest::from_bytes(b"absent");
    let (s, _, _) = raw(
        a,
        "POST",
        &format!("/v2/other/blobs/uploads/?mount={absent}&from=c"),
        &[],
        b"",
    )
    .await;
    assert_eq!(s, 202);

    // Monolithic POST ?digest=.
    let small = random(500);
    let sd = Digest::from_bytes(&small);
    let (s, _, _) = raw(
        a,
        "POST",
        &format!("/v2/c/blobs/uploads/?digest={sd}"),
        &[],
        &small,
    )
    .await;
    assert_eq!(s, 201);

    // Over the configured limit.
    let big = random(70 << 10);
    let (s, body) = upload(a, "c", &big, &Digest::from_bytes(&big)).await;
    assert_eq!((s, code(&body).as_str()), (413, "SIZE_INVALID"));

    // Cancel.
    let (_, head, _) = raw(a, "POST", "/v2/c/blobs/uploads/", &[], b"").await;
    let loc = header(&head, "location").unwrap();
    assert_eq!(raw(a, "DELETE", &loc, &[], b"").await.0, 204);
    let (s, _, body) = raw(a, "GET", &loc, &[], b"").await;
    assert_eq!((s, code(&body).as_str()), (404, "BLOB_UPLOAD_UNKNOWN"));
}

#[tokio::test]
async fn manifests_tags_catalog_referrers_delete_and_gc() {
    let srv = start_server(AuthMode::None, None, None).await;
    let a = srv.addr;
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layer = random(2000);
    let (cd, ld) = (Digest::from_bytes(&config), Digest::from_bytes(&layer));
    let ct = [("Content-Type", "application/vnd.oci.image.manifest.v1+json")];
    let m = manifest(&cd, config.len(), &ld, layer.len());

    // Blobs missing: refused.
    let (s, _, body) = raw(a, "PUT", "/v2/m/manifests/v1", &ct, &m).await;
    assert_eq!((s, code(&body).as_str()), (400, "MANIFEST_BLOB_UNKNOWN"));
    assert_eq!(upload(a, "m", &config, &cd).await.0, 201);
    assert_eq!(upload(a, "m", &layer, &ld).await.0, 201);
    // Not JSON, wrong digest in the URL, too large.
    let (s, _, body) = raw(a, "PUT", "/v2/m/manifests/v1", &ct, b"nope").await;
    assert_eq!((s, code(&body).as_str()), (400, "MANIFEST_INVALID"));
    let (s, _, body) = raw(a, "PUT", &format!("/v2/m/manifests/{cd}"), &ct, &m).await;
    assert_eq!((s, code(&body).as_str()), (400, "DIGEST_INVALID"));
    let huge = vec![b' '; (4 << 20) + 1];
    let (s, _, _) = raw(a, "PUT", "/v2/m/manifests/v1", &ct, &huge).await;
    assert_eq!(s, 413);

    let md = Digest::from_bytes(&m);
    for tag in ["v1", "v2", "v3"] {
        let (s, head, _) = raw(a, "PUT", &format!("/v2/m/manifests/{tag}"), &ct, &m).await;
        assert_eq!(s, 201);
        assert_eq!(header(&head, "docker-content-digest"), Some(md.to_string()));
    }
    let (s, head, body) = raw(a, "HEAD", "/v2/m/manifests/v2", &[], b"").await;
    assert_eq!((s, body.len()), (200, 0));
    assert_eq!(header(&head, "content-length"), Some(m.len().to_string()));
    let (s, head, body) = raw(a, "GET", "/v2/m/manifests/v2", &[], b"").await;
    assert_eq!((s, body), (200, m.clone()));
    assert_eq!(
        header(&head, "content-type").as_deref(),
        Some("application/vnd.oci.image.manifest.v1+json")
    );

    // Pagination.
    let (_, head, body) = raw(a, "GET", "/v2/m/tags/list?n=2", &[], b"").await;
    let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(page["tags"], serde_json::json!(["v1", "v2"]));
    assert_eq!(
        header(&head, "link").as_deref(),
        Some("</v2/m/tags/list?last=v2&n=2>; rel=\"next\"")
    );
    let (_, head, body) = raw(a, "GET", "/v2/m/tags/list?last=v2&n=2", &[], b"").await;
    let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(page["tags"], serde_json::json!(["v3"]));
    assert!(header(&head, "link").is_none());
    let (s, _, body) = raw(a, "GET", "/v2/m/tags/list?n=x", &[], b"").await;
    assert_eq!(
        (s, code(&body).as_str()),
        (400, "PAGINATION_NUMBER_INVALID")
    );
    assert_eq!(upload(a, "n/x", &layer, &ld).await.0, 201);
    let (_, _, body) = raw(a, "GET", "/v2/_catalog", &[], b"").await;
    let cat: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(cat["repositories"], serde_json::json!(["m", "n/x"]));

    // Referrers: an artifact whose subject is the image.
    let empty_cfg = b"{}".to_vec();
    let ed = Digest::from_bytes(&empty_cfg);
    assert_eq!(upload(a, "m", &empty_cfg, &ed).await.0, 201);
    let sig = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": ed.to_string(), "size": 2},
        "layers": [],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md.to_string(), "size": m.len()},
    }))
    .unwrap();
    let sd = Digest::from_bytes(&sig);
    let (s, head, _) = raw(a, "PUT", &format!("/v2/m/manifests/{sd}"), &ct, &sig).await;
    assert_eq!(s, 201);
    assert_eq!(header(&head, "oci-subject"), Some(md.to_string()));
    let (s, _, body) = raw(a, "GET", &format!("/v2/m/referrers/{md}"), &[], b"").await;
    assert_eq!(s, 200);
    let idx: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(idx["manifests"][0]["digest"], sd.to_string());
    assert_eq!(
        idx["manifests"][0]["artifactType"],
        "application/vnd.example.sig"
    );
    let (_, _, body) = raw(
        a,
        "GET",
        &format!("/v2/m/referrers/{md}?artifactType=other"),
        &[],
        b"",
    )
    .await;
    let idx: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(idx["manifests"], serde_json::json!([]));

    // Delete by tag, by digest; then gc frees the blobs only "n/x" no longer protects.
    assert_eq!(
        raw(a, "DELETE", "/v2/m/manifests/v3", &[], b"").await.0,
        202
    );
    assert_eq!(raw(a, "GET", "/v2/m/manifests/v3", &[], b"").await.0, 404);
    assert_eq!(
        raw(a, "DELETE", &format!("/v2/m/manifests/{md}"), &[], b"")
            .await
            .0,
        202
    );
    assert_eq!(raw(a, "GET", "/v2/m/manifests/v1", &[], b"").await.0, 404);
    assert_eq!(
        raw(a, "DELETE", &format!("/v2/n/x/blobs/{ld}"), &[], b"")
            .await
            .0,
        202
    );
    let report = srv.registry.storage().gc(true).unwrap();
    assert!(report.blobs_deleted >= 3, "{report:?}");
    let content = srv.registry.storage().content();
    assert!(!content.exists(&ld) && !content.exists(&md) && !content.exists(&cd));
}
