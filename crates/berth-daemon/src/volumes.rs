//! The volume service: volumes of the `local` driver, and the mount planning that turns
//! `-v`, `--mount` and `--volumes-from` into a container's mount points.
//!
//! A volume is a directory `<data-root>/volumes/<name>/_data` plus a JSON record in the
//! store's `records` table (kind `volume`). A volume created with `-o type=.. -o device=..`
//! is mounted on its `_data` when a container first needs it and unmounted when its last
//! running user exits. A container's mount points are resolved once, at create, and persisted
//! in its record, so a start, `inspect`, `rm -v` and `--volumes-from` all see the same volumes.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use berth_api::filters::{Filters, labels_match};
use berth_api::models::{
    ContainerConfig, HostConfig, Mount, MountType, Volume, VolumeCreateRequest, VolumeListResponse,
    VolumePruneResponse, VolumeScopeEnum, VolumeUsageData,
};
use berth_runtime::spec::MountSpec;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::containers::{ContainerRecord, random_id};
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

/// The kind of a container mount point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A host path.
    Bind,
    /// A named or anonymous volume.
    Volume,
    /// A tmpfs from `--mount type=tmpfs`.
    Tmpfs,
}

impl MountKind {
    fn as_str(self) -> &'static str {
        match self {
            MountKind::Bind => "bind",
            MountKind::Volume => "volume",
            MountKind::Tmpfs => "tmpfs",
        }
    }
}

/// One mount point of a container, resolved at create and persisted in its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPoint {
    /// Bind, volume or tmpfs.
    pub kind: MountKind,
    /// The volume's name; empty for binds and tmpfs (and for an anonymous volume until
    /// create names it).
    pub name: String,
    /// The host path: the bind source or the volume's `_data`; empty for tmpfs.
    pub source: String,
    /// The absolute path inside the container.
    pub destination: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// The mode as the client wrote it after the destination (`ro,z`, `nocopy`...).
    pub mode: String,
    /// Bind propagation (`rprivate` unless asked otherwise); empty for volumes and tmpfs.
    pub propagation: String,
    /// Whether the image's content at the destination is copied into an empty volume.
    pub copy_data: bool,
    /// Whether a missing bind source is created (`-v`) rather than refused (`--mount`).
    pub create_source: bool,
    /// Extra options of a tmpfs (`size=..`, `mode=..`).
    pub tmpfs_options: Vec<String>,
    /// Driver options and labels for a volume that create has to make (`volume-opt`).
    #[serde(skip)]
    pub volume_options: HashMap<String, String>,
    /// Labels for a volume that create has to make (`volume-label`).
    #[serde(skip)]
    pub volume_labels: HashMap<String, String>,
}

impl MountPoint {
    fn new(kind: MountKind, destination: &str) -> MountPoint {
        MountPoint {
            kind,
            name: String::new(),
            source: String::new(),
            destination: clean_destination(destination),
            read_only: false,
            mode: String::new(),
            propagation: String::new(),
            copy_data: true,
            create_source: false,
            tmpfs_options: Vec::new(),
            volume_options: HashMap::new(),
            volume_labels: HashMap::new(),
        }
    }

    /// The mount point as `inspect` and `ps` show it.
    pub fn to_api(&self) -> berth_api::models::MountPoint {
        berth_api::models::MountPoint {
            typ: Some(self.kind.as_str().to_string()),
            name: (self.kind == MountKind::Volume).then(|| self.name.clone()),
            source: Some(self.source.clone()),
            destination: Some(self.destination.clone()),
            driver: (self.kind == MountKind::Volume).then(|| LOCAL_DRIVER.to_string()),
            mode: Some(self.mode.clone()),
            rw: Some(!self.read_only),
            propagation: Some(self.propagation.clone()),
        }
    }

    /// The runtime's view: what to mount where, with which options.
    fn to_spec(&self) -> MountSpec {
        let mut options = match self.kind {
            MountKind::Tmpfs => vec!["nosuid".into(), "nodev".into(), "noexec".into()],
            MountKind::Bind | MountKind::Volume => vec!["rbind".into()],
        };
        options.extend(self.tmpfs_options.iter().cloned());
        if self.kind != MountKind::Tmpfs {
            options.push(if self.propagation.is_empty() {
                "rprivate".to_string()
            } else {
                self.propagation.clone()
            });
        }
        options.push(if self.read_only { "ro" } else { "rw" }.to_string());
        MountSpec {
            destination: self.destination.clone(),
            kind: match self.kind {
                MountKind::Tmpfs => "tmpfs".into(),
                MountKind::Bind | MountKind::Volume => "bind".into(),
            },
            source: match self.kind {
                MountKind::Tmpfs => "tmpfs".into(),
                MountKind::Bind | MountKind::Volume => self.source.clone(),
            },
            options,
        }
    }
}

