//! The filesystem side of COPY and ADD: files from the build context or
//! another stage, heredocs and downloaded bodies written onto a mounted root
//! filesystem with Docker's (BuildKit's) placement rules, and ADD's
//! extraction of local tar archives.
//!
//! Every path is resolved inside its own root as a chroot would: on the
//! source side (the build context, a stage's rootfs) and on the destination
//! side (the image being built) absolute symlink targets restart at the root
//! and `..` stops there, and every entry is opened relative to a directory
//! descriptor with `O_NOFOLLOW`, so neither a hostile context nor a hostile
//! image can make a copy read or write anything outside.
//!
//! The rules, where Docker's reference leaves a choice:
//! - a directory source copies its contents; the destination directory is
//!   created (0755) when missing and otherwise keeps its mode and owner, but
//!   takes the source directory's times (BuildKit);
//! - a file source goes into the destination when it ends with `/` or is an
//!   existing directory, else it becomes the destination path (a symlink
//!   there is followed inside the root, as BuildKit does);
//! - more than one source after wildcard expansion needs a destination ending
//!   in `/`; a wildcard matching one entry does not (the classic builder's
//!   rule; BuildKit does not check, `--parents` is exempt since it always
//!   copies into a directory);
//! - a source that is a symlink is followed (inside its root); symlinks
//!   inside a copied directory are copied as symlinks; with `--parents`
//!   nothing after the pivot is followed;
//! - directories this copy creates implicitly (missing parents of the
//!   destination, or of archive entries) get mode 0755 (not `--chmod`, unlike
//!   BuildKit) and the `--chown` owner, or 0:0;
//! - owners: `--chown` if given, else 0:0 for the build context and heredocs,
//!   and the source's own owners for `--from` stages (`keep_owner`) and for
//!   archive entries;
//! - `--chmod` applies to every copied file and directory (not symlinks, not
//!   archive entries, as BuildKit); mtimes are kept and clamped to
//!   SOURCE_DATE_EPOCH, which also clamps every directory the copy changed;
//! - hard links inside a copied tree become separate files.

mod archive;
mod chmod;
mod copy;
mod owner;
mod root;
mod source;

pub use chmod::{Chmod, Clause, parse_chmod};
pub use owner::resolve_owner;

use std::path::Path;

use copy::{DestPath, Writer};
use source::SourceDir;

/// Why a copy failed.
#[derive(Debug, thiserror::Error)]
pub enum FsOpsError {
    /// A system call failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path it was done to (in the image or the source).
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A source path does not exist (or `.dockerignore` / `--exclude` left it out).
    #[error(
        "source {0:?} not found (check the path, and that .dockerignore or --exclude does not exclude it)"
    )]
    SourceNotFound(String),
    /// A wildcard source matched nothing.
    #[error("no source files were specified: the pattern {0:?} matches nothing")]
    NoMatch(String),
    /// A source path climbs out of its directory.
    #[error("source {0:?} is outside the build context: only files inside it can be copied")]
    OutsideContext(String),
    /// A source pattern is malformed.
    #[error("invalid source pattern {pattern:?}: {message}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// What is wrong.
        message: String,
    },
    /// Several sources and a destination not ending in `/`.
    #[error(
        "when using {command} with more than one source file, the destination must be a directory and end with a /"
    )]
    DestNotDirectory {
        /// `COPY` or `ADD`.
        command: &'static str,
    },
    /// A path that must be walked through does not exist.
    #[error("{0} does not exist")]
    NotFound(String),
    /// A path that must be walked through is not a directory.
    #[error("{0} is not a directory")]
    NotADirectory(String),
    /// A path that must be read as a file is not one.
    #[error("{0} is not a regular file")]
    NotAFile(String),
    /// A directory would be copied onto a non-directory.
    #[error("cannot copy a directory to {0}: it exists and is not a directory")]
    DirOntoNonDir(String),
    /// A file would replace a directory.
    #[error("cannot replace directory {0} with a file")]
    FileOntoDir(String),
    /// Symlinks loop.
    #[error("too many levels of symbolic links at {0}")]
    SymlinkLoop(String),
    /// An inline file has an unusable name.
    #[error("invalid file name {0:?}: it must be a single path component")]
    InvalidName(String),
    /// An archive could not be read.
    #[error("reading archive {archive}: {source}")]
    Archive {
        /// The archive's source path.
        archive: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An archive entry is unsafe or unusable.
    #[error("archive {archive}: entry {entry:?} {message}")]
    ArchiveEntry {
        /// The archive's source path.
        archive: String,
        /// The entry's path.
        entry: String,
        /// What is wrong with it.
        message: String,
    },
    /// A `--chown` value is malformed.
    #[error("invalid --chown value {0:?}: expected user, user:group, uid or uid:gid")]
    InvalidChown(String),
    /// A `--chown` user name is not in the image's /etc/passwd.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    /// A `--chown` group name is not in the image's /etc/group.
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    /// A `--chmod` value is malformed.
    #[error(
        "invalid chmod parameter {0:?}: it should be octal (at most 07777) or symbolic like u+x,go=rX"
    )]
    InvalidChmod(String),
}

