//! The build context sent with `POST /build`, made the way the docker CLI makes it: a tar of
//! the context directory honouring `.dockerignore` (the Dockerfile and `.dockerignore`
//! themselves always included), entries sorted, owned by 0:0, symlinks stored as links; a
//! Dockerfile from outside the directory (or from stdin) added under a generated
//! `.dockerfile.<random>` name that `.dockerignore` then hides from `COPY`; or, for
//! `berth build -`, whatever stdin holds: a (compressed) tar, or a lone Dockerfile.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use berth_build::context::{ContextIndex, EntryKind, IgnoreMatcher, path_cmp};

/// The name the daemon looks for when no `-f` is given.
pub const DEFAULT_DOCKERFILE: &str = "Dockerfile";

/// Where the Dockerfile of a directory context comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerfileSource {
    /// A file inside the context, by its `/`-separated path relative to the context root.
    InContext(String),
    /// Content from elsewhere (a file outside the context, or stdin with `-f -`).
    External(Vec<u8>),
}

/// A file that exists only in the archive (a generated Dockerfile name, an amended
/// `.dockerignore`).
#[derive(Debug, Clone)]
struct MemoryFile {
    path: String,
    data: Vec<u8>,
    mode: u32,
}

/// One archive entry, in the order written.
enum Item<'a> {
    Disk(&'a str),
    Memory(&'a MemoryFile),
}

impl Item<'_> {
    fn path(&self) -> &str {
        match self {
            Item::Disk(p) => p,
            Item::Memory(m) => &m.path,
        }
    }
}

/// A scanned context directory, ready to be archived.
pub struct DirContext {
    root: PathBuf,
    index: ContextIndex,
    generated: Vec<MemoryFile>,
    dockerfile: String,
}

