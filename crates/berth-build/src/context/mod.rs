//! The build context: which files are in it (`.dockerignore`), which ones a
//! COPY/ADD selects, and a content hash of exactly those.
//!
//! [`ContextIndex::scan`] walks the context directory once, recording each
//! entry's metadata without following symlinks. File contents are hashed
//! lazily, in parallel, only when a selection needs them, so a
//! `COPY package.json .` never reads the rest of the context.

mod hash;
mod ignore;

pub use ignore::{Glob, IgnoreMatcher, clean_path};

use std::cmp::Ordering;
use std::fs;
use std::ops::Range;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Why the context could not be read or a source not selected.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// Reading the context failed.
    #[error("reading build context path {path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A pattern did not compile.
    #[error("invalid pattern {pattern:?}: {message}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// What is wrong.
        message: String,
    },
    /// A COPY/ADD source does not exist in the context.
    #[error(
        "source {0:?} not found in the build context: check the path (and that .dockerignore does not exclude it)"
    )]
    SourceNotFound(String),
    /// A wildcard source matched nothing.
    #[error(
        "no source files were specified: the pattern {0:?} matches nothing in the build context"
    )]
    NoMatch(String),
    /// A source path leaves the context.
    #[error(
        "source {0:?} is outside the build context: only files inside the context can be copied"
    )]
    OutsideContext(String),
}

/// The type of a context entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed while walking).
    Symlink {
        /// The link target as stored.
        target: String,
    },
    /// A FIFO, socket or device node.
    Special,
}

/// One file, directory or link of the context.
#[derive(Debug)]
pub struct ContextEntry {
    /// Path relative to the context root, `/`-separated (never empty, never `.`).
    pub path: String,
    /// The type.
    pub kind: EntryKind,
    /// `st_mode`: permission and type bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Device number for device nodes.
    pub rdev: u64,
    /// What changes whenever the content may have changed.
    pub stamp: FileStamp,
    content: OnceLock<[u8; 32]>,
}

/// A file's identity and change times: equal stamps mean equal content, unless the file
/// changed twice within one tick of the kernel's clock (see [`DigestCache`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileStamp {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Inode change time, nanoseconds since the epoch (no user can set it).
    pub ctime_ns: i128,
}

/// Content digests remembered across builds by [`FileStamp`], so an unchanged context is
/// not read again. Only stamps older than [`RACY_WINDOW_NS`] are remembered: a file
/// written again within the same clock tick could keep its stamp.
pub trait DigestCache: Send + Sync + std::fmt::Debug {
    /// The digest of the content a file had with this stamp.
    fn get(&self, stamp: &FileStamp) -> Option<[u8; 32]>;
    /// Remembers a digest.
    fn put(&self, stamp: FileStamp, digest: [u8; 32]);
}

/// How old a change must be before its stamp is trusted (coarse kernel clocks tick every
/// few milliseconds; a second is far beyond that).
pub const RACY_WINDOW_NS: i128 = 1_000_000_000;