/// The container's own mounts: `tmpfs` from `--tmpfs`, then its planned mount points.
pub(crate) fn mount_specs(mounts: &[MountPoint], tmpfs: Vec<MountSpec>) -> Vec<MountSpec> {
    let mut out: Vec<MountSpec> = tmpfs;
    out.extend(mounts.iter().map(MountPoint::to_spec));
    out
}

/// Orders mounts as Docker does, parents before children (stable otherwise), so a deeper
/// mount is never shadowed by a shallower one.
pub(crate) fn order_mounts(mounts: &mut [MountSpec]) {
    mounts.sort_by_key(|m| m.destination.split('/').filter(|c| !c.is_empty()).count());
}

/// `/data/` and `/data` are the same mount point.
fn clean_destination(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
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

fn check_destination(kind: MountKind, destination: &str) -> ServiceResult<()> {
    if destination.is_empty() {
        return Err(ServiceError::invalid(format!(
            "invalid mount config for type \"{}\": field Target must not be empty",
            kind.as_str()
        )));
    }
    if !destination.starts_with('/') {
        return Err(ServiceError::invalid(format!(
            "invalid mount config for type \"{}\": invalid mount path: '{destination}' mount path must be absolute",
            kind.as_str()
        )));
    }
    if clean_destination(destination) == "/" {
        return Err(ServiceError::invalid(
            "invalid specification: destination can't be '/'",
        ));
    }
    Ok(())
}

const PROPAGATIONS: &[&str] = &[
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

/// Parses one `-v` / `HostConfig.Binds` entry: `/ctr`, `name:/ctr[:mode]`, `/host:/ctr[:mode]`.
pub(crate) fn parse_bind_spec(spec: &str) -> ServiceResult<MountPoint> {
    let invalid = || ServiceError::invalid(format!("invalid volume specification: '{spec}'"));
    let parts: Vec<&str> = spec.split(':').collect();
    let is_mode = |m: &str| {
        m.split(',')
            .all(|o| matches!(o, "ro" | "rw" | "z" | "Z" | "nocopy") || PROPAGATIONS.contains(&o))
    };
    let (source, destination, mode) = match parts.as_slice() {
        [d] => ("", *d, ""),
        [d, m] if d.starts_with('/') && is_mode(m) => ("", *d, *m),
        [s, d] => (*s, *d, ""),
        [s, d, m] => (*s, *d, *m),
        _ => return Err(invalid()),
    };
    if destination.is_empty() {
        return Err(invalid());
    }
    let kind = if source.starts_with('/') {
        MountKind::Bind
    } else {
        MountKind::Volume
    };
    check_destination(kind, destination)?;
    let mut mount = MountPoint::new(kind, destination);
    mount.mode = mode.to_string();
    if kind == MountKind::Volume && !source.is_empty() && mode.is_empty() {
        // Docker shows the SELinux relabel default for named volumes given with `-v`.
        mount.mode = "z".into();
    }
    if kind == MountKind::Bind {
        mount.source = clean_destination(source);
        mount.create_source = true;
        mount.propagation = "rprivate".into();
    } else if !source.is_empty() {
        validate_volume_name(source)?;
        mount.name = source.to_string();
    }
    let mut access_given = false;
    for option in mode.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" | "rw" if !access_given => {
                access_given = true;
                mount.read_only = option == "ro";
            }
            "z" | "Z" => {}
            "nocopy" if kind == MountKind::Volume => mount.copy_data = false,
            p if kind == MountKind::Bind && PROPAGATIONS.contains(&p) => {
                mount.propagation = p.to_string();
            }
            _ => return Err(ServiceError::invalid(format!("invalid mode: {mode}"))),
        }
    }
    Ok(mount)
}

