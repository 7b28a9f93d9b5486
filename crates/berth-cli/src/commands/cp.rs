//! `berth cp`: docker's copy between a container and the local filesystem, with the docker
//! CLI's rules for where things land (`CopyInfoSourcePath`, `CopyInfoDestinationPath`,
//! `PrepareArchiveCopy`, trailing `/` and `/.`, `-L`), over `HEAD`, `GET` and `PUT
//! /containers/{id}/archive`.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, anyhow, bail};
use berth_api::archive::{self as wire, ContainerPathStat, PATH_STAT_HEADER};
use clap::Args;
use futures_util::TryStreamExt;
use http_body_util::BodyExt;
use hyper::{Method, header};

use super::Ctx;
use super::cp_tar::{self, Rename};
use super::stream::stdout_is_tty;
use crate::client::{self, enc_path, query};
use crate::output::human_size_prec;

/// `berth cp`
#[derive(Args, Debug)]
#[command(
    override_usage = "berth cp [OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-\n\tberth cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH",
    after_help = "Use '-' as the source to read a tar archive from stdin\nand extract it to a directory destination in a container.\nUse '-' as the destination to stream a tar archive of a\ncontainer source to stdout."
)]
pub struct CpArgs {
    /// Archive mode (copy all uid/gid information)
    #[arg(short = 'a', long = "archive")]
    archive: bool,
    /// Always follow symbol link in SRC_PATH
    #[arg(short = 'L', long = "follow-link")]
    follow_link: bool,
    /// Suppress progress output during copy. Progress output is automatically suppressed if no terminal is attached
    #[arg(short = 'q', long)]
    quiet: bool,
    /// CONTAINER:SRC_PATH, SRC_PATH or -
    #[arg(value_name = "SRC_PATH")]
    source: String,
    /// DEST_PATH, CONTAINER:DEST_PATH or -
    #[arg(value_name = "DEST_PATH")]
    destination: String,
}

/// What the copy rules know of one end (moby's `CopyInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct CopyInfo {
    path: String,
    exists: bool,
    is_dir: bool,
    rebase_name: String,
}

/// `berth cp`.
pub async fn cp(ctx: &Ctx, a: CpArgs) -> Result<()> {
    if a.source.is_empty() {
        bail!("source can not be empty");
    }
    if a.destination.is_empty() {
        bail!("destination can not be empty");
    }
    let (src_container, src_path) = split_cp_arg(&a.source);
    let (dst_container, dst_path) = split_cp_arg(&a.destination);
    // Like docker 28: no summary line unless stdout is a terminal (or -q says so anyway).
    let quiet = a.quiet || !stdout_is_tty();
    match (src_container, dst_container) {
        (Some(c), None) => {
            copy_from_container(ctx, c, src_path, dst_path, a.follow_link, quiet).await
        }
        (None, Some(c)) => {
            copy_to_container(ctx, c, src_path, dst_path, a.follow_link, a.archive, quiet).await
        }
        (Some(_), Some(_)) => bail!("copying between containers is not supported"),
        (None, None) => bail!("must specify at least one container source"),
    }
}

/// docker's `splitCpArg`: `CONTAINER:PATH`, unless the argument is an absolute local path
/// or starts with `.` (`./file:name`).
fn split_cp_arg(arg: &str) -> (Option<&str>, &str) {
    if arg.starts_with('/') {
        return (None, arg);
    }
    match arg.split_once(':') {
        Some((container, path)) if !container.starts_with('.') => (Some(container), path),
        _ => (None, arg),
    }
}

/// An absolute local path, its trailing `/` or `/.` kept.
fn resolve_local_path(path: &str) -> Result<String> {
    let abs = if path.starts_with('/') {
        wire::clean(path)
    } else {
        let cwd = std::env::current_dir().context("cannot read the working directory")?;
        wire::join(&cwd.to_string_lossy(), path)
    };
    Ok(wire::preserve_trailing_dot_or_separator(&abs, path))
}

