//! Writing matched sources into the destination root with Docker's
//! placement rules (BuildKit's `copy` with "copy directory contents").

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, Mode, SFlag, mkdirat, mknodat};
use nix::sys::time::TimeSpec;
use nix::unistd::symlinkat;

use super::archive;
use super::chmod::Chmod;
use super::root::{
    Creator, Meta, Resolved, Root, apply_meta_at, apply_meta_fd, clamp, components, io_error,
    is_dir, kind, list_dir, lstat_at, open_at, open_dir_at, open_path_at, read_link_at,
    read_xattrs, remove_non_dir, set_times_at, stat_entry, sys_error, write_xattrs,
};
use super::source::{Matched, SourceDir};
use super::{CopyStats, FsOpsError};

/// The destination as written: components and whether it names a directory.
#[derive(Debug)]
pub(super) struct DestPath {
    /// Components, cleaned (`..` stops at the root).
    pub parts: Vec<OsString>,
    /// A trailing `/` (or the root): the sources go into it.
    pub is_dir: bool,
}

impl DestPath {
    pub fn parse(dest: &str) -> DestPath {
        let mut parts: Vec<OsString> = Vec::new();
        for part in components(dest.as_bytes()) {
            if part == ".." {
                parts.pop();
            } else {
                parts.push(part);
            }
        }
        let is_dir = parts.is_empty() || dest.ends_with('/') || dest.ends_with("/.");
        DestPath { parts, is_dir }
    }
}

