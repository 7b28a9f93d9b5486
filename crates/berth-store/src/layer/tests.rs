use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use tar::{EntryType, Header};

use super::*;
use crate::sys;

/// Builds tars entry by entry, writing names raw so tests can express hostile paths.
struct TarBuilder {
    b: tar::Builder<Vec<u8>>,
}

impl TarBuilder {
    fn new() -> Self {
        TarBuilder {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(name: &str, kind: EntryType, mode: u32, size: u64) -> Header {
        let mut h = Header::new_gnu();
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn dir(mut self, name: &str) -> Self {
        let mut h = Self::header(name, EntryType::Directory, 0o755, 0);
        h.set_cksum();
        self.b.append(&h, std::io::empty()).unwrap();
        self
    }

    fn file(mut self, name: &str, data: &[u8]) -> Self {
        let mut h = Self::header(name, EntryType::Regular, 0o644, data.len() as u64);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    fn link(mut self, name: &str, kind: EntryType, target: &str) -> Self {
        let mut h = Self::header(name, kind, 0o777, 0);
        let t = target.as_bytes();
        h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
        h.set_cksum();
        self.b.append(&h, std::io::empty()).unwrap();
        self
    }

    fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn chain_ids_follow_the_oci_rule() {
    let a = Digest::from_bytes(b"a");
    let b = Digest::from_bytes(b"b");
    let chain = chain_id(&[a.clone(), b.clone()]);
    assert_eq!(chain[0], a);
    assert_eq!(chain[1], Digest::from_bytes(format!("{a} {b}").as_bytes()));
    assert!(chain_id(&[]).is_empty());
}

#[test]
fn applies_files_links_and_metadata_plain_and_gzip() {
    let tar = TarBuilder::new()
        .dir("./")
        .dir("etc/")
        .file("etc/hosts", b"127.0.0.1 localhost\n")
        .link("etc/hosts.link", EntryType::Link, "etc/hosts")
        .link("bin", EntryType::Symlink, "usr/bin")
        .file("deep/missing/parent", b"x")
        .finish();
    for (name, data) in [("plain", tar.clone()), ("gzip", gzip(&tar))] {
        let dir = tempfile::tempdir().unwrap();
        let stats = apply_layer(data.as_slice(), dir.path()).unwrap();
        assert_eq!(stats.diff_id, Digest::from_bytes(&tar), "{name}");
        assert_eq!(stats.tar_size, tar.len() as u64);
        assert_eq!(stats.size, 21);
        let hosts = dir.path().join("etc/hosts");
        assert_eq!(fs::read(&hosts).unwrap(), b"127.0.0.1 localhost\n");
        let m = fs::metadata(&hosts).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o644);
        assert_eq!(m.mtime(), 1_000_000);
        assert_eq!(m.nlink(), 2);
        assert_eq!(
            fs::metadata(dir.path().join("etc")).unwrap().mtime(),
            1_000_000
        );
        assert_eq!(
            fs::read_link(dir.path().join("bin")).unwrap(),
            Path::new("usr/bin")
        );
        assert_eq!(
            fs::read(dir.path().join("deep/missing/parent")).unwrap(),
            b"x"
        );
    }
}

#[test]
fn whiteouts_and_opaque_dirs_become_overlay_markers_and_back() {
    if !sys::is_root() {
        eprintln!("skipping whiteouts test: needs root for mknod and trusted xattrs");
        return;
    }
    let tar = TarBuilder::new()
        .dir("a/")
        .file("a/.wh.gone", b"")
        .dir("c/")
        .file("c/.wh..wh..opq", b"")
        .file("c/kept", b"k")
        .finish();
    let dir = tempfile::tempdir().unwrap();
    apply_layer(tar.as_slice(), dir.path()).unwrap();
    let wh = fs::symlink_metadata(dir.path().join("a/gone")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert_eq!(
        sys::lgetxattr(&dir.path().join("c"), b"trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert!(!dir.path().join("c/.wh..wh..opq").exists());

    let mut out = Vec::new();
    diff_tar(dir.path(), &mut out).unwrap();
    let mut names: Vec<String> = tar::Archive::new(out.as_slice())
        .entries()
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["a", "a/.wh.gone", "c", "c/.wh..wh..opq", "c/kept"]);
}

#[test]
fn tar_dir_round_trips_through_apply() {
    let src = tempfile::tempdir().unwrap();
    fs::create_dir_all(src.path().join("x/y")).unwrap();
    fs::write(src.path().join("x/y/f"), b"data").unwrap();
    fs::set_permissions(src.path().join("x/y/f"), fs::Permissions::from_mode(0o751)).unwrap();
    fs::hard_link(src.path().join("x/y/f"), src.path().join("x/h")).unwrap();
    std::os::unix::fs::symlink("y/f", src.path().join("x/s")).unwrap();
    let mut out = Vec::new();
    tar_dir(src.path(), &mut out).unwrap();
    let dst = tempfile::tempdir().unwrap();
    apply_layer(out.as_slice(), dst.path()).unwrap();
    assert_eq!(fs::read(dst.path().join("x/y/f")).unwrap(), b"data");
    assert_eq!(
        fs::metadata(dst.path().join("x/y/f")).unwrap().mode() & 0o7777,
        0o751
    );
    assert_eq!(fs::metadata(dst.path().join("x/h")).unwrap().nlink(), 2);
    assert_eq!(
        fs::read_link(dst.path().join("x/s")).unwrap(),
        Path::new("y/f")
    );
}

/// Applies `tar` to `<tmp>/target` next to `<tmp>/canary` and checks nothing outside the
/// target changed. Returns whether the apply succeeded.
fn apply_hostile(tar: &[u8]) -> (bool, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");
    fs::create_dir(&target).unwrap();
    let canary = tmp.path().join("canary");
    fs::write(&canary, b"original").unwrap();
    let ok = apply_layer(tar, &target).is_ok();
    assert_eq!(
        fs::read(&canary).unwrap(),
        b"original",
        "canary content changed"
    );
    assert_eq!(
        fs::metadata(&canary).unwrap().nlink(),
        1,
        "canary got hard-linked"
    );
    let mut outside: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    outside.sort();
    assert_eq!(
        outside,
        ["canary", "target"],
        "something was written outside the target"
    );
    (ok, tmp)
}

#[test]
fn hostile_tars_never_write_outside_the_target() {
    // `..` escapes are refused outright.
    let (ok, _) = apply_hostile(&TarBuilder::new().file("../canary", b"pwned").finish());
    assert!(!ok);
    let (ok, _) = apply_hostile(&TarBuilder::new().file("a/../../evil", b"pwned").finish());
    assert!(!ok);

    // Absolute paths are taken relative to the target.
    let (ok, tmp) = apply_hostile(&TarBuilder::new().file("/abs/evil", b"in").finish());
    assert!(ok);
    assert_eq!(fs::read(tmp.path().join("target/abs/evil")).unwrap(), b"in");

    // A symlink to the outside, then a write through it, lands inside the target.
    for link in ["..", "/", "../..", "/../.."] {
        let tar = TarBuilder::new()
            .link("esc", EntryType::Symlink, link)
            .file("esc/canary", b"pwned")
            .finish();
        let (ok, tmp) = apply_hostile(&tar);
        assert!(ok, "link {link}");
        assert_eq!(
            fs::read(tmp.path().join("target/canary")).unwrap(),
            b"pwned"
        );
    }

    // A symlink pointing at the canary file, then a regular file over the link: the link is
    // replaced, the canary is not written.
    let tar = TarBuilder::new()
        .link("esc", EntryType::Symlink, "../canary")
        .file("esc", b"pwned")
        .finish();
    let (ok, tmp) = apply_hostile(&tar);
    assert!(ok);
    assert_eq!(fs::read(tmp.path().join("target/esc")).unwrap(), b"pwned");

    // Nested symlink chains stay inside too.
    let tar = TarBuilder::new()
        .link("a", EntryType::Symlink, "b/../../..")
        .dir("b/")
        .file("a/x/canary", b"pwned")
        .finish();
    let (ok, tmp) = apply_hostile(&tar);
    assert!(ok);
    assert!(tmp.path().join("target/x/canary").exists());

    // Hard links to the outside are refused, directly or through a symlink.
    let (ok, _) = apply_hostile(
        &TarBuilder::new()
            .link("hl", EntryType::Link, "../canary")
            .finish(),
    );
    assert!(!ok);
    let tar = TarBuilder::new()
        .link("esc", EntryType::Symlink, "..")
        .link("hl", EntryType::Link, "esc/canary")
        .finish();
    let (ok, _) = apply_hostile(&tar);
    assert!(!ok);
    let (ok, _) = apply_hostile(
        &TarBuilder::new()
            .link("hl", EntryType::Link, "/etc/passwd")
            .finish(),
    );
    assert!(!ok);
}

#[test]
fn truncated_and_corrupt_tars_are_rejected() {
    let tar = TarBuilder::new()
        .file("big", &[7u8; 4096])
        .file("after", b"x")
        .finish();
    let dir = tempfile::tempdir().unwrap();
    let err = apply_layer(&tar[..1500], dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::InvalidLayer(_)), "{err}");

    let gz = gzip(&tar);
    let dir = tempfile::tempdir().unwrap();
    assert!(apply_layer(&gz[..gz.len() / 2], dir.path()).is_err());

    let mut corrupt = tar.clone();
    corrupt[100] ^= 0xff; // breaks the first header's checksum
    let dir = tempfile::tempdir().unwrap();
    assert!(apply_layer(corrupt.as_slice(), dir.path()).is_err());
}

/// `cap_net_raw+ep` as `setcap` writes it (VFS_CAP_REVISION_2, effective).
const CAP_NET_RAW_V2: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// An entry's name with its `SCHILY.xattr.` records.
type EntryXattrs = (String, Vec<(String, Vec<u8>)>);

/// Every entry's name with its `SCHILY.xattr.` records, in archive order.
fn xattr_records(tar: &[u8]) -> Vec<EntryXattrs> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let records = e
                .pax_extensions()
                .unwrap()
                .map(|exts| {
                    exts.map(|x| x.unwrap())
                        .filter_map(|x| {
                            let key = x.key().unwrap().strip_prefix("SCHILY.xattr.")?;
                            Some((key.to_string(), x.value_bytes().to_vec()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            (name, records)
        })
        .collect()
}

#[test]
fn xattrs_travel_through_diff_and_apply() {
    if !sys::is_root() {
        eprintln!("skipping xattr round trip: needs root for trusted xattrs and capabilities");
        return;
    }
    let upper = tempfile::tempdir().unwrap();
    let u = upper.path();
    fs::create_dir(u.join("d")).unwrap();
    fs::write(u.join("d/ping"), b"binary").unwrap();
    fs::write(u.join("d/v3"), b"binary").unwrap();
    std::os::unix::fs::symlink("ping", u.join("d/link")).unwrap();
    let set = |p: &str, name: &str, value: &[u8]| {
        sys::lsetxattr(&u.join(p), name.as_bytes(), value)
            .unwrap_or_else(|e| panic!("set {name} on {p}: {e}"))
    };
    set("d", "user.dir", b"d");
    set("d", "trusted.overlay.opaque", b"y");
    set("d/ping", "user.test", b"hello");
    set("d/ping", "trusted.note", b"t");
    set("d/ping", "security.capability", &CAP_NET_RAW_V2);
    set("d/link", "trusted.link", b"l");
    // A v3 capability whose namespace root is uid 1000.
    let mut v3 = CAP_NET_RAW_V2.to_vec();
    v3[3] = 3;
    v3.extend_from_slice(&1000u32.to_le_bytes());
    set("d/v3", "security.capability", &v3);
    // Host security labels stay out; not every kernel lets us set one.
    let labelled = sys::lsetxattr(&u.join("d/ping"), b"security.ima", b"\x01label").is_ok();

    let mut out = Vec::new();
    diff_tar(u, &mut out).unwrap();
    let records = xattr_records(&out);
    let of = |name: &str| {
        records
            .iter()
            .find(|(n, _)| n.trim_end_matches('/') == name)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("{name} missing from {records:?}"))
    };
    assert_eq!(of("d"), [("user.dir".to_string(), b"d".to_vec())]);
    assert!(of("d/.wh..wh..opq").is_empty());
    assert_eq!(
        of("d/ping"),
        [
            ("security.capability".to_string(), CAP_NET_RAW_V2.to_vec()),
            ("trusted.note".to_string(), b"t".to_vec()),
            ("user.test".to_string(), b"hello".to_vec()),
        ],
        "sorted, without the host's labels (label set: {labelled})"
    );
    assert_eq!(of("d/link"), [("trusted.link".to_string(), b"l".to_vec())]);
    assert_eq!(
        of("d/v3"),
        [("security.capability".to_string(), CAP_NET_RAW_V2.to_vec())],
        "v3 capabilities are written as v2"
    );

    let dst = tempfile::tempdir().unwrap();
    apply_layer(out.as_slice(), dst.path()).unwrap();
    let get = |p: &str, name: &str| sys::lgetxattr(&dst.path().join(p), name.as_bytes()).unwrap();
    assert_eq!(get("d", "user.dir").as_deref(), Some(&b"d"[..]));
    assert_eq!(
        get("d", "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(get("d/ping", "user.test").as_deref(), Some(&b"hello"[..]));
    assert_eq!(get("d/ping", "trusted.note").as_deref(), Some(&b"t"[..]));
    assert_eq!(
        get("d/ping", "security.capability").as_deref(),
        Some(&CAP_NET_RAW_V2[..]),
        "the capability survives the chown of apply"
    );
    assert_eq!(get("d/ping", "security.ima"), None);
    assert_eq!(get("d/link", "trusted.link").as_deref(), Some(&b"l"[..]));
    assert_eq!(
        get("d/v3", "security.capability").as_deref(),
        Some(&CAP_NET_RAW_V2[..])
    );

    // An exported root filesystem (`docker export`) carries them too.
    let mut exported = Vec::new();
    tar_dir(dst.path(), &mut exported).unwrap();
    let records = xattr_records(&exported);
    let ping = records
        .iter()
        .find(|(n, _)| n == "d/ping")
        .map(|(_, r)| r.clone())
        .unwrap();
    assert_eq!(ping.len(), 3, "{ping:?}");
}

#[test]
fn layers_never_set_overlay_xattrs() {
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([
        ("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..]),
        ("SCHILY.xattr.trusted.overlay.redirect", &b"/elsewhere"[..]),
        ("SCHILY.xattr.user.kept", &b"1"[..]),
    ])
    .unwrap();
    let mut h = TarBuilder::header("d/", EntryType::Directory, 0o755, 0);
    h.set_cksum();
    b.append(&h, std::io::empty()).unwrap();
    let tar = b.into_inner().unwrap();
    let dir = tempfile::tempdir().unwrap();
    apply_layer(tar.as_slice(), dir.path()).unwrap();
    let d = dir.path().join("d");
    assert_eq!(sys::lgetxattr(&d, b"trusted.overlay.opaque").unwrap(), None);
    assert_eq!(
        sys::lgetxattr(&d, b"trusted.overlay.redirect").unwrap(),
        None
    );
    assert_eq!(
        sys::lgetxattr(&d, b"user.kept").unwrap().as_deref(),
        Some(&b"1"[..])
    );
}
