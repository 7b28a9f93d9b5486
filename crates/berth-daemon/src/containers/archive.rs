//! `docker cp`: `HEAD`, `GET` and `PUT /containers/{id}/archive`.
//!
//! The files are those moby's `cp` sees: the container's root filesystem with its volumes
//! and binds on top, and its `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` (not the
//! runtime's `/proc`, `/sys`, `/dev` or tmpfs mounts). They are assembled in a short-lived
//! private mount namespace, on a thread of its own: the running container's already mounted
//! root (or, when it is stopped, its layers mounted afresh) and bind mounts of its mount
//! sources. Nothing of it is visible on the host, and all of it vanishes with the thread,
//! even if the daemon dies. The container's operation lock is held meanwhile, as moby holds
//! the container's, so it cannot start (mounting its layer twice) or be torn down under the
//! copy.
//!
//! Paths are then resolved by [`super::rootfs`], inside that root only.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_api::archive::{self as wire, ContainerPathStat};
use tokio::sync::oneshot;

use super::rootfs::{self, ExtractOptions, Root};
use super::{Container, user};
use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};
use crate::volumes::{MountKind, MountPoint};

/// `PUT archive` options.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtractRequest {
    /// `noOverwriteDirNonDir`: refuse to replace a directory by a file or the reverse.
    pub no_overwrite_dir_non_dir: bool,
    /// `copyUIDGID`: own the files by the container's user (its `Config.User`).
    pub copy_uid_gid: bool,
}

/// What the private root of a copy is made of.
#[derive(Debug)]
struct CopyRoot {
    base: RootBase,
    mounts: Vec<MountPoint>,
    /// `(file in the container directory, destination)` for the generated /etc files.
    network_files: Vec<(PathBuf, String)>,
    read_only: bool,
}

/// Where the root filesystem comes from.
#[derive(Debug)]
enum RootBase {
    /// The running container's root, mounted at this directory.
    Mounted(PathBuf),
    /// A stopped container's layers, to be mounted at `target`.
    Layers {
        layers: Vec<berth_store::snapshot::Mount>,
        target: PathBuf,
    },
}

impl Daemon {
    /// `HEAD /containers/{id}/archive?path=`.
    pub async fn stat_container_path(
        &self,
        reference: &str,
        path: &str,
    ) -> ServiceResult<ContainerPathStat> {
        let container = self.containers.get(reference)?;
        let (tx, rx) = oneshot::channel();
        let (reference_owned, path_owned) = (reference.to_string(), path.to_string());
        self.spawn_in_root(container, move |root| {
            let stat = root.and_then(|root| {
                let located = root
                    .locate(&path_owned)
                    .map_err(|e| path_error(e, &path_owned, &reference_owned))?;
                Ok(root.path_stat(&located))
            });
            let _ = tx.send(stat);
        })
        .await;
        rx.await
            .map_err(|_| ServiceError::internal("the copy task ended without an answer"))?
    }