async fn stat_path(ctx: &Ctx, container: &str, path: &str) -> Result<ContainerPathStat> {
    let req = ctx
        .client
        .request(
            Method::HEAD,
            &format!(
                "/containers/{}/archive{}",
                enc_path(container),
                query(&[("path", path.to_string())])
            ),
        )
        .body(client::empty())?;
    let resp = ctx.client.send(req).await?;
    stat_header(resp.headers())
}

fn stat_header(headers: &header::HeaderMap) -> Result<ContainerPathStat> {
    headers
        .get(PATH_STAT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(ContainerPathStat::from_header)
        .ok_or_else(|| anyhow!("unable to decode container path stat header"))
}

async fn copy_from_container(
    ctx: &Ctx,
    container: &str,
    src_path: &str,
    dst_path: &str,
    follow_link: bool,
    quiet: bool,
) -> Result<()> {
    let dst_path = if dst_path == "-" {
        dst_path.to_string()
    } else {
        resolve_local_path(dst_path)?
    };
    validate_output_path(&dst_path)?;
    let mut src_path = src_path.to_string();
    let mut rebase_name = String::new();
    if follow_link
        && let Ok(stat) = stat_path(ctx, container, &src_path).await
        && stat.is_symlink()
    {
        let mut target = stat.link_target.clone();
        if !target.starts_with('/') {
            let (parent, _) = wire::split_path_dir_entry(&src_path);
            target = wire::join(&parent, &target);
        }
        let (resolved, rebase) = get_rebase_name(&src_path, &target);
        src_path = resolved;
        rebase_name = rebase;
    }
    let resp = ctx
        .client
        .call(
            Method::GET,
            &format!(
                "/containers/{}/archive{}",
                enc_path(container),
                query(&[("path", src_path.clone())])
            ),
        )
        .await?;
    let stat = stat_header(resp.headers())?;
    let stream = resp
        .into_body()
        .into_data_stream()
        .map_err(io::Error::other);
    let mut reader = tokio_util::io::StreamReader::new(stream);
    if dst_path == "-" {
        let mut out = tokio::io::stdout();
        tokio::io::copy(&mut reader, &mut out).await?;
        return Ok(());
    }
    let src_info = CopyInfo {
        path: src_path.clone(),
        exists: true,
        is_dir: stat.is_dir(),
        rebase_name,
    };
    let counted = Arc::new(AtomicU64::new(0));
    let mut input = Counting {
        inner: tokio_util::io::SyncIoBridge::new(reader),
        count: counted.clone(),
    };
    let dest = dst_path.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut renames = Vec::new();
        if !src_info.rebase_name.is_empty() {
            let (_, src_base) = wire::split_path_dir_entry(&src_info.path);
            renames.push(Rename {
                old: src_base,
                new: src_info.rebase_name.clone(),
            });
        }
        let dst_info = copy_info_destination_path(&dest)?;
        let (dst_dir, rename) = prepare_archive_copy(&src_info, &dst_info)?;
        renames.extend(rename);
        let ignored = cp_tar::extract(&mut input, &dst_dir, &renames)?;
        if !ignored.is_empty() {
            // moby's Untar logs the same warning.
            eprintln!(
                "WARNING: ignored xattrs in archive: underlying filesystem doesn't support them: {}",
                ignored.join("; ")
            );
        }
        // The tar reader stops at the end marker; the size reported counts the whole stream.
        io::copy(&mut input, &mut io::sink())?;
        Ok(())
    })
    .await??;
    if !quiet {
        eprintln!(
            "Successfully copied {} to {dst_path}",
            progress_size(counted.load(Ordering::Relaxed))
        );
    }
    Ok(())
}

