//! File operations inside a container's root filesystem for `docker cp`, given the root as a
//! directory descriptor. Every path is opened with `openat2(RESOLVE_IN_ROOT)`, so symlinks
//! and `..` resolve inside the container as they would for its processes (moby gets the same
//! effect with a chroot); the last element of a path is then handled with the `*at` calls and
//! `O_NOFOLLOW`, and directories are walked by descriptor, so nothing a container process
//! does to its files can redirect the daemon outside the root. Extended attributes travel
//! both ways as `SCHILY.xattr.` PAX records (file capabilities, `user.*`, `trusted.*`: see
//! `berth_api::archive::xattr_is_archived`); they are read and set through
//! `/proc/self/fd/<n>` of an `O_PATH` descriptor, which names the file itself, never what a
//! symlink points at.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use berth_api::archive::{self as wire, ContainerPathStat, TarHeader, Xattrs, kind};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::{Gid, Uid};

/// How many symlinks a lexical resolution follows before giving up (as the kernel's 40).
const MAX_SYMLINKS: usize = 40;

/// Takes ownership of a descriptor a successful syscall just returned.
fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: only called with descriptors freshly returned by open-like syscalls, which
    // nothing else owns or closes.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn nix_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// The root directory of a container filesystem.
#[derive(Debug)]
pub(crate) struct Root {
    fd: OwnedFd,
}

/// A path found inside the root: its parent directory, its last element (empty or `.` when
/// the path named the directory itself), and what `lstat` says of it.
#[derive(Debug)]
pub(crate) struct Located {
    parent: OwnedFd,
    entry: OsString,
    stat: FileStat,
    /// The path made absolute, trailing `/` or `/.` kept.
    abs: String,
}

impl Located {
    /// Whether the path is a directory (after following a trailing `/`).
    pub(crate) fn is_dir(&self) -> bool {
        SFlag::from_bits_truncate(self.stat.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR
    }
}

impl Root {
    /// Opens the root directory at `path` (a mounted rootfs, or `/proc/<pid>/root`).
    pub(crate) fn open(path: &std::path::Path) -> io::Result<Root> {
        let dir = std::fs::File::open(path)?;
        Ok(Root { fd: dir.into() })
    }

