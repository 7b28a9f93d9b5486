//! `--chown`: user and group names looked up in the image's own
//! `/etc/passwd` and `/etc/group`, read inside the root.

use std::ffi::OsString;
use std::io::Read;
use std::path::Path;

use nix::fcntl::OFlag;

use super::FsOpsError;
use super::root::{Root, io_error, kind, open_at, sys_error};

/// Larger user databases are refused (BuildKit's limit).
const MAX_USER_FILE: u64 = 10 << 20;

/// Resolves a `--chown` value (`user`, `user:group`, `uid`, `uid:gid`, names
/// and numbers mixed) to numeric ids, reading names from `root`'s
/// `/etc/passwd` and `/etc/group` (symlinks followed inside `root`).
///
/// As BuildKit does: a user name alone gives the user's primary group from
/// passwd, a numeric user alone gives the same number as group, and `root`
/// is 0 without any lookup. A name that is not found fails.
pub fn resolve_owner(root: &Path, chown: &str) -> Result<(u32, u32), FsOpsError> {
    let (user, group) = match chown.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (chown, None),
    };
    if user.is_empty() || group.is_some_and(str::is_empty) {
        return Err(FsOpsError::InvalidChown(chown.to_string()));
    }
    let (uid, primary_gid) = match numeric_id(user) {
        Some(id) => (id, id),
        None => {
            let passwd = read_user_file(root, "passwd")?;
            lookup(&passwd, user, 2)
                .and_then(|fields| Some((fields.0, fields.1?)))
                .ok_or_else(|| FsOpsError::UnknownUser(user.to_string()))?
        }
    };
    let gid = match group {
        None => primary_gid,
        Some(group) => match numeric_id(group) {
            Some(id) => id,
            None => {
                let groups = read_user_file(root, "group")?;
                lookup(&groups, group, 2)
                    .map(|fields| fields.0)
                    .ok_or_else(|| FsOpsError::UnknownGroup(group.to_string()))?
            }
        },
    };
    Ok((uid, gid))
}

fn numeric_id(text: &str) -> Option<u32> {
    if text == "root" {
        return Some(0);
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    None
}

/// The numeric fields at `index` and `index + 1` of the first line whose
/// first field is `name` (`name:x:uid:gid:...` or `name:x:gid:members`).
fn lookup(text: &str, name: &str, index: usize) -> Option<(u32, Option<u32>)> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&name))
        .and_then(|fields| {
            let id = fields.get(index)?.trim().parse().ok()?;
            let next = fields.get(index + 1).and_then(|f| f.trim().parse().ok());
            Some((id, next))
        })
}

/// Reads `/etc/<name>` inside `root`; a missing file reads as empty (so the
/// name is then reported as not found).
fn read_user_file(root: &Path, name: &str) -> Result<String, FsOpsError> {
    let display = format!("/etc/{name}");
    let root = Root::open(root, "")?;
    let path = [OsString::from("etc"), OsString::from(name)];
    let resolved = match root.walk(&path, true, None) {
        Ok(resolved) => resolved,
        Err(FsOpsError::NotFound(_) | FsOpsError::NotADirectory(_)) => return Ok(String::new()),
        Err(e) => return Err(e),
    };
    let Some(file_name) = resolved.name else {
        return Err(FsOpsError::NotAFile(display));
    };
    let fd = match open_at(
        &resolved.dir,
        &file_name,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK,
        0,
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(String::new()),
        Err(e) => return Err(sys_error("opening", &display)(e)),
    };
    let st = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&fd))
        .map_err(sys_error("inspecting", &display))?;
    if kind(&st) != nix::sys::stat::SFlag::S_IFREG {
        return Err(FsOpsError::NotAFile(display));
    }
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(MAX_USER_FILE + 1)
        .read_to_string(&mut text)
        .map_err(io_error("reading", &display))?;
    if text.len() as u64 > MAX_USER_FILE {
        return Err(FsOpsError::Io {
            action: "reading",
            path: display,
            source: std::io::Error::other("file is larger than 10 MiB"),
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n# comment\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nstaff:x:50:app\napp:x:1001:\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn names_and_numbers() {
        let root = fake_root();
        let r = root.path();
        assert_eq!(resolve_owner(r, "app").unwrap(), (1000, 1001));
        assert_eq!(resolve_owner(r, "app:staff").unwrap(), (1000, 50));
        assert_eq!(resolve_owner(r, "app:7").unwrap(), (1000, 7));
        assert_eq!(resolve_owner(r, "1000:50").unwrap(), (1000, 50));
        assert_eq!(resolve_owner(r, "5").unwrap(), (5, 5));
        assert_eq!(resolve_owner(r, "5:staff").unwrap(), (5, 50));
        assert_eq!(resolve_owner(r, "root:root").unwrap(), (0, 0));
    }

    #[test]
    fn unknown_names_fail() {
        let root = fake_root();
        let err = resolve_owner(root.path(), "nobody").unwrap_err();
        assert!(
            matches!(err, FsOpsError::UnknownUser(ref u) if u == "nobody"),
            "{err}"
        );
        assert!(err.to_string().contains("nobody"));
        let err = resolve_owner(root.path(), "app:wheel").unwrap_err();
        assert!(
            matches!(err, FsOpsError::UnknownGroup(ref g) if g == "wheel"),
            "{err}"
        );
        assert!(matches!(
            resolve_owner(root.path(), ":staff"),
            Err(FsOpsError::InvalidChown(_))
        ));
        assert!(matches!(
            resolve_owner(root.path(), "app:"),
            Err(FsOpsError::InvalidChown(_))
        ));
    }

    #[test]
    fn scratch_without_passwd_knows_only_numbers_and_root() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(resolve_owner(root.path(), "root").unwrap(), (0, 0));
        assert_eq!(resolve_owner(root.path(), "42:43").unwrap(), (42, 43));
        assert!(matches!(
            resolve_owner(root.path(), "app"),
            Err(FsOpsError::UnknownUser(_))
        ));
    }

    #[test]
    fn a_passwd_that_is_not_a_file_is_refused_without_hanging() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        nix::unistd::mkfifo(
            &root.path().join("etc/passwd"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let err = resolve_owner(root.path(), "app").unwrap_err();
        assert!(
            matches!(err, FsOpsError::NotAFile(ref p) if p == "/etc/passwd"),
            "{err}"
        );
    }

    #[test]
    fn passwd_symlink_is_resolved_inside_the_root() {
        // The image's /etc/passwd is a symlink to an absolute path: it must be
        // read from the image, never from the host.
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::write(root.join("data/passwd"), "svc:x:777:778::/:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("/data/passwd", root.join("etc/passwd")).unwrap();
        assert_eq!(resolve_owner(&root, "svc").unwrap(), (777, 778));

        // A link climbing out with `..` stops at the root: `../../x/passwd`
        // from /etc reads the image's /x/passwd, not the one beside the root.
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
        std::fs::create_dir_all(root.join("x")).unwrap();
        std::fs::write(root.join("x/passwd"), "inside:x:5:6::/:/bin/sh\n").unwrap();
        std::fs::create_dir_all(outer.path().join("x")).unwrap();
        std::fs::write(outer.path().join("x/passwd"), "intruder:x:9:9::/:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("../../x/passwd", root.join("etc/passwd")).unwrap();
        assert_eq!(resolve_owner(&root, "inside").unwrap(), (5, 6));
        assert!(matches!(
            resolve_owner(&root, "intruder"),
            Err(FsOpsError::UnknownUser(_))
        ));
    }
}