async fn copy_to_container(
    ctx: &Ctx,
    container: &str,
    src_path: &str,
    dst_path: &str,
    follow_link: bool,
    copy_uid_gid: bool,
    quiet: bool,
) -> Result<()> {
    let src_path = if src_path == "-" {
        src_path.to_string()
    } else {
        resolve_local_path(src_path)?
    };
    let mut dst_info = CopyInfo {
        path: dst_path.to_string(),
        ..Default::default()
    };
    // A missing destination is fine (its parent may exist); the daemon reports conflicts.
    if let Ok(mut stat) = stat_path(ctx, container, dst_path).await {
        let mut found = true;
        if stat.is_symlink() {
            let mut target = stat.link_target.clone();
            if !target.starts_with('/') {
                let (parent, _) = wire::split_path_dir_entry(dst_path);
                target = wire::join(&parent, &target);
            }
            dst_info.path = target.clone();
            match stat_path(ctx, container, &target).await {
                Ok(s) => stat = s,
                Err(_) => found = false,
            }
        }
        if found {
            if stat.mode & wire::MODE_DEVICE != 0 {
                bail!(
                    "destination \"{container}:{dst_path}\" must be a directory or a regular file: got a device"
                );
            }
            dst_info.exists = true;
            dst_info.is_dir = stat.is_dir();
        }
    }
    let counted = Arc::new(AtomicU64::new(0));
    let (resolved_dst, body) = if src_path == "-" {
        if !dst_info.is_dir {
            bail!("destination \"{container}:{dst_path}\" must be a directory");
        }
        (dst_info.path.clone(), client::streamed(tokio::io::stdin()))
    } else {
        let src_info = copy_info_source_path(&src_path, follow_link)?;
        let (dst_dir, rename) = prepare_archive_copy(&src_info, &dst_info)?;
        let (writer, reader) = tokio::io::duplex(64 * 1024);
        let mut out = Counting {
            inner: tokio_util::io::SyncIoBridge::new(writer),
            count: counted.clone(),
        };
        let renames: Vec<Rename> = rename.into_iter().collect();
        tokio::task::spawn_blocking(move || {
            // A failure here ends the body early; the daemon then reports the broken
            // archive, and a daemon error stops this writer with a broken pipe.
            if let Err(e) =
                cp_tar::write_resource(&src_info.path, &src_info.rebase_name, &renames, &mut out)
            {
                eprintln!("{e}");
            }
        });
        (dst_dir, client::streamed(reader))
    };
    let mut params = vec![
        ("path", resolved_dst),
        ("noOverwriteDirNonDir", "true".to_string()),
    ];
    if copy_uid_gid {
        params.push(("copyUIDGID", "true".to_string()));
    }
    let req = ctx
        .client
        .request(
            Method::PUT,
            &format!(
                "/containers/{}/archive{}",
                enc_path(container),
                query(&params)
            ),
        )
        .header(header::CONTENT_TYPE, "text/plain")
        .body(body)?;
    let result = ctx.client.send(req).await.map(drop);
    if !quiet {
        eprintln!(
            "Successfully copied {} to {container}:{}",
            progress_size(counted.load(Ordering::Relaxed)),
            dst_info.path
        );
    }
    result
}

/// go-units `HumanSizeWithPrecision(n, 3)`: `2.05kB`.
fn progress_size(n: u64) -> String {
    human_size_prec(n as f64, 3)
}

/// A reader or writer that counts the bytes going through it.
struct Counting<T> {
    inner: T,
    count: Arc<AtomicU64>,
}

impl<T: Read> Read for Counting<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl<T: Write> Write for Counting<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// docker's `ValidateOutputPath`: the parent must exist; an existing path must be a
/// directory or a regular file.
fn validate_output_path(path: &str) -> Result<()> {
    if path == "-" {
        return Ok(());
    }
    let dir = wire::dir(&wire::clean(path));
    if !dir.is_empty() && dir != "." && !std::path::Path::new(&dir).exists() {
        bail!("invalid output path: directory {dir:?} does not exist");
    }
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        let ft = meta.file_type();
        if ft.is_block_device() || ft.is_char_device() {
            bail!(
                "invalid output path: {path:?} must be a directory or a regular file: got a device"
            );
        }
    }
    Ok(())
}

/// moby's `GetRebaseName`: after a symlink was resolved, the name the archive entries must
/// carry so the copy is named as the user asked.
fn get_rebase_name(path: &str, resolved: &str) -> (String, String) {
    let mut resolved = resolved.to_string();
    if wire::specifies_current_dir(path) && !wire::specifies_current_dir(&resolved) {
        resolved.push_str("/.");
    }
    if wire::has_trailing_separator(path) && !wire::has_trailing_separator(&resolved) {
        resolved.push('/');
    }
    let rebase = if wire::base(path) != wire::base(&resolved) {
        wire::base(path)
    } else {
        String::new()
    };
    (resolved, rebase)
}

