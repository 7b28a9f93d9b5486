//! Store-level tests: import, names, save/load, legacy archives, container mounts and GC.

use std::fs;
use std::io::Write;
use std::path::Path;

use oci_spec::image::{Arch, ImageConfigurationBuilder, Os};

use crate::*;

fn config() -> ImageConfiguration {
    ImageConfigurationBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .build()
        .unwrap()
}

/// A tar of regular files `(path, content)`, with parent directories.
fn rootfs_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (path, data) in files {
        let mut parent = Path::new(path).parent();
        let mut chain = Vec::new();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            chain.push(p.to_path_buf());
            parent = p.parent();
        }
        for d in chain.into_iter().rev() {
            if dirs.insert(d.clone()) {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, &d, std::io::empty()).unwrap();
            }
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn import(store: &Store, files: &[(&str, &[u8])], tag: &str) -> ImageRecord {
    let rec = store
        .import(
            rootfs_tar(files).as_slice(),
            ImportOptions {
                config: config(),
                message: None,
            },
        )
        .unwrap();
    store.tag(&Reference::parse(tag).unwrap(), &rec.id).unwrap();
    rec
}

fn counts(root: &Path, store: &Store) -> (usize, usize, usize) {
    let blobs = store.content().list().unwrap().len();
    let snaps = store.snapshotter().list().unwrap().len();
    let dirs = fs::read_dir(root.join("snapshots")).unwrap().count();
    (blobs, snaps, dirs)
}

#[test]
fn import_then_resolve_by_name_id_and_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let rec = import(&store, &[("bin/hello", b"hi")], "myimp:1");
    assert_eq!(rec.layers.len(), 1);
    assert_eq!(rec.layers[0].media_type, layer::MEDIA_TYPE_LAYER_TAR);
    assert_eq!(rec.size, 2);
    let history = store.history(&rec.id).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].comment.as_deref(), Some("Imported from -"));
    assert_eq!(history[0].size, 2);
    assert_eq!(
        rec.config.rootfs().diff_ids(),
        &vec![rec.layers[0].diff_id.to_string()]
    );

    for q in [
        "myimp:1",
        "docker.io/library/myimp:1",
        rec.id.as_str(),
        rec.id.hex(),
        &rec.id.hex()[..5],
        rec.id.short(),
    ] {
        assert_eq!(store.resolve(q).unwrap().id, rec.id, "resolve {q}");
    }
    let by_digest = format!("myimp@{}", rec.manifest_digest);
    assert_eq!(store.resolve(&by_digest).unwrap().id, rec.id);
    assert!(matches!(store.resolve("myimp"), Err(StoreError::ImageNotFound(s)) if s == "myimp"));
    assert!(matches!(
        store.resolve("nosuch:1"),
        Err(StoreError::ImageNotFound(_))
    ));

    let other = import(&store, &[("other", b"o")], "other:latest");
    // A one-character prefix shared by both ids is ambiguous; find one if it exists.
    let common = rec.id.hex().chars().next().unwrap();
    if other.id.hex().starts_with(common) {
        assert!(matches!(
            store.resolve(&common.to_string()),
            Err(StoreError::AmbiguousImage(_))
        ));
    }

    let list = store.list_images().unwrap();
    assert_eq!(list.len(), 2);
    let (_, tags) = list.iter().find(|(r, _)| r.id == rec.id).unwrap();
    assert_eq!(
        tags.iter()
            .map(Reference::familiar_string)
            .collect::<Vec<_>>(),
        ["myimp:1"]
    );

    store
        .tag(&Reference::parse("again").unwrap(), &rec.id)
        .unwrap();
    assert_eq!(store.image_names(&rec.id).unwrap().len(), 2);
    assert_eq!(
        store.untag(&Reference::parse("again").unwrap()).unwrap(),
        rec.id
    );
    assert!(matches!(
        store.untag(&Reference::parse("again").unwrap()),
        Err(StoreError::ImageNotFound(_))
    ));

    // The store reopens with the same state.
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.resolve("myimp:1").unwrap().id, rec.id);
}

#[test]
fn identical_imports_share_blobs_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = import(&store, &[("f", b"same")], "a");
    let before = counts(dir.path(), &store);
    let b = import(&store, &[("f", b"same")], "b");
    assert_eq!(a.layers[0].diff_id, b.layers[0].diff_id);
    let after = counts(dir.path(), &store);
    assert_eq!(before.1, after.1, "the layer snapshot is shared");
}