/// `parent/name` for messages.
fn child(parent: &str, name: &OsStr) -> String {
    let name = name.to_string_lossy();
    if parent.ends_with('/') {
        format!("{parent}{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// Where a non-directory source lands: a directory and a name in it.
struct FileTarget {
    dir: OwnedFd,
    name: OsString,
    /// Physical path of `dir`.
    dir_phys: Vec<OsString>,
    display: String,
}

/// One copy operation onto a destination root.
pub(super) struct Writer<'a> {
    dest: Root,
    creator: Creator,
    owner: Option<(u32, u32)>,
    chmod: Option<&'a Chmod>,
    epoch: Option<i64>,
    now: TimeSpec,
    /// Times of directories created for `--parents`, set last (creating
    /// entries in them changes their mtime).
    deferred_times: Vec<(Vec<OsString>, TimeSpec, TimeSpec)>,
    pub stats: CopyStats,
}

impl<'a> Writer<'a> {
    pub fn new(
        root: &Path,
        owner: Option<(u32, u32)>,
        chmod: Option<&'a Chmod>,
        epoch: Option<i64>,
    ) -> Result<Writer<'a>, FsOpsError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(Writer {
            dest: Root::open(root, "")?,
            creator: Creator {
                owner: owner.unwrap_or((0, 0)),
                touched: Vec::new(),
            },
            owner,
            chmod,
            epoch,
            now: TimeSpec::new(now.as_secs() as i64, i64::from(now.subsec_nanos())),
            deferred_times: Vec::new(),
            stats: CopyStats::default(),
        })
    }

    /// Owner, mode and (clamped) times for a copy of the entry `st`.
    fn meta(&self, st: &FileStat, keep_owner: bool) -> Meta {
        let (uid, gid) = self.owner.unwrap_or(if keep_owner {
            (st.st_uid, st.st_gid)
        } else {
            (0, 0)
        });
        let perm = st.st_mode & 0o7777;
        let mode = self.chmod.map_or(perm, |c| c.apply(perm, is_dir(st)));
        Meta {
            uid,
            gid,
            mode,
            atime: clamp(TimeSpec::new(st.st_atime, st.st_atime_nsec), self.epoch),
            mtime: clamp(TimeSpec::new(st.st_mtime, st.st_mtime_nsec), self.epoch),
        }
    }

    /// Copies one matched entry of `src` (without `--parents`).
    pub fn place(
        &mut self,
        src: &SourceDir,
        matched: &Matched,
        dest: &DestPath,
        add: bool,
    ) -> Result<(), FsOpsError> {
        let shown = super::root::join(&matched.phys);
        let resolved = src
            .root
            .walk(&matched.phys, false, None)
            .map_err(missing_as_not_found(&shown))?;
        let st = stat_entry(&resolved.dir, resolved.name.as_deref())
            .map_err(sys_error("inspecting source", &shown))?
            .ok_or_else(|| FsOpsError::SourceNotFound(shown.clone()))?;

        if let Some(name) = resolved.name.as_deref().filter(|_| !is_dir(&st)) {
            if add && kind(&st) == SFlag::S_IFREG {
                let mut file = File::from(
                    open_at(&resolved.dir, name, OFlag::O_RDONLY | OFlag::O_NONBLOCK, 0)
                        .map_err(sys_error("opening source", &shown))?,
                );
                if let Some(format) =
                    archive::detect(&mut file).map_err(io_error("reading source", &shown))?
                {
                    let into = self.dest.mkdir_all(&dest.parts, &mut self.creator)?;
                    self.creator.touched.push(into.phys.clone());
                    let root = Root::from_fd(into.dir, self.dest.display(&into.phys));
                    let options = archive::Extract {
                        owner: self.owner,
                        epoch: self.epoch,
                        archive: shown,
                    };
                    return archive::extract(&file, format, root, &options, &mut self.stats);
                }
            }
            let target = self.file_target(dest, &matched.name)?;
            self.copy_entry(
                src,
                &resolved.dir,
                name,
                &st,
                &mut matched.phys.clone(),
                &target.dir,
                &target.name,
                &target.display,
                true,
            )?;
            self.creator.touched.push(target.dir_phys);
            return Ok(());
        }

        // A directory: its contents go into the destination directory.
        let src_dir = enter_dir(&resolved, &shown)?;
        let into = self.dir_target(dest)?;
        let display = self.dest.display(&into.phys);
        self.copy_tree(
            src,
            &src_dir,
            &mut matched.phys.clone(),
            &into.dir,
            &display,
        )?;
        // Like BuildKit, the destination directory keeps its own mode and
        // owner but takes the source directory's times.
        let meta = self.meta(&st, src.keep_owner);
        set_times_at(&into.dir, None, meta.atime, meta.mtime)
            .map_err(sys_error("setting times of", &display))?;
        self.creator.touched.push(into.phys);
        Ok(())
    }

    /// Copies one matched entry of `src` with `--parents`: it lands at its
    /// path from the pivot under the destination directory, and directories
    /// created on the way copy the source directories' metadata.
    pub fn place_parents(
        &mut self,
        src: &SourceDir,
        matched: &Matched,
        under: &[OsString],
        dest: &DestPath,
    ) -> Result<(), FsOpsError> {
        let base = self.dest.mkdir_all(&dest.parts, &mut self.creator)?;
        self.creator.touched.push(base.phys.clone());
        let pivot_len = matched.phys.len() - under.len();
        let mut src_phys = matched.phys[..pivot_len].to_vec();
        let shown = super::root::join(&src_phys);
        let pivot = src
            .root
            .walk(&src_phys, false, None)
            .map_err(missing_as_not_found(&shown))?;
        let mut src_dir = enter_dir(&pivot, &shown)?;
        let mut dir = base.dir;
        let mut dir_phys = base.phys;
        let mut display = self.dest.display(&dir_phys);

        let Some((last, parents)) = under.split_last() else {
            // The pivot itself: its contents go into the destination.
            let st = nix::sys::stat::fstat(src_dir.as_raw_fd())
                .map_err(sys_error("inspecting source", &shown))?;
            self.copy_tree(src, &src_dir, &mut src_phys, &dir, &display)?;
            let meta = self.meta(&st, src.keep_owner);
            return set_times_at(&dir, None, meta.atime, meta.mtime)
                .map_err(sys_error("setting times of", &display));
        };
        for part in parents {
            src_phys.push(part.clone());
            let shown = super::root::join(&src_phys);
            let st = lstat_at(&src_dir, part)
                .map_err(sys_error("inspecting source", &shown))?
                .filter(is_dir)
                .ok_or_else(|| FsOpsError::SourceNotFound(shown.clone()))?;
            let next_display = child(&display, part);
            match lstat_at(&dir, part).map_err(sys_error("inspecting", &next_display))? {
                None => {
                    mkdirat(
                        Some(dir.as_raw_fd()),
                        part.as_os_str(),
                        Mode::from_bits_truncate(0o700),
                    )
                    .map_err(sys_error("creating directory", &next_display))?;
                    let created =
                        open_dir_at(&dir, part).map_err(sys_error("opening", &next_display))?;
                    let meta = self.meta(&st, src.keep_owner);
                    apply_meta_fd(&created, &meta)
                        .map_err(sys_error("setting metadata of", &next_display))?;
                    let mut phys = dir_phys.clone();
                    phys.push(part.clone());
                    self.deferred_times.push((phys, meta.atime, meta.mtime));
                }
                Some(existing) if is_dir(&existing) => {}
                Some(_) => return Err(FsOpsError::DirOntoNonDir(next_display)),
            }
            dir = open_dir_at(&dir, part).map_err(sys_error("opening", &next_display))?;
            dir_phys.push(part.clone());
            display = next_display;
            src_dir = open_dir_at(&src_dir, part).map_err(sys_error("opening source", &shown))?;
        }
        src_phys.push(last.clone());
        let shown = super::root::join(&src_phys);
        let st = lstat_at(&src_dir, last)
            .map_err(sys_error("inspecting source", &shown))?
            .ok_or_else(|| FsOpsError::SourceNotFound(shown.clone()))?;
        let target_display = child(&display, last);
        self.copy_entry(
            src,
            &src_dir,
            last,
            &st,
            &mut src_phys,
            &dir,
            last,
            &target_display,
            true,
        )
    }

    /// Writes a file with literal content (a heredoc, a downloaded URL).
    pub fn place_bytes(
        &mut self,
        name: &str,
        content: &[u8],
        mode: u32,
        mtime: Option<i64>,
        dest: &DestPath,
    ) -> Result<(), FsOpsError> {
        let target = self.file_target(dest, OsStr::new(name))?;
        remove_non_dir(&target.dir, &target.name, &target.display)?;
        let mut file = File::from(
            open_at(
                &target.dir,
                &target.name,
                OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
                0o600,
            )
            .map_err(sys_error("creating file", &target.display))?,
        );
        file.write_all(content)
            .map_err(io_error("writing", &target.display))?;
        let time = clamp(mtime.map_or(self.now, |s| TimeSpec::new(s, 0)), self.epoch);
        let perm = mode & 0o7777;
        let (uid, gid) = self.owner.unwrap_or((0, 0));
        let meta = Meta {
            uid,
            gid,
            mode: self.chmod.map_or(perm, |c| c.apply(perm, false)),
            atime: time,
            mtime: time,
        };
        apply_meta_fd(&file, &meta).map_err(sys_error("setting metadata of", &target.display))?;
        self.stats.files += 1;
        self.stats.bytes += content.len() as u64;
        self.creator.touched.push(target.dir_phys);
        Ok(())
    }

    /// Where a directory source's contents go: the destination, created when
    /// missing; an existing non-directory there is an error.
    fn dir_target(&mut self, dest: &DestPath) -> Result<Resolved, FsOpsError> {
        match self.dest.walk(&dest.parts, true, None) {
            Ok(found) => {
                if let Some(name) = &found.name {
                    let display = self.dest.display(&found.phys);
                    let st =
                        lstat_at(&found.dir, name).map_err(sys_error("inspecting", &display))?;
                    if st.is_some_and(|st| !is_dir(&st)) {
                        return Err(FsOpsError::DirOntoNonDir(display));
                    }
                }
            }
            // Missing directories on the way are created below.
            Err(FsOpsError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        self.dest.mkdir_all(&dest.parts, &mut self.creator)
    }

    /// Where a non-directory source named `name` goes: into the destination
    /// when it ends with `/` or is an existing directory, else at the
    /// destination path itself (followed if it is a symlink, as BuildKit does).
    fn file_target(&mut self, dest: &DestPath, name: &OsStr) -> Result<FileTarget, FsOpsError> {
        if dest.is_dir {
            let into = self.dest.mkdir_all(&dest.parts, &mut self.creator)?;
            return Ok(FileTarget {
                display: child(&self.dest.display(&into.phys), name),
                dir: into.dir,
                name: name.to_os_string(),
                dir_phys: into.phys,
            });
        }
        let parent = &dest.parts[..dest.parts.len() - 1];
        self.dest.mkdir_all(parent, &mut self.creator)?;
        let found = self.dest.walk(&dest.parts, true, None)?;
        let Some(last) = found.name else {
            // The destination resolved to a directory (a symlink to `/`).
            return Ok(FileTarget {
                display: child(&self.dest.display(&found.phys), name),
                dir: found.dir,
                name: name.to_os_string(),
                dir_phys: found.phys,
            });
        };
        let display = self.dest.display(&found.phys);
        match lstat_at(&found.dir, &last).map_err(sys_error("inspecting", &display))? {
            Some(st) if is_dir(&st) => Ok(FileTarget {
                dir: open_dir_at(&found.dir, &last).map_err(sys_error("opening", &display))?,
                name: name.to_os_string(),
                display: child(&display, name),
                dir_phys: found.phys,
            }),
            _ => {
                let mut dir_phys = found.phys;
                dir_phys.pop();
                Ok(FileTarget {
                    dir: found.dir,
                    name: last,
                    dir_phys,
                    display,
                })
            }
        }
    }

    /// Copies everything in `src_dir` (physical path `src_phys`) into `dst_dir`.
    fn copy_tree(
        &mut self,
        src: &SourceDir,
        src_dir: &OwnedFd,
        src_phys: &mut Vec<OsString>,
        dst_dir: &OwnedFd,
        display: &str,
    ) -> Result<(), FsOpsError> {
        let shown = super::root::join(src_phys);
        for name in list_dir(src_dir).map_err(sys_error("listing source", &shown))? {
            let Some(st) =
                lstat_at(src_dir, &name).map_err(sys_error("inspecting source", &shown))?
            else {
                continue;
            };
            src_phys.push(name.clone());
            if src.allows(src_phys, is_dir(&st)) {
                let target = child(display, &name);
                self.copy_entry(
                    src, src_dir, &name, &st, src_phys, dst_dir, &name, &target, true,
                )?;
            }
            src_phys.pop();
        }
        Ok(())
    }

    /// Copies the entry `src_name` of `src_dir` to `dst_name` in `dst_dir`:
    /// directories merge (their metadata replaced when `overwrite_meta` or
    /// newly created), anything else replaces what is there except a directory.
    #[allow(clippy::too_many_arguments)]
    fn copy_entry(
        &mut self,
        src: &SourceDir,
        src_dir: &OwnedFd,
        src_name: &OsStr,
        st: &FileStat,
        src_phys: &mut Vec<OsString>,
        dst_dir: &OwnedFd,
        dst_name: &OsStr,
        display: &str,
        overwrite_meta: bool,
    ) -> Result<(), FsOpsError> {
        let shown = super::root::join(src_phys);
        let meta = self.meta(st, src.keep_owner);
        let file_kind = kind(st);
        if file_kind == SFlag::S_IFDIR {
            let created =
                match lstat_at(dst_dir, dst_name).map_err(sys_error("inspecting", display))? {
                    None => {
                        mkdirat(
                            Some(dst_dir.as_raw_fd()),
                            dst_name,
                            Mode::from_bits_truncate(0o700),
                        )
                        .map_err(sys_error("creating directory", display))?;
                        true
                    }
                    Some(existing) if is_dir(&existing) => false,
                    Some(_) => return Err(FsOpsError::DirOntoNonDir(display.to_string())),
                };
            let from =
                open_dir_at(src_dir, src_name).map_err(sys_error("opening source", &shown))?;
            let to = open_dir_at(dst_dir, dst_name).map_err(sys_error("opening", display))?;
            self.copy_tree(src, &from, src_phys, &to, display)?;
            return if created || overwrite_meta {
                apply_meta_fd(&to, &meta).map_err(sys_error("setting metadata of", display))?;
                write_xattrs(&to, &read_xattrs(&from, &shown)?, display)
            } else {
                set_times_at(&to, None, meta.atime, meta.mtime)
                    .map_err(sys_error("setting times of", display))
            };
        }

        if !matches!(
            file_kind,
            SFlag::S_IFREG
                | SFlag::S_IFLNK
                | SFlag::S_IFIFO
                | SFlag::S_IFCHR
                | SFlag::S_IFBLK
                | SFlag::S_IFSOCK
        ) {
            tracing::debug!(source = %shown, "skipping source entry of unknown type");
            return Ok(());
        }
        remove_non_dir(dst_dir, dst_name, display)?;
        match file_kind {
            SFlag::S_IFREG => {
                let mut from = File::from(
                    open_at(src_dir, src_name, OFlag::O_RDONLY | OFlag::O_NONBLOCK, 0)
                        .map_err(sys_error("opening source", &shown))?,
                );
                let mut to = File::from(
                    open_at(
                        dst_dir,
                        dst_name,
                        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
                        0o600,
                    )
                    .map_err(sys_error("creating file", display))?,
                );
                let copied =
                    io::copy(&mut from, &mut to).map_err(io_error("copying to", display))?;
                apply_meta_fd(&to, &meta).map_err(sys_error("setting metadata of", display))?;
                // After the chown, which drops file capabilities.
                let (from, to) = (OwnedFd::from(from), OwnedFd::from(to));
                write_xattrs(&to, &read_xattrs(&from, &shown)?, display)?;
                self.stats.bytes += copied;
            }
            SFlag::S_IFLNK => {
                let target =
                    read_link_at(src_dir, src_name).map_err(sys_error("reading link", &shown))?;
                symlinkat(target.as_bytes(), Some(dst_dir.as_raw_fd()), dst_name)
                    .map_err(sys_error("creating symlink", display))?;
                apply_meta_at(dst_dir, dst_name, &meta, true)
                    .map_err(sys_error("setting metadata of", display))?;
                self.copy_xattrs_at(src_dir, src_name, &shown, dst_dir, dst_name, display)?;
            }
            _ => {
                mknodat(
                    Some(dst_dir.as_raw_fd()),
                    dst_name,
                    file_kind,
                    Mode::from_bits_truncate(0o600),
                    st.st_rdev,
                )
                .map_err(sys_error("creating node", display))?;
                apply_meta_at(dst_dir, dst_name, &meta, false)
                    .map_err(sys_error("setting metadata of", display))?;
                self.copy_xattrs_at(src_dir, src_name, &shown, dst_dir, dst_name, display)?;
            }
        }
        self.stats.files += 1;
        Ok(())
    }

    /// Copies the extended attributes of the entries themselves (symlinks are not followed).
    fn copy_xattrs_at(
        &self,
        src_dir: &OwnedFd,
        src_name: &OsStr,
        shown: &str,
        dst_dir: &OwnedFd,
        dst_name: &OsStr,
        display: &str,
    ) -> Result<(), FsOpsError> {
        let from = open_path_at(src_dir, src_name).map_err(sys_error("opening source", shown))?;
        let xattrs = read_xattrs(&from, shown)?;
        if xattrs.is_empty() {
            return Ok(());
        }
        let to = open_path_at(dst_dir, dst_name).map_err(sys_error("opening", display))?;
        write_xattrs(&to, &xattrs, display)
    }

    /// Sets the deferred directory times and, with SOURCE_DATE_EPOCH, clamps
    /// the times of every directory this copy created or changed.
    pub fn finish(self) -> Result<CopyStats, FsOpsError> {
        for (phys, atime, mtime) in self.deferred_times.iter().rev() {
            let display = self.dest.display(phys);
            let found = self.dest.walk(phys, false, None)?;
            set_times_at(&found.dir, found.name.as_deref(), *atime, *mtime)
                .map_err(sys_error("setting times of", &display))?;
        }
        if let Some(epoch) = self.epoch {
            clamp_dirs(&self.dest, self.creator.touched, epoch)?;
        }
        Ok(self.stats)
    }
}

/// Maps "a directory on the way is missing" to "this source is not found".
fn missing_as_not_found(shown: &str) -> impl FnOnce(FsOpsError) -> FsOpsError + '_ {
    move |err| match err {
        FsOpsError::NotFound(_) | FsOpsError::NotADirectory(_) => {
            FsOpsError::SourceNotFound(shown.to_string())
        }
        other => other,
    }
}