/// moby's `CopyInfoSourcePath`: the local source with its symlinks resolved (the last one
/// only with `-L`).
fn copy_info_source_path(path: &str, follow_link: bool) -> Result<CopyInfo> {
    let (resolved, rebase_name) = if follow_link {
        let real = std::fs::canonicalize(path).with_context(|| format!("lstat {path}"))?;
        get_rebase_name(path, &real.to_string_lossy())
    } else {
        let (dir, base) = wire::split(path);
        let real_dir = std::fs::canonicalize(if dir.is_empty() { "." } else { dir })
            .with_context(|| format!("lstat {path}"))?;
        let resolved = format!(
            "{}/{base}",
            real_dir.to_string_lossy().trim_end_matches('/')
        );
        let rebase =
            if wire::has_trailing_separator(path) && wire::base(path) != wire::base(&resolved) {
                wire::base(path)
            } else {
                String::new()
            };
        (resolved, rebase)
    };
    let meta =
        std::fs::symlink_metadata(&resolved).map_err(|e| anyhow!("lstat {resolved}: {e}"))?;
    Ok(CopyInfo {
        path: resolved,
        exists: true,
        is_dir: meta.is_dir(),
        rebase_name,
    })
}

/// moby's `CopyInfoDestinationPath`: the local destination, its symlinks followed (up to
/// ten); a missing one is fine when its parent directory exists.
fn copy_info_destination_path(path: &str) -> Result<CopyInfo> {
    let mut path = path.to_string();
    let original = path.clone();
    let mut n = 0;
    loop {
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if !meta.file_type().is_symlink() => {
                return Ok(CopyInfo {
                    path,
                    exists: true,
                    is_dir: meta.is_dir(),
                    rebase_name: String::new(),
                });
            }
            Ok(_) => {
                n += 1;
                if n > 10 {
                    bail!("too many symlinks in {original}");
                }
                let target = std::fs::read_link(&path)?.to_string_lossy().into_owned();
                path = if target.starts_with('/') {
                    target
                } else {
                    let (parent, _) = wire::split_path_dir_entry(&path);
                    wire::join(&parent, &target)
                };
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (parent, _) = wire::split_path_dir_entry(&path);
                let meta = std::fs::metadata(&parent).map_err(|e| anyhow!("stat {parent}: {e}"))?;
                if !meta.is_dir() {
                    bail!("not a directory");
                }
                return Ok(CopyInfo {
                    path,
                    ..Default::default()
                });
            }
            Err(e) => return Err(anyhow!("lstat {path}: {e}")),
        }
    }
}