#[test]
fn truncated_import_leaves_the_store_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    import(&store, &[("keep", b"k")], "keep");
    let before = counts(dir.path(), &store);
    let tar = rootfs_tar(&[("a/file", &[1u8; 5000]), ("b", b"x")]);
    let err = store
        .import(
            &tar[..2000],
            ImportOptions {
                config: config(),
                message: None,
            },
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidLayer(_)), "{err}");
    assert_eq!(counts(dir.path(), &store), before);
    assert_eq!(store.list_images().unwrap().len(), 1);
}

#[test]
fn delete_and_gc_free_blobs_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let empty = counts(dir.path(), &store);
    let keep = import(&store, &[("k", b"keep")], "keep");
    let with_keep = counts(dir.path(), &store);
    let gone = import(&store, &[("g", b"gone")], "gone");
    store.prepare_container("c1", &gone.id).unwrap();

    // Deleting the image while a container uses its layers keeps the snapshot.
    let stats = store.delete_image(&gone.id).unwrap();
    assert_eq!(stats.blobs_removed, 3, "config, manifest and layer blob");
    assert_eq!(stats.snapshots_removed, 0);
    assert!(matches!(
        store.resolve("gone"),
        Err(StoreError::ImageNotFound(_))
    ));

    store.remove_container("c1").unwrap();
    let stats = store.gc().unwrap();
    assert_eq!(stats.snapshots_removed, 1);
    assert_eq!(counts(dir.path(), &store), with_keep);

    store.delete_image(&keep.id).unwrap();
    assert_eq!(counts(dir.path(), &store), empty);
    assert!(store.gc().unwrap() == GcStats::default());
}

#[test]
fn save_then_load_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let base = tempfile::tempdir().unwrap();
    let mut tars: Vec<Box<dyn std::io::Read>> = Vec::new();
    tars.push(Box::new(std::io::Cursor::new(rootfs_tar(&[(
        "etc/base", b"1",
    )]))));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&rootfs_tar(&[("etc/top", b"2")])).unwrap();
    tars.push(Box::new(std::io::Cursor::new(gz.finish().unwrap())));
    let rec = store.create_image(config(), tars).unwrap();
    assert_eq!(rec.layers[1].media_type, layer::MEDIA_TYPE_LAYER_GZIP);
    store
        .tag(&Reference::parse("multi:v1").unwrap(), &rec.id)
        .unwrap();
    store
        .tag(
            &Reference::parse("localhost:5000/multi:v2").unwrap(),
            &rec.id,
        )
        .unwrap();
    let single = import(&store, &[("s", b"s")], "single");

    let sels = [
        store.selector("multi:v1").unwrap(),
        store.selector("localhost:5000/multi").unwrap(),
        store.selector(single.id.short()).unwrap(),
    ];
    assert!(matches!(sels[1], ImageSelector::Repository(_)));
    assert!(matches!(sels[2], ImageSelector::Id(_)));
    let mut archive = Vec::new();
    store.save(&sels, &mut archive).unwrap();

    // The archive has the Docker 25+ layout.
    let mut names: Vec<String> = tar::Archive::new(archive.as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for want in ["index.json", "manifest.json", "oci-layout", "repositories"] {
        assert!(
            names.contains(&want.to_string()),
            "{want} missing from {names:?}"
        );
    }
    assert!(names.contains(&format!("blobs/sha256/{}", rec.id.hex())));

    let other = base.path().join("other");
    let store2 = Store::open(&other).unwrap();
    let mut loaded = store2.load(archive.as_slice()).unwrap();
    loaded.sort_by_key(|a| a.tags.len());
    assert_eq!(loaded.len(), 2);
    assert_eq!(loaded[0].id, single.id);
    assert!(loaded[0].tags.is_empty());
    assert_eq!(loaded[1].id, rec.id);
    let mut tags: Vec<String> = loaded[1]
        .tags
        .iter()
        .map(Reference::familiar_string)
        .collect();
    tags.sort();
    assert_eq!(tags, ["localhost:5000/multi:v2", "multi:v1"]);
    let rec2 = store2.resolve("multi:v1").unwrap();
    assert_eq!(rec2.manifest_digest, rec.manifest_digest);
    assert_eq!(rec2.diff_ids(), rec.diff_ids());
    let top = store2
        .snapshotter()
        .fs_dir(rec2.top_chain_id().unwrap().as_str())
        .unwrap();
    assert_eq!(fs::read(top.join("etc/top")).unwrap(), b"2");

    // gzip-compressed archives load too, and loading twice is idempotent.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&archive).unwrap();
    let again = store2.load(gz.finish().unwrap().as_slice()).unwrap();
    assert_eq!(again.len(), 2);
    assert_eq!(store2.list_images().unwrap().len(), 2);

    // A corrupted or truncated archive changes nothing.
    let third = Store::open(&base.path().join("third")).unwrap();
    let before = counts(&base.path().join("third"), &third);
    let pos = archive.windows(4).position(|w| w == b"etc/").unwrap() + 600;
    let mut corrupt = archive.clone();
    corrupt[pos] ^= 0x55;
    assert!(third.load(corrupt.as_slice()).is_err());
    assert!(third.load(&archive[..archive.len() / 2]).is_err());
    assert_eq!(counts(&base.path().join("third"), &third), before);
    assert!(third.list_images().unwrap().is_empty());
}

