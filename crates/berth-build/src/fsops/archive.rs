//! ADD's extraction of local tar archives (plain, gzip, bzip2, xz, zstd).
//!
//! A file is an archive when its first bytes name a known compression (or
//! none) and a tar header can be read after decompressing: the name never
//! matters. Extraction is `tar -x` confined to the destination, as Docker
//! does it in a chroot: entry paths and symlinks resolve inside the
//! destination directory, an existing entry is replaced unless both are
//! directories, whiteout files are plain files, and owners come from the
//! archive unless `--chown` is given.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag, makedev, mkdirat, mknodat};
use nix::sys::time::TimeSpec;
use nix::unistd::{linkat, symlinkat};
use tar::EntryType;

use super::copy::clamp_dirs;
use super::root::{
    Creator, Meta, Root, Xattrs, apply_meta_at, apply_meta_fd, clamp, is_dir, lstat_at, open_at,
    open_dir_at, open_path_at, remove_all, set_times_at, sys_error, write_xattrs,
};
use super::{CopyStats, FsOpsError};

/// How an archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

impl Compression {
    fn from_magic(magic: &[u8]) -> Compression {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if magic.starts_with(b"BZh") {
            Compression::Bzip2
        } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// A reader of the decompressed stream of `file` from its current offset.
fn decompressed<'f>(compression: Compression, file: &'f File) -> io::Result<Box<dyn Read + 'f>> {
    let buffered = BufReader::new(file);
    Ok(match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(buffered)),
        Compression::Xz => Box::new(xz2::bufread::XzDecoder::new_multi_decoder(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
    })
}

/// The compression of `file` if it is a tar archive; `None` for any other
/// file (which ADD then copies as it is). Leaves the offset at the start.
pub(super) fn detect(file: &mut File) -> io::Result<Option<Compression>> {
    let mut magic = [0u8; 6];
    let mut read = 0;
    while read < magic.len() {
        let n = file.read_at(&mut magic[read..], read as u64)?;
        if n == 0 {
            break;
        }
        read += n;
    }
    let compression = Compression::from_magic(&magic[..read]);
    file.seek(SeekFrom::Start(0))?;
    let is_tar = match decompressed(compression, file) {
        Ok(reader) => {
            let mut archive = tar::Archive::new(reader);
            archive
                .entries()
                .is_ok_and(|mut entries| matches!(entries.next(), Some(Ok(_))))
        }
        Err(_) => false,
    };
    file.seek(SeekFrom::Start(0))?;
    Ok(is_tar.then_some(compression))
}

/// Settings of one extraction.
#[derive(Debug)]
pub(super) struct Extract {
    /// `--chown`: replaces the archive's owners.
    pub owner: Option<(u32, u32)>,
    /// SOURCE_DATE_EPOCH: mtimes are clamped to it.
    pub epoch: Option<i64>,
    /// The archive's source path, for messages.
    pub archive: String,
}

/// Cleans an archive path into components inside the destination: `None`
/// when a relative path climbs above it (a rooted one stops at it, as
/// joining it onto the destination does).
fn clean_inside(path: &[u8]) -> Option<Vec<OsString>> {
    let rooted = path.starts_with(b"/");
    let mut parts: Vec<OsString> = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() && !rooted {
                    return None;
                }
            }
            part => parts.push(OsString::from_vec(part.to_vec())),
        }
    }
    Some(parts)
}

/// A numeric header field; blank (all NULs or spaces) reads as 0, as Go's
/// archive/tar (which Docker uses) reads it.
fn numeric(parsed: io::Result<u64>, raw: &[u8]) -> io::Result<u64> {
    match parsed {
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        other => other,
    }
}

