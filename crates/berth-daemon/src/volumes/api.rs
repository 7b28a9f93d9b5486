//! `/volumes` operations: create, inspect, list with filters, remove, prune; and the
//! volume sizes of `system df`.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use berth_api::filters::{Filters, labels_match};
use berth_api::models::{
    Volume, VolumeCreateRequest, VolumeListResponse, VolumePruneResponse, VolumeScopeEnum,
    VolumeUsageData,
};
use chrono::Utc;

use super::{
    ANONYMOUS_LABEL, LOCAL_DRIVER, RECORD_KIND, VolumeRecord, validate_driver_options,
    validate_volume_name,
};
use crate::containers::random_id;
use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

impl Daemon {
    fn volume_view(&self, record: &VolumeRecord, usage: Option<VolumeUsageData>) -> Volume {
        Volume {
            name: record.name.clone(),
            driver: record.driver.clone(),
            mountpoint: self.volume_data(&record.name).display().to_string(),
            created_at: Some(
                record
                    .created
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ),
            labels: record.labels.clone(),
            scope: Some(VolumeScopeEnum::LOCAL),
            options: record.options.clone(),
            usage_data: usage,
            ..Default::default()
        }
    }
    /// `POST /volumes/create`: a local volume, with a random name when none is given.
    pub async fn create_volume(&self, req: VolumeCreateRequest) -> ServiceResult<Volume> {
        if let Some(driver) = req.driver.as_deref().filter(|d| !d.is_empty())
            && driver != LOCAL_DRIVER
        {
            return Err(ServiceError::not_found(format!(
                "plugin \"{driver}\" not found"
            )));
        }
        let mut labels = req.labels.unwrap_or_default();
        let name = match req.name.filter(|n| !n.is_empty()) {
            Some(n) => {
                validate_volume_name(&n)?;
                n
            }
            // Like moby 23+: a volume created without a name is anonymous, so a plain
            // `volume prune` removes it once unused.
            None => {
                labels.insert(ANONYMOUS_LABEL.to_string(), String::new());
                random_id()
            }
        };
        let options = req.driver_opts.unwrap_or_default();
        validate_driver_options(&options)?;
        let record = VolumeRecord {
            name,
            driver: LOCAL_DRIVER.to_string(),
            labels,
            options,
            created: Utc::now(),
        };
        let d = self.handle();
        let (record, created) =
            tokio::task::spawn_blocking(move || d.create_volume_blocking(record)).await??;
        if created {
            self.volume_event(&record.name, "create");
        }
        Ok(self.volume_view(&record, None))
    }
    /// `GET /volumes/{name}`.
    pub fn inspect_volume(&self, name: &str) -> ServiceResult<Volume> {
        let record = self
            .volume_record(name)?
            .ok_or_else(|| ServiceError::not_found(format!("get {name}: no such volume")))?;
        Ok(self.volume_view(&record, None))
    }

    /// `GET /volumes`: filters `dangling`, `name` (substring), `label`, `driver`.
    pub fn list_volumes(&self, filters: &Filters) -> ServiceResult<VolumeListResponse> {
        filters
            .check_names(&["dangling", "name", "label", "driver"])
            .map_err(|e| ServiceError::invalid(e.0))?;
        let mut volumes = Vec::new();
        for record in self.volume_records()? {
            if self.volume_matches(&record, filters)? {
                volumes.push(self.volume_view(&record, None));
            }
        }
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(VolumeListResponse {
            volumes: Some(volumes),
            warnings: Some(Vec::new()),
        })
    }