#[test]
fn loads_a_legacy_docker_archive() {
    let layer1 = rootfs_tar(&[("bin/sh", b"#!shell"), ("etc/removed", b"r")]);
    let layer2 = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(3);
        b.append_data(&mut h, "etc/new", &b"new"[..]).unwrap();
        b.into_inner().unwrap()
    };
    let d1 = Digest::from_bytes(&layer1);
    let d2 = Digest::from_bytes(&layer2);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05Z",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "container_config": {"Hostname": "x"}, "docker_version": "20.10.24",
        "rootfs": {"type": "layers", "diff_ids": [d1.to_string(), d2.to_string()]},
        "history": [{"created_by": "ADD rootfs"}, {"created_by": "RUN x"}, {"created_by": "CMD", "empty_layer": true}]
    });
    let config = serde_json::to_vec(&config).unwrap();
    let id = Digest::from_bytes(&config);
    let manifest = serde_json::json!([{
        "Config": format!("{}.json", id.hex()),
        "RepoTags": ["legacy:1.0"],
        "Layers": ["aaa/layer.tar", "bbb/layer.tar"],
    }]);
    let repositories = serde_json::json!({"legacy": {"1.0": "bbb"}});
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
    };
    add("aaa/VERSION", b"1.0");
    add("aaa/json", b"{}");
    add("aaa/layer.tar", &layer1);
    add("bbb/layer.tar", &layer2);
    add(&format!("{}.json", id.hex()), &config);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    add("repositories", &serde_json::to_vec(&repositories).unwrap());
    let archive = b.into_inner().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let loaded = store.load(archive.as_slice()).unwrap();
    assert_eq!(
        loaded,
        vec![LoadedImage {
            id: id.clone(),
            tags: vec![Reference::parse("legacy:1.0").unwrap()]
        }]
    );
    let rec = store.resolve("legacy:1.0").unwrap();
    assert_eq!(rec.id, id);
    assert_eq!(rec.created.to_rfc3339(), "2024-01-02T03:04:05+00:00");
    assert_eq!(rec.layers.len(), 2);
    let history = store.history(&id).unwrap();
    assert_eq!(
        history.iter().map(|h| h.size).collect::<Vec<_>>(),
        [8, 3, 0]
    );
    // The synthesised manifest is stored and the config blob is byte-identical.
    assert_eq!(store.content().read_to_vec(&id).unwrap(), config);
    assert!(store.content().exists(&rec.manifest_digest));

    // A layer that does not match its DiffID is refused and leaves nothing behind.
    let other = tempfile::tempdir().unwrap();
    let store2 = Store::open(other.path()).unwrap();
    let bad = String::from_utf8_lossy(&archive).len(); // same length, flipped content byte below
    let mut corrupt = archive.clone();
    let pos = corrupt.windows(7).position(|w| w == b"#!shell").unwrap();
    corrupt[pos + 2] = b'S';
    assert_eq!(corrupt.len(), bad);
    let err = store2.load(corrupt.as_slice()).unwrap_err();
    assert!(err.to_string().contains("diff id"), "{err}");
    assert_eq!(counts(other.path(), &store2), (0, 0, 0));
}

