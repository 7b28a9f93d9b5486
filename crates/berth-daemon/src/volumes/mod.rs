//! The volume service: volumes of the `local` driver, and the mount planning that turns
//! `-v`, `--mount` and `--volumes-from` into a container's mount points.
//!
//! A volume is a directory `<data-root>/volumes/<name>/_data` plus a JSON record in the
//! store's `records` table (kind `volume`). A volume created with `-o type=.. -o device=..`
//! is mounted on its `_data` when a container first needs it and unmounted when its last
//! running user exits. A container's mount points are resolved once, at create, and persisted
//! in its record, so a start, `inspect`, `rm -v` and `--volumes-from` all see the same volumes.
//!
//! - `api`: `/volumes` operations (create, inspect, list, remove, prune) and `system df`'s
//!   volume sizes.
//! - `mounts`: mount points and the parsing of `-v`, `--mount` and legacy binds.
//! - `plan`: a new container's mount points (`--volumes-from`, `-v`, `--mount`, `VOLUME`)
//!   and the volumes it creates and leaves behind.
//! - `attach`: mounts made ready before a start and released after an exit.
//! - `copy`: the copy-up of an image's content into an empty volume.

mod api;
mod attach;
mod copy;
mod mounts;
mod plan;

use std::collections::HashMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use mounts::{MountKind, MountPoint};
pub(crate) use mounts::{adopt_legacy_binds, mount_specs, order_mounts};

use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

/// The record kind volumes use in the store's generic records table.
pub const RECORD_KIND: &str = "volume";

/// The label docker puts on anonymous volumes; `volume prune` removes only these by default.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// The one volume driver this engine has.
const LOCAL_DRIVER: &str = "local";

/// What is persisted for a volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// The volume's name (64 hex characters for anonymous volumes).
    pub name: String,
    /// Always `local`.
    pub driver: String,
    /// User labels, plus [`ANONYMOUS_LABEL`] for anonymous volumes.
    pub labels: HashMap<String, String>,
    /// Driver options: `type`, `device`, `o` (what `mount -t type -o o device` gets).
    pub options: HashMap<String, String>,
    /// Creation time.
    pub created: DateTime<Utc>,
}

impl VolumeRecord {
    fn is_anonymous(&self) -> bool {
        self.labels.contains_key(ANONYMOUS_LABEL)
    }

    /// Whether `_data` is a mount of its own (a tmpfs or a bind from the driver options).
    fn is_mount_backed(&self) -> bool {
        self.options.contains_key("device")
    }
}

/// Docker's rule for local volume names.
fn validate_volume_name(name: &str) -> ServiceResult<()> {
    if crate::containers::is_restricted_name(name) {
        Ok(())
    } else {
        Err(ServiceError::invalid(format!(
            "\"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. \
             If you intended to pass a host directory, use absolute path"
        )))
    }
}

/// Checks the local driver's options: `type`, `device` and `o`, the first two together.
fn validate_driver_options(options: &HashMap<String, String>) -> ServiceResult<()> {
    for key in options.keys() {
        if !matches!(key.as_str(), "type" | "device" | "o") {
            return Err(ServiceError::invalid(format!(
                "invalid option key: {key:?}"
            )));
        }
    }
    for (present, missing) in [("type", "device"), ("device", "type")] {
        if options.contains_key(present) && !options.contains_key(missing) {
            return Err(ServiceError::invalid(format!(
                "missing required option: {missing:?}"
            )));
        }
    }
    Ok(())
}

impl Daemon {
    /// `<data-root>/volumes/<name>`: the record's directory, holding `_data`.
    fn volume_dir(&self, name: &str) -> PathBuf {
        self.config.data_root.join("volumes").join(name)
    }

    /// The host path containers see: `<data-root>/volumes/<name>/_data`.
    fn volume_data(&self, name: &str) -> PathBuf {
        self.volume_dir(name).join("_data")
    }

    fn volume_record(&self, name: &str) -> ServiceResult<Option<VolumeRecord>> {
        let Some(bytes) = self.store.get_record(RECORD_KIND, name)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ServiceError::internal(format!("corrupt record of volume {name}: {e}")))
    }

    fn volume_records(&self) -> ServiceResult<Vec<VolumeRecord>> {
        self.store
            .list_records(RECORD_KIND)?
            .into_iter()
            .map(|(name, bytes)| {
                serde_json::from_slice(&bytes).map_err(|e| {
                    ServiceError::internal(format!("corrupt record of volume {name}: {e}"))
                })
            })
            .collect()
    }

    /// IDs of the containers whose mount points use the volume, in any state.
    fn volume_users(&self, name: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .containers
            .all()
            .into_iter()
            .filter(|c| {
                c.record()
                    .mounts
                    .iter()
                    .any(|m| m.kind == MountKind::Volume && m.name == name)
            })
            .map(|c| c.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Creates a volume's directory and record; an existing volume of that name is returned
    /// as it is (docker's `volume create` is idempotent).
    fn create_volume_blocking(&self, record: VolumeRecord) -> ServiceResult<(VolumeRecord, bool)> {
        let _guard = self.volume_lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = self.volume_record(&record.name)? {
            return Ok((existing, false));
        }
        let dir = self.volume_dir(&record.name);
        let bytes =
            serde_json::to_vec(&record).map_err(|e| ServiceError::internal(e.to_string()))?;
        let created = std::fs::create_dir_all(self.volume_data(&record.name))
            .map_err(|e| {
                ServiceError::internal(format!("cannot create volume {}: {e}", record.name))
            })
            .and_then(|()| Ok(self.store.put_record(RECORD_KIND, &record.name, &bytes)?));
        if let Err(e) = created {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok((record, true))
    }

    fn volume_event(&self, name: &str, action: &str) {
        let attributes = HashMap::from([("driver".to_string(), LOCAL_DRIVER.to_string())]);
        self.events.publish("volume", action, name, attributes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_options_are_checked() {
        let opts = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(validate_driver_options(&opts(&[("type", "tmpfs"), ("device", "tmpfs")])).is_ok());
        assert!(validate_driver_options(&opts(&[("type", "tmpfs")])).is_err());
        assert!(validate_driver_options(&opts(&[("colour", "red")])).is_err());
    }
}