    fn volume_matches(&self, record: &VolumeRecord, filters: &Filters) -> ServiceResult<bool> {
        for value in filters.get("dangling") {
            let wanted = match value.as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                other => {
                    return Err(ServiceError::invalid(format!(
                        "invalid filter 'dangling={other}'"
                    )));
                }
            };
            if self.volume_users(&record.name).is_empty() != wanted {
                return Ok(false);
            }
        }
        let names = filters.get("name");
        if !names.is_empty() && !names.iter().any(|n| record.name.contains(n.as_str())) {
            return Ok(false);
        }
        let drivers = filters.get("driver");
        if !drivers.is_empty() && !drivers.contains(&record.driver) {
            return Ok(false);
        }
        Ok(labels_match(filters.get("label"), |k| {
            record.labels.get(k).map(String::as_str)
        }))
    }

    /// `DELETE /volumes/{name}`: refuses a volume any container uses, naming them;
    /// `force` only forgives a missing volume, as docker's does.
    pub async fn remove_volume(&self, name: &str, force: bool) -> ServiceResult<()> {
        let d = self.handle();
        let name_owned = name.to_string();
        let removed =
            tokio::task::spawn_blocking(move || d.remove_volume_blocking(&name_owned)).await?;
        match removed {
            Ok(()) => {
                self.volume_event(name, "destroy");
                Ok(())
            }
            Err(e) if force && e.kind == crate::error::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn remove_volume_blocking(&self, name: &str) -> ServiceResult<()> {
        let _guard = self.volume_lock.lock().unwrap_or_else(|p| p.into_inner());
        let Some(record) = self.volume_record(name)? else {
            return Err(ServiceError::not_found(format!(
                "get {name}: no such volume"
            )));
        };
        let users = self.volume_users(name);
        if !users.is_empty() {
            return Err(ServiceError::conflict(format!(
                "remove {name}: volume is in use - [{}]",
                users.join(", ")
            )));
        }
        let data = self.volume_data(name);
        if record.is_mount_backed() && crate::containers::is_mountpoint(&data) {
            nix::mount::umount2(&data, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
                ServiceError::internal(format!("cannot unmount volume {name}: {e}"))
            })?;
        }
        match std::fs::remove_dir_all(self.volume_dir(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ServiceError::internal(format!(
                    "cannot remove volume {name}: {e}"
                )));
            }
        }
        self.store.delete_record(RECORD_KIND, name)?;
        Ok(())
    }

    /// `POST /volumes/prune`: unused anonymous volumes, or every unused one with
    /// `all=true`; `label` and `label!` filters narrow it. Volumes with driver options (a
    /// tmpfs or a device mounted on `_data`) are left alone, as moby leaves them: removing
    /// them reclaims nothing here.
    pub async fn prune_volumes(&self, filters: &Filters) -> ServiceResult<VolumePruneResponse> {
        let _running = self.prunes.begin(crate::system::PruneKind::Volumes)?;
        filters
            .check_names(&["label", "label!", "all"])
            .map_err(|e| ServiceError::invalid(e.0))?;
        let all = prune_all(filters.get("all"))?;
        let mut deleted = Vec::new();
        let mut reclaimed = 0;
        for record in self.volume_records()? {
            let excluded = filters.get("label!");
            let unwanted = !excluded.is_empty()
                && labels_match(excluded, |k| record.labels.get(k).map(String::as_str));
            if (!all && !record.is_anonymous())
                || !record.options.is_empty()
                || unwanted
                || !labels_match(filters.get("label"), |k| {
                    record.labels.get(k).map(String::as_str)
                })
                || !self.volume_users(&record.name).is_empty()
            {
                continue;
            }
            let size = dir_size(&self.volume_data(&record.name));
            match self.remove_volume(&record.name, false).await {
                Ok(()) => {
                    reclaimed += size;
                    deleted.push(record.name);
                }
                Err(e) => tracing::warn!(volume = %record.name, "prune cannot remove: {e}"),
            }
        }
        let attributes = HashMap::from([("reclaimed".to_string(), reclaimed.to_string())]);
        self.events.publish("volume", "prune", "", attributes);
        Ok(VolumePruneResponse {
            volumes_deleted: Some(deleted),
            space_reclaimed: Some(reclaimed),
        })
    }

    /// Every volume with its size and how many containers use it, for `system df`; as with
    /// moby, volumes with driver options are not counted (their data is not local disk).
    pub(crate) fn volumes_disk_usage(&self) -> ServiceResult<Vec<Volume>> {
        let mut out = Vec::new();
        for record in self.volume_records()? {
            if !record.options.is_empty() {
                continue;
            }
            let usage = VolumeUsageData {
                size: dir_size(&self.volume_data(&record.name)),
                ref_count: self.volume_users(&record.name).len() as i64,
            };
            out.push(self.volume_view(&record, Some(usage)));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

/// The `all` filter of a prune: at most one value, a boolean as Go's `strconv.ParseBool`
/// reads it; without it only anonymous volumes are pruned.
fn prune_all(values: &[String]) -> ServiceResult<bool> {
    match values {
        [] => Ok(false),
        [value] => match value.as_str() {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
            other => Err(ServiceError::invalid(format!(
                "invalid filter 'all': strconv.ParseBool: parsing {other:?}: invalid syntax"
            ))),
        },
        many => Err(ServiceError::invalid(format!(
            "invalid filter 'all=[{}]': only one value is expected",
            many.join(" ")
        ))),
    }
}

/// The bytes under `path` as moby's `directory.Size` counts them: every entry but
/// directories by its own size (symlinks are not followed), each hard-linked inode once.
fn dir_size(path: &Path) -> i64 {
    fn walk(dir: &Path, seen: &mut HashSet<(u64, u64)>) -> i64 {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let mut total = 0;
        for entry in entries.flatten() {
            // `DirEntry::metadata` does not follow symlinks.
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                total += walk(&entry.path(), seen);
            } else if meta.len() > 0 && seen.insert((meta.dev(), meta.ino())) {
                total += meta.len() as i64;
            }
        }
        total
    }
    walk(path, &mut HashSet::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_all_reads_one_go_boolean() {
        let all = |values: &[&str]| {
            prune_all(&values.iter().map(|v| v.to_string()).collect::<Vec<_>>())
                .map_err(|e| e.message)
        };
        assert_eq!(all(&[]), Ok(false));
        for yes in ["1", "t", "true", "TRUE", "True"] {
            assert_eq!(all(&[yes]), Ok(true), "{yes}");
        }
        for no in ["0", "f", "false", "False"] {
            assert_eq!(all(&[no]), Ok(false), "{no}");
        }
        assert_eq!(
            all(&["yes"]),
            Err(r#"invalid filter 'all': strconv.ParseBool: parsing "yes": invalid syntax"#.into())
        );
        assert_eq!(
            all(&["true", "false"]),
            Err("invalid filter 'all=[true false]': only one value is expected".into())
        );
    }

    #[test]
    fn sizes_count_links_once_and_symlinks_by_their_length() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/file"), vec![0u8; 1000]).unwrap();
        std::fs::hard_link(dir.path().join("a/b/file"), dir.path().join("a/link")).unwrap();
        std::fs::write(dir.path().join("empty"), b"").unwrap();
        // A symlink counts as the length of its target, never what it points to.
        std::os::unix::fs::symlink("a/b/file", dir.path().join("sym")).unwrap();
        assert_eq!(dir_size(dir.path()), 1000 + "a/b/file".len() as i64);
        assert_eq!(dir_size(&dir.path().join("missing")), 0);
    }
}