#[test]
fn container_rootfs_mounts_show_layers_and_capture_writes() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping container mount test: needs root for overlay mounts");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let whiteout_layer = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(0);
        b.append_data(&mut h, "etc/.wh.removed", std::io::empty())
            .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(3);
        b.append_data(&mut h, "etc/added", &b"add"[..]).unwrap();
        b.into_inner().unwrap()
    };
    let layers: Vec<Box<dyn std::io::Read>> = vec![
        Box::new(std::io::Cursor::new(rootfs_tar(&[
            ("etc/base", b"base"),
            ("etc/removed", b"r"),
        ]))),
        Box::new(std::io::Cursor::new(whiteout_layer)),
    ];
    let rec = store.create_image(config(), layers).unwrap();
    let mounts = store.prepare_container("ctr", &rec.id).unwrap();
    assert_eq!(mounts[0].kind, "overlay");
    assert_eq!(store.container_mounts("ctr").unwrap(), mounts);

    let target = dir.path().join("rootfs");
    fs::create_dir(&target).unwrap();
    mount_all(&mounts, &target).unwrap();
    let checks = (|| -> std::result::Result<(), String> {
        let read = |p: &str| fs::read(target.join(p)).map_err(|e| format!("{p}: {e}"));
        if read("etc/base")? != b"base" || read("etc/added")? != b"add" {
            return Err("layer content differs".into());
        }
        if target.join("etc/removed").exists() {
            return Err("whiteout did not hide etc/removed".into());
        }
        fs::write(target.join("etc/written"), b"w").map_err(|e| e.to_string())?;
        fs::remove_file(target.join("etc/base")).map_err(|e| e.to_string())?;
        Ok(())
    })();
    unmount(&target).unwrap();
    checks.unwrap();

    let upper = store.container_upper_dir("ctr").unwrap();
    assert_eq!(fs::read(upper.join("etc/written")).unwrap(), b"w");
    assert_eq!(store.container_usage("ctr").unwrap(), 1);
    let mut diff = Vec::new();
    diff_tar(&upper, &mut diff).unwrap();
    let names: Vec<String> = tar::Archive::new(diff.as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"etc/.wh.base".to_string()), "{names:?}");
    assert!(names.contains(&"etc/written".to_string()), "{names:?}");

    // The image's layers are protected while the container exists.
    store.delete_image(&rec.id).unwrap();
    assert!(
        store
            .snapshotter()
            .exists(rec.top_chain_id().unwrap().as_str())
            .unwrap()
    );
    store.remove_container("ctr").unwrap();
    store.gc().unwrap();
    assert!(store.snapshotter().list().unwrap().is_empty());
}

#[test]
fn image_without_layers_gets_an_empty_writable_base() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let rec = store.create_image(config(), Vec::new()).unwrap();
    let mounts = store.prepare_container("scratch", &rec.id).unwrap();
    assert_eq!(mounts[0].kind, "bind");
    assert!(mounts[0].options.contains(&"rw".to_string()));
    assert_eq!(
        fs::read_dir(store.container_upper_dir("scratch").unwrap())
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn store_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
}

#[test]
fn commit_flow_stacks_a_container_diff_on_the_base_image() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let base = import(&store, &[("etc/base", b"b")], "base");
    store.prepare_container("c", &base.id).unwrap();
    let upper = store.container_upper_dir("c").unwrap();
    fs::create_dir(upper.join("etc")).unwrap();
    fs::write(upper.join("etc/new"), b"new").unwrap();
    let mut diff = Vec::new();
    diff_tar(&upper, &mut diff).unwrap();
    let mut cfg = config();
    cfg.set_history(base.config.history().clone());
    let rec = store
        .create_image_on(Some(&base.id), cfg, vec![Box::new(diff.as_slice())])
        .unwrap();
    assert_eq!(rec.layers.len(), 2);
    assert_eq!(rec.layers[0], base.layers[0]);
    assert_eq!(rec.config.rootfs().diff_ids().len(), 2);
    let top = store
        .snapshotter()
        .get(rec.top_chain_id().unwrap().as_str())
        .unwrap();
    assert_eq!(
        top.parent.as_deref(),
        Some(base.top_chain_id().unwrap().as_str())
    );
    // Deleting the base image keeps the layer the committed image shares with it.
    store.remove_container("c").unwrap();
    store.delete_image(&base.id).unwrap();
    assert!(store.content().exists(&rec.layers[0].digest));
    assert!(
        store
            .snapshotter()
            .exists(base.top_chain_id().unwrap().as_str())
            .unwrap()
    );
}

