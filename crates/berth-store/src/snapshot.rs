//! The overlayfs snapshotter, modelled on containerd's: snapshots are directories
//! `<root>/snapshots/<n>/{fs,work}` recorded in the metadata database under a key.
//!
//! Committed snapshots are read-only layers (named by ChainID so identical layer stacks are
//! shared); active snapshots are writable (overlay `upperdir`), views are read-only. The
//! snapshotter never mounts anything itself: it describes mounts as [`Mount`] values that
//! [`mount_all`] (or a shim) performs.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use nix::mount::{MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result, StoreError};
use crate::meta::{MetaDb, WriteTx};

/// Prefix of the keys of active snapshots used while applying a layer; such snapshots are
/// removed when the store is opened (they belong to an interrupted unpack).
pub const EXTRACT_PREFIX: &str = "extract-";

/// One filesystem mount, as plain data shared between the store and the runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// `overlay` or `bind`.
    pub kind: String,
    /// The mount source: a directory for `bind`, `overlay` for overlays.
    pub source: String,
    /// Mount options: `ro`/`rw`/`rbind` flags and overlay's `lowerdir=`/`upperdir=`/`workdir=`.
    pub options: Vec<String>,
}

impl Mount {
    /// This mount with overlay's `volatile` option when it has a writable upper layer:
    /// the layer is never synced, not even at unmount, which otherwise syncs the whole
    /// filesystem holding the upper directory. Only for layers that are thrown away with
    /// their container: after a crash the kernel refuses to mount such a layer again.
    /// Kernels before 5.10 reject the option (`EINVAL`).
    pub fn volatile(mut self) -> Mount {
        let has_upper = self.options.iter().any(|o| o.starts_with("upperdir="));
        if self.kind == "overlay" && has_upper && !self.options.iter().any(|o| o == "volatile") {
            self.options.push("volatile".to_string());
        }
        self
    }
}

/// What a snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// Immutable; may be a parent.
    Committed,
    /// Writable; its `fs` directory is the overlay upper directory.
    Active,
    /// Read-only view of its parent chain.
    View,
}

/// The database record of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Directory number under `<root>/snapshots/`.
    pub id: u64,
    /// What kind of snapshot this is.
    pub kind: SnapshotKind,
    /// The key of the committed parent snapshot.
    pub parent: Option<String>,
    /// When the snapshot was created.
    pub created: DateTime<Utc>,
    /// Bytes used by the snapshot's own directory, recorded at commit.
    #[serde(default)]
    pub size: Option<u64>,
}

/// The overlay snapshotter.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    dir: PathBuf,
    meta: Arc<MetaDb>,
}

impl Snapshotter {
    /// Opens the snapshotter under `<root>/snapshots`, removing interrupted extractions and
    /// directories that no record points to (left by a crash).
    pub fn open(root: &Path, meta: Arc<MetaDb>) -> Result<Snapshotter> {
        let dir = root.join("snapshots");
        fs::create_dir_all(&dir).ctx("create directory", &dir)?;
        let sn = Snapshotter { dir, meta };
        sn.recover()?;
        Ok(sn)
    }

    fn recover(&self) -> Result<()> {
        let stale: Vec<String> = self.meta.read(|tx| {
            Ok(tx
                .snapshots()?
                .into_iter()
                .filter(|(k, r)| k.starts_with(EXTRACT_PREFIX) && r.kind != SnapshotKind::Committed)
                .map(|(k, _)| k)
                .collect())
        })?;
        for key in stale {
            tracing::info!(snapshot = %key, "removing interrupted layer extraction");
            self.remove(&key)?;
        }
        let known: HashSet<String> = self.meta.read(|tx| {
            Ok(tx
                .snapshots()?
                .into_iter()
                .map(|(_, r)| r.id.to_string())
                .collect())
        })?;
        for entry in fs::read_dir(&self.dir).ctx("read directory", &self.dir)? {
            let entry = entry.ctx("read directory", &self.dir)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !known.contains(&name) {
                tracing::info!(dir = %entry.path().display(), "removing orphaned snapshot directory");
                remove_tree(&entry.path())?;
            }
        }
        Ok(())
    }

