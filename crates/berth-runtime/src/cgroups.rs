//! Cgroup helpers: where to nest container cgroups, leftover cleanup, OOM detection.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Result, RuntimeError};

/// A mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The cgroup the mount shows as its root (usually `/`).
    pub root: String,
    /// Controllers bound to it (v1), empty for cgroup2.
    pub controllers: Vec<String>,
    /// This is a cgroup2 (unified) hierarchy.
    pub unified: bool,
}

/// Lists the cgroup hierarchies mounted in this mount namespace.
pub fn hierarchies() -> Result<Vec<Hierarchy>> {
    let info = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| RuntimeError::io("read /proc/self/mountinfo", e))?;
    Ok(parse_mountinfo(&info))
}

fn parse_mountinfo(info: &str) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for line in info.lines() {
        // id parent major:minor root mount-point options [optional...] - fstype source super-options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let rfields: Vec<&str> = right.split(' ').collect();
        if fields.len() < 5 || rfields.len() < 3 {
            continue;
        }
        let (root, mount_point) = (fields[3], fields[4]);
        match rfields[0] {
            "cgroup2" => out.push(Hierarchy {
                mount_point: mount_point.into(),
                root: root.into(),
                controllers: Vec::new(),
                unified: true,
            }),
            "cgroup" => {
                let controllers = rfields[2]
                    .split(',')
                    .filter(|o| {
                        !matches!(*o, "rw" | "ro") && !o.contains('=') || o.starts_with("name=")
                    })
                    .map(String::from)
                    .collect();
                out.push(Hierarchy {
                    mount_point: mount_point.into(),
                    root: root.into(),
                    controllers,
                    unified: false,
                });
            }
            _ => {}
        }
    }
    out
}

/// The cgroup to nest container cgroups under (`<this>/berth/<id>`).
///
/// On cgroup v1 the controllers may sit at different paths (here memory is
/// `/process_api/<hash>` while the others are at `/`); libcontainer's v1 manager takes one
/// path for all controllers, so the memory controller's path is used: the machine's memory
/// limit then still applies to containers. On a pure cgroup v2 host the unified path is used.
pub fn daemon_cgroup_parent() -> Result<String> {
    let data = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| RuntimeError::io("read /proc/self/cgroup", e))?;
    Ok(parent_from_proc_cgroup(&data))
}

fn parent_from_proc_cgroup(data: &str) -> String {
    let mut unified = None;
    for line in data.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => continue,
        };
        if controllers.split(',').any(|c| c == "memory") {
            return path.to_string();
        }
        if controllers.is_empty() {
            unified = Some(path.to_string());
        }
    }
    unified.unwrap_or_else(|| "/".into())
}

fn dir_in(h: &Hierarchy, cgroup_path: &str) -> PathBuf {
    let rel = cgroup_path
        .strip_prefix(h.root.trim_end_matches('/'))
        .unwrap_or(cgroup_path);
    h.mount_point.join(rel.trim_start_matches('/'))
}

fn rmdir_tree(dir: &Path) -> io::Result<()> {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path())?;
            }
        }
    }
    // A cgroup whose last task just exited can stay busy for a moment.
    let mut delay = Duration::from_millis(5);
    for _ in 0..8 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(delay);
                delay *= 2;
            }
            Err(e) => return Err(e),
        }
    }
    fs::remove_dir(dir)
}

/// Removes the cgroup `cgroup_path` (and its children) from every mounted hierarchy,
/// v1 and unified. Missing directories are fine.
pub fn remove_cgroup(cgroup_path: &str) -> Result<()> {
    let trimmed = cgroup_path.trim_matches('/');
    if trimmed.is_empty() {
        return Err(RuntimeError::InvalidConfig(
            "refusing to remove the root cgroup".into(),
        ));
    }
    for h in hierarchies()? {
        let dir = dir_in(&h, cgroup_path);
        if dir == h.mount_point {
            continue;
        }
        rmdir_tree(&dir)
            .map_err(|e| RuntimeError::io(format!("remove cgroup {}", dir.display()), e))?;
    }
    Ok(())
}

/// Directories of `cgroup_path` in every hierarchy where it exists.
pub fn existing_dirs(cgroup_path: &str) -> Result<Vec<PathBuf>> {
    Ok(hierarchies()?
        .iter()
        .map(|h| dir_in(h, cgroup_path))
        .filter(|d| d.is_dir())
        .collect())
}