/// Reads `.dockerignore` text into patterns the way the docker CLI does (`#` comments,
/// blank lines skipped, surrounding space trimmed, a leading byte-order mark dropped).
pub fn dockerignore_patterns(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Escapes the pattern characters of a literal path, for an `!path` exception.
fn escape_pattern(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A random `.dockerfile.<20 hex digits>` name, as the docker CLI picks for a Dockerfile that
/// is not part of the context.
fn generated_dockerfile_name() -> Result<String> {
    let mut bytes = [0u8; 10];
    getrandom::fill(&mut bytes).map_err(|e| anyhow!("generating a Dockerfile name: {e}"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(".dockerfile.{hex}"))
}

impl DirContext {
    /// Scans `root` with its `.dockerignore` and arranges for the Dockerfile to be in the
    /// archive.
    pub fn prepare(root: &Path, dockerfile: DockerfileSource) -> Result<DirContext> {
        let ignore_path = root.join(".dockerignore");
        let ignore_text = match fs::read_to_string(&ignore_path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(anyhow!("reading {}: {e}", ignore_path.display())),
        };
        let mut patterns = dockerignore_patterns(ignore_text.as_deref().unwrap_or(""));
        let original =
            IgnoreMatcher::new(&patterns).map_err(|e| anyhow!("{}: {e}", ignore_path.display()))?;
        // The daemon reads both files, so docker keeps them whatever the patterns say.
        if original.is_excluded(".dockerignore") {
            patterns.push("!.dockerignore".to_string());
        }
        if let DockerfileSource::InContext(path) = &dockerfile
            && original.is_excluded(path)
        {
            patterns.push(format!("!{}", escape_pattern(path)));
        }
        let matcher =
            IgnoreMatcher::new(&patterns).map_err(|e| anyhow!("{}: {e}", ignore_path.display()))?;
        let index = ContextIndex::scan(root, &matcher).context("error checking context")?;
        let mut ctx = DirContext {
            root: root.to_path_buf(),
            index,
            generated: Vec::new(),
            dockerfile: String::new(),
        };
        match dockerfile {
            DockerfileSource::InContext(path) => ctx.dockerfile = path,
            DockerfileSource::External(data) => {
                let name = generated_dockerfile_name()?;
                // Hide the generated file from `COPY .` as docker does, by naming it in the
                // archive's `.dockerignore`.
                let mut ignore = ignore_text.unwrap_or_default().into_bytes();
                ignore.extend_from_slice(format!("\n{name}\n").as_bytes());
                let mode = match ctx.index.get(".dockerignore") {
                    Some(e) if e.kind == EntryKind::File => e.mode & 0o7777,
                    _ => 0o600,
                };
                ctx.generated.push(MemoryFile {
                    path: ".dockerignore".to_string(),
                    data: ignore,
                    mode,
                });
                ctx.generated.push(MemoryFile {
                    path: name.clone(),
                    data,
                    mode: 0o600,
                });
                ctx.dockerfile = name;
            }
        }
        Ok(ctx)
    }

    /// The Dockerfile's path in the archive (the `dockerfile` query parameter).
    pub fn dockerfile(&self) -> &str {
        &self.dockerfile
    }

    /// The directory, when a daemon on this host could read it as it is: nothing had to be
    /// generated for the archive (an external Dockerfile is).
    pub fn in_place_root(&self) -> Option<&Path> {
        self.generated.is_empty().then_some(self.root.as_path())
    }

    /// The entry paths in archive order.
    fn items(&self) -> Vec<Item<'_>> {
        let mut items: Vec<Item<'_>> = self
            .index
            .entries()
            .iter()
            .filter(|e| !self.generated.iter().any(|g| g.path == e.path))
            .map(|e| Item::Disk(&e.path))
            .chain(self.generated.iter().map(Item::Memory))
            .collect();
        items.sort_by(|a, b| path_cmp(a.path(), b.path()));
        items
    }

    /// Writes the archive to `out` and returns it.
    pub fn write_tar<W: Write>(&self, out: W) -> Result<W> {
        let mut builder = tar::Builder::new(out);
        let mut links: HashMap<(u64, u64), String> = HashMap::new();
        for item in self.items() {
            match item {
                Item::Disk(path) => self.append_disk(&mut builder, path, &mut links)?,
                Item::Memory(file) => append_memory(&mut builder, file, now_unix())?,
            }
        }
        builder
            .into_inner()
            .context("finishing the context archive")
    }

    fn append_disk<W: Write>(
        &self,
        builder: &mut tar::Builder<W>,
        path: &str,
        links: &mut HashMap<(u64, u64), String>,
    ) -> Result<()> {
        let full = self.root.join(path);
        let meta = fs::symlink_metadata(&full)
            .with_context(|| format!("can't stat '{}'", full.display()))?;
        let mut header = header_for(&meta);
        let file_type = meta.file_type();
        let failed = |e: io::Error| anyhow!("adding {} to the build context: {e}", full.display());
        if file_type.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            builder
                .append_data(&mut header, format!("{path}/"), io::empty())
                .map_err(failed)?;
        } else if file_type.is_symlink() {
            let target = fs::read_link(&full).map_err(failed)?;
            header.set_entry_type(tar::EntryType::Symlink);
            builder
                .append_link(&mut header, path, target)
                .map_err(failed)?;
        } else if file_type.is_file() {
            let file = fs::File::open(&full)
                .with_context(|| format!("no permission to read from '{}'", full.display()))?;
            let meta = file.metadata().map_err(failed)?;
            let mut header = header_for(&meta);
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = links.get(&key) {
                    header.set_entry_type(tar::EntryType::Link);
                    header.set_size(0);
                    return builder
                        .append_link(&mut header, path, first)
                        .map_err(failed);
                }
                links.insert(key, path.to_string());
            }
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            let mut reader = Counted {
                inner: file.take(meta.len()),
                count: 0,
            };
            builder
                .append_data(&mut header, path, &mut reader)
                .map_err(failed)?;
            if reader.count != meta.len() {
                bail!(
                    "{} changed while the build context was read",
                    full.display()
                );
            }
        } else if file_type.is_fifo() || file_type.is_char_device() || file_type.is_block_device() {
            let kind = if file_type.is_fifo() {
                tar::EntryType::Fifo
            } else if file_type.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            };
            header.set_entry_type(kind);
            if !file_type.is_fifo() {
                let rdev = meta.rdev();
                header
                    .set_device_major(nix::sys::stat::major(rdev) as u32)
                    .map_err(failed)?;
                header
                    .set_device_minor(nix::sys::stat::minor(rdev) as u32)
                    .map_err(failed)?;
            }
            builder
                .append_data(&mut header, path, io::empty())
                .map_err(failed)?;
        }
        // Sockets are left out, as docker's archiver does.
        Ok(())
    }
}

/// A reader that counts what it hands out (to notice a file shrinking while archived).
struct Counted<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// A header with the entry's permissions and modification time, owned by 0:0 with no user
/// or group names (docker's `ChownOpts{0, 0}`).
fn header_for(meta: &fs::Metadata) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_mode(meta.mode() & 0o7777);
    header.set_mtime(meta.mtime().max(0) as u64);
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(0);
    header
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn append_memory<W: Write>(
    builder: &mut tar::Builder<W>,
    file: &MemoryFile,
    mtime: u64,
) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(file.mode);
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(file.data.len() as u64);
    builder
        .append_data(&mut header, &file.path, file.data.as_slice())
        .with_context(|| format!("adding {} to the build context", file.path))
}

