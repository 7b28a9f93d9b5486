//! Writing directories as tar streams: an overlay upper directory as a Docker layer diff
//! (overlay whiteouts become `.wh.` files) and a whole root filesystem for `docker export`.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use crate::error::{Result, StoreError};
use crate::sys;

const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";
const OVERLAY_OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";
const CAPABILITY_XATTR: &[u8] = b"security.capability";
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

/// Whether a layer carries the extended attribute `name`: file capabilities
/// (`security.capability`, the one moby's and containerd's layer writers carry), and `user.*`
/// and `trusted.*` attributes (which their unpackers apply, and BuildKit's copies keep), but
/// neither overlayfs' own `trusted.overlay.*` (opaque directories travel as `.wh..wh..opq`)
/// nor the host's security labels (other `security.*` names: SELinux, IMA) nor `system.*`
/// ACLs. Names that cannot be PAX keywords (not UTF-8, holding `=`) are left out. `docker cp`
/// archives follow the same rule (`berth_api::archive::xattr_is_archived`).
fn xattr_is_archived(name: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(name) else {
        return false;
    };
    if text.contains('=') || name.starts_with(OVERLAY_XATTR_PREFIX) {
        return false;
    }
    name == CAPABILITY_XATTR || text.starts_with("user.") || text.starts_with("trusted.")
}

/// The archived value of the attribute `name`: a v3 file capability, which names the root
/// user of the user namespace it was set in, becomes the v2 one, as moby writes it.
fn archived_xattr_value(name: &[u8], mut value: Vec<u8>) -> Vec<u8> {
    // linux/capability.h: the revision is the high byte of the little-endian magic.
    const REVISION_OFFSET: usize = 3;
    const VFS_CAP_REVISION_2: u8 = 2;
    const VFS_CAP_REVISION_3: u8 = 3;
    const XATTR_CAPS_SZ_2: usize = 20;
    if name == CAPABILITY_XATTR
        && value.len() > XATTR_CAPS_SZ_2
        && value[REVISION_OFFSET] == VFS_CAP_REVISION_3
    {
        value[REVISION_OFFSET] = VFS_CAP_REVISION_2;
        value.truncate(XATTR_CAPS_SZ_2);
    }
    value
}

/// Writes the overlay upper directory `upper` as a layer tar: whiteout devices become
/// `.wh.<name>` files and opaque directories get a `.wh..wh..opq` entry.
pub fn diff_tar(upper: &Path, writer: impl Write) -> Result<()> {
    diff_tar_with(upper, writer, &DiffOptions::default())
}

/// How [`diff_tar_with`] writes a layer.
#[derive(Debug, Default, Clone)]
pub struct DiffOptions {
    /// No entry's mtime is later than this (`SOURCE_DATE_EPOCH`), so the same changes give
    /// the same tar, byte for byte, whenever they were made.
    pub epoch: Option<u64>,
    /// Paths (relative to the upper directory) left out of the tar, with what is below them.
    pub leave_out: HashSet<PathBuf>,
}

/// Like [`diff_tar`], with options.
pub fn diff_tar_with(upper: &Path, writer: impl Write, options: &DiffOptions) -> Result<()> {
    write_tree(upper, writer, true, options.epoch, &options.leave_out)
}

/// Writes every file under `dir` (a mounted root filesystem) as a tar.
pub fn tar_dir(dir: &Path, writer: impl Write) -> Result<()> {
    write_tree(dir, writer, false, None, &HashSet::new())
}

fn werr(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |e| StoreError::io("write tar entry for", path, e)
}

struct TreeWriter<'a, W: Write> {
    builder: tar::Builder<W>,
    /// Relative paths not written.
    leave_out: &'a HashSet<PathBuf>,
    root: PathBuf,
    convert_whiteouts: bool,
    /// The latest mtime an entry may carry.
    mtime_clamp: Option<u64>,
    /// (dev, inode) → archive path of the first occurrence, to emit hard links.
    inodes: HashMap<(u64, u64), PathBuf>,
}

fn write_tree(
    root: &Path,
    writer: impl Write,
    convert_whiteouts: bool,
    mtime_clamp: Option<u64>,
    leave_out: &HashSet<PathBuf>,
) -> Result<()> {
    let mut tw = TreeWriter {
        builder: tar::Builder::new(writer),
        leave_out,
        root: root.to_path_buf(),
        convert_whiteouts,
        mtime_clamp,
        inodes: HashMap::new(),
    };
    tw.walk(Path::new(""))?;
    tw.builder
        .finish()
        .map_err(|e| StoreError::io("finish tar of", root, e))
}