/// One COPY or ADD onto a mounted root filesystem.
#[derive(Debug)]
pub struct CopyRequest<'a> {
    /// The destination root filesystem (the step's merged overlay directory);
    /// nothing outside it is written.
    pub root: &'a Path,
    /// Absolute path in the image; a trailing `/` means "into this directory".
    pub dest: &'a str,
    /// The sources, in order.
    pub sources: Vec<CopySource<'a>>,
    /// Resolved `--chown` (see [`resolve_owner`]); `None` gives 0:0, except
    /// for `keep_owner` sources and archive entries, which keep theirs.
    pub owner: Option<(u32, u32)>,
    /// Parsed `--chmod` (see [`parse_chmod`]).
    pub chmod: Option<Chmod>,
    /// `--parents`: keep each source's path (from its `/./` pivot, or from the root).
    pub parents: bool,
    /// ADD: extract local tar archives into the destination.
    pub add: bool,
    /// SOURCE_DATE_EPOCH: mtimes of what is created are clamped to it.
    pub epoch: Option<i64>,
}

/// Where the files of a COPY/ADD come from.
#[derive(Debug)]
pub enum CopySource<'a> {
    /// Files of a directory on the host: the extracted build context or the
    /// mounted rootfs of another stage or image.
    Dir {
        /// The directory; source paths and symlinks resolve inside it.
        base: &'a Path,
        /// The sources as written, relative to `base` (a leading `/` is
        /// allowed), possibly with `*`, `?`, `[...]` wildcards.
        patterns: Vec<String>,
        /// If given, every path (relative to `base`) that may be copied, as
        /// `.dockerignore` and `--exclude` left them; nothing else is copied.
        selected: Option<&'a [String]>,
        /// Keep the source files' owners when there is no `--chown` (Docker
        /// does for `--from` stages and images; the build context gets 0:0).
        keep_owner: bool,
    },
    /// A file with literal content: a heredoc, or a downloaded URL body.
    Bytes {
        /// Its file name (one path component).
        name: String,
        /// Its content.
        content: Vec<u8>,
        /// Its permission bits (0644 for heredocs, 0600 for URLs); `--chmod` wins.
        mode: u32,
        /// Its mtime (a URL's Last-Modified), else now; clamped by `epoch`.
        mtime: Option<i64>,
    },
}

/// What a copy wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Non-directory entries written (files, symlinks, hard links, nodes).
    pub files: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// A source with its entries resolved, ready to be written.
enum Planned<'s> {
    Dir {
        dir: SourceDir,
        matches: Vec<source::Matched>,
    },
    Bytes {
        name: &'s str,
        content: &'s [u8],
        mode: u32,
        mtime: Option<i64>,
    },
}

/// Performs a COPY or ADD. Every source is resolved before anything is
/// written, so a missing source fails without touching the root.
pub fn apply_copy(req: &CopyRequest) -> Result<CopyStats, FsOpsError> {
    let command = if req.add { "ADD" } else { "COPY" };
    let dest = DestPath::parse(req.dest);
    let mut planned = Vec::with_capacity(req.sources.len());
    let mut count = 0;
    for source in &req.sources {
        match source {
            CopySource::Dir {
                base,
                patterns,
                selected,
                keep_owner,
            } => {
                let dir = SourceDir::open(base, *selected, *keep_owner)?;
                let mut matches = Vec::new();
                for pattern in patterns {
                    matches.extend(source::expand(&dir, pattern, req.parents)?);
                }
                count += matches.len();
                planned.push(Planned::Dir { dir, matches });
            }
            CopySource::Bytes {
                name,
                content,
                mode,
                mtime,
            } => {
                if name.is_empty()
                    || name == "."
                    || name == ".."
                    || name.contains('/')
                    || name.contains('\0')
                {
                    return Err(FsOpsError::InvalidName(name.clone()));
                }
                count += 1;
                planned.push(Planned::Bytes {
                    name,
                    content,
                    mode: *mode,
                    mtime: *mtime,
                });
            }
        }
    }
    if count > 1 && !dest.is_dir && !req.parents {
        return Err(FsOpsError::DestNotDirectory { command });
    }

    let mut writer = Writer::new(req.root, req.owner, req.chmod.as_ref(), req.epoch)?;
    for item in &planned {
        match item {
            Planned::Dir { dir, matches } => {
                for matched in matches {
                    match &matched.under_dest {
                        Some(under) => writer.place_parents(dir, matched, under, &dest)?,
                        None => writer.place(dir, matched, &dest, req.add)?,
                    }
                }
            }
            Planned::Bytes {
                name,
                content,
                mode,
                mtime,
            } => writer.place_bytes(name, content, *mode, *mtime, &dest)?,
        }
    }
    let stats = writer.finish()?;
    tracing::debug!(
        dest = req.dest,
        files = stats.files,
        bytes = stats.bytes,
        "copy applied"
    );
    Ok(stats)
}

#[cfg(test)]
mod tests;
