//! Applying a layer tar into a directory, safely: every path is resolved inside the target
//! directory (symlinks are followed only as if the target were `/`), so no entry can create,
//! replace or write anything outside it.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, makedev, mknod};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};
use tar::EntryType;

use super::decompress;
use crate::digest::{Digest, Hashing};
use crate::error::{Result, StoreError};
use crate::sys;

const WHITEOUT_PREFIX: &str = ".wh.";
const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
const OVERLAY_OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";
const MAX_SYMLINKS: usize = 255;

/// What applying a layer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// sha256 of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Bytes of regular file content written.
    pub size: u64,
    /// Length of the uncompressed tar stream.
    pub tar_size: u64,
}

fn bad(msg: impl Into<String>) -> StoreError {
    StoreError::InvalidLayer(msg.into())
}

fn io_bad(op: &str, path: &Path, e: io::Error) -> StoreError {
    StoreError::InvalidLayer(format!("{op} {}: {e}", path.display()))
}

/// Applies a (plain or gzip) layer tar to `target`, which must be an otherwise unused
/// directory such as a freshly prepared snapshot.
pub fn apply_layer(reader: impl Read, target: &Path) -> Result<ApplyStats> {
    apply_layer_with_parents(reader, target, &[])
}

/// Like [`apply_layer`], where `parents` are the lower layer directories (nearest first)
/// that `target` will be stacked on: directories missing in the tar take their metadata
/// from there, and symlinked directories there are followed as overlay would.
pub fn apply_layer_with_parents(
    reader: impl Read,
    target: &Path,
    parents: &[PathBuf],
) -> Result<ApplyStats> {
    let (_, tar_stream) = decompress(reader)?;
    let mut hashing = Hashing::new(tar_stream);
    let mut applier = Applier {
        root: target.to_path_buf(),
        parents,
        is_root: sys::is_root(),
        dirs: Vec::new(),
        size: 0,
    };
    {
        let mut archive = tar::Archive::new(&mut hashing);
        let entries = archive
            .entries()
            .map_err(|e| bad(format!("read tar: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| bad(format!("read tar entry: {e}")))?;
            applier.apply_entry(&mut entry)?;
        }
    }
    // The DiffID covers the whole stream, including the end-of-archive padding.
    io::copy(&mut hashing, &mut io::sink()).map_err(|e| bad(format!("read tar padding: {e}")))?;
    applier.finish_dirs()?;
    Ok(ApplyStats {
        diff_id: hashing.digest(),
        size: applier.size,
        tar_size: hashing.count(),
    })
}

struct Applier<'p> {
    root: PathBuf,
    parents: &'p [PathBuf],
    is_root: bool,
    /// Directory mtimes, set after all entries because creating children changes them.
    dirs: Vec<(PathBuf, i64)>,
    size: u64,
}

/// Splits a tar path into its components, refusing any that would climb out of the root.
fn clean_components(raw: &Path) -> Result<Vec<String>> {
    let s = raw
        .to_str()
        .ok_or_else(|| bad(format!("non-utf8 path {}", raw.display())))?;
    let mut out: Vec<String> = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(bad(format!("path {s:?} escapes the layer root")));
                }
            }
            c => out.push(c.to_string()),
        }
    }
    Ok(out)
}

