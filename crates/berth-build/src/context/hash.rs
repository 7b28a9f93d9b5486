//! Content hashing of selected context files.
//!
//! Files are opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! relative to the context directory, so even a context modified while we
//! read it can not make us read through a symlink or outside the context.
//! Contents are hashed by a few threads (one per core) pulling files from a
//! shared queue, largest first.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};

use super::{ContextEntry, ContextError, EntryKind};

/// `struct open_how` of openat2(2); libc's is non-exhaustive, so it can not be built directly.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn open_dir(root: &Path) -> Result<OwnedFd, ContextError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(root)
        .map_err(|source| ContextError::Io {
            path: root.to_path_buf(),
            source,
        })?;
    Ok(OwnedFd::from(file))
}

/// Opens `relative` below `dir` without following any symlink and without leaving `dir`.
fn open_beneath(dir: &OwnedFd, root: &Path, relative: &str) -> Result<File, ContextError> {
    let io = |source| ContextError::Io {
        path: root.join(relative),
        source,
    };
    let c_path = std::ffi::CString::new(Path::new(relative).as_os_str().as_bytes())
        .map_err(|_| io(std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS,
    };
    // SAFETY: `c_path` is a valid NUL-terminated string and `how` a valid
    // open_how whose size we pass; the kernel only reads both during the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c_path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd >= 0 {
        let fd = i32::try_from(fd)
            .map_err(|_| io(std::io::Error::from(std::io::ErrorKind::InvalidData)))?;
        // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
        return Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(io(err));
    }
    // Kernels before 5.6: the walk already refused symlinks; O_NOFOLLOW guards the last component.
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(root.join(relative))
        .map_err(io)
}

fn hash_one(
    dir: &OwnedFd,
    root: &Path,
    entry: &ContextEntry,
    buf: &mut [u8],
) -> Result<(), ContextError> {
    let mut file = open_beneath(dir, root, &entry.path)?;
    let mut hasher = Sha256::new();
    loop {
        let n = file.read(buf).map_err(|source| ContextError::Io {
            path: root.join(&entry.path),
            source,
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let _ = entry.content.set(hasher.finalize().into());
    Ok(())
}

/// Hashes the contents of `files` (regular files of the index) in parallel.
pub(super) fn hash_files(root: &Path, files: &[&ContextEntry]) -> Result<(), ContextError> {
    if files.is_empty() {
        return Ok(());
    }
    let mut queue: Vec<&ContextEntry> = files.to_vec();
    queue.sort_by_key(|e| std::cmp::Reverse(e.size));
    let dir = open_dir(root)?;
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(queue.len());
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<ContextError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(entry) = queue.get(i) else { break };
                    if let Err(e) = hash_one(&dir, root, entry, &mut buf) {
                        let mut slot = failure.lock().unwrap_or_else(|p| p.into_inner());
                        slot.get_or_insert(e);
                        next.store(queue.len(), Ordering::Relaxed);
                        break;
                    }
                }
            });
        }
    });
    match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Combines entries (sorted, contents hashed) into one `sha256:` digest.
///
/// Each entry contributes its path, a type letter, mode, uid, gid, size,
/// device number, link target and content digest; modification times are
/// left out, as in BuildKit, so touching a file does not change the digest.
pub(super) fn combine(entries: &[&ContextEntry]) -> String {
    let mut hasher = Sha256::new();
    for e in entries {
        let (letter, link) = match &e.kind {
            EntryKind::File => ('f', ""),
            EntryKind::Dir => ('d', ""),
            EntryKind::Symlink { target } => ('l', target.as_str()),
            EntryKind::Special => ('s', ""),
        };
        let content = e.content.get().map(hex::encode).unwrap_or_default();
        let record = format!(
            "{}\0{letter}\0{:o}\0{}\0{}\0{}\0{}\0{link}\0{content}\n",
            e.path.len(),
            e.mode,
            e.uid,
            e.gid,
            e.size,
            e.rdev,
        );
        hasher.update(e.path.as_bytes());
        hasher.update(record.as_bytes());
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}
