//! Compressed layers made once and kept by GC while used; pulled layers unpacked one at
//! a time, reused without reading when known, and gzip, zstd or plain.

use std::io::{Read, Write};

use oci_spec::image::{Arch, ImageConfigurationBuilder, Os};

use super::*;
use crate::layer::{MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR, MEDIA_TYPE_LAYER_ZSTD};
use crate::{Digest, ImportOptions, Reference, Store};

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn import(store: &Store, files: &[(&str, &[u8])]) -> crate::ImageRecord {
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .build()
        .unwrap();
    store
        .import(
            tar_of(files).as_slice(),
            ImportOptions {
                config,
                message: None,
            },
        )
        .unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn layers_are_compressed_once_and_kept_while_used() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let big: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    let image = import(&store, &[("data", &big)]);
    let layer = &image.layers[0];
    assert_eq!(layer.media_type, MEDIA_TYPE_LAYER_TAR);
    assert!(store.compressed_layer(&layer.diff_id).unwrap().is_none());

    let (first, made) = store.compress_layer(layer).unwrap();
    assert!(made);
    assert_eq!(first.media_type, MEDIA_TYPE_LAYER_GZIP);
    assert!(
        first.size < layer.size / 10,
        "{} of {}",
        first.size,
        layer.size
    );
    let blob = store.content().read_to_vec(&first.digest).unwrap();
    assert_eq!(blob.len() as u64, first.size);
    assert_eq!(Digest::from_bytes(&gunzip(&blob)), layer.diff_id);

    let (again, made) = store.compress_layer(layer).unwrap();
    assert!(!made, "the second push compresses nothing");
    assert_eq!(again, first);
    // The local image is untouched.
    assert_eq!(store.image(&image.id).unwrap(), image);

    // Where it was pushed is remembered, most recent first.
    for repo in ["reg:5000/a/b", "reg:5000/c/d"] {
        store
            .remember_compressed_layers(&[(layer.diff_id.clone(), first.clone())], Some(repo))
            .unwrap();
    }
    let known = store.compressed_layer(&layer.diff_id).unwrap().unwrap();
    assert_eq!(known.repositories, ["reg:5000/c/d", "reg:5000/a/b"]);

    // GC keeps the copy while the layer is used, and drops copy and record after.
    store.gc().unwrap();
    assert!(store.content().exists(&first.digest));
    store.delete_image(&image.id).unwrap();
    assert!(!store.content().exists(&first.digest));
    assert!(
        store
            .meta()
            .list_records(COMPRESSED_LAYER_KIND)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn compressed_layers_are_their_own_push_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let tar = tar_of(&[("f", b"x")]);
    let mut gz = Vec::new();
    gzip(&mut tar.as_slice(), &mut gz).unwrap();
    let digest = store.content().put_bytes(&gz).unwrap();
    let layer = crate::LayerInfo {
        diff_id: Digest::from_bytes(&tar),
        digest: digest.clone(),
        media_type: MEDIA_TYPE_LAYER_GZIP.to_string(),
        size: gz.len() as u64,
        unpacked_size: 1,
    };
    let (own, made) = store.compress_layer(&layer).unwrap();
    assert!(!made);
    assert_eq!((own.digest, own.size), (digest, gz.len() as u64));
}

/// Stores a config and manifest for `layers` (blob, media type, diff id) and returns
/// (config, manifest) digests.
fn stored_image(store: &Store, layers: &[(Digest, &str, Digest, u64)]) -> (Digest, Digest) {
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.2.to_string()).collect::<Vec<_>>()},
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config = store.content().put_bytes(&config_bytes).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_bytes.len()},
        "layers": layers.iter().map(|l| serde_json::json!({"mediaType": l.1, "digest": l.0, "size": l.3})).collect::<Vec<_>>(),
    });
    let manifest = store
        .content()
        .put_bytes(&serde_json::to_vec(&manifest).unwrap())
        .unwrap();
    (config, manifest)
}