    fn open_in(&self, path: &OsStr, flags: OFlag) -> io::Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT);
        let path = if path.is_empty() {
            OsStr::new("/")
        } else {
            path
        };
        nix::fcntl::openat2(self.fd.as_raw_fd(), path, how)
            .map(own)
            .map_err(nix_io)
    }

    /// Opens a directory inside the root (every symlink followed inside it).
    fn open_dir(&self, path: &str) -> io::Result<OwnedFd> {
        self.open_in(OsStr::new(path), OFlag::O_RDONLY | OFlag::O_DIRECTORY)
    }

    /// Opens a regular file inside the root for reading.
    pub(crate) fn read_file(&self, path: &str) -> io::Result<Vec<u8>> {
        let fd = self.open_in(OsStr::new(path), OFlag::O_RDONLY)?;
        let mut data = Vec::new();
        std::fs::File::from(fd).read_to_end(&mut data)?;
        Ok(data)
    }

    /// moby's `ResolvePath` + `lstat`: the directory part of `path` resolved inside the root,
    /// its last element not followed unless the path ends in `/` or `/.`.
    pub(crate) fn locate(&self, path: &str) -> io::Result<Located> {
        let abs = wire::container_abs_path(path);
        let (dir, entry) = wire::split(&abs);
        let parent = self.open_dir(dir)?;
        let stat = if entry.is_empty() {
            nix::sys::stat::fstat(parent.as_raw_fd())
        } else {
            nix::sys::stat::fstatat(
                Some(parent.as_raw_fd()),
                entry,
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
        }
        .map_err(nix_io)?;
        Ok(Located {
            entry: OsString::from(entry),
            parent,
            stat,
            abs,
        })
    }

    /// The path stat docker's clients read from `X-Docker-Container-Path-Stat`.
    pub(crate) fn path_stat(&self, located: &Located) -> ContainerPathStat {
        let st = &located.stat;
        let mode = wire::file_mode_from_unix(st.st_mode);
        let link_target = if mode & wire::MODE_SYMLINK != 0 {
            self.follow(&located.abs)
        } else {
            String::new()
        };
        ContainerPathStat {
            name: wire::base(&located.abs),
            size: st.st_size,
            mode,
            mtime: mtime_rfc3339(st),
            link_target,
        }
    }

    /// moby's `FollowSymlinkInScope`, lexically: the absolute path `path` leads to inside the
    /// root, every symlink followed (the last element may not exist).
    pub(crate) fn follow(&self, path: &str) -> String {
        let mut resolved: Vec<OsString> = Vec::new();
        let mut pending: Vec<OsString> = components(path.as_bytes());
        pending.reverse();
        let mut links = 0;
        while let Some(part) = pending.pop() {
            match part.as_bytes() {
                b"" | b"." => continue,
                b".." => {
                    resolved.pop();
                    continue;
                }
                _ => {}
            }
            let parent = join_components(&resolved);
            let target = self
                .open_in(&parent, OFlag::O_PATH | OFlag::O_DIRECTORY)
                .ok()
                .and_then(|fd| nix::fcntl::readlinkat(Some(fd.as_raw_fd()), part.as_os_str()).ok());
            match target {
                Some(target) if links < MAX_SYMLINKS => {
                    links += 1;
                    if target.as_bytes().starts_with(b"/") {
                        resolved.clear();
                    }
                    let mut more = components(target.as_bytes());
                    more.reverse();
                    pending.extend(more);
                }
                _ => resolved.push(part),
            }
        }
        String::from_utf8_lossy(join_components(&resolved).as_bytes()).into_owned()
    }

    /// Whether the directory `path` is on a read-only mount.
    pub(crate) fn dir_is_read_only(&self, path: &str) -> bool {
        self.open_dir(path)
            .and_then(|fd| nix::sys::statvfs::fstatvfs(&fd).map_err(nix_io))
            .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
            .unwrap_or(false)
    }

    /// The mount point `path` for a bind mount, created when missing (a directory, or an
    /// empty file for a file source, as the runtime does), pinned by an `O_PATH` descriptor.
    pub(crate) fn mount_point(&self, path: &str, is_dir: bool) -> io::Result<OwnedFd> {
        let path = wire::clean(&format!("/{path}"));
        if is_dir {
            make_dirs(self, &path)?;
        } else {
            let parent_path = wire::dir(&path);
            make_dirs(self, &parent_path)?;
            let parent = self.open_dir(&parent_path)?;
            match nix::fcntl::openat(
                Some(parent.as_raw_fd()),
                OsStr::new(&wire::base(&path)),
                OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            ) {
                Ok(fd) => drop(own(fd)),
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(nix_io(e)),
            }
        }
        self.open_in(OsStr::new(&path), OFlag::O_PATH)
    }
}

fn components(path: &[u8]) -> Vec<OsString> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .map(|c| OsString::from_vec(c.to_vec()))
        .collect()
}

fn join_components(parts: &[OsString]) -> OsString {
    let mut out = Vec::from(&b"/"[..]);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(p.as_bytes());
    }
    OsString::from_vec(out)
}

