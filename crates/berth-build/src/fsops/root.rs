//! Paths resolved inside a directory as if it were the filesystem root, and
//! the descriptor-relative system calls the copy is made of.
//!
//! Nothing here opens a path string from the host: a walk starts at the root
//! descriptor and opens one component at a time with `O_NOFOLLOW`, reading
//! symlinks itself and restarting absolute ones at the root, so `..` and
//! symlink targets can never lead out of it (what `openat2(RESOLVE_IN_ROOT)`
//! does in the kernel, done by hand so that missing directories can be
//! created along the way).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{
    FchmodatFlags, FileStat, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstat, fstatat,
    futimens, mkdirat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, unlinkat};

use super::FsOpsError;

/// Symlinks followed in one walk before giving up, as Linux does.
const MAX_SYMLINKS: usize = 40;

/// Owner, permission bits and times to give an entry.
#[derive(Debug, Clone, Copy)]
pub(super) struct Meta {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits with setuid/setgid/sticky (`0o7777`).
    pub mode: u32,
    pub atime: TimeSpec,
    pub mtime: TimeSpec,
}

/// `time` limited to `epoch` (SOURCE_DATE_EPOCH) when one is set.
pub(super) fn clamp(time: TimeSpec, epoch: Option<i64>) -> TimeSpec {
    match epoch {
        Some(epoch) if time.tv_sec() > epoch || (time.tv_sec() == epoch && time.tv_nsec() > 0) => {
            TimeSpec::new(epoch, 0)
        }
        _ => time,
    }
}

/// The type bits of a stat result.
pub(super) fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

pub(super) fn is_dir(st: &FileStat) -> bool {
    kind(st) == SFlag::S_IFDIR
}

/// Splits a `/`-separated path into components, dropping empty ones and `.`
/// (`..` is kept: it is resolved against the physical parent while walking).
pub(super) fn components(path: &[u8]) -> Vec<OsString> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| OsString::from_vec(c.to_vec()))
        .collect()
}

/// Joins components into a `/`-separated relative path (lossy, for messages and selections).
pub(super) fn join(parts: &[OsString]) -> String {
    parts
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Wraps an errno as an I/O error of `action` on `path`.
pub(super) fn sys_error(action: &'static str, path: &str) -> impl FnOnce(Errno) -> FsOpsError {
    let path = path.to_string();
    move |errno| FsOpsError::Io {
        action,
        path,
        source: io::Error::from(errno),
    }
}

/// Wraps an I/O error of `action` on `path`.
pub(super) fn io_error(action: &'static str, path: &str) -> impl FnOnce(io::Error) -> FsOpsError {
    let path = path.to_string();
    move |source| FsOpsError::Io {
        action,
        path,
        source,
    }
}

fn owned(raw: std::os::fd::RawFd) -> OwnedFd {
    // SAFETY: `raw` was just returned by a successful open call and nothing
    // else owns it, so the OwnedFd becomes its only owner.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// Opens `name` in `dir` with `flags | O_NOFOLLOW | O_CLOEXEC`. Readers of
/// files pass `O_NONBLOCK` too: a FIFO put where a file was expected must
/// not hang the copy (it has no effect on regular files).
pub(super) fn open_at(
    dir: &OwnedFd,
    name: &OsStr,
    flags: OFlag,
    mode: u32,
) -> nix::Result<OwnedFd> {
    let raw = openat(
        Some(dir.as_raw_fd()),
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )?;
    Ok(owned(raw))
}

/// Pins the entry `name` in `dir` itself (a symlink too) with an `O_PATH` descriptor.
pub(super) fn open_path_at(dir: &OwnedFd, name: &OsStr) -> nix::Result<OwnedFd> {
    open_at(dir, name, OFlag::O_PATH, 0)
}

/// overlayfs' own extended attributes (opaque directories, redirects): they describe a
/// layer's place in an overlay, not a file, and are never copied.
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";

/// The extended attributes of what `fd` refers to (any descriptor, `O_PATH` included: they
/// are read through `/proc/self/fd`, which names the file itself, even a symlink), sorted by
/// name, overlayfs' own left out.
pub(super) fn read_xattrs(fd: &OwnedFd, display: &str) -> Result<Xattrs, FsOpsError> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let names = match xattr::list_deref(&path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(io_error("listing extended attributes of", display)(e)),
    };
    let mut names: Vec<OsString> = names
        .filter(|n| !n.as_bytes().starts_with(OVERLAY_XATTR_PREFIX))
        .collect();
    names.sort_unstable();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        // `None`: removed since it was listed.
        if let Some(value) = xattr::get_deref(&path, &name)
            .map_err(io_error("reading extended attributes of", display))?
        {
            out.push((name.into_vec(), value));
        }
    }
    Ok(out)
}

