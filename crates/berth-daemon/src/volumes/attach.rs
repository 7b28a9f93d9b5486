//! A container's mounts around its runs: bind sources created, device-backed volumes mounted
//! and empty volumes filled from the image before a start; those volumes unmounted once no
//! running container uses them.

use std::collections::HashMap;
use std::path::Path;

use super::copy::copy_up;
use super::{LOCAL_DRIVER, MountKind, MountPoint};
use crate::containers::ContainerRecord;
use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

/// Turns the local driver's `o` option into mount flags and the data string.
fn mount_flags(options: &str) -> (nix::mount::MsFlags, String) {
    use nix::mount::MsFlags;
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => {}
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

impl Daemon {
    /// Gets a container's mounts ready before its start: creates missing `-v` bind sources,
    /// mounts volumes backed by a device, and copies the image's content into empty volumes
    /// (unless `nocopy`). `rootfs` is the container's mounted root filesystem.
    pub(crate) async fn prepare_mounts(
        &self,
        record: &ContainerRecord,
        rootfs: &Path,
    ) -> ServiceResult<()> {
        let d = self.handle();
        let mounts = record.mounts.clone();
        let rootfs = rootfs.to_path_buf();
        tokio::task::spawn_blocking(move || -> ServiceResult<()> {
            for mount in &mounts {
                match mount.kind {
                    MountKind::Bind
                        if mount.create_source && !Path::new(&mount.source).exists() =>
                    {
                        std::fs::create_dir_all(&mount.source).map_err(|e| {
                            ServiceError::invalid(format!(
                                "error while creating mount source path '{}': {e}",
                                mount.source
                            ))
                        })?;
                    }
                    MountKind::Volume => d.prepare_volume(mount, &rootfs)?,
                    MountKind::Bind | MountKind::Tmpfs => {}
                }
            }
            Ok(())
        })
        .await??;
        for mount in record.mounts.iter().filter(|m| m.kind == MountKind::Volume) {
            let attributes = HashMap::from([
                ("container".to_string(), record.id.clone()),
                ("destination".to_string(), mount.destination.clone()),
                ("driver".to_string(), LOCAL_DRIVER.to_string()),
                ("propagation".to_string(), mount.propagation.clone()),
                ("read/write".to_string(), (!mount.read_only).to_string()),
            ]);
            self.events
                .publish("volume", "mount", &mount.name, attributes);
        }
        Ok(())
    }

    fn prepare_volume(&self, mount: &MountPoint, rootfs: &Path) -> ServiceResult<()> {
        let _guard = self.volume_lock.lock().unwrap_or_else(|p| p.into_inner());
        let record = self.volume_record(&mount.name)?.ok_or_else(|| {
            ServiceError::not_found(format!("get {}: no such volume", mount.name))
        })?;
        let data = self.volume_data(&mount.name);
        std::fs::create_dir_all(&data).map_err(|e| {
            ServiceError::internal(format!("cannot create volume {}: {e}", mount.name))
        })?;
        if record.is_mount_backed() && !crate::containers::is_mountpoint(&data) {
            let fstype = record.options.get("type").map(String::as_str);
            let device = record.options.get("device").map(String::as_str);
            let (flags, options) = mount_flags(record.options.get("o").map_or("", String::as_str));
            let fstype = fstype.filter(|t| *t != "none");
            nix::mount::mount(
                device,
                &data,
                fstype,
                flags,
                (!options.is_empty()).then_some(options.as_str()),
            )
            .map_err(|e| {
                ServiceError::internal(format!(
                    "error while mounting volume '{}': {e}",
                    data.display()
                ))
            })?;
        }
        let empty = std::fs::read_dir(&data)
            .map(|mut entries| entries.next().is_none())
            .unwrap_or(false);
        if mount.copy_data && empty {
            copy_up(rootfs, &mount.destination, &data).map_err(|e| {
                ServiceError::internal(format!(
                    "cannot copy {} of the image into volume {}: {e}",
                    mount.destination, mount.name
                ))
            })?;
        }
        Ok(())
    }

    /// After a container stopped: unmounts its device-backed volumes that no running
    /// container still uses; failures are logged, never fatal.
    pub(crate) async fn release_volumes(&self, record: &ContainerRecord) {
        let d = self.handle();
        let names: Vec<String> = record
            .mounts
            .iter()
            .filter(|m| m.kind == MountKind::Volume)
            .map(|m| m.name.clone())
            .collect();
        for name in &names {
            let attributes = HashMap::from([
                ("container".to_string(), record.id.clone()),
                ("driver".to_string(), LOCAL_DRIVER.to_string()),
            ]);
            self.events.publish("volume", "unmount", name, attributes);
        }
        let result = tokio::task::spawn_blocking(move || {
            let _guard = d.volume_lock.lock().unwrap_or_else(|p| p.into_inner());
            for name in names {
                let Ok(Some(volume)) = d.volume_record(&name) else {
                    continue;
                };
                let data = d.volume_data(&name);
                let running = d.containers.all().into_iter().any(|c| {
                    let r = c.record();
                    r.state.status.is_active()
                        && r.mounts
                            .iter()
                            .any(|m| m.kind == MountKind::Volume && m.name == name)
                });
                if volume.is_mount_backed()
                    && !running
                    && crate::containers::is_mountpoint(&data)
                    && let Err(e) = nix::mount::umount2(&data, nix::mount::MntFlags::MNT_DETACH)
                {
                    tracing::warn!(volume = %name, "cannot unmount volume: {e}");
                }
            }
        })
        .await;
        if let Err(e) = result {
            tracing::warn!("volume release task failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_options_become_flags_and_data() {
        let (flags, data) = mount_flags("size=10m,ro,uid=1000");
        assert!(flags.contains(nix::mount::MsFlags::MS_RDONLY));
        assert_eq!(data, "size=10m,uid=1000");
    }
}