/// Number of OOM kills recorded for the cgroup (`oom_kill` of v1 `memory.oom_control` or of
/// v2 `memory.events`); `None` when no memory controller file is readable.
pub fn oom_kill_count(cgroup_path: &str) -> Option<u64> {
    let hs = hierarchies().ok()?;
    let file = if let Some(h) = hs
        .iter()
        .find(|h| h.controllers.iter().any(|c| c == "memory"))
    {
        dir_in(h, cgroup_path).join("memory.oom_control")
    } else {
        let h = hs.iter().find(|h| h.unified)?;
        dir_in(h, cgroup_path).join("memory.events")
    };
    let data = fs::read_to_string(file).ok()?;
    data.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

/// How often [`MigrationWarmup`] takes the migration lock: well within one RCU grace period.
const WARMUP_INTERVAL: Duration = Duration::from_millis(2);
/// A [`MigrationWarmup`] that is never dropped stops by itself after this long.
const WARMUP_LIMIT: Duration = Duration::from_secs(2);

/// Keeps the kernel's cgroup-migration lock ready while a container is being created.
///
/// Moving a task into a cgroup takes the global `cgroup_threadgroup_rwsem` for writing.
/// Unless the cgroup hierarchy was mounted with `favordynmods`, that lock rests on its
/// readers' fast path, and the first writer waits an RCU grace period (7–25 ms on the
/// benchmark host) to switch it over; writers that follow within a grace period of the
/// previous one do not wait. The runtime pays that wait when it moves a new container's
/// first process into its cgroups, in the middle of the start.
///
/// This guard runs a thread that moves itself into the cgroup it already belongs to
/// every few milliseconds: a migration that changes nothing but takes the lock. The
/// first one waits out the grace period in the background while the caller prepares
/// the container; the runtime's own move then finds the lock switched over. Dropping
/// the guard stops the thread, which also stops by itself after two seconds. On hosts
/// where the lock has no slow switch this costs a few cheap writes.
#[derive(Debug)]
pub struct MigrationWarmup {
    stop: Arc<(Mutex<bool>, Condvar)>,
}

impl MigrationWarmup {
    /// Starts the warm-up thread; `None` if the thread cannot be started. Without a cgroup
    /// file to write the thread ends at once; either way the start is only slower.
    pub fn start() -> Option<MigrationWarmup> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("cgroup-warmup".into())
            .spawn(move || {
                let Some((file, id)) = hierarchies().ok().and_then(|h| own_membership_file(&h))
                else {
                    return;
                };
                let Ok(mut file) = fs::OpenOptions::new().write(true).open(&file) else {
                    return;
                };
                let (lock, wake) = &*flag;
                let deadline = Instant::now() + WARMUP_LIMIT;
                let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                while !*stopped && Instant::now() < deadline {
                    drop(stopped);
                    if file.write_all(id.as_bytes()).is_err() {
                        return;
                    }
                    stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                    if !*stopped {
                        stopped = wake
                            .wait_timeout(stopped, WARMUP_INTERVAL)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                }
            })
            .ok()?;
        Some(MigrationWarmup { stop })
    }
}

impl Drop for MigrationWarmup {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
    }
}

/// For the calling thread: the membership file of the cgroup it is in and what to write
/// there to join it again. On cgroup v1 that is the thread itself in `tasks` (only this
/// thread is ever moved); on a unified-only host the process in `cgroup.procs`.
fn own_membership_file(hierarchies: &[Hierarchy]) -> Option<(PathBuf, String)> {
    let data = fs::read_to_string("/proc/thread-self/cgroup").ok()?;
    let mut unified = None;
    for line in data.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.is_empty() {
            unified = hierarchies
                .iter()
                .find(|h| h.unified)
                .map(|h| dir_in(h, path).join("cgroup.procs"));
            continue;
        }
        let mut wanted: Vec<&str> = controllers.split(',').collect();
        wanted.sort_unstable();
        let found = hierarchies.iter().find(|h| {
            let mut have: Vec<&str> = h.controllers.iter().map(String::as_str).collect();
            have.sort_unstable();
            !h.unified && have == wanted
        });
        if let Some(h) = found {
            return Some((
                dir_in(h, path).join("tasks"),
                nix::unistd::gettid().to_string(),
            ));
        }
    }
    unified.map(|f| (f, std::process::id().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_prefers_memory_controller() {
        let data = "9:name=systemd:/\n4:memory:/process_api/abc\n3:cpuset:/\n0::/\n";
        assert_eq!(parent_from_proc_cgroup(data), "/process_api/abc");
        assert_eq!(
            parent_from_proc_cgroup("0::/user.slice/x\n"),
            "/user.slice/x"
        );
    }

    #[test]
    fn mountinfo_parsing() {
        let info = "30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n\
                    31 25 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n\
                    32 25 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n\
                    33 25 0:29 / /proc rw - proc proc rw\n";
        let hs = parse_mountinfo(info);
        assert_eq!(hs.len(), 3);
        assert_eq!(hs[0].controllers, vec!["memory"]);
        assert!(hs[1].unified);
        assert!(hs[2].controllers.contains(&"name=systemd".to_string()));
    }

    #[test]
    fn this_host_has_a_parent() {
        let p = daemon_cgroup_parent().unwrap();
        assert!(p.starts_with('/'), "{p}");
    }

    #[test]
    fn warmup_rejoins_its_own_cgroup() {
        let before = fs::read_to_string("/proc/self/cgroup").unwrap();
        let (file, id) = own_membership_file(&hierarchies().unwrap()).unwrap();
        assert!(file.exists(), "{}", file.display());
        assert!(id.parse::<u32>().is_ok());
        let warmup = MigrationWarmup::start().unwrap();
        std::thread::sleep(Duration::from_millis(30));
        drop(warmup);
        // Nothing moved: this process is where it was.
        assert_eq!(fs::read_to_string("/proc/self/cgroup").unwrap(), before);
    }

    #[test]
    fn refuses_root() {
        assert!(remove_cgroup("/").is_err());
    }
}
