//! `GET /containers/{id}/changes` (`docker diff`): what a container changed in its root
//! filesystem, read from its writable (upper) overlay layer against the image's layers.
//!
//! The classification is Docker's (`archive.OverlayChanges`): a whiteout (a 0:0 character
//! device) is a deletion, so is an opaque directory that hides one below; a path that exists
//! below is a modification (a directory only when its mode, size or mtime differ); anything
//! else is an addition, and the parent of an addition or deletion is reported modified. The
//! order is the walk's: depth first, names sorted. Docker keeps the empty files and
//! directories the runtime creates to mount things on (`/etc/hosts`, `/proc`, volume
//! destinations) in a separate init layer; berth has them in the container's layer, so they
//! are recognised here and left out ([`is_mount_stub`]), as `commit` leaves them out.

use std::ffi::{CString, OsStr};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_api::models::{ChangeType, FilesystemChange};

use super::ContainerRecord;
use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

/// Where the runtime mounts things in every container besides the container's own mounts.
const RUNTIME_MOUNT_POINTS: &[&str] = &[
    "/proc",
    "/dev",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
    "/sys",
    "/sys/fs/cgroup",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    berth_runtime::spec::INIT_PATH_IN_CONTAINER,
];

/// The overlay xattr marking a directory that hides the lower layers' directory.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    /// Modified (`C`).
    Modified,
    /// Added (`A`).
    Added,
    /// Deleted (`D`).
    Deleted,
}

/// One change, with its absolute path inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub path: String,
    pub kind: ChangeKind,
}

impl Daemon {
    /// `GET /containers/{id}/changes`.
    pub async fn container_changes(&self, reference: &str) -> ServiceResult<Vec<FilesystemChange>> {
        let container = self.containers.get(reference)?;
        let record = container.snapshot();
        let store = self.store.clone();
        let changes = tokio::task::spawn_blocking(move || -> ServiceResult<Vec<Change>> {
            let (upper, lowers) = container_layers(&store, &record.id)?;
            changes(&upper, &lowers, &mount_points(&record)).map_err(|e| {
                ServiceError::internal(format!("read changes of container {}: {e}", record.id))
            })
        })
        .await??;
        Ok(changes
            .into_iter()
            .map(|c| FilesystemChange {
                path: c.path,
                kind: match c.kind {
                    ChangeKind::Modified => ChangeType::_0,
                    ChangeKind::Added => ChangeType::_1,
                    ChangeKind::Deleted => ChangeType::_2,
                },
            })
            .collect())
    }
}

/// A container's upper directory and the directories below it, nearest first.
pub(super) fn container_layers(
    store: &berth_store::Store,
    container_id: &str,
) -> ServiceResult<(PathBuf, Vec<PathBuf>)> {
    let upper = store.container_upper_dir(container_id)?;
    let lowers = store
        .container_mounts(container_id)?
        .iter()
        .flat_map(|m| m.options.iter())
        .filter_map(|o| o.strip_prefix("lowerdir="))
        .flat_map(|dirs| dirs.split(':'))
        .map(PathBuf::from)
        .collect();
    Ok((upper, lowers))
}

/// Where the runtime mounted things in this container: the defaults and its own mounts.
pub(super) fn mount_points(record: &ContainerRecord) -> Vec<String> {
    mount_points_with(&record.mounts)
}

/// Where the runtime mounts things in a container with `mounts`: the defaults and those.
pub(crate) fn mount_points_with(mounts: &[crate::volumes::MountPoint]) -> Vec<String> {
    RUNTIME_MOUNT_POINTS
        .iter()
        .map(|p| p.to_string())
        .chain(mounts.iter().map(|m| m.destination.clone()))
        .collect()
}

/// The changes in `upper` against `lowers` (nearest first), in Docker's order.
pub(crate) fn changes(
    upper: &Path,
    lowers: &[PathBuf],
    mount_points: &[String],
) -> io::Result<Vec<Change>> {
    let mount_points: Vec<PathBuf> = mount_points
        .iter()
        .map(|p| PathBuf::from(p.trim_start_matches('/')))
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    let mut walk = Walk {
        upper,
        lowers,
        mount_points: &mount_points,
        changed_dirs: Vec::new(),
        out: Vec::new(),
    };
    walk.dir(Path::new(""), false)?;
    Ok(walk.out)
}