#[test]
fn pulled_layers_unpack_in_order_and_are_reused_without_reading() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let base = tar_of(&[("base", &[1u8; 3 << 20])]);
    let top = tar_of(&[("top", b"zstd layer")]);
    let plain = tar_of(&[("plain", b"uncompressed layer")]);
    let mut gz = Vec::new();
    gzip(&mut base.as_slice(), &mut gz).unwrap();
    let zst = zstd::encode_all(top.as_slice(), 3).unwrap();
    let blobs = [
        (&gz, MEDIA_TYPE_LAYER_GZIP, &base),
        (&zst, MEDIA_TYPE_LAYER_ZSTD, &top),
        (&plain, MEDIA_TYPE_LAYER_TAR, &plain),
    ];
    let layers: Vec<(Digest, &str, Digest, u64)> = blobs
        .iter()
        .map(|(blob, mt, tar)| {
            (
                store.content().put_bytes(blob).unwrap(),
                *mt,
                Digest::from_bytes(tar),
                blob.len() as u64,
            )
        })
        .collect();
    let (config, manifest) = stored_image(&store, &layers);
    assert_eq!(
        store.config_diff_ids(&config).unwrap(),
        layers.iter().map(|l| l.2.clone()).collect::<Vec<_>>()
    );

    let unpack_all = |repository| {
        let lease = store.lease();
        let mut done = Vec::new();
        let mut extracted = Vec::new();
        let mut reports = Vec::new();
        for (digest, media_type, diff_id, _) in &layers {
            let blob = PulledBlob {
                digest,
                media_type,
                diff_id,
                repository,
            };
            let pulled = store
                .unpack_pulled_layer(&lease, &done, &blob, &mut |cur, total| {
                    reports.push((cur, total))
                })
                .unwrap();
            extracted.push(pulled.extracted);
            done.push(pulled.layer);
        }
        (lease, done, extracted, reports)
    };
    let (lease, done, extracted, reports) = unpack_all(Some("reg:1/team/app"));
    assert_eq!(extracted, [true, true, true]);
    assert_eq!(reports.last(), Some(&(layers[2].3, layers[2].3)));
    assert!(reports.contains(&(layers[0].3, layers[0].3)));
    // Compressed pulled layers are remembered with their source, for pushes.
    let remembered = store.compressed_layer(&layers[0].2).unwrap().unwrap();
    assert_eq!(remembered.digest, layers[0].0);
    assert_eq!(remembered.repositories, ["reg:1/team/app"]);
    // GC while the lease holds the layers keeps them (not the config and manifest: a
    // lease holds layer chains only, so they are stored again here).
    store.gc().unwrap();
    for (digest, ..) in &layers {
        assert!(store.content().exists(digest));
    }
    assert_eq!(
        stored_image(&store, &layers),
        (config.clone(), manifest.clone())
    );
    let tag = Reference::parse("reg:1/team/app:v1").unwrap();
    let media = "application/vnd.oci.image.manifest.v1+json";
    let record = store
        .record_pulled_image(&manifest, media, &config, done.clone(), Some(&tag))
        .unwrap();
    drop(lease);
    assert_eq!(store.resolve("reg:1/team/app:v1").unwrap().id, record.id);
    assert_eq!(record.layers, done);
    assert_eq!(record.size, (3 << 20) + 10 + 18);
    let mounts = store.prepare_container("c1", &record.id).unwrap();
    assert!(!mounts.is_empty());
    store.remove_container("c1").unwrap();

    // Pulling again: everything is known, nothing is read or extracted.
    let (_lease, again, extracted, reports) = unpack_all(None);
    assert_eq!(extracted, [false, false, false]);
    assert!(reports.is_empty());
    assert_eq!(again, done);

    // A blob that does not unpack to the diff ID the config says is refused.
    let lease = store.lease();
    let wrong = Digest::from_bytes(b"not the content");
    let blob = PulledBlob {
        digest: &layers[2].0,
        media_type: MEDIA_TYPE_LAYER_TAR,
        diff_id: &wrong,
        repository: None,
    };
    assert!(
        store
            .unpack_pulled_layer(&lease, &[], &blob, &mut |_, _| {})
            .is_err()
    );
    // So is recording layers the config does not list.
    assert!(
        store
            .record_pulled_image(&manifest, media, &config, done[..2].to_vec(), None)
            .is_err()
    );
}

#[test]
fn empty_media_types_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let tar = tar_of(&[("a", b"b")]);
    let mut zst = Vec::new();
    zstd::stream::copy_encode(tar.as_slice(), &mut zst, 1).unwrap();
    zst.flush().unwrap();
    let digest = store.content().put_bytes(&zst).unwrap();
    let diff_id = Digest::from_bytes(&tar);
    let lease = store.lease();
    let blob = PulledBlob {
        digest: &digest,
        media_type: "",
        diff_id: &diff_id,
        repository: None,
    };
    let pulled = store
        .unpack_pulled_layer(&lease, &[], &blob, &mut |_, _| {})
        .unwrap();
    assert_eq!(pulled.layer.media_type, MEDIA_TYPE_LAYER_ZSTD);
}
