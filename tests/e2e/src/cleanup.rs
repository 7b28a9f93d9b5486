//! Tearing down everything a test daemon left behind: processes, mounts, cgroups, files.
//!
//! Everything here is scoped to one test directory: processes are killed only when their pid was
//! found under that directory (or in a cgroup named after one of its container ids) and they still
//! point back at it; mounts are unmounted only below it; cgroups are removed only when named after
//! a container id found in it.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

/// Where cgroup hierarchies are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Whether `s` is a full container (or image) id: 64 lower-case hex digits.
pub fn is_full_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Every 64-hex-digit word that appears in a file or directory name below `dir`, down to `depth`.
///
/// Container ids end up as directory names under the data root and the exec root whatever the
/// exact layout, so this finds the ids of containers even when the daemon is no longer answering.
pub fn ids_named_under(dir: &Path, depth: usize) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    walk(dir, depth, &mut |path, _| {
        if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            ids.extend(hex_words(name));
        }
    });
    ids
}

fn hex_words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_ascii_hexdigit())
        .filter(|w| is_full_id(w))
        .map(str::to_string)
        .collect()
}

/// Calls `visit(path, is_dir)` for every entry below `dir` (not following symlinks).
pub fn walk(dir: &Path, depth: usize, visit: &mut dyn FnMut(&Path, bool)) {
    if depth == 0 {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        visit(&path, is_dir);
        if is_dir {
            walk(&path, depth - 1, visit);
        }
    }
}

/// Whether a process with this pid exists (zombies included).
pub fn pid_alive(pid: i32) -> bool {
    pid > 0 && Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether the process is a zombie (exited, not yet reaped by its parent).
pub fn pid_is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Whether the process is gone or only a zombie.
pub fn pid_gone(pid: i32) -> bool {
    !pid_alive(pid) || pid_is_zombie(pid)
}

/// Sends `signal` to `pid`; errors (the process is already gone) are ignored.
pub fn send_signal(pid: i32, signal: i32) {
    if pid <= 0 {
        return;
    }
    // SAFETY: kill(2) with a positive pid only signals that one process; no memory is shared.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// The NUL-separated command line of a process, joined with spaces.
pub fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// `dir` with a trailing slash, so that `/tmp/x-1` does not match inside `/tmp/x-10/...`.
fn dir_prefix(dir: &Path) -> String {
    format!("{}/", dir.to_string_lossy().trim_end_matches('/'))
}

/// Whether the process visibly belongs to this test directory: its command line, environment or
/// working directory mentions a path inside `dir`, or its command line or cgroup mentions one of
/// `ids`.
fn process_belongs_to(pid: i32, dir: &Path, ids: &BTreeSet<String>) -> bool {
    let prefix = dir_prefix(dir);
    let cmd = cmdline(pid);
    if cmd.contains(&prefix) || ids.iter().any(|id| cmd.contains(id.as_str())) {
        return true;
    }
    let environ = fs::read(format!("/proc/{pid}/environ"))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    if environ.contains(&prefix) {
        return true;
    }
    if fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(dir)) {
        return true;
    }
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    ids.iter().any(|id| cgroup.contains(id.as_str()))
}

/// Live processes (other than this one) whose command line names a path inside `dir`.
///
/// Test directories are unique per test (`<parent>/berth-e2e-<pid>-<n>/`), so such a process was
/// started for this test: a shim or helper the daemon left behind.
pub fn processes_pointing_at(dir: &Path) -> Vec<(i32, String)> {
    let prefix = dir_prefix(dir);
    let own = std::process::id() as i32;
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|&pid| pid > 1 && pid != own && !pid_gone(pid))
        .filter_map(|pid| {
            let cmd = cmdline(pid);
            cmd.contains(&prefix).then_some((pid, cmd))
        })
        .collect()
}

/// Pids written in files named `pid`, `*.pid` or `*-pid` below `dir`.
pub fn pids_recorded_under(dir: &Path) -> BTreeSet<i32> {
    let mut pids = BTreeSet::new();
    walk(dir, 9, &mut |path, is_dir| {
        if is_dir {
            return;
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return;
        };
        if (name == "pid" || name.ends_with(".pid") || name.ends_with("-pid"))
            && let Ok(text) = fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse::<i32>()
        {
            pids.insert(pid);
        }
    });
    pids
}