    fn snapshot_dir(&self, id: u64) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// Creates a writable snapshot on top of the committed `parent` and returns its mounts.
    pub fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        self.create(key, parent, SnapshotKind::Active)?;
        self.mounts(key)
    }

    /// Creates a read-only view of the committed `parent` and returns its mounts.
    pub fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        self.create(key, parent, SnapshotKind::View)?;
        self.mounts(key)
    }

    fn create(&self, key: &str, parent: Option<&str>, kind: SnapshotKind) -> Result<()> {
        self.meta.write(|tx| {
            if tx.get_snapshot(key)?.is_some() {
                return Err(StoreError::SnapshotExists(key.to_string()));
            }
            if let Some(p) = parent {
                let rec = tx
                    .get_snapshot(p)?
                    .ok_or_else(|| StoreError::SnapshotNotFound(p.to_string()))?;
                if rec.kind != SnapshotKind::Committed {
                    return Err(StoreError::SnapshotKind {
                        key: p.to_string(),
                        reason: "only committed snapshots can be parents",
                    });
                }
            }
            let id = tx.next_snapshot_id()?;
            let dir = self.snapshot_dir(id);
            // A directory left from an aborted transaction could carry the same number.
            if dir.exists() {
                remove_tree(&dir)?;
            }
            let fs_dir = dir.join("fs");
            fs::create_dir_all(&fs_dir).ctx("create directory", &fs_dir)?;
            if kind == SnapshotKind::Active {
                let work = dir.join("work");
                fs::create_dir(&work).ctx("create directory", &work)?;
            }
            let rec = SnapshotRecord {
                id,
                kind,
                parent: parent.map(str::to_string),
                created: Utc::now(),
                size: None,
            };
            tx.put_snapshot(key, &rec)
        })
    }

    /// Turns the active snapshot `key` into the committed snapshot `name`.
    pub fn commit(&self, name: &str, key: &str) -> Result<()> {
        let rec = self.get(key)?;
        if rec.kind != SnapshotKind::Active {
            return Err(StoreError::SnapshotKind {
                key: key.to_string(),
                reason: "only active snapshots can be committed",
            });
        }
        let size = dir_usage(&self.snapshot_dir(rec.id).join("fs"))?;
        self.meta.write(|tx| self.commit_in(tx, name, key, size))
    }

    /// The database half of [`Snapshotter::commit`], for callers that batch it with other changes.
    pub(crate) fn commit_in(&self, tx: &WriteTx, name: &str, key: &str, size: u64) -> Result<()> {
        let rec = tx
            .get_snapshot(key)?
            .ok_or_else(|| StoreError::SnapshotNotFound(key.to_string()))?;
        if rec.kind != SnapshotKind::Active {
            return Err(StoreError::SnapshotKind {
                key: key.to_string(),
                reason: "only active snapshots can be committed",
            });
        }
        if tx.get_snapshot(name)?.is_some() {
            return Err(StoreError::SnapshotExists(name.to_string()));
        }
        tx.delete_snapshot(key)?;
        let committed = SnapshotRecord {
            kind: SnapshotKind::Committed,
            size: Some(size),
            created: Utc::now(),
            ..rec
        };
        tx.put_snapshot(name, &committed)
    }

    /// The record of a snapshot.
    pub fn get(&self, key: &str) -> Result<SnapshotRecord> {
        self.meta
            .read(|tx| tx.get_snapshot(key))?
            .ok_or_else(|| StoreError::SnapshotNotFound(key.to_string()))
    }

    /// Whether a snapshot with this key or name exists.
    pub fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.meta.read(|tx| tx.get_snapshot(key))?.is_some())
    }

    /// Every snapshot as (key, record).
    pub fn list(&self) -> Result<Vec<(String, SnapshotRecord)>> {
        self.meta.read(|tx| tx.snapshots())
    }

    /// The snapshot's own directory: the writable upper directory for an active snapshot.
    pub fn fs_dir(&self, key: &str) -> Result<PathBuf> {
        Ok(self.snapshot_dir(self.get(key)?.id).join("fs"))
    }

    /// The `fs` directories of the parent chain of `key`, nearest parent first.
    pub fn parent_dirs(&self, key: &str) -> Result<Vec<PathBuf>> {
        self.meta.read(|tx| {
            let rec = tx
                .get_snapshot(key)?
                .ok_or_else(|| StoreError::SnapshotNotFound(key.to_string()))?;
            let mut dirs = Vec::new();
            let mut next = rec.parent;
            while let Some(p) = next {
                let prec = tx
                    .get_snapshot(&p)?
                    .ok_or_else(|| StoreError::SnapshotNotFound(p.clone()))?;
                dirs.push(self.snapshot_dir(prec.id).join("fs"));
                next = prec.parent;
            }
            Ok(dirs)
        })
    }

    /// How to mount the snapshot `key`.
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let rec = self.get(key)?;
        let own = self.snapshot_dir(rec.id);
        let parents = self.parent_dirs(key)?;
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let bind = |dir: &Path, ro: bool| Mount {
            kind: "bind".to_string(),
            source: path(dir),
            options: vec![
                if ro { "ro" } else { "rw" }.to_string(),
                "rbind".to_string(),
            ],
        };
        let lowerdir = |dirs: &[PathBuf]| {
            format!(
                "lowerdir={}",
                dirs.iter().map(|d| path(d)).collect::<Vec<_>>().join(":")
            )
        };
        let mount = match rec.kind {
            SnapshotKind::Active if parents.is_empty() => bind(&own.join("fs"), false),
            SnapshotKind::Active => Mount {
                kind: "overlay".to_string(),
                source: "overlay".to_string(),
                options: vec![
                    "index=off".to_string(),
                    lowerdir(&parents),
                    format!("upperdir={}", path(&own.join("fs"))),
                    format!("workdir={}", path(&own.join("work"))),
                ],
            },
            SnapshotKind::View | SnapshotKind::Committed => {
                let mut layers = Vec::new();
                if rec.kind == SnapshotKind::Committed {
                    layers.push(own.join("fs"));
                }
                layers.extend(parents);
                match layers.len() {
                    0 => bind(&own.join("fs"), true),
                    1 => bind(&layers[0], true),
                    _ => Mount {
                        kind: "overlay".to_string(),
                        source: "overlay".to_string(),
                        options: vec!["ro".to_string(), "index=off".to_string(), lowerdir(&layers)],
                    },
                }
            }
        };
        Ok(vec![mount])
    }

    /// Removes a snapshot; refuses while other snapshots have it as parent.
    pub fn remove(&self, key: &str) -> Result<()> {
        let files = self.meta.write(|tx| self.remove_in(tx, key))?;
        files.delete()
    }

    /// The database half of [`Snapshotter::remove`], for callers that batch it with other
    /// changes: deletes the record in `tx` and returns the files to delete once `tx` has
    /// committed. A crash in between leaves an unrecorded directory, which `open` removes.
    pub fn remove_in(&self, tx: &WriteTx, key: &str) -> Result<RemovedSnapshot> {
        let rec = tx
            .get_snapshot(key)?
            .ok_or_else(|| StoreError::SnapshotNotFound(key.to_string()))?;
        if tx.has_children(key)? {
            return Err(StoreError::SnapshotInUse(key.to_string()));
        }
        tx.delete_snapshot(key)?;
        Ok(RemovedSnapshot {
            dir: self.snapshot_dir(rec.id),
        })
    }

    /// Bytes used by the snapshot's own directory (hard links counted once).
    pub fn usage(&self, key: &str) -> Result<u64> {
        let rec = self.get(key)?;
        match rec.size {
            Some(size) if rec.kind == SnapshotKind::Committed => Ok(size),
            _ => dir_usage(&self.snapshot_dir(rec.id).join("fs")),
        }
    }
}