/// A tar holding only `data` as `Dockerfile` (a Dockerfile piped to `berth build -`).
pub fn single_dockerfile_tar(data: Vec<u8>) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let file = MemoryFile {
        path: DEFAULT_DOCKERFILE.to_string(),
        data,
        mode: 0o600,
    };
    append_memory(&mut builder, &file, now_unix())?;
    builder
        .into_inner()
        .context("finishing the context archive")
}

/// What `berth build -` found on stdin, judged from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdinContent {
    /// A plain tar archive.
    Tar,
    /// A gzip, bzip2, xz or zstd stream (a compressed tar).
    Compressed,
    /// Anything else: a Dockerfile.
    Dockerfile,
}

/// How many leading bytes [`classify_stdin`] needs to decide.
pub const STDIN_PEEK: usize = 1024;

/// Tells a context archive from a lone Dockerfile like docker's `IsArchive`: a compression
/// magic number, or `ustar` at offset 257 of a tar header.
pub fn classify_stdin(head: &[u8]) -> StdinContent {
    const MAGICS: [&[u8]; 4] = [
        &[0x1f, 0x8b, 0x08],
        b"BZh",
        &[0xfd, b'7', b'z', b'X', b'Z', 0x00],
        &[0x28, 0xb5, 0x2f, 0xfd],
    ];
    if MAGICS.iter().any(|m| head.starts_with(m)) {
        return StdinContent::Compressed;
    }
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        return StdinContent::Tar;
    }
    StdinContent::Dockerfile
}