/// Parses one `--mount` / `HostConfig.Mounts` entry.
pub(crate) fn parse_api_mount(m: &Mount) -> ServiceResult<MountPoint> {
    let kind = match m.typ {
        Some(MountType::BIND) => MountKind::Bind,
        Some(MountType::VOLUME) => MountKind::Volume,
        Some(MountType::TMPFS) => MountKind::Tmpfs,
        Some(other) => {
            return Err(ServiceError::invalid(format!(
                "invalid mount config: mount type {other} is not supported by this engine"
            )));
        }
        None => {
            return Err(ServiceError::invalid(
                "invalid mount config: mount type unknown",
            ));
        }
    };
    let fail = |what: &str| {
        ServiceError::invalid(format!(
            "invalid mount config for type \"{}\": {what}",
            kind.as_str()
        ))
    };
    let destination = m.target.clone().unwrap_or_default();
    check_destination(kind, &destination)?;
    let source = m.source.clone().unwrap_or_default();
    let mut mount = MountPoint::new(kind, &destination);
    mount.read_only = m.read_only.unwrap_or(false);
    if kind != MountKind::Bind && m.bind_options.is_some() {
        return Err(fail("BindOptions must not be specified"));
    }
    if kind != MountKind::Volume && m.volume_options.is_some() {
        return Err(fail("VolumeOptions must not be specified"));
    }
    if kind != MountKind::Tmpfs && m.tmpfs_options.is_some() {
        return Err(fail("TmpfsOptions must not be specified"));
    }
    match kind {
        MountKind::Bind => {
            if source.is_empty() {
                return Err(fail("field Source must not be empty"));
            }
            if !source.starts_with('/') {
                return Err(fail(&format!(
                    "invalid mount path: '{source}' mount path must be absolute"
                )));
            }
            if !Path::new(&source).exists() {
                return Err(fail(&format!("bind source path does not exist: {source}")));
            }
            mount.source = clean_destination(&source);
            mount.propagation = m
                .bind_options
                .as_ref()
                .and_then(|b| b.propagation)
                .map(|p| p.to_string())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "rprivate".to_string());
        }
        MountKind::Volume => {
            if !source.is_empty() {
                validate_volume_name(&source)?;
                mount.name = source;
            }
            if let Some(options) = &m.volume_options {
                mount.copy_data = !options.no_copy.unwrap_or(false);
                if let Some(driver) = &options.driver_config {
                    if let Some(name) = driver.name.as_deref().filter(|n| !n.is_empty())
                        && name != LOCAL_DRIVER
                    {
                        return Err(ServiceError::not_found(format!(
                            "plugin \"{name}\" not found"
                        )));
                    }
                    mount.volume_options = driver.options.clone().unwrap_or_default();
                    validate_driver_options(&mount.volume_options)?;
                }
                mount.volume_labels = options.labels.clone().unwrap_or_default();
                if options.subpath.as_deref().is_some_and(|s| !s.is_empty()) {
                    return Err(fail("volume subpaths are not supported by this engine"));
                }
            }
        }
        MountKind::Tmpfs => {
            if !source.is_empty() {
                return Err(fail("source must not be specified"));
            }
            if let Some(options) = &m.tmpfs_options {
                if let Some(size) = options.size_bytes.filter(|s| *s > 0) {
                    mount.tmpfs_options.push(format!("size={size}"));
                }
                if let Some(mode) = options.mode.filter(|m| *m > 0) {
                    mount.tmpfs_options.push(format!("mode={mode:o}"));
                }
            }
        }
    }
    Ok(mount)
}