/// The files of a snapshot whose record is gone (see [`Snapshotter::remove_in`]).
#[derive(Debug)]
#[must_use = "the snapshot's files stay on disk until `delete` is called"]
pub struct RemovedSnapshot {
    dir: PathBuf,
}

impl RemovedSnapshot {
    /// Deletes the snapshot's directory (missing is fine).
    pub fn delete(self) -> Result<()> {
        remove_tree(&self.dir)
    }
}

/// The snapshot key of a container's writable layer, `container-<id>`.
pub fn container_key(container_id: &str) -> String {
    format!("container-{container_id}")
}

/// Removes a directory tree, making read-only directories writable first when needed.
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            make_writable(path);
            fs::remove_dir_all(path).ctx("remove directory", path)
        }
        Err(e) => Err(StoreError::io("remove directory", path, e)),
    }
}

fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::symlink_metadata(path)
        && meta.is_dir()
    {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
        if let Ok(rd) = fs::read_dir(path) {
            for e in rd.flatten() {
                make_writable(&e.path());
            }
        }
    }
}

/// Sums the sizes of the files under `dir`, counting hard-linked inodes once.
pub(crate) fn dir_usage(dir: &Path) -> Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = match fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io("read directory", &d, e)),
        };
        for entry in rd {
            let entry = entry.ctx("read directory", &d)?;
            let meta = entry.path().symlink_metadata().ctx("stat", &entry.path())?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.nlink() <= 1 || seen.insert((meta.dev(), meta.ino())) {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |v| v as usize)
}