/// Extracts the archive `file` into `into`.
pub(super) fn extract(
    file: &File,
    compression: Compression,
    into: Root,
    options: &Extract,
    stats: &mut CopyStats,
) -> Result<(), FsOpsError> {
    let archive_error = |source: io::Error| FsOpsError::Archive {
        archive: options.archive.clone(),
        source,
    };
    let entry_error = |entry: &str, message: &str| FsOpsError::ArchiveEntry {
        archive: options.archive.clone(),
        entry: entry.to_string(),
        message: message.to_string(),
    };
    let mut creator = Creator {
        owner: options.owner.unwrap_or((0, 0)),
        touched: vec![Vec::new()],
    };
    // Directory times are set last: extracting into them changes them.
    let mut dir_times: Vec<(Vec<OsString>, TimeSpec)> = Vec::new();
    let mut archive = tar::Archive::new(decompressed(compression, file).map_err(archive_error)?);
    for entry in archive.entries().map_err(archive_error)? {
        let mut entry = entry.map_err(archive_error)?;
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let parts = clean_inside(&raw_path)
            .ok_or_else(|| entry_error(&shown, "points outside the destination"))?;
        let Some((name, parent_parts)) = parts.split_last() else {
            // The archive's root directory: the destination itself.
            continue;
        };
        let xattrs = pax_xattrs(&mut entry).map_err(archive_error)?;
        let header = entry.header();
        let entry_type = header.entry_type();
        let fields = header.as_old();
        let (uid, gid) = match options.owner {
            Some(owner) => owner,
            None => (
                u32::try_from(numeric(header.uid(), &fields.uid).map_err(archive_error)?)
                    .map_err(|_| entry_error(&shown, "has an owner id out of range"))?,
                u32::try_from(numeric(header.gid(), &fields.gid).map_err(archive_error)?)
                    .map_err(|_| entry_error(&shown, "has a group id out of range"))?,
            ),
        };
        let mtime_secs = numeric(header.mtime(), &fields.mtime).map_err(archive_error)?;
        let mtime = clamp(
            TimeSpec::new(i64::try_from(mtime_secs).unwrap_or(i64::MAX), 0),
            options.epoch,
        );
        let mode = numeric(header.mode().map(u64::from), &fields.mode).map_err(archive_error)?;
        let meta = Meta {
            uid,
            gid,
            mode: (mode & 0o7777) as u32,
            atime: mtime,
            mtime,
        };
        let display = into.display(&parts);
        let parent = into.walk(parent_parts, true, Some(&mut creator))?;
        let dir = &parent.dir;
        let mut phys = parent.phys.clone();
        phys.push(name.clone());

        // tar -x: replace what is there, unless both are directories.
        let existing = lstat_at(dir, name).map_err(sys_error("inspecting", &display))?;
        let keep_dir = existing.is_some_and(|st| is_dir(&st)) && entry_type == EntryType::Directory;
        if existing.is_some() && !keep_dir {
            remove_all(dir, name, &display)?;
        }
        creator.touched.push(parent.phys.clone());

        match entry_type {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mut out = File::from(
                    open_at(
                        dir,
                        name,
                        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
                        0o600,
                    )
                    .map_err(sys_error("creating file", &display))?,
                );
                let copied = io::copy(&mut entry, &mut out).map_err(archive_error)?;
                apply_meta_fd(&out, &meta).map_err(sys_error("setting metadata of", &display))?;
                write_xattrs(&OwnedFd::from(out), &xattrs, &display)?;
                stats.files += 1;
                stats.bytes += copied;
            }
            EntryType::Directory => {
                if !keep_dir {
                    mkdirat(
                        Some(dir.as_raw_fd()),
                        name.as_os_str(),
                        Mode::from_bits_truncate(0o700),
                    )
                    .map_err(sys_error("creating directory", &display))?;
                }
                let created = open_dir_at(dir, name).map_err(sys_error("opening", &display))?;
                apply_meta_fd(&created, &meta)
                    .map_err(sys_error("setting metadata of", &display))?;
                write_xattrs(&created, &xattrs, &display)?;
                dir_times.push((phys, mtime));
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| entry_error(&shown, "is a symlink without a target"))?
                    .into_owned();
                if !target.starts_with(b"/") {
                    let mut joined = parent_parts.iter().fold(Vec::new(), |mut acc, p| {
                        acc.extend_from_slice(p.as_bytes());
                        acc.push(b'/');
                        acc
                    });
                    joined.extend_from_slice(&target);
                    if clean_inside(&joined).is_none() {
                        return Err(entry_error(
                            &shown,
                            "is a symlink pointing outside the destination",
                        ));
                    }
                }
                symlinkat(target.as_slice(), Some(dir.as_raw_fd()), name.as_os_str())
                    .map_err(sys_error("creating symlink", &display))?;
                apply_meta_at(dir, name, &meta, true)
                    .map_err(sys_error("setting metadata of", &display))?;
                set_xattrs_at(dir, name, &xattrs, &display)?;
                stats.files += 1;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| entry_error(&shown, "is a hard link without a target"))?
                    .into_owned();
                let target_parts = clean_inside(&target).ok_or_else(|| {
                    entry_error(&shown, "is a hard link pointing outside the destination")
                })?;
                let linked = into.walk(&target_parts, false, None).map_err(|_| {
                    entry_error(&shown, "is a hard link to an entry that does not exist")
                })?;
                let target_name = linked
                    .name
                    .as_ref()
                    .ok_or_else(|| entry_error(&shown, "is a hard link to a directory"))?;
                match lstat_at(&linked.dir, target_name)
                    .map_err(sys_error("inspecting", &display))?
                {
                    None => {
                        return Err(entry_error(
                            &shown,
                            "is a hard link to an entry that does not exist",
                        ));
                    }
                    Some(st) if is_dir(&st) => {
                        return Err(entry_error(&shown, "is a hard link to a directory"));
                    }
                    Some(_) => {}
                }
                linkat(
                    Some(linked.dir.as_raw_fd()),
                    target_name.as_os_str(),
                    Some(dir.as_raw_fd()),
                    name.as_os_str(),
                    AtFlags::empty(),
                )
                .map_err(sys_error("creating hard link", &display))?;
                stats.files += 1;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let node_kind = match entry_type {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = header.device_major().map_err(archive_error)?.unwrap_or(0);
                let minor = header.device_minor().map_err(archive_error)?.unwrap_or(0);
                mknodat(
                    Some(dir.as_raw_fd()),
                    name.as_os_str(),
                    node_kind,
                    Mode::from_bits_truncate(0o600),
                    makedev(u64::from(major), u64::from(minor)),
                )
                .map_err(sys_error("creating node", &display))?;
                apply_meta_at(dir, name, &meta, false)
                    .map_err(sys_error("setting metadata of", &display))?;
                set_xattrs_at(dir, name, &xattrs, &display)?;
                stats.files += 1;
            }
            other => {
                tracing::debug!(entry = %shown, kind = ?other, "skipping archive entry of unsupported type");
            }
        }
    }
    for (phys, time) in dir_times.iter().rev() {
        let display = into.display(phys);
        let found = match into.walk(phys, false, None) {
            Ok(found) => found,
            Err(FsOpsError::NotFound(_) | FsOpsError::NotADirectory(_)) => continue,
            Err(e) => return Err(e),
        };
        set_times_at(&found.dir, found.name.as_deref(), *time, *time)
            .map_err(sys_error("setting times of", &display))?;
    }
    if let Some(epoch) = options.epoch {
        clamp_dirs(&into, creator.touched, epoch)?;
    }
    Ok(())
}