/// Sets extended attributes on what `fd` refers to (as [`read_xattrs`] reads them). What the
/// destination refuses is left out, as Docker's ADD extraction (`BestEffortXattrs`) and
/// BuildKit's copy do: `EPERM` (`user.*` on a symlink or a device) and `ENOTSUP` (a namespace
/// its file system lacks). overlayfs' own attributes are never set. Call it after the chown,
/// which drops file capabilities.
pub(super) fn write_xattrs(fd: &OwnedFd, xattrs: &Xattrs, shown: &str) -> Result<(), FsOpsError> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    for (name, value) in xattrs {
        if name.is_empty() || name.starts_with(OVERLAY_XATTR_PREFIX) {
            continue;
        }
        match xattr::set_deref(&path, OsStr::from_bytes(name), value) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::ENOTSUP)) => {
                tracing::debug!(
                    path = %shown,
                    xattr = %String::from_utf8_lossy(name),
                    "extended attribute left out: {e}"
                );
            }
            Err(e) => return Err(io_error("setting extended attributes of", shown)(e)),
        }
    }
    Ok(())
}

/// Extended attributes as `(name, value)` pairs.
pub(super) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Opens the directory `name` in `dir` (never through a symlink).
pub(super) fn open_dir_at(dir: &OwnedFd, name: &OsStr) -> nix::Result<OwnedFd> {
    open_at(dir, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)
}

/// `lstat` of `name` in `dir`; `None` when it does not exist.
pub(super) fn lstat_at(dir: &OwnedFd, name: &OsStr) -> nix::Result<Option<FileStat>> {
    match fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `stat` of the entry `(dir, name)`, or of `dir` itself without a name.
pub(super) fn stat_entry(dir: &OwnedFd, name: Option<&OsStr>) -> nix::Result<Option<FileStat>> {
    match name {
        Some(name) => lstat_at(dir, name),
        None => fstat(dir.as_raw_fd()).map(Some),
    }
}

/// The names in a directory, sorted bytewise (so copies are deterministic).
pub(super) fn list_dir(dir: &OwnedFd) -> nix::Result<Vec<OsString>> {
    let mut listing = Dir::openat(
        Some(dir.as_raw_fd()),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// Reads the target of the symlink `name` in `dir`.
pub(super) fn read_link_at(dir: &OwnedFd, name: &OsStr) -> nix::Result<OsString> {
    readlinkat(Some(dir.as_raw_fd()), name)
}

/// Gives an open file or directory its owner, mode and times (owner first:
/// `chown` clears setuid bits).
pub(super) fn apply_meta_fd(fd: &impl AsRawFd, meta: &Meta) -> nix::Result<()> {
    fchown(
        fd.as_raw_fd(),
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
    )?;
    fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(meta.mode))?;
    futimens(fd.as_raw_fd(), &meta.atime, &meta.mtime)
}

/// Gives the entry `name` in `dir` its owner, mode (not for symlinks, whose
/// mode means nothing) and times, without following it.
pub(super) fn apply_meta_at(
    dir: &OwnedFd,
    name: &OsStr,
    meta: &Meta,
    symlink: bool,
) -> nix::Result<()> {
    fchownat(
        Some(dir.as_raw_fd()),
        name,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?;
    if !symlink {
        // Only used on entries this copy just created (device nodes, FIFOs),
        // which are not symlinks; Linux has no fchmodat without following.
        fchmodat(
            Some(dir.as_raw_fd()),
            name,
            Mode::from_bits_truncate(meta.mode),
            FchmodatFlags::FollowSymlink,
        )?;
    }
    set_times_at(dir, Some(name), meta.atime, meta.mtime)
}

/// Sets the times of `(dir, name)`, or of `dir` itself, without following symlinks.
pub(super) fn set_times_at(
    dir: &OwnedFd,
    name: Option<&OsStr>,
    atime: TimeSpec,
    mtime: TimeSpec,
) -> nix::Result<()> {
    match name {
        Some(name) => utimensat(
            Some(dir.as_raw_fd()),
            name,
            &atime,
            &mtime,
            UtimensatFlags::NoFollowSymlink,
        ),
        None => futimens(dir.as_raw_fd(), &atime, &mtime),
    }
}

/// Removes `name` from `dir` unless it is a directory; missing is fine.
pub(super) fn remove_non_dir(dir: &OwnedFd, name: &OsStr, display: &str) -> Result<(), FsOpsError> {
    match lstat_at(dir, name).map_err(sys_error("inspecting", display))? {
        None => Ok(()),
        Some(st) if is_dir(&st) => Err(FsOpsError::FileOntoDir(display.to_string())),
        Some(_) => unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir)
            .map_err(sys_error("removing", display)),
    }
}

/// Removes `name` from `dir` whatever it is, directories with everything in
/// them, never following a symlink.
pub(super) fn remove_all(dir: &OwnedFd, name: &OsStr, display: &str) -> Result<(), FsOpsError> {
    let Some(st) = lstat_at(dir, name).map_err(sys_error("inspecting", display))? else {
        return Ok(());
    };
    if is_dir(&st) {
        let inner = open_dir_at(dir, name).map_err(sys_error("opening", display))?;
        for child in list_dir(&inner).map_err(sys_error("listing", display))? {
            let child_display = format!("{display}/{}", child.to_string_lossy());
            remove_all(&inner, &child, &child_display)?;
        }
        unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::RemoveDir)
            .map_err(sys_error("removing", display))
    } else {
        unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir)
            .map_err(sys_error("removing", display))
    }
}