/// Mounts `mounts` in order on `target` (which must exist).
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    for m in mounts {
        let mut flags = MsFlags::empty();
        let mut data = Vec::new();
        for opt in &m.options {
            match opt.as_str() {
                "ro" => flags |= MsFlags::MS_RDONLY,
                "rw" => {}
                "bind" => flags |= MsFlags::MS_BIND,
                "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
                "nosuid" => flags |= MsFlags::MS_NOSUID,
                "nodev" => flags |= MsFlags::MS_NODEV,
                "noexec" => flags |= MsFlags::MS_NOEXEC,
                other => data.push(other),
            }
        }
        let err = |source| StoreError::Mount {
            op: "mount",
            target: target.to_path_buf(),
            source,
        };
        if m.kind == "bind" || flags.contains(MsFlags::MS_BIND) {
            let bind_flags = flags & (MsFlags::MS_BIND | MsFlags::MS_REC);
            let bind_flags = if bind_flags.is_empty() {
                MsFlags::MS_BIND
            } else {
                bind_flags
            };
            nix::mount::mount(
                Some(m.source.as_str()),
                target,
                None::<&str>,
                bind_flags,
                None::<&str>,
            )
            .map_err(err)?;
            let extra = flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
            if !extra.is_empty() {
                let remount = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | extra;
                nix::mount::mount(None::<&str>, target, None::<&str>, remount, None::<&str>)
                    .map_err(err)?;
            }
        } else {
            let data = data.join(",");
            let max = page_size() - 1;
            if data.len() > max {
                let layers = data
                    .split("lowerdir=")
                    .nth(1)
                    .map_or(0, |l| l.split(',').next().unwrap_or("").split(':').count());
                return Err(StoreError::TooManyLayers {
                    target: target.to_path_buf(),
                    layers,
                    len: data.len(),
                    max,
                });
            }
            nix::mount::mount(
                Some(m.source.as_str()),
                target,
                Some(m.kind.as_str()),
                flags,
                Some(data.as_str()),
            )
            .map_err(err)?;
        }
    }
    Ok(())
}