fn mtime_rfc3339(st: &FileStat) -> String {
    chrono::DateTime::from_timestamp(st.st_mtime, st.st_mtime_nsec as u32)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Writes `located` as a tar stream, named as moby's `GET archive` names it: a directory's
/// entries as `<base>/...` (`./...` for `dir/.`), anything else as its own base name.
pub(crate) fn write_archive(located: &Located, out: &mut dyn Write) -> io::Result<()> {
    let mut tar = TarOut {
        out,
        hard_links: HashMap::new(),
    };
    let rebase = wire::base(&located.abs);
    if located.is_dir() {
        let dir = if located.entry.is_empty() || located.entry == "." {
            nix::unistd::dup(located.parent.as_raw_fd())
                .map(own)
                .map_err(nix_io)?
        } else {
            open_child_dir(located.parent.as_raw_fd(), &located.entry)?
        };
        tar.walk(dir, &located.stat, b".", &rebase)?;
    } else {
        // moby renames the entry to the requested base name, which for anything but a
        // directory is the entry's own name.
        tar.entry(
            located.parent.as_raw_fd(),
            &located.entry,
            &located.stat,
            rebase.as_bytes(),
        )?;
    }
    tar.out.write_all(&[0u8; 2 * wire::TAR_BLOCK])?;
    tar.out.flush()
}

fn open_child_dir(parent: RawFd, name: &OsStr) -> io::Result<OwnedFd> {
    nix::fcntl::openat(
        Some(parent),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(own)
    .map_err(nix_io)
}

struct TarOut<'a> {
    out: &'a mut dyn Write,
    /// First archive name of every multiply-linked inode, for hard link entries.
    hard_links: HashMap<(u64, u64), Vec<u8>>,
}

impl TarOut<'_> {
    /// A directory and everything below it, children in name order (Go's `WalkDir`). `rel` is
    /// the moby relative name (`.`, `./a`, `./a/b`) before the rebase.
    fn walk(&mut self, dir: OwnedFd, st: &FileStat, rel: &[u8], rebase: &str) -> io::Result<()> {
        let archived = wire::rebase_entry(&String::from_utf8_lossy(rel), ".", rebase);
        let mut name = archived.into_bytes();
        if !name.ends_with(b"/") {
            name.push(b'/');
        }
        self.header(&TarHeader {
            name,
            kind: kind::DIR,
            xattrs: archived_xattrs(dir.as_raw_fd())?,
            ..header_from_stat(st)
        })?;
        let mut handle = nix::dir::Dir::from_fd(nix::unistd::dup(dir.as_raw_fd()).map_err(nix_io)?)
            .map_err(nix_io)?;
        let mut names: Vec<OsString> = handle
            .iter()
            .filter_map(Result::ok)
            .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
            .filter(|n| n != "." && n != "..")
            .collect();
        names.sort();
        for child in names {
            let child_st = match nix::sys::stat::fstatat(
                Some(dir.as_raw_fd()),
                child.as_os_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(s) => s,
                // Removed while we walk: leave it out.
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(nix_io(e)),
            };
            let mut child_rel = rel.to_vec();
            child_rel.push(b'/');
            child_rel.extend_from_slice(child.as_bytes());
            if file_type(&child_st) == SFlag::S_IFDIR {
                let fd = match open_child_dir(dir.as_raw_fd(), &child) {
                    Ok(fd) => fd,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                    Err(e) => return Err(e),
                };
                self.walk(fd, &child_st, &child_rel, rebase)?;
            } else {
                let archived =
                    wire::rebase_entry(&String::from_utf8_lossy(&child_rel), ".", rebase);
                self.entry(dir.as_raw_fd(), &child, &child_st, archived.as_bytes())?;
            }
        }
        Ok(())
    }

    /// One non-directory entry: a file's data, a link's target, a device's numbers; a second
    /// name of a multiply-linked file becomes a hard link entry. Sockets are left out (tar
    /// cannot hold them).
    fn entry(
        &mut self,
        dir: RawFd,
        name: &OsStr,
        st: &FileStat,
        archived: &[u8],
    ) -> io::Result<()> {
        let base = header_from_stat(st);
        let ft = file_type(st);
        if ft != SFlag::S_IFDIR && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.hard_links.get(&key) {
                return self.header(&TarHeader {
                    name: archived.to_vec(),
                    link: first.clone(),
                    kind: kind::LINK,
                    ..base
                });
            }
            self.hard_links.insert(key, archived.to_vec());
        }
        match ft {
            SFlag::S_IFREG => {
                let fd = match nix::fcntl::openat(
                    Some(dir),
                    name,
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
                    Mode::empty(),
                ) {
                    Ok(fd) => own(fd),
                    Err(Errno::ENOENT) => return Ok(()),
                    Err(e) => return Err(nix_io(e)),
                };
                let size = st.st_size.max(0) as u64;
                self.header(&TarHeader {
                    name: archived.to_vec(),
                    kind: kind::REGULAR,
                    size,
                    xattrs: archived_xattrs(fd.as_raw_fd())?,
                    ..base
                })?;
                // Exactly the size announced: a file that grows is cut, one that shrinks is
                // padded, so the stream stays a valid tar.
                let copied = io::copy(&mut std::fs::File::from(fd).take(size), self.out)?;
                write_zeros(self.out, (size - copied) as usize + wire::tar_padding(size))
            }
            SFlag::S_IFLNK => {
                let target = nix::fcntl::readlinkat(Some(dir), name).map_err(nix_io)?;
                self.header(&TarHeader {
                    name: archived.to_vec(),
                    link: target.into_vec(),
                    kind: kind::SYMLINK,
                    xattrs: archived_xattrs_at(dir, name)?,
                    ..base
                })
            }
            SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO => {
                let kind = match ft {
                    SFlag::S_IFCHR => kind::CHAR,
                    SFlag::S_IFBLK => kind::BLOCK,
                    _ => kind::FIFO,
                };
                self.header(&TarHeader {
                    name: archived.to_vec(),
                    kind,
                    dev_major: libc::major(st.st_rdev),
                    dev_minor: libc::minor(st.st_rdev),
                    xattrs: archived_xattrs_at(dir, name)?,
                    ..base
                })
            }
            _ => Ok(()),
        }
    }

    fn header(&mut self, header: &TarHeader) -> io::Result<()> {
        self.out.write_all(&header.encode())
    }
}