/// Opens the directory a source walk ended on.
fn enter_dir(resolved: &Resolved, shown: &str) -> Result<OwnedFd, FsOpsError> {
    match &resolved.name {
        Some(name) => open_dir_at(&resolved.dir, name).map_err(sys_error("opening source", shown)),
        None => resolved
            .dir
            .try_clone()
            .map_err(io_error("duplicating descriptor for", shown)),
    }
}

/// Clamps the times of the directories at `paths` (physical, in `root`) to `epoch`.
pub(super) fn clamp_dirs(
    root: &Root,
    mut paths: Vec<Vec<OsString>>,
    epoch: i64,
) -> Result<(), FsOpsError> {
    paths.sort();
    paths.dedup();
    for phys in paths {
        let display = root.display(&phys);
        let found = match root.walk(&phys, false, None) {
            Ok(found) => found,
            // Replaced by a later entry (an archive can do that): nothing to clamp.
            Err(FsOpsError::NotFound(_) | FsOpsError::NotADirectory(_)) => continue,
            Err(e) => return Err(e),
        };
        let Some(st) = stat_entry(&found.dir, found.name.as_deref())
            .map_err(sys_error("inspecting", &display))?
        else {
            continue;
        };
        let atime = clamp(TimeSpec::new(st.st_atime, st.st_atime_nsec), Some(epoch));
        let mtime = clamp(TimeSpec::new(st.st_mtime, st.st_mtime_nsec), Some(epoch));
        set_times_at(&found.dir, found.name.as_deref(), atime, mtime)
            .map_err(sys_error("setting times of", &display))?;
    }
    Ok(())
}