/// The extended attributes of an entry's `SCHILY.xattr.<name>` PAX records, which ADD sets
/// as Docker's extraction does.
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Xattrs> {
    let Some(records) = entry.pax_extensions()? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for record in records {
        let record = record?;
        if let Some(name) = record.key_bytes().strip_prefix(b"SCHILY.xattr.") {
            out.push((name.to_vec(), record.value_bytes().to_vec()));
        }
    }
    Ok(out)
}

/// [`write_xattrs`] on the entry `name` in `dir` itself (a symlink is not followed).
fn set_xattrs_at(
    dir: &OwnedFd,
    name: &std::ffi::OsStr,
    xattrs: &Xattrs,
    display: &str,
) -> Result<(), FsOpsError> {
    if xattrs.is_empty() {
        return Ok(());
    }
    let entry = open_path_at(dir, name).map_err(sys_error("opening", display))?;
    write_xattrs(&entry, xattrs, display)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes_pick_the_decompressor() {
        assert_eq!(
            Compression::from_magic(&[0x1f, 0x8b, 8, 0]),
            Compression::Gzip
        );
        assert_eq!(Compression::from_magic(b"BZh91A"), Compression::Bzip2);
        assert_eq!(
            Compression::from_magic(&[0xfd, b'7', b'z', b'X', b'Z', 0]),
            Compression::Xz
        );
        assert_eq!(
            Compression::from_magic(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::from_magic(b"ustar"), Compression::None);
        assert_eq!(Compression::from_magic(b""), Compression::None);
    }

    #[test]
    fn archive_paths_stay_inside() {
        let parts = |p: &str| {
            clean_inside(p.as_bytes()).map(|v| {
                v.into_iter()
                    .map(|s| s.into_string().unwrap())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(parts("./a/b/../c").unwrap(), ["a", "c"]);
        assert_eq!(parts("/etc/passwd").unwrap(), ["etc", "passwd"]);
        assert_eq!(parts("/../x").unwrap(), ["x"]);
        assert!(parts("../x").is_none());
        assert!(parts("a/../../x").is_none());
        assert_eq!(parts("./").unwrap(), Vec::<String>::new());
    }
}