/// moby's `PrepareArchiveCopy`: the directory to extract into and the renaming of the
/// source's entries that makes the copy land where docker puts it.
fn prepare_archive_copy(src: &CopyInfo, dst: &CopyInfo) -> Result<(String, Option<Rename>)> {
    let (dst_dir, dst_base) = wire::split_path_dir_entry(&dst.path);
    let (_, mut src_base) = wire::split_path_dir_entry(&src.path);
    if !src.rebase_name.is_empty() {
        src_base = src.rebase_name.clone();
    }
    let rename = Some(Rename {
        old: src_base,
        new: dst_base,
    });
    if dst.exists && dst.is_dir {
        // Extract into the directory as the entries are.
        return Ok((dst.path.clone(), None));
    }
    if dst.exists && src.is_dir {
        bail!("cannot copy directory");
    }
    if dst.exists || src.is_dir {
        return Ok((dst_dir, rename));
    }
    if wire::has_trailing_separator(&dst.path) || wire::specifies_current_dir(&dst.path) {
        // A file cannot become the directory the destination asserts.
        bail!("no such directory");
    }
    Ok((dst_dir, rename))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(path: &str, exists: bool, is_dir: bool) -> CopyInfo {
        CopyInfo {
            path: path.into(),
            exists,
            is_dir,
            rebase_name: String::new(),
        }
    }

    #[test]
    fn arguments_split_like_docker() {
        assert_eq!(split_cp_arg("web:/etc/hosts"), (Some("web"), "/etc/hosts"));
        assert_eq!(split_cp_arg("/abs:path"), (None, "/abs:path"));
        assert_eq!(split_cp_arg("./file:name"), (None, "./file:name"));
        assert_eq!(split_cp_arg("file.txt"), (None, "file.txt"));
        assert_eq!(split_cp_arg("-"), (None, "-"));
    }

    #[test]
    fn archive_copy_rules() {
        // Into an existing directory: as is.
        let (dir, rename) =
            prepare_archive_copy(&info("/h/f.txt", true, false), &info("/tmp/", true, true))
                .unwrap();
        assert_eq!((dir.as_str(), rename), ("/tmp/", None));
        // Onto a new name: into the parent, renamed.
        let (dir, rename) = prepare_archive_copy(
            &info("/h/f.txt", true, false),
            &info("/tmp/new.txt", false, false),
        )
        .unwrap();
        assert_eq!(dir, "/tmp");
        assert_eq!(
            rename,
            Some(Rename {
                old: "f.txt".into(),
                new: "new.txt".into()
            })
        );
        // A directory's contents (`dir/.`) to a new directory.
        let (dir, rename) =
            prepare_archive_copy(&info("/h/d/.", true, true), &info("/tmp/x", false, false))
                .unwrap();
        assert_eq!(dir, "/tmp");
        assert_eq!(rename.unwrap().old, ".");
        // Errors docker gives.
        let e = prepare_archive_copy(&info("/h/d", true, true), &info("/tmp/f", true, false))
            .unwrap_err();
        assert_eq!(e.to_string(), "cannot copy directory");
        let e = prepare_archive_copy(&info("/h/f", true, false), &info("/tmp/nd/", false, false))
            .unwrap_err();
        assert_eq!(e.to_string(), "no such directory");
    }

    #[test]
    fn rebase_names_after_following_links() {
        assert_eq!(
            get_rebase_name("/tmp/link", "/data/target"),
            ("/data/target".into(), "link".into())
        );
        assert_eq!(
            get_rebase_name("/tmp/link/", "/data/target"),
            ("/data/target/".into(), "link".into())
        );
        assert_eq!(
            get_rebase_name("/tmp/d/.", "/data/d"),
            ("/data/d/.".into(), String::new())
        );
    }

    #[test]
    fn local_paths_and_sizes() {
        let cwd = std::env::current_dir().unwrap();
        let rel = resolve_local_path("x/").unwrap();
        assert_eq!(rel, format!("{}/x/", cwd.display()));
        assert_eq!(resolve_local_path("/a/b/.").unwrap(), "/a/b/.");
        assert_eq!(progress_size(2048), "2.05kB");
        assert_eq!(progress_size(512), "512B");
        assert!(validate_output_path("/nonexistent-dir-xyz/file").is_err());
        assert!(validate_output_path("/tmp/somefile").is_ok());
        assert!(validate_output_path("/dev/null").is_err());
    }

    #[test]
    fn local_sources_and_destinations() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().display().to_string();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
        let plain = copy_info_source_path(&format!("{base}/link"), false).unwrap();
        assert!(!plain.is_dir, "the link itself is copied");
        let followed = copy_info_source_path(&format!("{base}/link"), true).unwrap();
        assert!(followed.is_dir);
        assert_eq!(followed.rebase_name, "link");
        let trailing = copy_info_source_path(&format!("{base}/link/"), false).unwrap();
        assert!(trailing.is_dir);
        assert_eq!(trailing.rebase_name, "link");
        let dest = copy_info_destination_path(&format!("{base}/link")).unwrap();
        assert!(dest.exists && dest.is_dir);
        let missing = copy_info_destination_path(&format!("{base}/new")).unwrap();
        assert!(!missing.exists);
        assert!(copy_info_destination_path(&format!("{base}/no/new")).is_err());
    }
}
