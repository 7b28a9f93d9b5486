//! A new container's mount points: planned from `--volumes-from`, `-v`, `--mount` and the
//! `VOLUME`s of its config and image, the volumes they name created, and its anonymous
//! volumes removed with it.

use berth_api::models::{ContainerConfig, HostConfig};
use chrono::Utc;

use super::mounts::{check_destination, clean_destination, parse_api_mount, parse_bind_spec};
use super::{ANONYMOUS_LABEL, LOCAL_DRIVER, MountKind, MountPoint, VolumeRecord};
use crate::containers::{ContainerRecord, random_id};
use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

impl Daemon {
    /// Resolves a new container's mount points: `--volumes-from` first, then `-v` and
    /// `--mount` (which replace inherited ones at the same destination and may not repeat
    /// one), then an anonymous volume for every `VOLUME` of the config or image not mounted
    /// otherwise. Nothing is created here.
    pub(crate) fn plan_mounts(
        &self,
        config: &ContainerConfig,
        host: &HostConfig,
        image_volumes: &[String],
    ) -> ServiceResult<Vec<MountPoint>> {
        let mut planned: Vec<MountPoint> = Vec::new();
        for spec in host.volumes_from.iter().flatten() {
            let (reference, mode) = match spec.rsplit_once(':') {
                Some((r, m)) if matches!(m, "ro" | "rw") => (r, m),
                Some(_) => {
                    return Err(ServiceError::invalid(format!(
                        "invalid volumes-from specification: '{spec}'"
                    )));
                }
                None => (spec.as_str(), ""),
            };
            let source = self.containers.get(reference)?;
            for mut mount in source.record().mounts.clone() {
                match mode {
                    "ro" => mount.read_only = true,
                    "rw" => mount.read_only = false,
                    _ => {}
                }
                planned.retain(|p| p.destination != mount.destination);
                planned.push(mount);
            }
        }
        let mut explicit: Vec<MountPoint> = Vec::new();
        for spec in host.binds.iter().flatten() {
            explicit.push(parse_bind_spec(spec)?);
        }
        for mount in host.mounts.iter().flatten() {
            explicit.push(parse_api_mount(mount)?);
        }
        let tmpfs: Vec<String> = host
            .tmpfs
            .iter()
            .flatten()
            .map(|(dest, _)| clean_destination(dest))
            .collect();
        for (i, mount) in explicit.iter().enumerate() {
            if explicit[..i]
                .iter()
                .any(|m| m.destination == mount.destination)
                || tmpfs.contains(&mount.destination)
            {
                return Err(ServiceError::invalid(format!(
                    "Duplicate mount point: {}",
                    mount.destination
                )));
            }
        }
        for mount in explicit {
            planned.retain(|p| p.destination != mount.destination);
            planned.push(mount);
        }
        for dest in config.volumes.iter().flatten().chain(image_volumes.iter()) {
            check_destination(MountKind::Volume, dest)?;
            let dest = clean_destination(dest);
            if !planned.iter().any(|p| p.destination == dest) && !tmpfs.contains(&dest) {
                planned.push(MountPoint::new(MountKind::Volume, &dest));
            }
        }
        Ok(planned)
    }

    /// Names anonymous volumes and creates every volume the plan needs that does not exist
    /// yet; returns the names it created so a failed create can take them back.
    pub(crate) async fn ensure_volumes(
        &self,
        mounts: &mut [MountPoint],
    ) -> ServiceResult<Vec<String>> {
        let mut created = Vec::new();
        for mount in mounts.iter_mut().filter(|m| m.kind == MountKind::Volume) {
            let mut labels = std::mem::take(&mut mount.volume_labels);
            mount.named = !mount.name.is_empty();
            if mount.name.is_empty() {
                mount.name = random_id();
                labels.insert(ANONYMOUS_LABEL.to_string(), String::new());
            }
            let record = VolumeRecord {
                name: mount.name.clone(),
                driver: LOCAL_DRIVER.to_string(),
                labels,
                options: std::mem::take(&mut mount.volume_options),
                created: Utc::now(),
            };
            let d = self.handle();
            match tokio::task::spawn_blocking(move || d.create_volume_blocking(record)).await? {
                Ok((_, true)) => {
                    self.volume_event(&mount.name, "create");
                    created.push(mount.name.clone());
                }
                Ok((_, false)) => {}
                Err(e) => {
                    self.remove_volumes(&created).await;
                    return Err(e);
                }
            }
            mount.source = self.volume_data(&mount.name).display().to_string();
        }
        Ok(created)
    }

    /// Removes volumes (a failed create's, or a removed container's anonymous ones);
    /// failures are logged, never fatal.
    pub(crate) async fn remove_volumes(&self, names: &[String]) {
        for name in names {
            if let Err(e) = self.remove_volume(name, false).await {
                tracing::warn!(volume = %name, "cannot remove volume: {e}");
            }
        }
    }

    /// `rm -v` and `--rm`: removes the container's anonymous volumes that no other container
    /// uses (named volumes stay, as with docker).
    pub(crate) async fn remove_anonymous_volumes(&self, record: &ContainerRecord) {
        let mut names = Vec::new();
        for mount in record
            .mounts
            .iter()
            .filter(|m| m.kind == MountKind::Volume && !m.named)
        {
            match self.volume_record(&mount.name) {
                Ok(Some(v)) if v.is_anonymous() && self.volume_users(&v.name).is_empty() => {
                    names.push(v.name)
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(volume = %mount.name, "cannot read volume: {e}"),
            }
        }
        self.remove_volumes(&names).await;
    }
}