impl<W: Write> TreeWriter<'_, W> {
    fn walk(&mut self, rel_dir: &Path) -> Result<()> {
        let dir = self.root.join(rel_dir);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map_err(|e| StoreError::io("read directory", &dir, e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(|e| StoreError::io("read directory", &dir, e))?;
        names.sort();
        for name in names {
            let rel = rel_dir.join(&name);
            if self.leave_out.contains(&rel) {
                continue;
            }
            let full = self.root.join(&rel);
            let meta = fs::symlink_metadata(&full).map_err(|e| StoreError::io("stat", &full, e))?;
            let ft = meta.file_type();
            if self.convert_whiteouts && ft.is_char_device() && meta.rdev() == 0 {
                let wh = rel_dir.join(format!(".wh.{}", name.to_string_lossy()));
                self.append_empty(&wh, &meta)?;
                continue;
            }
            if ft.is_socket() {
                continue;
            }
            self.append_entry(&rel, &full, &meta)?;
            if ft.is_dir() {
                if self.convert_whiteouts
                    && sys::lgetxattr(&full, OVERLAY_OPAQUE_XATTR)
                        .ok()
                        .flatten()
                        .as_deref()
                        == Some(b"y")
                {
                    self.append_empty(&rel.join(".wh..wh..opq"), &meta)?;
                }
                self.walk(&rel)?;
            }
        }
        Ok(())
    }

    fn base_header(&self, meta: &fs::Metadata, kind: EntryType) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(meta.uid().into());
        h.set_gid(meta.gid().into());
        let mtime = meta.mtime().max(0) as u64;
        h.set_mtime(self.mtime_clamp.map_or(mtime, |clamp| mtime.min(clamp)));
        h.set_size(0);
        h
    }

    fn append_empty(&mut self, rel: &Path, meta: &fs::Metadata) -> Result<()> {
        let mut h = self.base_header(meta, EntryType::Regular);
        h.set_mode(0o644);
        self.builder
            .append_data(&mut h, rel, io::empty())
            .map_err(werr(rel))
    }

    /// Writes the PAX records of `full`'s extended attributes (see [`xattr_is_archived`]),
    /// which apply to the entry written next.
    fn append_xattrs(&mut self, full: &Path) -> Result<()> {
        let mut names =
            sys::llistxattr(full).map_err(|e| StoreError::io("list xattrs of", full, e))?;
        // The kernel lists them in no particular order; a layer's bytes must not depend on it.
        names.sort();
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        for name in names {
            if !xattr_is_archived(&name) {
                continue;
            }
            if let Some(value) =
                sys::lgetxattr(full, &name).map_err(|e| StoreError::io("read xattr of", full, e))?
            {
                let key = format!("{PAX_XATTR_PREFIX}{}", String::from_utf8_lossy(&name));
                pax.push((key, archived_xattr_value(&name, value)));
            }
        }
        if !pax.is_empty() {
            self.builder
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(werr(full))?;
        }
        Ok(())
    }

    fn append_entry(&mut self, rel: &Path, full: &Path, meta: &fs::Metadata) -> Result<()> {
        let ft = meta.file_type();
        if !ft.is_dir() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.inodes.get(&key).cloned() {
                let mut h = self.base_header(meta, EntryType::Link);
                return self
                    .builder
                    .append_link(&mut h, rel, &first)
                    .map_err(werr(rel));
            }
            self.inodes.insert(key, rel.to_path_buf());
        }
        self.append_xattrs(full)?;
        if ft.is_dir() {
            let mut h = self.base_header(meta, EntryType::Directory);
            self.builder
                .append_data(&mut h, rel, io::empty())
                .map_err(werr(rel))
        } else if ft.is_symlink() {
            let target =
                fs::read_link(full).map_err(|e| StoreError::io("read symlink", full, e))?;
            let mut h = self.base_header(meta, EntryType::Symlink);
            self.builder
                .append_link(&mut h, rel, &target)
                .map_err(werr(rel))
        } else if ft.is_file() {
            let file = File::open(full).map_err(|e| StoreError::io("open", full, e))?;
            let mut h = self.base_header(meta, EntryType::Regular);
            h.set_size(meta.len());
            // Guard against the file changing size while it is archived.
            self.builder
                .append_data(&mut h, rel, io::Read::take(file, meta.len()))
                .map_err(werr(rel))
        } else {
            let kind = if ft.is_char_device() {
                EntryType::Char
            } else if ft.is_block_device() {
                EntryType::Block
            } else {
                EntryType::Fifo
            };
            let mut h = self.base_header(meta, kind);
            let rdev = meta.rdev();
            let major = nix::sys::stat::major(rdev) as u32;
            let minor = nix::sys::stat::minor(rdev) as u32;
            h.set_device_major(major).map_err(werr(rel))?;
            h.set_device_minor(minor).map_err(werr(rel))?;
            self.builder
                .append_data(&mut h, rel, io::empty())
                .map_err(werr(rel))
        }
    }
}
