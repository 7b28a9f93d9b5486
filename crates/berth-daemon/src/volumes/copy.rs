//! The copy-up: what an image has at a volume's destination, copied into the empty volume
//! before the container first starts (unless `nocopy`).

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::Path;

/// Copies what the image has at `dir` (resolved inside `rootfs`, so symlinks cannot lead
/// out of it) into the empty volume directory `target`, keeping owners and modes. A path the
/// image lacks, or that is no directory, copies nothing.
pub(super) fn copy_up(rootfs: &Path, dir: &str, target: &Path) -> std::io::Result<()> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};

    let root = File::open(rootfs)?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let fd = match openat2(root.as_raw_fd(), dir, how) {
        Ok(fd) => fd,
        Err(nix::Error::ENOENT | nix::Error::ENOTDIR) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    // SAFETY: openat2 returned a fresh descriptor that nothing else owns.
    let source = unsafe { OwnedFd::from_raw_fd(fd) };
    let stat = nix::sys::stat::fstat(source.as_raw_fd())?;
    copy_dir_contents(source, target)?;
    std::os::unix::fs::chown(target, Some(stat.st_uid), Some(stat.st_gid))?;
    std::fs::set_permissions(
        target,
        std::os::unix::fs::PermissionsExt::from_mode(stat.st_mode & 0o7777),
    )
}

/// Copies the entries of the open directory `dir` into `target`, never following a symlink
/// on the source side.
fn copy_dir_contents(dir: OwnedFd, target: &Path) -> std::io::Result<()> {
    use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
    use nix::sys::stat::{Mode, SFlag, fstatat};
    use std::os::unix::fs::PermissionsExt;

    let mut dir = nix::dir::Dir::from_fd(dir.into_raw_fd())?;
    let dir_fd = dir.as_raw_fd();
    let names: Vec<std::ffi::CString> = dir
        .iter()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect();
    for name in names {
        let stat = fstatat(Some(dir_fd), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
        let dest = target
            .join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name.as_bytes()));
        let kind = SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits());
        let nofollow = OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        if kind == SFlag::S_IFDIR {
            std::fs::create_dir(&dest)?;
            let fd = openat(
                Some(dir_fd),
                name.as_c_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | nofollow,
                Mode::empty(),
            )?;
            // SAFETY: openat returned a fresh descriptor that nothing else owns.
            copy_dir_contents(unsafe { OwnedFd::from_raw_fd(fd) }, &dest)?;
        } else if kind == SFlag::S_IFREG {
            let fd = openat(
                Some(dir_fd),
                name.as_c_str(),
                OFlag::O_RDONLY | nofollow,
                Mode::empty(),
            )?;
            // SAFETY: openat returned a fresh descriptor that nothing else owns.
            let mut source = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
            let mut out = File::create_new(&dest)?;
            std::io::copy(&mut source, &mut out)?;
        } else if kind == SFlag::S_IFLNK {
            let link = readlinkat(Some(dir_fd), name.as_c_str())?;
            std::os::unix::fs::symlink(link, &dest)?;
        } else {
            nix::sys::stat::mknod(
                &dest,
                kind,
                Mode::from_bits_truncate(stat.st_mode & 0o7777),
                stat.st_rdev,
            )?;
        }
        std::os::unix::fs::lchown(&dest, Some(stat.st_uid), Some(stat.st_gid))?;
        if kind != SFlag::S_IFLNK {
            std::fs::set_permissions(&dest, PermissionsExt::from_mode(stat.st_mode & 0o7777))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_up_keeps_modes_and_stays_in_the_root() {
        use std::os::unix::fs::PermissionsExt;

        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/sub")).unwrap();
        std::fs::write(root.path().join("etc/sub/file"), b"hello").unwrap();
        std::fs::set_permissions(
            root.path().join("etc/sub/file"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::os::unix::fs::chown(root.path().join("etc/sub"), Some(1234), Some(4321)).unwrap();
        std::os::unix::fs::symlink("/etc/sub/file", root.path().join("etc/link")).unwrap();
        copy_up(root.path(), "/etc", target.path()).unwrap();
        let sub = std::fs::metadata(target.path().join("sub")).unwrap();
        assert_eq!(
            (
                std::os::unix::fs::MetadataExt::uid(&sub),
                std::os::unix::fs::MetadataExt::gid(&sub)
            ),
            (1234, 4321)
        );
        assert_eq!(
            std::fs::read(target.path().join("sub/file")).unwrap(),
            b"hello"
        );
        let mode = std::fs::metadata(target.path().join("sub/file"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        assert_eq!(
            std::fs::read_link(target.path().join("link")).unwrap(),
            Path::new("/etc/sub/file")
        );

        // A symlink leading out of the root resolves inside it: nothing from outside leaks.
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        let target2 = tempfile::tempdir().unwrap();
        copy_up(root.path(), "/escape", target2.path()).unwrap();
        assert!(!target2.path().join("secret").exists());
    }
}
