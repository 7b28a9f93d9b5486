//! Network namespaces pinned by bind mounts at paths the caller chooses.
//!
//! A container's network namespace is created before the container, bind-mounted at a path such
//! as `<exec-root>/netns/<id>`, and the OCI spec joins it by that path. The mount keeps the
//! namespace alive with nothing running in it, so the bridge and veth can be wired before the
//! container starts and torn down after it exits.
//!
//! Namespace switches happen on a dedicated, short-lived OS thread: `setns`/`unshare` change the
//! calling thread only, and a tokio worker must never be left inside a container's namespace.
//! A netlink socket keeps the namespace it was created in, so "work inside a namespace" means
//! "create the socket on such a thread, then use it from anywhere".

use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

/// Errors creating, entering or removing a network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A file or mount operation on the namespace path failed.
    #[error("network namespace {path}: cannot {action}: {source}")]
    Io {
        /// The namespace (or namespace directory) path.
        path: PathBuf,
        /// What was being done, e.g. "bind-mount".
        action: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// Something already exists at the path.
    #[error("network namespace {0} already exists")]
    Exists(PathBuf),
    /// Setting up the namespace's loopback device failed.
    #[error("network namespace {path}: cannot bring up lo: {source}")]
    Loopback {
        /// The namespace path.
        path: PathBuf,
        /// The netlink failure.
        source: crate::netlink::NetlinkError,
    },
}

fn io_err<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> NetnsError + 'a {
    move |source| NetnsError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

fn errno_err<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(Errno) -> NetnsError + 'a {
    move |errno| NetnsError::Io {
        path: path.to_path_buf(),
        action,
        source: errno.into(),
    }
}

/// Makes `dir` (created if missing) a shared mount point, as `ip netns` does for `/run/netns`.
///
/// Mount namespaces created later (a container's, a shim's) copy every namespace bind mount
/// under `dir`; with a shared `dir` the unmount in [`remove`] propagates into those copies, so
/// they do not keep dead namespaces alive.
pub fn prepare_dir(dir: &Path) -> Result<(), NetnsError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir, "create directory"))?;
    let make_shared = || {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match make_shared() {
        Ok(()) => Ok(()),
        // Not a mount point yet: bind it onto itself first.
        Err(Errno::EINVAL) => {
            mount(
                Some(dir),
                dir,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(errno_err(dir, "bind-mount directory onto itself"))?;
            make_shared().map_err(errno_err(dir, "make directory a shared mount"))
        }
        Err(e) => Err(errno_err(dir, "make directory a shared mount")(e)),
    }
}

/// Undoes [`prepare_dir`]: detaches the self bind mount of `dir` (the directory stays).
pub fn release_dir(dir: &Path) -> Result<(), NetnsError> {
    match umount2(dir, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(errno_err(dir, "unmount directory")(e)),
    }
}

/// Creates a new network namespace pinned at `path` and brings its `lo` up.
///
/// The parent directory must exist. Fails with [`NetnsError::Exists`] if `path` does; on any
/// other failure nothing is left behind.
pub async fn create(path: &Path) -> Result<(), NetnsError> {
    let socket = {
        let path = path.to_path_buf();
        on_thread(move || create_pinned(&path))?
    };
    let result = async {
        let netlink = crate::netlink::Netlink::from_socket(socket).map_err(|source| {
            NetnsError::Loopback {
                path: path.to_path_buf(),
                source,
            }
        })?;
        netlink
            .set_up_by_name("lo")
            .await
            .map_err(|source| NetnsError::Loopback {
                path: path.to_path_buf(),
                source,
            })
    }
    .await;
    if result.is_err() {
        // Best effort: the caller gets the original error.
        let _ = remove(path);
    }
    result
}

/// Runs on a fresh thread: unshares its network namespace, pins it at `path` and returns a
/// netlink socket living in it.
fn create_pinned(path: &Path) -> Result<OwnedFd, NetnsError> {
    match File::options().write(true).create_new(true).open(path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(NetnsError::Exists(path.to_path_buf()));
        }
        Err(e) => return Err(io_err(path, "create mount point file")(e)),
    }
    let pinned = (|| {
        unshare(CloneFlags::CLONE_NEWNET)
            .map_err(errno_err(path, "unshare the network namespace"))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(errno_err(path, "bind-mount"))?;
        netlink_socket().map_err(io_err(path, "open a netlink socket"))
    })();
    if pinned.is_err() {
        let _ = umount2(path, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(path);
    }
    pinned
}

/// Unmounts and deletes the namespace pinned at `path`. Missing namespaces are not an error,
/// so teardown can be retried.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(errno_err(path, "unmount")(e)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path, "delete mount point file")(e)),
    }
}

/// Opens a `NETLINK_ROUTE` socket inside the namespace pinned at `path`.
pub(crate) fn netlink_socket_in(path: &Path) -> Result<OwnedFd, NetnsError> {
    let ns = File::open(path).map_err(io_err(path, "open"))?;
    let path = path.to_path_buf();
    on_thread(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).map_err(errno_err(&path, "enter"))?;
        netlink_socket().map_err(io_err(&path, "open a netlink socket"))
    })
}

fn netlink_socket() -> io::Result<OwnedFd> {
    let socket = rtnetlink::sys::Socket::new(rtnetlink::sys::protocols::NETLINK_ROUTE)?;
    let fd = socket.into_raw_fd();
    // SAFETY: `into_raw_fd` released ownership of a valid, open descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs `work` on a new OS thread that exits afterwards, taking any namespace change with it.
fn on_thread<T: Send>(
    work: impl FnOnce() -> Result<T, NetnsError> + Send,
) -> Result<T, NetnsError> {
    std::thread::scope(|scope| match scope.spawn(work).join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_a_missing_namespace_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        remove(&dir.path().join("absent")).unwrap();
    }

    #[test]
    fn create_refuses_an_existing_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("taken");
        std::fs::write(&path, b"").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt.block_on(create(&path)).unwrap_err();
        assert!(
            matches!(err, NetnsError::Exists(ref p) if p == &path),
            "{err}"
        );
        assert!(path.exists(), "an existing file must be left alone");
    }
}