/// Reads up to `limit` bytes (fewer only at end of input).
pub fn read_head(reader: &mut dyn Read, limit: usize) -> io::Result<Vec<u8>> {
    let mut head = vec![0u8; limit];
    let mut filled = 0;
    while filled < limit {
        match reader.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    head.truncate(filled);
    Ok(head)
}

/// Resolves the context directory like docker's `ResolveAndValidateContextPath`: absolute,
/// symlinks evaluated, and a directory.
pub fn context_root(dir: &str) -> Result<PathBuf> {
    if fs::metadata(dir).is_err() {
        bail!("path {dir:?} not found");
    }
    let abs = std::path::absolute(dir).map_err(|e| {
        anyhow!("unable to get absolute context directory of given context directory {dir:?}: {e}")
    })?;
    let root = fs::canonicalize(&abs).map_err(|e| {
        anyhow!(
            "unable to evaluate symlinks in context path: {}",
            lstat_error(&abs, &e)
        )
    })?;
    if !root.is_dir() {
        bail!("context must be a directory: {}", root.display());
    }
    Ok(root)
}

/// Finds the Dockerfile of a local build like docker's `getDockerfileRelPath`: `-f` is
/// relative to the current directory, the default is `PATH/Dockerfile` (or
/// `PATH/dockerfile` when only that exists), symlinks are resolved, and a Dockerfile outside
/// the context is read, to be added under a generated name.
pub fn local_dockerfile(root: &Path, file: Option<&str>) -> Result<DockerfileSource> {
    let given = match file {
        Some(f) if !f.is_empty() => std::path::absolute(f)
            .map_err(|e| anyhow!("unable to get absolute path to Dockerfile: {e}"))?,
        _ => {
            let default = root.join(DEFAULT_DOCKERFILE);
            let lower = root.join(DEFAULT_DOCKERFILE.to_ascii_lowercase());
            if fs::symlink_metadata(&default).is_err() && fs::symlink_metadata(&lower).is_ok() {
                lower
            } else {
                default
            }
        }
    };
    let resolved = fs::canonicalize(&given).map_err(|e| {
        anyhow!(
            "unable to evaluate symlinks in Dockerfile path: {}",
            lstat_error(&given, &e)
        )
    })?;
    match resolved.strip_prefix(root) {
        Ok(rel) if !rel.as_os_str().is_empty() => {
            let rel = rel
                .to_str()
                .ok_or_else(|| anyhow!("Dockerfile path is not UTF-8: {}", resolved.display()))?;
            Ok(DockerfileSource::InContext(rel.to_string()))
        }
        _ => {
            let data =
                fs::read(&resolved).map_err(|e| anyhow!("unable to open Dockerfile: {e}"))?;
            Ok(DockerfileSource::External(data))
        }
    }
}

/// Go's `lstat <path>: no such file or directory` wording for a failed lookup.
fn lstat_error(path: &Path, err: &io::Error) -> String {
    let what = match err.kind() {
        io::ErrorKind::NotFound => "no such file or directory".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => err.to_string(),
    };
    format!("lstat {}: {what}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// (path, type, mode, uid, gid, link target, content) of every archive entry.
    fn entries(data: &[u8]) -> Vec<(String, tar::EntryType, u32, u64, u64, String, String)> {
        let mut archive = tar::Archive::new(data);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let mut content = String::new();
                e.read_to_string(&mut content).unwrap();
                (
                    path,
                    h.entry_type(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    link,
                    content,
                )
            })
            .collect()
    }

    fn paths(data: &[u8]) -> Vec<String> {
        entries(data).into_iter().map(|e| e.0).collect()
    }

    fn write(root: &Path, path: &str, text: &str) {
        let full = root.join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, text).unwrap();
    }

    #[test]
    fn dockerignore_with_exceptions_and_double_star() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "Dockerfile", "FROM busybox\n");
        write(root, "app/main.go", "package main\n");
        write(root, "app/debug.log", "x");
        write(root, "deep/a/b/trace.log", "x");
        write(root, "docs/keep.md", "keep");
        write(root, "docs/drop.md", "drop");
        write(root, "secret.env", "x");
        write(
            root,
            ".dockerignore",
            "# build junk\n**/*.log\ndocs\n!docs/keep.md\n/secret.env\n",
        );
        let ctx =
            DirContext::prepare(root, DockerfileSource::InContext("Dockerfile".into())).unwrap();
        assert_eq!(ctx.dockerfile(), "Dockerfile");
        let tar = ctx.write_tar(Vec::new()).unwrap();
        assert_eq!(
            paths(&tar),
            vec![
                ".dockerignore",
                "Dockerfile",
                "app/",
                "app/main.go",
                "deep/",
                "deep/a/",
                "deep/a/b/",
                "docs/",
                "docs/keep.md",
            ]
        );
    }

    #[test]
    fn dockerfile_and_dockerignore_are_always_sent() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "build/Dockerfile.dev", "FROM busybox\n");
        write(root, "build/other", "x");
        write(root, "src/a.c", "x");
        write(root, ".dockerignore", "*\n");
        let ctx = DirContext::prepare(
            root,
            DockerfileSource::InContext("build/Dockerfile.dev".into()),
        )
        .unwrap();
        let tar = ctx.write_tar(Vec::new()).unwrap();
        assert_eq!(
            paths(&tar),
            vec![".dockerignore", "build/", "build/Dockerfile.dev"]
        );
    }

    #[test]
    fn entries_are_sorted_owned_by_root_and_links_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "Dockerfile", "FROM busybox\n");
        write(root, "b/z", "z");
        write(root, "a.txt", "hello");
        write(root, "b-c", "bc");
        symlink("a.txt", root.join("link")).unwrap();
        symlink("/nonexistent/target", root.join("dangling")).unwrap();
        fs::hard_link(root.join("a.txt"), root.join("hard")).unwrap();
        nix::unistd::chown(
            &root.join("a.txt"),
            Some(nix::unistd::Uid::from_raw(1234)),
            Some(nix::unistd::Gid::from_raw(1234)),
        )
        .unwrap();
        let ctx =
            DirContext::prepare(root, DockerfileSource::InContext("Dockerfile".into())).unwrap();
        let all = entries(&ctx.write_tar(Vec::new()).unwrap());
        let names: Vec<&str> = all.iter().map(|e| e.0.as_str()).collect();
        // `/` sorts before every other byte: `b/z` follows `b` and precedes `b-c`.
        assert_eq!(
            names,
            vec![
                "Dockerfile",
                "a.txt",
                "b/",
                "b/z",
                "b-c",
                "dangling",
                "hard",
                "link"
            ]
        );
        for e in &all {
            assert_eq!((e.3, e.4), (0, 0), "{} is not owned by 0:0", e.0);
        }
        let by_name = |n: &str| all.iter().find(|e| e.0 == n).unwrap();
        assert_eq!(by_name("a.txt").6, "hello");
        assert_eq!(by_name("link").1, tar::EntryType::Symlink);
        assert_eq!(by_name("link").5, "a.txt");
        assert_eq!(by_name("dangling").5, "/nonexistent/target");
        assert_eq!(by_name("hard").1, tar::EntryType::Link);
        assert_eq!(by_name("hard").5, "a.txt");
        assert_eq!(by_name("b/").1, tar::EntryType::Directory);
    }

    #[test]
    fn external_dockerfile_gets_a_generated_name_hidden_by_dockerignore() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ctx");
        write(&root, "data.txt", "d");
        write(&root, ".dockerignore", "*.tmp");
        write(
            dir.path(),
            "elsewhere/Dockerfile",
            "FROM busybox\nCOPY . /\n",
        );
        let outside = dir.path().join("elsewhere/Dockerfile");
        let resolved = context_root(root.to_str().unwrap()).unwrap();
        assert_eq!(resolved, fs::canonicalize(&root).unwrap());
        let source = local_dockerfile(&resolved, Some(outside.to_str().unwrap())).unwrap();
        assert_eq!(
            source,
            DockerfileSource::External(b"FROM busybox\nCOPY . /\n".to_vec())
        );
        let ctx = DirContext::prepare(&resolved, source).unwrap();
        let name = ctx.dockerfile().to_string();
        assert!(name.starts_with(".dockerfile."), "{name}");
        assert_eq!(name.len(), ".dockerfile.".len() + 20);
        let all = entries(&ctx.write_tar(Vec::new()).unwrap());
        let names: Vec<&str> = all.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, vec![name.as_str(), ".dockerignore", "data.txt"]);
        assert_eq!(all[0].6, "FROM busybox\nCOPY . /\n");
        assert_eq!(all[1].6, format!("*.tmp\n{name}\n"));
        // The amended ignore file hides the generated Dockerfile from `COPY .`.
        let m = IgnoreMatcher::new(&dockerignore_patterns(&all[1].6)).unwrap();
        assert!(m.is_excluded(&name));
        assert!(!m.is_excluded("data.txt"));
    }

    #[test]
    fn external_dockerfile_without_dockerignore_creates_one() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "x", "x");
        let ctx = DirContext::prepare(dir.path(), DockerfileSource::External(b"FROM a\n".to_vec()))
            .unwrap();
        let all = entries(&ctx.write_tar(Vec::new()).unwrap());
        assert_eq!(all.len(), 3);
        assert_eq!(all[1].0, ".dockerignore");
        assert_eq!(all[1].6, format!("\n{}\n", ctx.dockerfile()));
        assert_eq!(all[1].2, 0o600);
    }

    #[test]
    fn dockerfile_resolution_follows_docker() {
        let dir = tempfile::tempdir().unwrap();
        let root = &fs::canonicalize(dir.path()).unwrap();
        let err = local_dockerfile(root, None).unwrap_err().to_string();
        assert!(
            err.starts_with("unable to evaluate symlinks in Dockerfile path: lstat ")
                && err.ends_with("/Dockerfile: no such file or directory"),
            "{err}"
        );
        write(root, "dockerfile", "FROM a\n");
        let source = local_dockerfile(root, None).unwrap();
        assert_eq!(source, DockerfileSource::InContext("dockerfile".into()));
        write(root, "sub/Custom", "FROM a\n");
        let custom = root.join("sub/Custom");
        let source = local_dockerfile(root, Some(custom.to_str().unwrap())).unwrap();
        assert_eq!(source, DockerfileSource::InContext("sub/Custom".into()));
        let file = root.join("dockerfile");
        let err = context_root(file.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("context must be a directory: "), "{err}");
        let missing = root.join("nope");
        let err = context_root(missing.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!("path {:?} not found", missing.to_str().unwrap())
        );
    }

    #[test]
    fn stdin_content_is_told_apart() {
        let tar = single_dockerfile_tar(b"FROM busybox\n".to_vec()).unwrap();
        assert_eq!(
            classify_stdin(&tar[..STDIN_PEEK.min(tar.len())]),
            StdinContent::Tar
        );
        assert_eq!(
            entries(&tar)
                .into_iter()
                .map(|e| (e.0, e.6))
                .collect::<Vec<_>>(),
            vec![("Dockerfile".to_string(), "FROM busybox\n".to_string())]
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(classify_stdin(&gz), StdinContent::Compressed);
        assert_eq!(classify_stdin(b"BZh91AY&SY"), StdinContent::Compressed);
        assert_eq!(
            classify_stdin(b"FROM busybox\nRUN echo ustar\n"),
            StdinContent::Dockerfile
        );
        assert_eq!(classify_stdin(b""), StdinContent::Dockerfile);
        let mut short = io::Cursor::new(b"FROM a\n".to_vec());
        assert_eq!(read_head(&mut short, STDIN_PEEK).unwrap(), b"FROM a\n");
    }

    #[test]
    fn pattern_escaping_matches_literally() {
        let m = IgnoreMatcher::new(&["*".to_string(), format!("!{}", escape_pattern("a[1]*.df"))])
            .unwrap();
        assert!(!m.is_excluded("a[1]*.df"));
        assert!(m.is_excluded("a1x.df"));
    }
}