/// Where a walk ended.
#[derive(Debug)]
pub(super) struct Resolved {
    /// The directory holding the entry, or the entry itself when `name` is `None`.
    pub dir: OwnedFd,
    /// The last component (which may not exist), or `None` when the path
    /// resolved to a directory that was entered (the root, a symlink to `/`,
    /// or any directory when missing ones were being created).
    pub name: Option<OsString>,
    /// The physical path from the root: no symlinks, no `..`.
    pub phys: Vec<OsString>,
}

/// Settings for directories a walk creates, and the record of what it changed.
#[derive(Debug, Default)]
pub(super) struct Creator {
    /// Owner of created directories.
    pub owner: (u32, u32),
    /// Physical paths of the directories created, and of those an entry was
    /// created in, for SOURCE_DATE_EPOCH clamping at the end.
    pub touched: Vec<Vec<OsString>>,
}

impl Creator {
    /// Creates `name` in `dir` (mode 0755, owned by `self.owner`); nothing
    /// to do when it appeared meanwhile.
    fn mkdir(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        parent_phys: &[OsString],
        display: &str,
    ) -> Result<(), FsOpsError> {
        match mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(0o700)) {
            Ok(()) => {}
            Err(Errno::EEXIST) => return Ok(()),
            Err(e) => return Err(sys_error("creating directory", display)(e)),
        }
        let created = open_dir_at(dir, name).map_err(sys_error("opening", display))?;
        fchown(
            created.as_raw_fd(),
            Some(Uid::from_raw(self.owner.0)),
            Some(Gid::from_raw(self.owner.1)),
        )
        .map_err(sys_error("changing owner of", display))?;
        fchmod(created.as_raw_fd(), Mode::from_bits_truncate(0o755))
            .map_err(sys_error("changing mode of", display))?;
        self.touched.push(parent_phys.to_vec());
        let mut phys = parent_phys.to_vec();
        phys.push(name.to_os_string());
        self.touched.push(phys);
        Ok(())
    }
}

/// A directory used as the root of path resolution.
#[derive(Debug)]
pub(super) struct Root {
    fd: OwnedFd,
    /// How the root is shown in messages: `""` for an image root (paths
    /// print as `/usr/bin`), a prefix such as `/opt/app` for a sub-tree.
    prefix: String,
}

