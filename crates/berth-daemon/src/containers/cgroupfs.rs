//! A container's cgroup as files: its directory in every mounted hierarchy (the cgroup v1
//! controllers, or the unified v2 tree), read and written by name. Pause, top, stats and
//! update go through here; creating and removing cgroups stays with the runtime.

use std::path::{Path, PathBuf};

use crate::error::{ServiceError, ServiceResult};

/// The directories of one container cgroup.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContainerCgroup {
    /// `(controllers, directory)` of every v1 hierarchy where the cgroup exists.
    v1: Vec<(Vec<String>, PathBuf)>,
    /// Its directory in the unified (v2) hierarchy, when it exists there.
    unified: Option<PathBuf>,
}

impl ContainerCgroup {
    /// Finds the cgroup `cgroup_path` (as the runtime named it) in every mounted hierarchy.
    pub(crate) fn locate(cgroup_path: &str) -> ServiceResult<ContainerCgroup> {
        let hierarchies = berth_runtime::cgroups::hierarchies()?;
        let mut found = ContainerCgroup::default();
        for h in hierarchies {
            let rel = cgroup_path
                .strip_prefix(h.root.trim_end_matches('/'))
                .unwrap_or(cgroup_path);
            let dir = h.mount_point.join(rel.trim_start_matches('/'));
            if dir == h.mount_point || !dir.is_dir() {
                continue;
            }
            if h.unified {
                found.unified = Some(dir);
            } else {
                found.v1.push((h.controllers, dir));
            }
        }
        Ok(found)
    }

    /// The cgroup's directory for a v1 controller (`memory`, `freezer`...).
    pub(crate) fn v1(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|(controllers, _)| controllers.iter().any(|c| c == controller))
            .map(|(_, dir)| dir.as_path())
    }

    /// The cgroup's unified directory when the host runs cgroup v2 (no v1 memory controller
    /// holds the container).
    pub(crate) fn v2(&self) -> Option<&Path> {
        if self.v1("memory").is_some() {
            None
        } else {
            self.unified.as_deref()
        }
    }

    /// Whether the cgroup exists anywhere.
    pub(crate) fn exists(&self) -> bool {
        !self.v1.is_empty() || self.unified.is_some()
    }

    /// Every process in the cgroup and its descendants, sorted.
    pub(crate) fn pids(&self) -> Vec<i32> {
        let dir = self
            .v2()
            .or_else(|| self.v1("pids"))
            .or_else(|| self.v1("memory"))
            .or_else(|| self.v1.first().map(|(_, d)| d.as_path()));
        let mut out = Vec::new();
        if let Some(dir) = dir {
            collect_pids(dir, &mut out);
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

fn collect_pids(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_pids(&entry.path(), out);
            }
        }
    }
}

/// Reads a cgroup file as trimmed text; `None` when it does not exist or cannot be read.
pub(crate) fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Reads a cgroup file holding one number; `max` (v2's unlimited) reads as `None`.
pub(crate) fn read_u64(dir: &Path, file: &str) -> Option<u64> {
    read(dir, file)?.parse().ok()
}

/// Writes a cgroup file, naming it in the error.
pub(crate) fn write(dir: &Path, file: &str, value: &str) -> ServiceResult<()> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|e| {
        ServiceError::internal(format!("cannot write {value:?} to {}: {e}", path.display()))
    })
}

/// Parses `key value` lines (`memory.stat`, `cpu.stat`) into numbers, skipping others.
pub(crate) fn flat_keyed(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keyed_files_parse() {
        let parsed = flat_keyed("cache 4096\nrss 8192\nbogus\nbad x\n");
        assert_eq!(
            parsed,
            vec![("cache".to_string(), 4096), ("rss".to_string(), 8192)]
        );
    }

    #[test]
    fn pids_are_collected_from_children_too() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.procs"), "12\n7\n").unwrap();
        std::fs::create_dir(root.path().join("child")).unwrap();
        std::fs::write(root.path().join("child/cgroup.procs"), "30\n12\n").unwrap();
        let cg = ContainerCgroup {
            v1: vec![(vec!["pids".into()], root.path().to_path_buf())],
            unified: None,
        };
        assert_eq!(cg.pids(), vec![7, 12, 30]);
        assert_eq!(cg.v1("pids"), Some(root.path()));
        assert!(cg.v1("memory").is_none());
        assert!(cg.exists());
        assert!(!ContainerCgroup::default().exists());
    }

    #[test]
    fn v2_only_without_a_v1_memory_controller() {
        let cg = ContainerCgroup {
            v1: Vec::new(),
            unified: Some(PathBuf::from("/sys/fs/cgroup/x")),
        };
        assert_eq!(cg.v2(), Some(Path::new("/sys/fs/cgroup/x")));
        let hybrid = ContainerCgroup {
            v1: vec![(vec!["memory".into()], PathBuf::from("/m"))],
            unified: Some(PathBuf::from("/u")),
        };
        assert!(hybrid.v2().is_none());
    }
}