fn write_zeros(out: &mut dyn Write, mut n: usize) -> io::Result<()> {
    let zeros = [0u8; wire::TAR_BLOCK];
    while n > 0 {
        let chunk = n.min(zeros.len());
        out.write_all(&zeros[..chunk])?;
        n -= chunk;
    }
    Ok(())
}

/// The extended attributes `docker cp` carries of the file `fd` refers to (a descriptor of
/// any kind, `O_PATH` included), sorted by name so the same files give the same archive.
fn archived_xattrs(fd: RawFd) -> io::Result<Xattrs> {
    let path = format!("/proc/self/fd/{fd}");
    let names = match xattr::list_deref(&path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names: Vec<OsString> = names
        .filter(|n| wire::xattr_is_archived(n.as_bytes()))
        .collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        // `None`: removed since it was listed.
        if let Some(value) = xattr::get_deref(&path, &name)? {
            let name = name.into_vec();
            let value = wire::archived_xattr_value(&name, value);
            out.push((name, value));
        }
    }
    Ok(out)
}

/// [`archived_xattrs`] of the entry `name` in `dir`, not following it; none if it is gone.
fn archived_xattrs_at(dir: RawFd, name: &OsStr) -> io::Result<Xattrs> {
    match nix::fcntl::openat(
        Some(dir),
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => archived_xattrs(own(fd).as_raw_fd()),
        Err(Errno::ENOENT) => Ok(Vec::new()),
        Err(e) => Err(nix_io(e)),
    }
}

/// Sets an extracted entry's extended attributes on `name` in `dir`, without following it.
/// What the kernel or the file system refuses — `EPERM` (`user.*` on a symlink or a device),
/// `ENOTSUP` (a namespace the file system lacks) — is left out with a warning, as moby does
/// with `EPERM` (and, for best-effort extraction, `ENOTSUP`): berth's own archives carry
/// `user.*` attributes moby's do not, which must not make a copy fail where docker's works.
fn set_xattrs_at(dir: RawFd, name: &OsStr, xattrs: &Xattrs, shown: &str) -> io::Result<()> {
    if xattrs.is_empty() {
        return Ok(());
    }
    let fd = nix::fcntl::openat(
        Some(dir),
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(own)
    .map_err(nix_io)?;
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    for (key, value) in xattrs {
        let key_shown = String::from_utf8_lossy(key);
        match xattr::set_deref(&path, OsStr::from_bytes(key), value) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::ENOTSUP)) => {
                tracing::warn!(
                    path = shown,
                    xattr = %key_shown,
                    "ignored extended attribute in archive: {e}"
                );
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("set extended attribute {key_shown} on {shown}: {e}"),
                ));
            }
        }
    }
    Ok(())
}

fn header_from_stat(st: &FileStat) -> TarHeader {
    TarHeader {
        mode: st.st_mode & 0o7777,
        uid: u64::from(st.st_uid),
        gid: u64::from(st.st_gid),
        mtime: st.st_mtime,
        ..Default::default()
    }
}

/// How `PUT archive` extracts.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ExtractOptions {
    /// Refuse to replace a directory with a non-directory or the other way round.
    pub no_overwrite_dir_non_dir: bool,
    /// Own every extracted file by this user and group instead of the archive's IDs.
    pub chown: Option<(u32, u32)>,
}