/// The scanned context.
#[derive(Debug)]
pub struct ContextIndex {
    root: PathBuf,
    entries: Vec<ContextEntry>,
    cache: Option<std::sync::Arc<dyn DigestCache>>,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ContextError + '_ {
    move |source| ContextError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl ContextIndex {
    /// Walks `root`, keeping the entries `ignore` does not exclude (and the
    /// directories above re-included entries). Symlinks are recorded, never followed.
    pub fn scan(root: &Path, ignore: &IgnoreMatcher) -> Result<ContextIndex, ContextError> {
        let mut entries = Vec::new();
        walk(root, "", ignore, &mut entries)?;
        entries.sort_by(|a, b| path_cmp(&a.path, &b.path));
        Ok(ContextIndex {
            root: root.to_path_buf(),
            entries,
            cache: None,
        })
    }

    /// Uses `cache` to skip reading files whose stamps it knows.
    pub fn with_digest_cache(mut self, cache: std::sync::Arc<dyn DigestCache>) -> ContextIndex {
        self.cache = Some(cache);
        self
    }

    /// The context directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every entry, sorted by path with [`path_cmp`].
    pub fn entries(&self) -> &[ContextEntry] {
        &self.entries
    }

    /// The entry at `path` (relative, cleaned).
    pub fn get(&self, path: &str) -> Option<&ContextEntry> {
        self.entries
            .binary_search_by(|e| path_cmp(&e.path, path))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Indexes of `path` and everything below it (everything for `.`);
    /// contiguous because entries are sorted with `/` lowest.
    fn subtree(&self, path: &str) -> Range<usize> {
        if path == "." {
            return 0..self.entries.len();
        }
        let start = self
            .entries
            .partition_point(|e| path_cmp(&e.path, path) == Ordering::Less);
        let prefix = format!("{path}/");
        let len = self.entries[start..]
            .iter()
            .take_while(|e| e.path == path || e.path.starts_with(&prefix))
            .count();
        start..start + len
    }

    /// Follows symlinks of `path` inside the context only: absolute targets
    /// are taken from the context root and `..` stops at the root, so a link
    /// pointing out of the context can never reach host files.
    fn resolve_in_context(&self, path: &str) -> Result<String, ContextError> {
        let mut pending: Vec<String> = path.split('/').rev().map(str::to_string).collect();
        let mut resolved: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            match part.as_str() {
                "" | "." => continue,
                ".." => {
                    resolved.pop();
                    continue;
                }
                _ => {}
            }
            resolved.push(part);
            let current = resolved.join("/");
            let Some(entry) = self.get(&current) else {
                return Err(ContextError::SourceNotFound(path.to_string()));
            };
            if let EntryKind::Symlink { target } = &entry.kind {
                hops += 1;
                if hops > 40 {
                    return Err(ContextError::SourceNotFound(path.to_string()));
                }
                resolved.pop();
                if target.starts_with('/') {
                    resolved.clear();
                }
                pending.extend(target.split('/').rev().map(str::to_string));
            }
        }
        Ok(if resolved.is_empty() {
            ".".to_string()
        } else {
            resolved.join("/")
        })
    }

    /// The entries a COPY/ADD with `sources` (context-relative, possibly with
    /// wildcards) and `excludes` selects: each source and, for directories,
    /// everything below; a top-level symlink source also selects what it
    /// points to inside the context. Sorted by path, without duplicates.
    pub fn select(
        &self,
        sources: &[String],
        excludes: &[String],
    ) -> Result<Vec<&ContextEntry>, ContextError> {
        let exclude = IgnoreMatcher::new(excludes)?;
        let mut picked: Vec<usize> = Vec::new();
        let mut add = |range: Range<usize>, root: &str| {
            for i in range {
                let path = self.entries[i].path.as_str();
                let relative = if root == "." {
                    path
                } else if path == root {
                    path.rsplit('/').next().unwrap_or(path)
                } else {
                    path.strip_prefix(root)
                        .and_then(|p| p.strip_prefix('/'))
                        .unwrap_or(path)
                };
                if exclude.is_empty() || !exclude.is_excluded(relative) {
                    picked.push(i);
                }
            }
        };
        for source in sources {
            let cleaned = clean_path(source.trim_start_matches('/'));
            if cleaned == ".." || cleaned.starts_with("../") {
                return Err(ContextError::OutsideContext(source.clone()));
            }
            let glob = Glob::new(&cleaned)?;
            if glob.has_wildcards() {
                let matched: Vec<&ContextEntry> = self
                    .entries
                    .iter()
                    .filter(|e| glob.matches(&e.path))
                    .collect();
                if matched.is_empty() {
                    return Err(ContextError::NoMatch(source.clone()));
                }
                for e in matched {
                    add(self.subtree(&e.path), &e.path);
                }
                continue;
            }
            if cleaned != "." && self.get(&cleaned).is_none() {
                return Err(ContextError::SourceNotFound(source.clone()));
            }
            add(self.subtree(&cleaned), &cleaned);
            let target = self.resolve_in_context(&cleaned)?;
            if target != cleaned {
                add(self.subtree(&target), &target);
            }
        }
        picked.sort_unstable();
        picked.dedup();
        Ok(picked.into_iter().map(|i| &self.entries[i]).collect())
    }

    /// The digest (`sha256:<hex>`) of exactly `entries`: their sorted paths,
    /// metadata (type, mode, uid, gid, size, link target, device) and file
    /// contents. Contents not hashed yet are hashed now, in parallel.
    pub fn digest_of(&self, entries: &[&ContextEntry]) -> Result<String, ContextError> {
        let mut missing: Vec<&ContextEntry> = entries
            .iter()
            .copied()
            .filter(|e| e.kind == EntryKind::File && e.content.get().is_none())
            .collect();
        if let Some(cache) = &self.cache {
            missing.retain(|e| match cache.get(&e.stamp) {
                Some(digest) => {
                    let _ = e.content.set(digest);
                    false
                }
                None => true,
            });
        }
        hash::hash_files(&self.root, &missing)?;
        if let Some(cache) = &self.cache {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i128);
            for e in missing {
                if let Some(digest) = e.content.get()
                    && now - e.stamp.ctime_ns.max(e.stamp.mtime_ns) > RACY_WINDOW_NS
                {
                    cache.put(e.stamp, *digest);
                }
            }
        }
        Ok(hash::combine(entries))
    }