struct Walk<'a> {
    upper: &'a Path,
    lowers: &'a [PathBuf],
    mount_points: &'a [PathBuf],
    /// Directories already reported (or known changed), so a parent is reported once.
    changed_dirs: Vec<PathBuf>,
    out: Vec<Change>,
}

impl Walk<'_> {
    /// Reports the entries of `rel` (relative to the root); `hidden_below` when an opaque
    /// directory above hides the lower layers.
    fn dir(&mut self, rel: &Path, hidden_below: bool) -> io::Result<()> {
        let mut names: Vec<_> = fs::read_dir(self.upper.join(rel))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let child = rel.join(&name);
            let meta = fs::symlink_metadata(self.upper.join(&child))?;
            let below = if hidden_below {
                None
            } else {
                lookup_below(self.lowers, &child)
            };
            if below.is_none() && self.is_mount_stub(&child, &meta)? {
                continue;
            }
            let whiteout = is_whiteout(&meta);
            let opaque = meta.is_dir() && is_opaque(&self.upper.join(&child));
            let kind = if whiteout || (opaque && below.is_some()) {
                Some(ChangeKind::Deleted)
            } else {
                match &below {
                    None => Some(ChangeKind::Added),
                    Some(lower) if meta.is_dir() && lower.is_dir() => {
                        let stubs_only =
                            self.leads_to_mount_point(&child) && self.holds_only_stubs(&child)?;
                        if same_dir(&meta, lower) || stubs_only {
                            None
                        } else {
                            Some(ChangeKind::Modified)
                        }
                    }
                    Some(_) => Some(ChangeKind::Modified),
                }
            };
            if let Some(kind) = kind {
                self.record(&child, meta.is_dir() && !whiteout, kind);
            }
            if meta.is_dir() && !whiteout {
                self.dir(&child, hidden_below || opaque)?;
            }
        }
        Ok(())
    }

    fn record(&mut self, rel: &Path, is_dir: bool, kind: ChangeKind) {
        if is_dir {
            self.changed_dirs.push(rel.to_path_buf());
        }
        if matches!(kind, ChangeKind::Added | ChangeKind::Deleted)
            && let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty())
            && !self.changed_dirs.iter().any(|d| d == parent)
        {
            self.changed_dirs.push(parent.to_path_buf());
            self.out.push(Change {
                path: absolute(parent),
                kind: ChangeKind::Modified,
            });
        }
        self.out.push(Change {
            path: absolute(rel),
            kind,
        });
    }

    /// Whether `rel` (which no lower layer has) exists only to mount something on: an empty
    /// file or directory at a mount point, or a directory on the way to one holding
    /// nothing but such stubs.
    fn is_mount_stub(&self, rel: &Path, meta: &Metadata) -> io::Result<bool> {
        let is_point = self.mount_points.iter().any(|p| p == rel);
        if meta.is_file() {
            return Ok(is_point && meta.len() == 0);
        }
        if !meta.is_dir() || !(is_point || self.leads_to_mount_point(rel)) {
            return Ok(false);
        }
        self.holds_only_stubs(rel)
    }

    /// Whether a mount point lies below `rel`.
    fn leads_to_mount_point(&self, rel: &Path) -> bool {
        self.mount_points
            .iter()
            .any(|p| p.starts_with(rel) && p != rel)
    }

    /// Whether every entry of directory `rel` is a mount stub absent below (true when empty).
    fn holds_only_stubs(&self, rel: &Path) -> io::Result<bool> {
        for entry in fs::read_dir(self.upper.join(rel))? {
            let child = rel.join(entry?.file_name());
            let meta = fs::symlink_metadata(self.upper.join(&child))?;
            if lookup_below(self.lowers, &child).is_some() || !self.is_mount_stub(&child, &meta)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn absolute(rel: &Path) -> String {
    format!("/{}", rel.to_string_lossy())
}

/// Docker's test for an unchanged directory: same mode, size and mtime (a zero nanosecond
/// part on either side matches any, as tar loses them).
fn same_dir(a: &Metadata, b: &Metadata) -> bool {
    a.mode() == b.mode()
        && a.size() == b.size()
        && a.mtime() == b.mtime()
        && (a.mtime_nsec() == b.mtime_nsec() || a.mtime_nsec() == 0 || b.mtime_nsec() == 0)
}

/// The entry at `rel` in the merged lower layers (nearest first): a whiteout, or an opaque
/// directory or non-directory on the way in a nearer layer, hides the deeper ones.
fn lookup_below(lowers: &[PathBuf], rel: &Path) -> Option<Metadata> {
    for lower in lowers {
        if let Ok(meta) = fs::symlink_metadata(lower.join(rel)) {
            return (!is_whiteout(&meta)).then_some(meta);
        }
        // Not in this layer: does an ancestor here hide the layers below?
        let mut ancestor = PathBuf::new();
        for component in rel.parent().into_iter().flat_map(Path::components) {
            ancestor.push(component);
            let path = lower.join(&ancestor);
            match fs::symlink_metadata(&path) {
                Ok(meta) if is_whiteout(&meta) || !meta.is_dir() => return None,
                Ok(_) if is_opaque(&path) => return None,
                _ => {}
            }
        }
    }
    None
}

/// An overlay whiteout: a character device numbered 0:0.
fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Whether the directory carries overlay's opaque mark.
fn is_opaque(path: &Path) -> bool {
    let (Ok(path), Ok(name)) = (
        CString::new(path.as_os_str().as_bytes()),
        CString::new(OsStr::new(OPAQUE_XATTR).as_bytes()),
    ) else {
        return false;
    };
    let mut value = [0u8; 2];
    // SAFETY: both strings are NUL-terminated and outlive the call; the kernel writes at
    // most `value.len()` bytes into the buffer, which lives on this stack frame.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| {
                let k = match c.kind {
                    ChangeKind::Modified => "C",
                    ChangeKind::Added => "A",
                    ChangeKind::Deleted => "D",
                };
                format!("{k} {}", c.path)
            })
            .collect()
    }

    fn whiteout(path: &Path) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, 0) };
        assert_eq!(
            rc,
            0,
            "mknod {}: {}",
            path.display(),
            io::Error::last_os_error()
        );
    }

    fn set_opaque(path: &Path) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        let name = CString::new(OPAQUE_XATTR).unwrap();
        // SAFETY: NUL-terminated strings and a one-byte value, all outliving the call.
        let rc = unsafe { libc::lsetxattr(c.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
        assert_eq!(
            rc,
            0,
            "setxattr {}: {}",
            path.display(),
            io::Error::last_os_error()
        );
    }

    /// Copies a directory's mode and times, as overlay's copy-up does.
    fn copy_up_dir(lower: &Path, upper: &Path) {
        fs::create_dir_all(upper).unwrap();
        let meta = fs::metadata(lower).unwrap();
        fs::set_permissions(upper, meta.permissions()).unwrap();
        let times = fs::FileTimes::new()
            .set_modified(meta.modified().unwrap())
            .set_accessed(meta.accessed().unwrap());
        fs::File::open(upper).unwrap().set_times(times).unwrap();
    }

    /// Gives every directory under `root` an old mtime, so directories made by the test
    /// later never share it by chance (timestamps are only as fine as the kernel tick).
    fn age(root: &Path) {
        let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for e in fs::read_dir(&dir).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    dirs.push(e.path());
                }
            }
            let times = fs::FileTimes::new().set_modified(old).set_accessed(old);
            fs::File::open(&dir).unwrap().set_times(times).unwrap();
        }
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn overlay_entries_classify_like_docker() {
        if !is_root() {
            eprintln!("skipped: whiteouts and trusted xattrs need root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (lower, upper) = (dir.path().join("lower"), dir.path().join("upper"));
        for d in ["etc", "home", "tmp", "usr/lib", "var/cache"] {
            fs::create_dir_all(lower.join(d)).unwrap();
        }
        fs::write(lower.join("etc/passwd"), "root\n").unwrap();
        fs::write(lower.join("tmp/y"), "y").unwrap();
        fs::write(lower.join("var/cache/old"), "old").unwrap();
        age(&lower);

        // A new file in /etc (its mtime moves), a modified file in an untouched /usr/lib
        // copy, a deleted /tmp/y, /var/cache emptied and re-created, /home touched (an
        // empty directory whose mtime moved), a new directory tree.
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::write(upper.join("etc/x"), "x").unwrap();
        fs::write(upper.join("etc/passwd"), "root\nme\n").unwrap();
        copy_up_dir(&lower.join("usr"), &upper.join("usr"));
        copy_up_dir(&lower.join("usr/lib"), &upper.join("usr/lib"));
        fs::write(upper.join("usr/lib/libx.so"), "elf").unwrap();
        copy_up_dir(&lower.join("usr/lib"), &upper.join("usr/lib"));
        copy_up_dir(&lower.join("usr"), &upper.join("usr"));
        fs::create_dir_all(upper.join("tmp")).unwrap();
        whiteout(&upper.join("tmp/y"));
        fs::create_dir_all(upper.join("var/cache")).unwrap();
        set_opaque(&upper.join("var/cache"));
        fs::write(upper.join("var/cache/new"), "n").unwrap();
        fs::create_dir_all(upper.join("home")).unwrap();
        fs::create_dir_all(upper.join("opt/app")).unwrap();
        fs::write(upper.join("opt/app/run"), "#!").unwrap();

        let got = kinds(&changes(&upper, &[lower], &[]).unwrap());
        assert_eq!(
            got,
            [
                "C /etc",
                "C /etc/passwd",
                "A /etc/x",
                "C /home",
                "A /opt",
                "A /opt/app",
                "A /opt/app/run",
                "C /tmp",
                "D /tmp/y",
                "C /usr/lib",
                "A /usr/lib/libx.so",
                "C /var",
                "D /var/cache",
                "A /var/cache/new",
            ]
        );
    }

    #[test]
    fn mount_stubs_and_the_directories_holding_them_are_not_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (lower, upper) = (dir.path().join("lower"), dir.path().join("upper"));
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::write(lower.join("etc/passwd"), "root\n").unwrap();
        age(&lower);
        copy_up_dir(&lower.join("etc"), &upper.join("etc"));
        for stub in ["etc/hosts", "etc/hostname", "etc/resolv.conf"] {
            fs::write(upper.join(stub), "").unwrap();
        }
        fs::create_dir_all(upper.join("proc")).unwrap();
        fs::create_dir_all(upper.join("data/deep")).unwrap();
        let points: Vec<String> = ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/proc"]
            .iter()
            .map(|s| s.to_string())
            .chain(["/data/deep".to_string()])
            .collect();
        assert_eq!(
            kinds(&changes(&upper, std::slice::from_ref(&lower), &points).unwrap()),
            Vec::<String>::new()
        );

        // Content at a mount point, or beside a stub, is a change again.
        fs::write(upper.join("data/deep/kept"), "k").unwrap();
        fs::write(upper.join("etc/hosts"), "127.0.0.1 x\n").unwrap();
        assert_eq!(
            kinds(&changes(&upper, &[lower], &points).unwrap()),
            [
                "A /data",
                "A /data/deep",
                "A /data/deep/kept",
                "C /etc",
                "A /etc/hosts"
            ]
        );
    }

    #[test]
    fn whiteouts_in_nearer_layers_hide_deeper_files() {
        if !is_root() {
            eprintln!("skipped: whiteouts need root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (top, base, upper) = (
            dir.path().join("top"),
            dir.path().join("base"),
            dir.path().join("upper"),
        );
        fs::create_dir_all(base.join("srv")).unwrap();
        fs::write(base.join("srv/gone"), "g").unwrap();
        fs::create_dir_all(top.join("srv")).unwrap();
        whiteout(&top.join("srv/gone"));
        age(&top);
        copy_up_dir(&top.join("srv"), &upper.join("srv"));
        fs::write(upper.join("srv/gone"), "again").unwrap();
        copy_up_dir(&top.join("srv"), &upper.join("srv"));
        assert_eq!(
            kinds(&changes(&upper, &[top, base], &[]).unwrap()),
            ["C /srv", "A /srv/gone"]
        );
    }
}