/// Extracts a tar stream into the directory `dest` (absolute in the container, already
/// resolved), as moby's `Untar` does: existing entries are replaced (directories merged),
/// missing parents created, names and link targets kept inside `dest`, directory times set
/// last.
pub(crate) fn extract(
    root: &Root,
    dest: &str,
    input: &mut dyn Read,
    options: ExtractOptions,
) -> io::Result<()> {
    let mut archive = tar::Archive::new(input);
    let mut dir_times: Vec<(String, i64)> = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let header = entry.header().clone();
        let xattrs = match entry.pax_extensions()? {
            Some(records) => {
                let records = records.collect::<io::Result<Vec<_>>>()?;
                wire::xattrs_to_extract(records.iter().map(|r| (r.key_bytes(), r.value_bytes())))
            }
            None => Vec::new(),
        };
        let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = wire::clean(&raw_name);
        let path = wire::join(dest, &name);
        if !within(dest, &path) {
            return Err(breakout(format!("{raw_name:?} is outside of {dest:?}")));
        }
        let entry_type = header.entry_type();
        if entry_type.is_pax_global_extensions() {
            continue;
        }
        let is_dir = entry_type.is_dir();
        if path == dest {
            // `.`: the destination itself, an existing directory, is left as it is.
            if is_dir {
                continue;
            }
            return Err(io::Error::other(format!(
                "cannot overwrite directory {dest:?} with non-directory {dest:?}"
            )));
        }
        let (parent_path, base) = (wire::dir(&path), wire::base(&path));
        make_dirs(root, &parent_path)?;
        let parent = root.open_dir(&parent_path)?;
        let pfd = parent.as_raw_fd();
        let base_os = OsStr::new(&base);
        let existing =
            nix::sys::stat::fstatat(Some(pfd), base_os, AtFlags::AT_SYMLINK_NOFOLLOW).ok();
        if let Some(st) = existing {
            let exists_dir = file_type(&st) == SFlag::S_IFDIR;
            if options.no_overwrite_dir_non_dir && exists_dir && !is_dir {
                return Err(io::Error::other(format!(
                    "cannot overwrite directory {path:?} with non-directory {dest:?}"
                )));
            }
            if options.no_overwrite_dir_non_dir && !exists_dir && is_dir {
                return Err(io::Error::other(format!(
                    "cannot overwrite non-directory {path:?} with directory {dest:?}"
                )));
            }
            if !(exists_dir && is_dir) {
                remove_all_at(pfd, base_os)?;
            }
        }
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let (uid, gid) = options.chown.unwrap_or((
            header.uid().unwrap_or(0) as u32,
            header.gid().unwrap_or(0) as u32,
        ));
        let mtime = header.mtime().unwrap_or(0) as i64;
        let times = [
            nix::sys::time::TimeSpec::new(mtime, 0),
            nix::sys::time::TimeSpec::new(mtime, 0),
        ];
        match entry_type {
            t if t.is_dir() => {
                match nix::sys::stat::mkdirat(Some(pfd), base_os, Mode::from_bits_truncate(mode)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(nix_io(e)),
                }
                dir_times.push((path.clone(), mtime));
            }
            t if t.is_file() || t == tar::EntryType::Continuous => {
                let fd = nix::fcntl::openat(
                    Some(pfd),
                    base_os,
                    OFlag::O_CREAT
                        | OFlag::O_WRONLY
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(mode & 0o777),
                )
                .map(own)
                .map_err(nix_io)?;
                let mut file = std::fs::File::from(fd);
                io::copy(&mut entry, &mut file)?;
            }
            t if t.is_symlink() => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| OsString::from_vec(b.into_owned()))
                    .unwrap_or_default();
                let lexical = wire::join(&wire::dir(&path), &target.to_string_lossy());
                if !within(dest, &lexical) {
                    return Err(breakout(format!(
                        "invalid symlink {path:?} -> {:?}",
                        target.to_string_lossy()
                    )));
                }
                nix::unistd::symlinkat(target.as_os_str(), Some(pfd), base_os).map_err(nix_io)?;
            }
            t if t.is_hard_link() => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let target_path = wire::join(dest, &target);
                if !within(dest, &target_path) {
                    return Err(breakout(format!(
                        "invalid hardlink {target_path:?} -> {target:?}"
                    )));
                }
                let target_parent = root.open_dir(&wire::dir(&target_path))?;
                nix::unistd::linkat(
                    Some(target_parent.as_raw_fd()),
                    OsStr::new(&wire::base(&target_path)),
                    Some(pfd),
                    base_os,
                    AtFlags::empty(),
                )
                .map_err(nix_io)?;
            }
            t if t.is_character_special() || t.is_block_special() || t.is_fifo() => {
                let kind = if t.is_character_special() {
                    SFlag::S_IFCHR
                } else if t.is_block_special() {
                    SFlag::S_IFBLK
                } else {
                    SFlag::S_IFIFO
                };
                let dev = libc::makedev(
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0),
                );
                nix::sys::stat::mknodat(
                    Some(pfd),
                    base_os,
                    kind,
                    Mode::from_bits_truncate(mode & 0o777),
                    dev,
                )
                .map_err(nix_io)?;
            }
            other => {
                return Err(io::Error::other(format!(
                    "unhandled tar header type {:?} for {raw_name:?}",
                    other.as_byte() as char
                )));
            }
        }
        // Owner first: chown clears setuid and setgid, which the chmod puts back.
        nix::unistd::fchownat(
            Some(pfd),
            base_os,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(nix_io)?;
        // After the chown, which drops file capabilities, and before the chmod, as moby.
        set_xattrs_at(pfd, base_os, &xattrs, &path)?;
        chmod_no_follow(pfd, base_os, mode)?;
        if !is_dir && !entry_type.is_hard_link() {
            nix::sys::stat::utimensat(
                Some(pfd),
                base_os,
                &times[0],
                &times[1],
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .map_err(nix_io)?;
        }
    }
    // Directory times last: creating their entries changed them.
    for (path, mtime) in dir_times {
        let parent = root.open_dir(&wire::dir(&path))?;
        let t = nix::sys::time::TimeSpec::new(mtime, 0);
        nix::sys::stat::utimensat(
            Some(parent.as_raw_fd()),
            OsStr::new(&wire::base(&path)),
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(nix_io)?;
    }
    Ok(())
}

/// Sets the mode of `name` in `dir` unless it is a symlink (which has none), without ever
/// following one: `fchmodat` cannot refuse to follow, so the file is pinned by an `O_PATH`
/// descriptor and changed through its `/proc/self/fd` entry.
fn chmod_no_follow(dir: RawFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let fd = nix::fcntl::openat(
        Some(dir),
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(own)
    .map_err(nix_io)?;
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(nix_io)?;
    if file_type(&st) == SFlag::S_IFLNK {
        return Ok(());
    }
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    nix::sys::stat::fchmodat(
        None,
        proc_path.as_str(),
        Mode::from_bits_truncate(mode),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(nix_io)
}

/// Whether the lexical `path` is `dir` or below it.
fn within(dir: &str, path: &str) -> bool {
    dir == "/" || path == dir || path.starts_with(&format!("{}/", dir.trim_end_matches('/')))
}

fn breakout(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Creates the missing directories of `path` (owned by root, 0755), as moby does for the
/// implied parents of an archive entry.
fn make_dirs(root: &Root, path: &str) -> io::Result<()> {
    let mut prefix = String::from("/");
    for component in path.split('/').filter(|c| !c.is_empty()) {
        let parent = root.open_dir(&prefix)?;
        match nix::sys::stat::mkdirat(
            Some(parent.as_raw_fd()),
            component,
            Mode::from_bits_truncate(0o755),
        ) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(nix_io(e)),
        }
        prefix = wire::join(&prefix, component);
    }
    Ok(())
}

/// Removes `name` in `dir` and, for a directory, everything below it, without following
/// symlinks.
fn remove_all_at(dir: RawFd, name: &OsStr) -> io::Result<()> {
    match nix::unistd::unlinkat(Some(dir), name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EISDIR) => {}
        Err(e) => return Err(nix_io(e)),
    }
    let child = open_child_dir(dir, name)?;
    let mut handle = nix::dir::Dir::from_fd(nix::unistd::dup(child.as_raw_fd()).map_err(nix_io)?)
        .map_err(nix_io)?;
    let names: Vec<OsString> = handle
        .iter()
        .filter_map(Result::ok)
        .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
        .filter(|n| n != "." && n != "..")
        .collect();
    for n in names {
        remove_all_at(child.as_raw_fd(), &n)?;
    }
    match nix::unistd::unlinkat(Some(dir), name, nix::unistd::UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(nix_io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    fn tree() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("etc/sub")).unwrap();
        std::fs::write(p.join("etc/hostname"), "box\n").unwrap();
        std::fs::write(p.join("etc/sub/deep"), "deep").unwrap();
        std::fs::hard_link(p.join("etc/hostname"), p.join("etc/hostname2")).unwrap();
        symlink("/etc", p.join("etclink")).unwrap();
        symlink("../../../../..", p.join("escape")).unwrap();
        let root = Root::open(p).unwrap();
        (dir, root)
    }

    fn names(tar_bytes: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
            .collect()
    }

    #[test]
    fn stat_follows_parents_but_not_the_last_element() {
        let (_dir, root) = tree();
        let link = root.locate("/etclink").unwrap();
        let stat = root.path_stat(&link);
        assert!(stat.is_symlink(), "{stat:?}");
        assert_eq!(stat.link_target, "/etc");
        assert_eq!(stat.name, "etclink");
        // A trailing slash follows it.
        let followed = root.locate("/etclink/").unwrap();
        assert!(followed.is_dir());
        assert_eq!(root.path_stat(&followed).name, "etclink");
        // Parents resolve inside the root: the escape link leads to / of the container.
        let inside = root.locate("/escape/etc/hostname").unwrap();
        assert_eq!(root.path_stat(&inside).size, 4);
        assert_eq!(root.follow("/escape"), "/");
        assert!(root.locate("/nope/x").is_err());
        assert_eq!(root.path_stat(&root.locate("/").unwrap()).name, "/");
    }

    #[test]
    fn archives_are_named_like_mobys() {
        let (_dir, root) = tree();
        let mut out = Vec::new();
        write_archive(&root.locate("/etc").unwrap(), &mut out).unwrap();
        assert_eq!(
            names(&out),
            [
                "etc/",
                "etc/hostname",
                "etc/hostname2",
                "etc/sub/",
                "etc/sub/deep"
            ]
        );
        let mut archive = tar::Archive::new(&out[..]);
        let kinds: Vec<tar::EntryType> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().header().entry_type())
            .collect();
        assert_eq!(kinds[2], tar::EntryType::Link);
        let mut out = Vec::new();
        write_archive(&root.locate("/etc/.").unwrap(), &mut out).unwrap();
        assert_eq!(
            names(&out),
            ["./", "./hostname", "./hostname2", "./sub/", "./sub/deep"]
        );
        let mut out = Vec::new();
        write_archive(&root.locate("/etc/hostname").unwrap(), &mut out).unwrap();
        assert_eq!(names(&out), ["hostname"]);
        let mut archive = tar::Archive::new(&out[..]);
        let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
        let mut text = String::new();
        entry.read_to_string(&mut text).unwrap();
        assert_eq!(text, "box\n");
    }

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(if kind.is_dir() { 0o750 } else { 0o640 });
            h.set_uid(1234);
            h.set_gid(4321);
            h.set_mtime(1_600_000_000);
            h.set_size(data.len() as u64);
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            h.set_path(name).unwrap();
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn extraction_replaces_keeps_owners_and_stays_inside() {
        let (dir, root) = tree();
        let p = dir.path();
        let data = tar_of(&[
            ("new/", tar::EntryType::Directory, b"", ""),
            ("new/file", tar::EntryType::Regular, b"hello", ""),
            ("new/hard", tar::EntryType::Link, b"", "new/file"),
            ("implied/parent/f", tar::EntryType::Regular, b"x", ""),
            ("hostname", tar::EntryType::Regular, b"replaced", ""),
        ]);
        extract(&root, "/etc", &mut &data[..], ExtractOptions::default()).unwrap();
        assert_eq!(
            std::fs::read_to_string(p.join("etc/new/file")).unwrap(),
            "hello"
        );
        let meta = std::fs::metadata(p.join("etc/new/file")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1234, 4321));
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert_eq!(meta.nlink(), 2);
        assert_eq!(meta.mtime(), 1_600_000_000);
        let dmeta = std::fs::metadata(p.join("etc/new")).unwrap();
        assert_eq!(
            (dmeta.permissions().mode() & 0o777, dmeta.mtime()),
            (0o750, 1_600_000_000)
        );
        assert!(p.join("etc/implied/parent/f").exists());
        assert_eq!(
            std::fs::read_to_string(p.join("etc/hostname")).unwrap(),
            "replaced"
        );
        // The hard-linked old name keeps the old content: the entry was replaced, not written.
        assert_eq!(
            std::fs::read_to_string(p.join("etc/hostname2")).unwrap(),
            "box\n"
        );

        // Through a symlink pointing out of the root, files still land inside it.
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), p.join("out")).unwrap();
        let data = tar_of(&[("f", tar::EntryType::Regular, b"x", "")]);
        let dest = root.follow("/out");
        extract(&root, &dest, &mut &data[..], ExtractOptions::default()).unwrap();
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);

        // Names and links leaving the destination are refused.
        let bad = tar_of(&[("evil", tar::EntryType::Symlink, b"", "../../x")]);
        assert!(extract(&root, "/etc", &mut &bad[..], ExtractOptions::default()).is_err());
        let chowned = tar_of(&[("owned", tar::EntryType::Regular, b"x", "")]);
        let opts = ExtractOptions {
            chown: Some((7, 8)),
            ..Default::default()
        };
        extract(&root, "/etc", &mut &chowned[..], opts).unwrap();
        let meta = std::fs::metadata(p.join("etc/owned")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (7, 8));
    }

    /// `cap_net_raw+ep` as `setcap` writes it (VFS_CAP_REVISION_2, effective).
    const CAP_NET_RAW: [u8; 20] = [
        0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    /// An entry's name with its `SCHILY.xattr.` records.
    type EntryXattrs = (String, Vec<(String, Vec<u8>)>);

    /// Every entry's name with its `SCHILY.xattr.` records.
    fn xattr_records(tar_bytes: &[u8]) -> Vec<EntryXattrs> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
                let records = e
                    .pax_extensions()
                    .unwrap()
                    .map(|exts| {
                        exts.map(|x| x.unwrap())
                            .filter_map(|x| {
                                let key = x.key().unwrap().strip_prefix(wire::PAX_XATTR_PREFIX)?;
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
    fn extended_attributes_travel_both_ways() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: file capabilities and trusted xattrs need root");
            return;
        }
        let (dir, root) = tree();
        let p = dir.path();
        xattr::set(p.join("etc"), "user.dir", b"d").unwrap();
        xattr::set(p.join("etc/sub/deep"), "user.test", b"hello").unwrap();
        xattr::set(p.join("etc/sub/deep"), "security.capability", &CAP_NET_RAW).unwrap();
        xattr::set(p.join("etc/sub/deep"), "security.ima", b"\x01label").unwrap();
        xattr::set(p.join("etclink"), "trusted.link", b"l").unwrap();
        let mut out = Vec::new();
        write_archive(&root.locate("/etc").unwrap(), &mut out).unwrap();
        let records = xattr_records(&out);
        assert_eq!(
            records[0],
            ("etc/".into(), vec![("user.dir".into(), b"d".to_vec())])
        );
        let deep = records.iter().find(|(n, _)| n == "etc/sub/deep").unwrap();
        assert_eq!(
            deep.1,
            [
                ("security.capability".to_string(), CAP_NET_RAW.to_vec()),
                ("user.test".to_string(), b"hello".to_vec()),
            ],
            "sorted, the host's security labels left out"
        );
        let mut link = Vec::new();
        write_archive(&root.locate("/etclink").unwrap(), &mut link).unwrap();
        assert_eq!(
            xattr_records(&link),
            [(
                "etclink".into(),
                vec![("trusted.link".into(), b"l".to_vec())]
            )],
            "a symlink's own attributes, not its target's"
        );

        // Extracting sets them after the chown (which would drop the capability), and never
        // overlayfs' own.
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([
            ("SCHILY.xattr.security.capability", &CAP_NET_RAW[..]),
            ("SCHILY.xattr.user.test", &b"hello"[..]),
            ("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..]),
        ])
        .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o755);
        h.set_uid(1234);
        h.set_gid(1234);
        h.set_size(3);
        h.set_path("ping").unwrap();
        h.set_cksum();
        b.append(&h, &b"bin"[..]).unwrap();
        // `user.*` on a symlink is refused by the kernel: left out, the copy goes on.
        b.append_pax_extensions([("SCHILY.xattr.user.test", &b"x"[..])])
            .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_path("pinglink").unwrap();
        h.set_link_name("ping").unwrap();
        h.set_cksum();
        b.append(&h, std::io::empty()).unwrap();
        let data = b.into_inner().unwrap();
        extract(&root, "/etc", &mut &data[..], ExtractOptions::default()).unwrap();
        let ping = p.join("etc/ping");
        assert_eq!(std::fs::metadata(&ping).unwrap().uid(), 1234);
        assert_eq!(
            xattr::get(&ping, "security.capability").unwrap().as_deref(),
            Some(&CAP_NET_RAW[..])
        );
        assert_eq!(
            xattr::get(&ping, "user.test").unwrap().as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(xattr::get(&ping, "trusted.overlay.opaque").unwrap(), None);
        assert!(p.join("etc/pinglink").symlink_metadata().is_ok());
        assert_eq!(
            xattr::get(p.join("etc/pinglink"), "user.test").unwrap(),
            None
        );
    }

    #[test]
    fn dir_and_non_dir_do_not_replace_each_other_when_asked() {
        let (dir, root) = tree();
        let opts = ExtractOptions {
            no_overwrite_dir_non_dir: true,
            ..Default::default()
        };
        let file_over_dir = tar_of(&[("sub", tar::EntryType::Regular, b"x", "")]);
        let e = extract(&root, "/etc", &mut &file_over_dir[..], opts).unwrap_err();
        assert!(e.to_string().contains("cannot overwrite directory"), "{e}");
        let dir_over_file = tar_of(&[("hostname/", tar::EntryType::Directory, b"", "")]);
        assert!(extract(&root, "/etc", &mut &dir_over_file[..], opts).is_err());
        // Without the option the directory is replaced by the file.
        extract(
            &root,
            "/etc",
            &mut &file_over_dir[..],
            ExtractOptions::default(),
        )
        .unwrap();
        assert!(dir.path().join("etc/sub").is_file());
    }
}