impl Applier<'_> {
    fn apply_entry<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<()> {
        let raw = entry
            .path()
            .map_err(|e| bad(format!("read entry path: {e}")))?
            .into_owned();
        let comps = clean_components(&raw)?;
        let Some((base, parent_comps)) = comps.split_last() else {
            // The root directory entry ("./"): the target directory's own metadata stays as is.
            return Ok(());
        };
        if base == WHITEOUT_OPAQUE {
            let dir = self.resolve(parent_comps, true)?;
            return sys::lsetxattr(&dir, OVERLAY_OPAQUE_XATTR, b"y")
                .map_err(|e| io_bad("set opaque xattr on", &dir, e));
        }
        if base.starts_with(WHITEOUT_META_PREFIX) {
            // aufs bookkeeping files (.wh..wh.plnk etc.) carry nothing for overlay.
            return Ok(());
        }
        if let Some(name) = base.strip_prefix(WHITEOUT_PREFIX) {
            let parent = self.resolve(parent_comps, true)?;
            let path = parent.join(name);
            remove_existing(&path)?;
            return mknod(&path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                .map_err(|e| io_bad("create whiteout", &path, e.into()));
        }
        let parent = self.resolve(parent_comps, true)?;
        let path = parent.join(base);
        let header = entry.header().clone();
        let kind = header.entry_type();
        let mode = header
            .mode()
            .map_err(|e| bad(format!("{}: bad mode: {e}", raw.display())))?
            & 0o7777;
        match kind {
            EntryType::Directory => {
                let is_dir = fs::symlink_metadata(&path)
                    .map(|m| m.is_dir())
                    .unwrap_or(false);
                if !is_dir {
                    remove_existing(&path)?;
                    fs::create_dir(&path).map_err(|e| io_bad("create directory", &path, e))?;
                }
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                remove_existing(&path)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|e| io_bad("create file", &path, e))?;
                let expected = entry.size();
                let n = io::copy(entry, &mut file).map_err(|e| io_bad("write file", &path, e))?;
                if n != expected {
                    return Err(bad(format!(
                        "truncated tar: {} has {n} of {expected} bytes",
                        raw.display()
                    )));
                }
                self.size += n;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| bad(format!("read link name: {e}")))?
                    .ok_or_else(|| bad(format!("symlink {} has no target", raw.display())))?;
                remove_existing(&path)?;
                std::os::unix::fs::symlink(&target, &path)
                    .map_err(|e| io_bad("create symlink", &path, e))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| bad(format!("read link name: {e}")))?
                    .ok_or_else(|| bad(format!("hard link {} has no target", raw.display())))?;
                let tcomps = clean_components(&target)?;
                let Some((tbase, tparent)) = tcomps.split_last() else {
                    return Err(bad(format!(
                        "hard link {} points at the root",
                        raw.display()
                    )));
                };
                let src = self.resolve(tparent, false)?.join(tbase);
                let meta = fs::symlink_metadata(&src).map_err(|e| {
                    bad(format!(
                        "hard link {} to {}: {e}",
                        raw.display(),
                        target.display()
                    ))
                })?;
                if meta.is_dir() {
                    return Err(bad(format!(
                        "hard link {} points at a directory",
                        raw.display()
                    )));
                }
                if src == path {
                    return Ok(());
                }
                remove_existing(&path)?;
                fs::hard_link(&src, &path).map_err(|e| io_bad("create hard link", &path, e))?;
                // A hard link shares its inode's metadata, which the target's entry already set.
                return Ok(());
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let sflag = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                if sflag != SFlag::S_IFIFO && !self.is_root {
                    tracing::warn!(path = %raw.display(), "skipping device node: not running as root");
                    return Ok(());
                }
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                remove_existing(&path)?;
                mknod(
                    &path,
                    sflag,
                    Mode::from_bits_truncate(0o600),
                    makedev(major.into(), minor.into()),
                )
                .map_err(|e| io_bad("create device node", &path, e.into()))?;
            }
            EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => {
                return Ok(());
            }
            other => {
                tracing::warn!(path = %raw.display(), kind = ?other, "skipping unsupported tar entry type");
                return Ok(());
            }
        }
        self.set_metadata(entry, &header, &path, kind, mode)
    }

    fn set_metadata<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        header: &tar::Header,
        path: &Path,
        kind: EntryType,
        mode: u32,
    ) -> Result<()> {
        let is_link = kind == EntryType::Symlink;
        if self.is_root {
            // Empty numeric fields (some writers leave them blank) mean 0, as in Go's archive/tar.
            let uid = header.uid().unwrap_or(0);
            let gid = header.gid().unwrap_or(0);
            nix::unistd::fchownat(
                None,
                path,
                Some(Uid::from_raw(uid as u32)),
                Some(Gid::from_raw(gid as u32)),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io_bad("chown", path, e.into()))?;
        }
        if !is_link {
            // After chown, which clears set-id bits.
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(|e| io_bad("chmod", path, e))?;
        }
        if let Some(exts) = entry
            .pax_extensions()
            .map_err(|e| bad(format!("read pax headers: {e}")))?
        {
            for ext in exts {
                let ext = ext.map_err(|e| bad(format!("read pax header: {e}")))?;
                let Ok(key) = ext.key() else { continue };
                let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) else {
                    continue;
                };
                // overlayfs' own attributes would change how the layer stacks (opaque
                // directories travel as `.wh..wh..opq` entries); no layer may set them.
                if name.is_empty() || name.as_bytes().starts_with(OVERLAY_XATTR_PREFIX) {
                    continue;
                }
                if let Err(e) = sys::lsetxattr(path, name.as_bytes(), ext.value_bytes()) {
                    // What the file system or the kernel refuses (a namespace it does not
                    // support, `user.*` on a symlink, a capability without CAP_SETFCAP) is
                    // left out, as moby's best-effort unpacking and containerd's do.
                    if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) {
                        tracing::warn!(path = %path.display(), xattr = name, "cannot set xattr: {e}");
                    } else {
                        return Err(io_bad(&format!("set xattr {name} on"), path, e));
                    }
                }
            }
        }
        let mtime = header.mtime().unwrap_or(0) as i64;
        if kind == EntryType::Directory {
            self.dirs.push((path.to_path_buf(), mtime));
        } else {
            set_mtime(path, mtime)?;
        }
        Ok(())
    }

    fn finish_dirs(&mut self) -> Result<()> {
        for (path, mtime) in self.dirs.drain(..).rev() {
            set_mtime(&path, mtime)?;
        }
        Ok(())
    }

    /// Resolves `comps` (a directory path relative to the root) to a real directory inside
    /// the root, following symlinks as if the root were `/`. Missing directories are created
    /// when `create` is set, taking metadata from the parent layers when they have them.
    fn resolve(&self, comps: &[String], create: bool) -> Result<PathBuf> {
        let mut current: Vec<String> = Vec::new();
        let mut queue: VecDeque<String> = comps.iter().cloned().collect();
        let mut links = 0usize;
        let shown = || comps.join("/");
        while let Some(c) = queue.pop_front() {
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    current.pop();
                    continue;
                }
                _ => {}
            }
            let rel: PathBuf = current.iter().chain(std::iter::once(&c)).collect();
            let candidate = self.root.join(&rel);
            let link_target = match fs::symlink_metadata(&candidate) {
                Ok(m) if m.is_dir() => None,
                Ok(m) if m.file_type().is_symlink() => Some(
                    fs::read_link(&candidate).map_err(|e| io_bad("read symlink", &candidate, e))?,
                ),
                Ok(_) => {
                    return Err(bad(format!(
                        "{}: {} is not a directory",
                        shown(),
                        rel.display()
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => match self.lower_lookup(&rel) {
                    Lower::Symlink(t) => Some(t),
                    found => {
                        if !create {
                            return Err(bad(format!(
                                "{}: {} does not exist",
                                shown(),
                                rel.display()
                            )));
                        }
                        fs::create_dir(&candidate)
                            .map_err(|e| io_bad("create directory", &candidate, e))?;
                        if let Lower::Dir(meta) = found {
                            copy_dir_metadata(&candidate, &meta, self.is_root)?;
                        }
                        None
                    }
                },
                Err(e) => return Err(io_bad("stat", &candidate, e)),
            };
            match link_target {
                None => current.push(c),
                Some(t) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(bad(format!(
                            "{}: too many levels of symbolic links",
                            shown()
                        )));
                    }
                    let ts = t
                        .to_str()
                        .ok_or_else(|| bad(format!("non-utf8 symlink target {}", t.display())))?;
                    if ts.starts_with('/') {
                        current.clear();
                    }
                    for part in ts.split('/').rev() {
                        queue.push_front(part.to_string());
                    }
                }
            }
        }
        Ok(current.iter().fold(self.root.clone(), |p, c| p.join(c)))
    }

    /// What the nearest parent layer that has `rel` holds there.
    fn lower_lookup(&self, rel: &Path) -> Lower {
        for lower in self.parents {
            let p = lower.join(rel);
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => return Lower::Dir(m),
                Ok(m) if m.file_type().is_symlink() => {
                    return fs::read_link(&p).map_or(Lower::Missing, Lower::Symlink);
                }
                // A whiteout or a file: nothing below it is visible.
                Ok(_) => return Lower::Missing,
                Err(_) => {}
            }
        }
        Lower::Missing
    }
}

enum Lower {
    Missing,
    Dir(fs::Metadata),
    Symlink(PathBuf),
}

fn copy_dir_metadata(path: &Path, meta: &fs::Metadata, is_root: bool) -> Result<()> {
    if is_root {
        nix::unistd::chown(
            path,
            Some(Uid::from_raw(meta.uid())),
            Some(Gid::from_raw(meta.gid())),
        )
        .map_err(|e| io_bad("chown", path, e.into()))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(|e| io_bad("chmod", path, e))
}

/// Removes whatever is at `path` (not following symlinks) so a new entry can take its place.
fn remove_existing(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => crate::snapshot::remove_tree(path),
        Ok(_) => fs::remove_file(path).map_err(|e| io_bad("remove", path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_bad("stat", path, e)),
    }
}

fn set_mtime(path: &Path, mtime: i64) -> Result<()> {
    let ts = TimeSpec::new(mtime, 0);
    nix::sys::stat::utimensat(None, path, &ts, &ts, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| io_bad("set mtime of", path, e.into()))
}
