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