/// Lazily unmounts `target` (`MNT_DETACH`); a target that is not mounted is not an error.
pub fn unmount(target: &Path) -> Result<()> {
    match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(source) => Err(StoreError::Mount {
            op: "unmount",
            target: target.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Snapshotter) {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(MetaDb::open(&dir.path().join("meta.redb")).unwrap());
        let sn = Snapshotter::open(dir.path(), meta).unwrap();
        (dir, sn)
    }

    #[test]
    fn prepare_commit_mounts_remove() {
        let (_dir, sn) = setup();
        let m = sn.prepare("a-active", None).unwrap();
        assert_eq!(m[0].kind, "bind");
        assert!(m[0].options.contains(&"rw".to_string()));
        fs::write(sn.fs_dir("a-active").unwrap().join("f"), b"abc").unwrap();
        sn.commit("a", "a-active").unwrap();
        assert!(!sn.exists("a-active").unwrap());
        assert_eq!(sn.usage("a").unwrap(), 3);

        // A view of one layer is a read-only bind mount of that layer.
        let v = sn.view("v", Some("a")).unwrap();
        assert_eq!(v[0].kind, "bind");
        assert_eq!(v[0].source, sn.fs_dir("a").unwrap().to_string_lossy());
        assert!(v[0].options.contains(&"ro".to_string()));

        sn.prepare("b-active", Some("a")).unwrap();
        sn.commit("b", "b-active").unwrap();
        let c = sn.prepare("c", Some("b")).unwrap();
        assert_eq!(c[0].kind, "overlay");
        let lower = c[0]
            .options
            .iter()
            .find(|o| o.starts_with("lowerdir="))
            .unwrap();
        let expected = format!(
            "lowerdir={}:{}",
            sn.fs_dir("b").unwrap().display(),
            sn.fs_dir("a").unwrap().display()
        );
        assert_eq!(lower, &expected);

        assert!(matches!(sn.remove("a"), Err(StoreError::SnapshotInUse(_))));
        assert!(matches!(
            sn.prepare("c", None),
            Err(StoreError::SnapshotExists(_))
        ));
        assert!(matches!(
            sn.prepare("d", Some("c")),
            Err(StoreError::SnapshotKind { .. })
        ));
        sn.remove("c").unwrap();
        sn.remove("v").unwrap();
        sn.remove("b").unwrap();
        sn.remove("a").unwrap();
        assert!(sn.list().unwrap().is_empty());
        assert_eq!(fs::read_dir(&sn.dir).unwrap().count(), 0);
    }

    #[test]
    fn only_writable_overlays_become_volatile() {
        let (_dir, sn) = setup();
        sn.prepare("a-active", None).unwrap();
        sn.commit("a", "a-active").unwrap();
        let bind = sn.prepare("alone", None).unwrap().remove(0);
        assert_eq!(bind.clone().volatile(), bind);
        let upper = sn.prepare("c", Some("a")).unwrap().remove(0).volatile();
        assert_eq!(upper.options.last().map(String::as_str), Some("volatile"));
        assert_eq!(upper.clone().volatile(), upper);
        sn.prepare("b-active", Some("a")).unwrap();
        sn.commit("b", "b-active").unwrap();
        let view = sn.view("v", Some("b")).unwrap().remove(0);
        assert_eq!(view.kind, "overlay");
        assert_eq!(view.clone().volatile(), view);
    }

    #[test]
    fn remove_in_keeps_files_until_deleted_and_checks_children() {
        let (_dir, sn) = setup();
        sn.prepare("p-active", None).unwrap();
        sn.commit("p", "p-active").unwrap();
        sn.prepare(&container_key("c1"), Some("p")).unwrap();
        let upper = sn.fs_dir(&container_key("c1")).unwrap();
        let in_use = sn.meta.write(|tx| sn.remove_in(tx, "p").map(|_| ()));
        assert!(matches!(in_use, Err(StoreError::SnapshotInUse(_))));
        let files = sn
            .meta
            .write(|tx| sn.remove_in(tx, &container_key("c1")))
            .unwrap();
        assert!(!sn.exists(&container_key("c1")).unwrap());
        assert!(upper.exists());
        files.delete().unwrap();
        assert!(!upper.exists());
        // With its only child gone the parent can go.
        sn.remove("p").unwrap();
    }

    #[test]
    fn container_keys_match_the_stores() {
        assert_eq!(container_key("abc"), crate::store::snapshot_key("abc"));
    }

    #[test]
    fn open_removes_interrupted_extractions_and_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(MetaDb::open(&dir.path().join("meta.redb")).unwrap());
        {
            let sn = Snapshotter::open(dir.path(), meta.clone()).unwrap();
            sn.prepare("extract-1-x", None).unwrap();
            sn.prepare("container-1", None).unwrap();
            fs::create_dir_all(dir.path().join("snapshots/999/fs")).unwrap();
        }
        let sn = Snapshotter::open(dir.path(), meta).unwrap();
        assert!(!sn.exists("extract-1-x").unwrap());
        assert!(sn.exists("container-1").unwrap());
        assert!(!dir.path().join("snapshots/999").exists());
        assert_eq!(
            fs::read_dir(dir.path().join("snapshots")).unwrap().count(),
            1
        );
    }
}