impl Root {
    /// Opens the directory at `path` (a host path the caller trusts).
    pub fn open(path: &Path, prefix: &str) -> Result<Root, FsOpsError> {
        let raw = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys_error("opening", &path.display().to_string()))?;
        Ok(Root {
            fd: owned(raw),
            prefix: prefix.to_string(),
        })
    }

    /// Uses an open directory as a root.
    pub fn from_fd(fd: OwnedFd, prefix: String) -> Root {
        Root { fd, prefix }
    }

    /// How `phys` (components from the root) is shown in messages.
    pub fn display(&self, phys: &[OsString]) -> String {
        if phys.is_empty() {
            return if self.prefix.is_empty() {
                "/".to_string()
            } else {
                self.prefix.clone()
            };
        }
        format!("{}/{}", self.prefix, join(phys))
    }

    /// Walks `path` from the root. Symlinks met on the way are followed
    /// inside the root (the last component too when `follow_last`); `..`
    /// goes to the physical parent and stops at the root. Without a
    /// `creator`, a missing last component is returned by name and a missing
    /// intermediate one is an error; with one, every missing directory
    /// (the last component included) is created and the walk ends inside
    /// the final directory.
    pub fn walk(
        &self,
        path: &[OsString],
        follow_last: bool,
        mut creator: Option<&mut Creator>,
    ) -> Result<Resolved, FsOpsError> {
        let mut pending: Vec<OsString> = path.iter().rev().cloned().collect();
        let mut stack: Vec<(OwnedFd, OsString)> = Vec::new();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                stack.pop();
                continue;
            }
            let is_last = pending.is_empty();
            let cur = stack.last().map(|(fd, _)| fd).unwrap_or(&self.fd);
            let phys_here = || {
                let mut p: Vec<OsString> = stack.iter().map(|(_, n)| n.clone()).collect();
                p.push(part.clone());
                p
            };
            let st = lstat_at(cur, &part)
                .map_err(|e| sys_error("inspecting", &self.display(&phys_here()))(e))?;
            match st {
                None => {
                    if let Some(creator) = creator.as_deref_mut() {
                        let parent: Vec<OsString> = stack.iter().map(|(_, n)| n.clone()).collect();
                        let display = self.display(&phys_here());
                        creator.mkdir(cur, &part, &parent, &display)?;
                        // Created or raced into existence: look again.
                        pending.push(part);
                        continue;
                    }
                    if is_last {
                        return self.finish(stack, Some(part));
                    }
                    return Err(FsOpsError::NotFound(self.display(&phys_here())));
                }
                Some(st) if kind(&st) == SFlag::S_IFLNK => {
                    if is_last && !follow_last && creator.is_none() {
                        return self.finish(stack, Some(part));
                    }
                    hops += 1;
                    if hops > MAX_SYMLINKS {
                        return Err(FsOpsError::SymlinkLoop(self.display(&phys_here())));
                    }
                    let target = read_link_at(cur, &part)
                        .map_err(|e| sys_error("reading link", &self.display(&phys_here()))(e))?;
                    if target.as_bytes().starts_with(b"/") {
                        stack.clear();
                    }
                    pending.extend(components(target.as_bytes()).into_iter().rev());
                }
                Some(st) if is_dir(&st) => {
                    if is_last && creator.is_none() {
                        return self.finish(stack, Some(part));
                    }
                    let fd = open_dir_at(cur, &part)
                        .map_err(|e| sys_error("opening", &self.display(&phys_here()))(e))?;
                    stack.push((fd, part));
                }
                Some(_) => {
                    if is_last && creator.is_none() {
                        return self.finish(stack, Some(part));
                    }
                    return Err(FsOpsError::NotADirectory(self.display(&phys_here())));
                }
            }
        }
        self.finish(stack, None)
    }

    /// Creates every missing directory of `path` and returns the last one.
    pub fn mkdir_all(
        &self,
        path: &[OsString],
        creator: &mut Creator,
    ) -> Result<Resolved, FsOpsError> {
        self.walk(path, true, Some(creator))
    }

    fn finish(
        &self,
        mut stack: Vec<(OwnedFd, OsString)>,
        name: Option<OsString>,
    ) -> Result<Resolved, FsOpsError> {
        let top = stack.pop();
        let mut phys: Vec<OsString> = stack.into_iter().map(|(_, n)| n).collect();
        let dir = match top {
            Some((fd, last)) => {
                phys.push(last);
                fd
            }
            None => self.fd.try_clone().map_err(io_error(
                "duplicating the descriptor of",
                &self.display(&[]),
            ))?,
        };
        phys.extend(name.clone());
        Ok(Resolved { dir, name, phys })
    }
}