/// SIGKILLs the given pids that still belong to `dir` (see [`process_belongs_to`]).
pub fn kill_recorded_pids(pids: &BTreeSet<i32>, dir: &Path, ids: &BTreeSet<String>) {
    let own = std::process::id() as i32;
    for &pid in pids {
        if pid <= 1 || pid == own || pid_gone(pid) {
            continue;
        }
        if process_belongs_to(pid, dir, ids) {
            send_signal(pid, libc::SIGKILL);
        } else {
            eprintln!(
                "berth-e2e cleanup: not killing pid {pid} ({}): it does not point back at {}",
                cmdline(pid),
                dir.display()
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids
        .iter()
        .any(|&p| p > 1 && pid_alive(p) && !pid_is_zombie(p) && process_belongs_to(p, dir, ids))
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(50));
    }
}

/// Cgroup directories (in every hierarchy) whose name contains one of `ids`, deepest first.
pub fn cgroups_named_after(ids: &BTreeSet<String>) -> Vec<PathBuf> {
    if ids.is_empty() {
        return Vec::new();
    }
    let mut found = Vec::new();
    walk(Path::new(CGROUP_ROOT), 8, &mut |path, is_dir| {
        if !is_dir {
            return;
        }
        if let Some(name) = path.file_name().and_then(|n| n.to_str())
            && ids.iter().any(|id| name.contains(id.as_str()))
        {
            found.push(path.to_path_buf());
        }
    });
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// Kills every process in the cgroups named after `ids`, then removes those cgroups.
/// Returns the cgroups that could not be removed.
pub fn remove_container_cgroups(ids: &BTreeSet<String>) -> Vec<PathBuf> {
    let groups = cgroups_named_after(ids);
    for group in &groups {
        // A frozen (paused) cgroup would hold SIGKILL pending forever.
        let freezer = group.join("freezer.state");
        if freezer.exists() {
            let _ = fs::write(&freezer, "THAWED");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let procs = cgroup_procs(group);
            if procs.is_empty() || Instant::now() >= deadline {
                break;
            }
            for pid in procs {
                send_signal(pid, libc::SIGKILL);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
    let mut left = Vec::new();
    for group in groups {
        // Child cgroups come first in the list, so the parent is empty by the time we reach it.
        let mut removed = false;
        for _ in 0..40 {
            if fs::remove_dir(&group).is_ok() || !group.exists() {
                removed = true;
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        if !removed {
            left.push(group);
        }
    }
    left
}

/// The pids listed in a cgroup's `cgroup.procs`.
pub fn cgroup_procs(group: &Path) -> Vec<i32> {
    fs::read_to_string(group.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Mount points at or below `dir`, deepest first, as listed in /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Undoes the octal escapes (`\040` for a space, ...) that mountinfo uses in paths.
pub fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            out.push(value as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lazily unmounts everything at or below `dir`; returns what is still mounted afterwards.
pub fn unmount_all_under(dir: &Path) -> Vec<PathBuf> {
    for _ in 0..5 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return mounts;
        }
        for mount in mounts {
            let Ok(c_path) = std::ffi::CString::new(mount.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            // SAFETY: c_path is a valid NUL-terminated string that outlives the call.
            unsafe {
                libc::umount2(c_path.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
    mounts_under(dir)
}

/// Removes everything a test directory holds: kills its processes, unmounts, removes cgroups and
/// deletes the files. `extra_ids` are container ids learnt from the API; `extra_pids` are pids
/// learnt from the API (container init processes). Problems are printed, never panicked on.
pub fn teardown_dir(dir: &Path, extra_ids: &BTreeSet<String>, extra_pids: &BTreeSet<i32>) {
    let mut ids = ids_named_under(dir, 5);
    ids.extend(extra_ids.iter().cloned());
    // After every container was removed and the daemon stopped, nothing should still run from
    // this directory; whatever does (a shim whose state the daemon dropped) is a leak. Its
    // command line also names the container id, which leads to the container's cgroup.
    let leaked = processes_pointing_at(dir);
    for (pid, cmd) in &leaked {
        eprintln!(
            "berth-e2e cleanup: LEAK: pid {pid} still runs from {}: {cmd}",
            dir.display()
        );
        ids.extend(hex_words(cmd));
    }
    if std::env::var_os("BERTH_E2E_DEBUG").is_some() {
        eprintln!(
            "berth-e2e cleanup of {}: ids {ids:?}, cgroups {:?}",
            dir.display(),
            cgroups_named_after(&ids)
        );
    }

    let left = remove_container_cgroups(&ids);
    let mut pids = pids_recorded_under(dir);
    pids.extend(extra_pids.iter().copied());
    pids.extend(leaked.iter().map(|(pid, _)| *pid));
    kill_recorded_pids(&pids, dir, &ids);
    // Processes killed late (a shim restarting a container) may have recreated a cgroup.
    let left = if left.is_empty() {
        left
    } else {
        remove_container_cgroups(&ids)
    };
    for group in &left {
        eprintln!(
            "berth-e2e cleanup: cgroup {} could not be removed",
            group.display()
        );
    }

    let still_mounted = unmount_all_under(dir);
    if !still_mounted.is_empty() {
        eprintln!(
            "berth-e2e cleanup: NOT deleting {} because these are still mounted: {still_mounted:?}",
            dir.display()
        );
        return;
    }
    if let Err(e) = fs::remove_dir_all(dir)
        && dir.exists()
    {
        eprintln!("berth-e2e cleanup: cannot delete {}: {e}", dir.display());
    }
}

/// Tears down test directories named `<prefix><pid>-<n>` under `parent` whose test process
/// (`<pid>`) no longer exists: they were left by a test run that was killed before its cleanup.
pub fn reap_stale_dirs(parent: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let Some(owner) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid_alive(owner) {
            continue;
        }
        let dir = entry.path();
        eprintln!(
            "berth-e2e: cleaning up {} left by dead test process {owner}",
            dir.display()
        );
        // The daemon records its pid; kill it only if it still runs on this directory.
        if let Ok(text) = fs::read_to_string(dir.join("berthd.pid"))
            && let Ok(pid) = text.trim().parse::<i32>()
            && pid_alive(pid)
            && cmdline(pid).contains(&dir_prefix(&dir))
        {
            send_signal(pid, libc::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(5);
            while !pid_gone(pid) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
            }
        }
        teardown_dir(&dir, &BTreeSet::new(), &BTreeSet::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_full_ids() {
        assert!(is_full_id(&"a".repeat(64)));
        assert!(!is_full_id(&"A".repeat(64)));
        assert!(!is_full_id(&"a".repeat(63)));
        let name = format!("berth-{}.scope", "0123456789abcdef".repeat(4));
        assert_eq!(hex_words(&name), vec!["0123456789abcdef".repeat(4)]);
    }

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(
            unescape_mountinfo(r"/tmp/back\134slash"),
            r"/tmp/back\slash"
        );
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