#[test]
fn build_layers_are_committed_cached_leased_and_collected() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let base = import(&store, &[("etc/base", b"b")], "base");
    store.prepare_container_on("step", &base.layers).unwrap();
    let upper = store.container_upper_dir("step").unwrap();
    fs::create_dir(upper.join("app")).unwrap();
    fs::write(upper.join("app/file"), b"built").unwrap();
    // Stubs the runtime made for mounts: left out, unless a lower layer has the path.
    fs::create_dir_all(upper.join("run/secrets")).unwrap();
    fs::write(upper.join("run/secrets/token"), b"").unwrap();
    fs::create_dir_all(upper.join("proc")).unwrap();
    fs::write(upper.join("etc/base"), b"").unwrap_or_else(|_| {
        fs::create_dir(upper.join("etc")).unwrap();
        fs::write(upper.join("etc/base"), b"").unwrap();
    });
    let mount_points = ["/run/secrets/token", "/proc", "/etc/base"].map(String::from);
    let lease = store.lease();
    let layer = store
        .commit_container_layer("step", &base.layers, &mount_points, Some(0))
        .unwrap();
    assert!(
        upper.join("run/secrets/token").exists(),
        "stubs are left out of the layer, not deleted from the (maybe mounted) upper dir"
    );
    store.remove_container("step").unwrap();
    let chain: Vec<LayerInfo> = base.layers.iter().cloned().chain([layer.clone()]).collect();
    lease.hold(&chain);
    // The layer is a plain tar whose mtimes were clamped to the epoch.
    let mut archive = tar::Archive::new(store.content().read(&layer.digest).unwrap());
    let entries: Vec<(String, u64)> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().display().to_string(),
                e.header().mtime().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        vec![
            ("app".into(), 0),
            ("app/file".into(), 0),
            ("etc".into(), 0),
            ("etc/base".into(), 0),
        ]
    );
    assert_eq!(layer.diff_id, layer.digest);

    // A lease alone keeps the layer through a GC even with no image or cache entry.
    store.delete_image(&base.id).unwrap();
    store.gc().unwrap();
    assert!(store.content().exists(&layer.digest));
    let top = build::top_chain_id(&chain).unwrap();
    assert!(store.snapshotter().exists(top.as_str()).unwrap());

    // The cache keeps it once the lease is gone.
    let now = chrono::Utc::now();
    let entry = BuildCacheRecord {
        layers: chain.clone(),
        created: now,
        last_used: now,
        size: layer.unpacked_size,
    };
    store.put_build_cache("key1", &entry).unwrap();
    store.touch_build_cache(&["key1".to_string()]).unwrap();
    let entry = BuildCacheRecord {
        last_used: store.get_build_cache("key1").unwrap().unwrap().last_used,
        ..entry
    };
    assert!(entry.last_used > now);
    drop(lease);
    store.gc().unwrap();
    assert_eq!(store.get_build_cache("key1").unwrap(), Some(entry));

    // An image made of the cached chain shares its layers.
    let mut cfg = config();
    cfg.rootfs_mut()
        .set_diff_ids(chain.iter().map(|l| l.diff_id.to_string()).collect());
    let mut json = serde_json::to_value(&cfg).unwrap();
    json["config"]["Healthcheck"] = serde_json::json!({"Test": ["CMD", "true"]});
    let bytes = serde_json::to_vec(&json).unwrap();
    assert!(
        store
            .create_image_from_layers(bytes[..].to_vec(), chain[..1].to_vec())
            .is_err()
    );
    let image = store
        .create_image_from_layers(bytes, chain.clone())
        .unwrap();
    assert_eq!(
        store.image_config_json(&image.id).unwrap()["config"]["Healthcheck"]["Test"][1],
        "true"
    );
    assert_eq!(image.layers, chain);
    assert_eq!(image.config.rootfs().diff_ids().len(), 2);

    // Forgetting the cache and the image frees everything.
    assert!(store.delete_build_cache("key1").unwrap());
    store.delete_image(&image.id).unwrap();
    store.gc().unwrap();
    assert!(!store.content().exists(&layer.digest));
    assert!(!store.snapshotter().exists(top.as_str()).unwrap());
    assert_eq!(store.get_build_cache("key1").unwrap(), None);
}