    /// `select` then `digest_of`.
    pub fn sources_digest(
        &self,
        sources: &[String],
        excludes: &[String],
    ) -> Result<String, ContextError> {
        let selected = self.select(sources, excludes)?;
        self.digest_of(&selected)
    }
}

/// Orders paths component by component (`/` sorts before every other byte),
/// so that a directory's entries directly follow it.
pub fn path_cmp(a: &str, b: &str) -> Ordering {
    let key = |c: u8| if c == b'/' { 0 } else { c };
    a.bytes().map(key).cmp(b.bytes().map(key))
}

fn walk(
    root: &Path,
    dir: &str,
    ignore: &IgnoreMatcher,
    out: &mut Vec<ContextEntry>,
) -> Result<bool, ContextError> {
    let full = if dir.is_empty() {
        root.to_path_buf()
    } else {
        root.join(dir)
    };
    let mut included_any = false;
    for item in fs::read_dir(&full).map_err(io_error(&full))? {
        let item = item.map_err(io_error(&full))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else {
            return Err(ContextError::Io {
                path: item.path(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "file name is not UTF-8",
                ),
            });
        };
        let path = if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        };
        let meta = fs::symlink_metadata(item.path()).map_err(io_error(&item.path()))?;
        let excluded = ignore.is_excluded(&path);
        let file_type = meta.file_type();
        let kind = if file_type.is_dir() {
            EntryKind::Dir
        } else if file_type.is_symlink() {
            let target = fs::read_link(item.path()).map_err(io_error(&item.path()))?;
            EntryKind::Symlink {
                target: target.to_string_lossy().into_owned(),
            }
        } else if file_type.is_file() {
            EntryKind::File
        } else if file_type.is_fifo()
            || file_type.is_socket()
            || file_type.is_block_device()
            || file_type.is_char_device()
        {
            EntryKind::Special
        } else {
            continue;
        };
        let mut keep = !excluded;
        if kind == EntryKind::Dir && (!excluded || ignore.may_include_below(&path)) {
            let position = out.len();
            let below = walk(root, &path, ignore, out)?;
            keep |= below;
            if keep {
                out.insert(position, entry(path, kind, &meta));
                included_any = true;
            }
            continue;
        }
        if keep {
            out.push(entry(path, kind, &meta));
            included_any = true;
        }
    }
    Ok(included_any)
}

fn entry(path: String, kind: EntryKind, meta: &fs::Metadata) -> ContextEntry {
    let size = if kind == EntryKind::Dir {
        0
    } else {
        meta.size()
    };
    ContextEntry {
        path,
        kind,
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        size,
        rdev: meta.rdev(),
        stamp: FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        },
        content: OnceLock::new(),
    }
}

#[cfg(test)]
mod tests;