    /// `GET /containers/{id}/archive?path=`: returns the path's stat once it is found; the
    /// tar stream then goes to `out` (ending early if `out` fails).
    pub async fn archive_container_path(
        &self,
        reference: &str,
        path: &str,
        mut out: Box<dyn Write + Send>,
    ) -> ServiceResult<ContainerPathStat> {
        let container = self.containers.get(reference)?;
        let (tx, rx) = oneshot::channel();
        let (reference_owned, path_owned) = (reference.to_string(), path.to_string());
        let id = container.id.clone();
        self.spawn_in_root(container.clone(), move |root| {
            let located = root.and_then(|root| {
                let located = root
                    .locate(&path_owned)
                    .map_err(|e| path_error(e, &path_owned, &reference_owned))?;
                Ok((root.path_stat(&located), located))
            });
            let located = match located {
                Ok((stat, located)) => {
                    let _ = tx.send(Ok(stat));
                    located
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            if let Err(e) = rootfs::write_archive(&located, &mut out) {
                tracing::debug!(container = %id, "archive of {path_owned} ended early: {e}");
            }
        })
        .await;
        let stat = rx
            .await
            .map_err(|_| ServiceError::internal("the copy task ended without an answer"))??;
        self.container_event(&container, "archive-path", HashMap::new());
        Ok(stat)
    }

    /// `PUT /containers/{id}/archive?path=`: extracts a tar stream into the directory `path`
    /// (its symlinks followed inside the container).
    pub async fn extract_to_container(
        &self,
        reference: &str,
        path: &str,
        request: ExtractRequest,
        mut input: Box<dyn Read + Send>,
    ) -> ServiceResult<()> {
        let container = self.containers.get(reference)?;
        let (user, read_only_rootfs) = {
            let r = container.record();
            (
                r.config.user.clone().unwrap_or_default(),
                r.host_config.readonly_rootfs.unwrap_or(false),
            )
        };
        let (tx, rx) = oneshot::channel();
        let (reference_owned, path_owned) = (reference.to_string(), path.to_string());
        self.spawn_in_root(container.clone(), move |root| {
            let result = root.and_then(|root| {
                let dest = root.follow(&wire::container_abs_path(&path_owned));
                let located = root
                    .locate(&dest)
                    .map_err(|e| path_error(e, &path_owned, &reference_owned))?;
                if !located.is_dir() {
                    return Err(ServiceError::invalid("extraction point is not a directory"));
                }
                if root.dir_is_read_only(&dest) {
                    return Err(ServiceError::invalid(if read_only_rootfs {
                        "container rootfs is marked read-only"
                    } else {
                        "mounted volume is marked read-only"
                    }));
                }
                let chown = if request.copy_uid_gid && !user.is_empty() {
                    Some(container_user(root, &user)?)
                } else {
                    None
                };
                let options = ExtractOptions {
                    no_overwrite_dir_non_dir: request.no_overwrite_dir_non_dir,
                    chown,
                };
                rootfs::extract(root, &dest, &mut input, options).map_err(extract_error)
            });
            let _ = tx.send(result);
        })
        .await;
        rx.await
            .map_err(|_| ServiceError::internal("the copy task ended without an answer"))??;
        self.container_event(&container, "extract-to-dir", HashMap::new());
        Ok(())
    }

    /// Runs `work` on the container's root filesystem (see the module comment), on a thread
    /// of its own, without waiting for it to finish: `work` reports through its own channels.
    async fn spawn_in_root<F>(&self, container: Arc<Container>, work: F)
    where
        F: FnOnce(ServiceResult<&Root>) + Send + 'static,
    {
        let daemon = self.handle();
        tokio::spawn(async move {
            let guard = container.op_lock.lock().await;
            let record = container.snapshot();
            let running = record.state.status.is_active();
            let store = daemon.store.clone();
            let id = record.id.clone();
            let rootfs = daemon.rootfs_dir(&id);
            let exec_root = daemon.config.exec_root.clone();
            // The base, and the temporary mount point a stopped container's layers need.
            let base = tokio::task::spawn_blocking(move || -> ServiceResult<_> {
                if running {
                    if !super::is_mountpoint(&rootfs) {
                        return Err(ServiceError::internal(format!(
                            "the root filesystem of container {id} is not mounted"
                        )));
                    }
                    return Ok((RootBase::Mounted(rootfs), None));
                }
                let layers = store.container_mounts(&id)?;
                let target = tempfile::Builder::new()
                    .prefix("cp-")
                    .tempdir_in(&exec_root)?;
                let base = RootBase::Layers {
                    layers,
                    target: target.path().to_path_buf(),
                };
                Ok((base, Some(target)))
            })
            .await
            .map_err(ServiceError::from)
            .and_then(|r| r);
            let (base, target) = match base {
                Ok(b) => b,
                Err(e) => return work(Err(e)),
            };
            let dir = daemon.container_dir(&record.id);
            let network_files = [
                ("hostname", "/etc/hostname"),
                ("hosts", "/etc/hosts"),
                ("resolv.conf", "/etc/resolv.conf"),
            ]
            .into_iter()
            .filter(|(_, dest)| !record.mounts.iter().any(|m| m.destination == *dest))
            .map(|(name, dest)| (dir.join(name), dest.to_string()))
            .collect();
            let plan = CopyRoot {
                base,
                mounts: record.mounts.clone(),
                network_files,
                read_only: record.host_config.readonly_rootfs.unwrap_or(false),
            };
            let (done_tx, done_rx) = oneshot::channel();
            let spawned = std::thread::Builder::new()
                .name("cp-root".into())
                .spawn(move || {
                    match private_root(&plan) {
                        Ok(root) => work(Ok(&root)),
                        Err(e) => work(Err(e)),
                    }
                    let _ = done_tx.send(());
                });
            if let Err(e) = spawned {
                tracing::warn!(container = %record.id, "cannot start the copy thread: {e}");
            }
            let _ = done_rx.await;
            // The thread's mount namespace, and every mount in it, went with the thread.
            drop(target);
            drop(guard);
        });
    }
}

/// On the calling thread (which it dedicates): a private mount namespace holding the
/// container's root filesystem with its volumes, binds and /etc files on top.
fn private_root(plan: &CopyRoot) -> ServiceResult<Root> {
    use nix::mount::{MsFlags, mount};
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        ServiceError::internal(format!("cannot prepare the container's files: {what}: {e}"))
    };
    // Unsharing the mount namespace also unshares this thread's filesystem attributes, which
    // is allowed in a multi-threaded process; the namespace dies with the thread.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| fail("unshare", &e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| fail("make mounts private", &e))?;
    let root_dir = match &plan.base {
        RootBase::Mounted(dir) => dir.clone(),
        RootBase::Layers { layers, target } => {
            berth_store::snapshot::mount_all(layers, target)
                .map_err(|e| fail("mount layers", &e))?;
            target.clone()
        }
    };
    if plan.read_only {
        remount_read_only(&root_dir).map_err(|e| fail("read-only root", &e))?;
    }
    let root = Root::open(&root_dir).map_err(|e| fail("open root", &e))?;
    let mut binds: Vec<(&Path, &str, bool)> = plan
        .mounts
        .iter()
        .filter(|m| m.kind != MountKind::Tmpfs && !m.source.is_empty())
        .map(|m| (Path::new(&m.source), m.destination.as_str(), m.read_only))
        .chain(
            plan.network_files
                .iter()
                .map(|(src, dest)| (src.as_path(), dest.as_str(), false)),
        )
        .collect();
    binds.sort_by_key(|(_, dest, _)| dest.split('/').filter(|c| !c.is_empty()).count());
    for (source, destination, read_only) in binds {
        let Ok(meta) = std::fs::metadata(source) else {
            // Never started: a `-v` bind source, a volume or the /etc files not made yet.
            continue;
        };
        let dest = root
            .mount_point(destination, meta.is_dir())
            .map_err(|e| fail(destination, &e))?;
        let dest_path = format!("/proc/self/fd/{}", dest.as_raw_fd());
        mount(
            Some(source),
            dest_path.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| fail(destination, &e))?;
        if read_only {
            let mounted = root
                .mount_point(destination, meta.is_dir())
                .map_err(|e| fail(destination, &e))?;
            remount_read_only(Path::new(&format!("/proc/self/fd/{}", mounted.as_raw_fd())))
                .map_err(|e| fail(destination, &e))?;
        }
    }
    Ok(root)
}

fn remount_read_only(target: &Path) -> nix::Result<()> {
    use nix::mount::MsFlags;
    nix::mount::mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
}

/// The container's `Config.User` as numeric IDs, from its own /etc/passwd and /etc/group.
fn container_user(root: &Root, spec: &str) -> ServiceResult<(u32, u32)> {
    let read = |path: &str| {
        root.read_file(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let user = user::resolve_in(&read("/etc/passwd"), &read("/etc/group"), spec)?;
    Ok((user.uid, user.gid))
}

/// A path that does not exist is docker's 404 (naming the container as the client did).
fn path_error(e: std::io::Error, path: &str, reference: &str) -> ServiceError {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => ServiceError::not_found(format!(
            "Could not find the file {path} in container {reference}"
        )),
        _ => ServiceError::internal(format!("cannot stat {path}: {e}")),
    }
}

fn extract_error(e: std::io::Error) -> ServiceError {
    match (e.kind(), e.raw_os_error()) {
        (std::io::ErrorKind::InvalidInput, _) => ServiceError::invalid(e.to_string()),
        (_, Some(libc::EROFS)) => ServiceError::invalid("container rootfs is marked read-only"),
        _ => ServiceError::internal(format!("cannot extract the archive: {e}")),
    }
}