/// Records written before mount points existed carry their `-v` binds only in the host
/// config (that daemon refused everything but absolute binds): derive the mount points from
/// them so an upgrade keeps those containers' binds. The next persist stores them.
pub(crate) fn adopt_legacy_binds(record: &mut ContainerRecord) {
    if !record.mounts.is_empty() {
        return;
    }
    for spec in record.host_config.binds.iter().flatten() {
        match parse_bind_spec(spec) {
            Ok(mount) if mount.kind == MountKind::Bind => record.mounts.push(mount),
            Ok(_) | Err(_) => {
                tracing::warn!(container = %record.id, bind = %spec, "unusable legacy bind skipped")
            }
        }
    }
}

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

    /// `POST /volumes/create`: a local volume, with a random name when none is given.
    pub async fn create_volume(&self, req: VolumeCreateRequest) -> ServiceResult<Volume> {
        if let Some(driver) = req.driver.as_deref().filter(|d| !d.is_empty())
            && driver != LOCAL_DRIVER
        {
            return Err(ServiceError::not_found(format!(
                "plugin \"{driver}\" not found"
            )));
        }
        let name = match req.name.filter(|n| !n.is_empty()) {
            Some(n) => {
                validate_volume_name(&n)?;
                n
            }
            None => random_id(),
        };
        let options = req.driver_opts.unwrap_or_default();
        validate_driver_options(&options)?;
        let record = VolumeRecord {
            name,
            driver: LOCAL_DRIVER.to_string(),
            labels: req.labels.unwrap_or_default(),
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

    fn volume_event(&self, name: &str, action: &str) {
        let attributes = HashMap::from([("driver".to_string(), LOCAL_DRIVER.to_string())]);
        self.events.publish("volume", action, name, attributes);
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
    /// `all=true`; `label` and `label!` filters narrow it.
    pub async fn prune_volumes(&self, filters: &Filters) -> ServiceResult<VolumePruneResponse> {
        filters
            .check_names(&["label", "label!", "all"])
            .map_err(|e| ServiceError::invalid(e.0))?;
        let all = filters
            .get("all")
            .iter()
            .any(|v| berth_api::query::parse_bool(v));
        let mut deleted = Vec::new();
        let mut reclaimed = 0;
        for record in self.volume_records()? {
            let excluded = filters.get("label!");
            let unwanted = !excluded.is_empty()
                && labels_match(excluded, |k| record.labels.get(k).map(String::as_str));
            if (!all && !record.is_anonymous())
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
        Ok(VolumePruneResponse {
            volumes_deleted: Some(deleted),
            space_reclaimed: Some(reclaimed),
        })
    }

    /// Every volume with its size and how many containers use it, for `system df`.
    pub(crate) fn volumes_disk_usage(&self) -> ServiceResult<Vec<Volume>> {
        let mut out = Vec::new();
        for record in self.volume_records()? {
            let usage = VolumeUsageData {
                size: dir_size(&self.volume_data(&record.name)),
                ref_count: self.volume_users(&record.name).len() as i64,
            };
            out.push(self.volume_view(&record, Some(usage)));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

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
        for mount in record.mounts.iter().filter(|m| m.kind == MountKind::Volume) {
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

/// Bytes in regular files under `path`, symlinks not followed.
fn dir_size(path: &Path) -> i64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => dir_size(&entry.path()),
            Ok(t) if t.is_file() => entry.metadata().map_or(0, |m| m.len() as i64),
            _ => 0,
        })
        .sum()
}

/// Copies what the image has at `dir` (resolved inside `rootfs`, so symlinks cannot lead
/// out of it) into the empty volume directory `target`, keeping owners and modes. A path the
/// image lacks, or that is no directory, copies nothing.
fn copy_up(rootfs: &Path, dir: &str, target: &Path) -> std::io::Result<()> {
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
    use berth_api::models::{MountBindOptions, MountTmpfsOptions, MountVolumeOptions};

    use super::*;

    #[test]
    fn v_forms_parse_like_docker() {
        let anon = parse_bind_spec("/data").unwrap();
        assert_eq!((anon.kind, anon.name.as_str()), (MountKind::Volume, ""));
        let anon_ro = parse_bind_spec("/data:ro").unwrap();
        assert!(anon_ro.read_only && anon_ro.name.is_empty());

        let named = parse_bind_spec("cache:/var/cache/:ro,nocopy").unwrap();
        assert_eq!(named.kind, MountKind::Volume);
        assert_eq!(
            (named.name.as_str(), named.destination.as_str()),
            ("cache", "/var/cache")
        );
        assert!(named.read_only && !named.copy_data);

        let bind = parse_bind_spec("/srv:/srv:Z").unwrap();
        assert_eq!(bind.kind, MountKind::Bind);
        assert!(!bind.read_only && bind.create_source);
        assert_eq!(bind.propagation, "rprivate");
        assert_eq!(
            parse_bind_spec("/srv:/srv:ro,rshared").unwrap().propagation,
            "rshared"
        );

        for bad in [
            "a/b:/data",
            "vol:data",
            "/a:/b:bogus",
            "/a:/b:nocopy",
            "vol:/b:rshared",
            "/a:/b:ro:rw",
            "vol:/",
            "/a:/b:ro,rw",
        ] {
            assert!(parse_bind_spec(bad).is_err(), "{bad} should be refused");
        }
        let slash = parse_bind_spec("a/b:/data").unwrap_err().message;
        assert!(
            slash.contains("invalid characters for a local volume name"),
            "{slash}"
        );
    }

    #[test]
    fn mount_keys_parse_like_docker() {
        let volume = parse_api_mount(&Mount {
            typ: Some(MountType::VOLUME),
            source: Some("data".into()),
            target: Some("/data".into()),
            read_only: Some(true),
            volume_options: Some(MountVolumeOptions {
                no_copy: Some(true),
                driver_config: Some(berth_api::models::MountVolumeOptionsDriverConfig {
                    name: None,
                    options: Some(HashMap::from([
                        ("type".to_string(), "tmpfs".to_string()),
                        ("device".to_string(), "tmpfs".to_string()),
                    ])),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap();
        assert!(volume.read_only && !volume.copy_data);
        assert_eq!(volume.volume_options.get("type").unwrap(), "tmpfs");

        let tmpfs = parse_api_mount(&Mount {
            typ: Some(MountType::TMPFS),
            target: Some("/scratch".into()),
            tmpfs_options: Some(MountTmpfsOptions {
                size_bytes: Some(1 << 20),
                mode: Some(0o1777),
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(tmpfs.tmpfs_options, vec!["size=1048576", "mode=1777"]);
        assert_eq!(tmpfs.to_spec().kind, "tmpfs");

        let dir = tempfile::tempdir().unwrap();
        let bind = parse_api_mount(&Mount {
            typ: Some(MountType::BIND),
            source: Some(dir.path().display().to_string()),
            target: Some("/host".into()),
            bind_options: Some(MountBindOptions {
                propagation: Some(berth_api::models::MountBindOptionsPropagationEnum::RSLAVE),
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(bind.propagation, "rslave");
        assert!(!bind.create_source);
        assert!(bind.to_spec().options.contains(&"rslave".to_string()));

        let bind_to = |source: &str| Mount {
            typ: Some(MountType::BIND),
            source: Some(source.into()),
            target: Some("/x".into()),
            ..Default::default()
        };
        let relative = parse_api_mount(&bind_to("rel/path")).unwrap_err().message;
        assert!(relative.contains("must be absolute"), "{relative}");
        let missing = dir.path().join("missing").display().to_string();
        let missing = parse_api_mount(&bind_to(&missing)).unwrap_err().message;
        assert!(
            missing.contains("bind source path does not exist"),
            "{missing}"
        );
        assert!(
            parse_api_mount(&Mount {
                typ: Some(MountType::TMPFS),
                source: Some("x".into()),
                target: Some("/t".into()),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            parse_api_mount(&Mount {
                typ: Some(MountType::VOLUME),
                target: None,
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn mounts_are_ordered_parents_first() {
        let deep = parse_bind_spec("/a:/data/deep/er").unwrap();
        let top = parse_bind_spec("/b:/data").unwrap();
        let mut specs = mount_specs(&[deep, top], Vec::new());
        order_mounts(&mut specs);
        let order: Vec<&str> = specs.iter().map(|s| s.destination.as_str()).collect();
        assert_eq!(order, vec!["/data", "/data/deep/er"]);
        let ro = parse_bind_spec("/a:/b:ro").unwrap().to_spec();
        assert!(ro.options.contains(&"ro".to_string()));
    }

    #[test]
    fn legacy_records_keep_their_binds() {
        let mut record = ContainerRecord {
            id: "c".repeat(64),
            name: "old".into(),
            created: Utc::now(),
            image_id: String::new(),
            config: ContainerConfig::default(),
            host_config: HostConfig {
                binds: Some(vec!["/srv:/srv:ro".into()]),
                ..Default::default()
            },
            path: "true".into(),
            args: Vec::new(),
            runtime: String::new(),
            state: Default::default(),
            mounts: Vec::new(),
            build_layers: None,
        };
        adopt_legacy_binds(&mut record);
        assert_eq!(record.mounts.len(), 1);
        assert!(record.mounts[0].read_only && record.mounts[0].kind == MountKind::Bind);
        // Planned records are left alone.
        adopt_legacy_binds(&mut record);
        assert_eq!(record.mounts.len(), 1);
    }

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
        let (flags, data) = mount_flags("size=10m,ro,uid=1000");
        assert!(flags.contains(nix::mount::MsFlags::MS_RDONLY));
        assert_eq!(data, "size=10m,uid=1000");
    }

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
