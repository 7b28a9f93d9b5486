//! Resolving `--user name[:group]` against the container's own /etc/passwd and /etc/group.

use std::path::Path;

use crate::error::{ServiceError, ServiceResult};

/// A resolved process identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// Numeric user ID.
    pub uid: u32,
    /// Numeric primary group ID.
    pub gid: u32,
    /// Supplementary groups the user belongs to.
    pub additional_gids: Vec<u32>,
    /// The home directory, for `HOME`.
    pub home: String,
}

/// Resolves a user spec inside `rootfs`. Empty means root. Numeric IDs need no passwd entry.
pub fn resolve(rootfs: &Path, spec: &str) -> ServiceResult<ResolvedUser> {
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let group = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
    resolve_in(&passwd, &group, spec)
}

pub(crate) fn resolve_in(passwd: &str, group: &str, spec: &str) -> ServiceResult<ResolvedUser> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    // passwd: name:x:uid:gid:gecos:home:shell
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7)
        .collect();
    let entry = entries
        .iter()
        .find(|f| f[0] == user_part || f[2] == user_part);
    let (uid, mut gid, home, name) = match (entry, user_part.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse().map_err(|_| bad_entry(user_part))?,
            f[3].parse().map_err(|_| bad_entry(user_part))?,
            f[5].to_string(),
            f[0].to_string(),
        ),
        (None, Ok(uid)) => (uid, 0, "/".to_string(), String::new()),
        (None, Err(_)) => {
            return Err(ServiceError::invalid(format!(
                "unable to find user {user_part}: no matching entries in passwd file"
            )));
        }
    };
    // group: name:x:gid:member,member
    let groups: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        gid = match groups.iter().find(|f| f[0] == g || f[2] == g) {
            Some(f) => f[2].parse().map_err(|_| bad_entry(g))?,
            None => g.parse().map_err(|_| {
                ServiceError::invalid(format!(
                    "unable to find group {g}: no matching entries in group file"
                ))
            })?,
        };
    }
    let additional_gids = if name.is_empty() {
        Vec::new()
    } else {
        groups
            .iter()
            .filter(|f| f[3].split(',').any(|m| m == name))
            .filter_map(|f| f[2].parse().ok())
            .filter(|g| *g != gid)
            .collect()
    };
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

fn bad_entry(what: &str) -> ServiceError {
    ServiceError::invalid(format!("invalid passwd or group entry for {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\nbbuser:x:1000:1000::/home/bbuser:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nusers:x:100:bbuser\nbbuser:x:1000:\n";

    #[test]
    fn names_and_numbers_resolve() {
        let root = resolve_in(PASSWD, GROUP, "").unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
        let bb = resolve_in(PASSWD, GROUP, "bbuser").unwrap();
        assert_eq!(
            (bb.uid, bb.gid, bb.additional_gids.clone()),
            (1000, 1000, vec![100])
        );
        let numeric = resolve_in(PASSWD, GROUP, "4242:users").unwrap();
        assert_eq!((numeric.uid, numeric.gid), (4242, 100));
        assert!(resolve_in(PASSWD, GROUP, "nobody-here").is_err());
        assert!(resolve_in(PASSWD, GROUP, "bbuser:nogroup").is_err());
    }
}

/// Creates `dir` (absolute, as seen inside the container) under `rootfs` with its missing
/// parents, owned by `uid:gid`, as Docker does for a working directory that does not exist.
/// Every component is resolved inside the root (symlinks cannot lead out of it).
pub fn create_dir_in_root(rootfs: &Path, dir: &str, uid: u32, gid: u32) -> ServiceResult<()> {
    use std::os::fd::{FromRawFd, OwnedFd};

    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    use nix::sys::stat::Mode;

    let fail = |what: &str, e: nix::Error| {
        ServiceError::invalid(format!(
            "cannot create working directory {dir}: {what}: {e}"
        ))
    };
    let root = std::fs::File::open(rootfs).map_err(|e| {
        ServiceError::internal(format!("cannot open rootfs {}: {e}", rootfs.display()))
    })?;
    let root_fd = std::os::fd::AsRawFd::as_raw_fd(&root);
    let open_in_root = |path: &str| -> nix::Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT);
        let fd = openat2(root_fd, path, how)?;
        // SAFETY: openat2 returned a fresh descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let mut prefix = String::from("/");
    for component in dir.split('/').filter(|c| !c.is_empty() && *c != ".") {
        let parent = open_in_root(&prefix).map_err(|e| fail(&prefix, e))?;
        let parent_fd = std::os::fd::AsRawFd::as_raw_fd(&parent);
        match nix::sys::stat::mkdirat(Some(parent_fd), component, Mode::from_bits_truncate(0o755)) {
            Ok(()) => {
                nix::unistd::fchownat(
                    Some(parent_fd),
                    component,
                    Some(nix::unistd::Uid::from_raw(uid)),
                    Some(nix::unistd::Gid::from_raw(gid)),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| fail(component, e))?;
            }
            Err(nix::Error::EEXIST) => {}
            Err(e) => return Err(fail(component, e)),
        }
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        prefix.push_str(component);
    }
    // The final path must be a directory reachable inside the root.
    open_in_root(&prefix).map_err(|e| fail(&prefix, e))?;
    Ok(())
}

#[cfg(test)]
mod dir_tests {
    use super::*;

    #[test]
    fn working_dirs_are_created_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        create_dir_in_root(root.path(), "/a/b/c", 0, 0).unwrap();
        assert!(root.path().join("a/b/c").is_dir());
        // A symlink pointing out of the root resolves inside it instead.
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        let _ = create_dir_in_root(root.path(), "/escape/x", 0, 0);
        assert!(!outside.path().join("x").exists());
    }
}
