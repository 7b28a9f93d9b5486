//! Mount points: what a container mounts where, parsed from `-v` and `--mount`, and what
//! the runtime and inspect see of them.

use std::collections::HashMap;
use std::path::Path;

use berth_api::models::{Mount, MountType};
use berth_runtime::spec::MountSpec;
use serde::{Deserialize, Serialize};

use super::{LOCAL_DRIVER, validate_driver_options, validate_volume_name};
use crate::containers::ContainerRecord;
use crate::error::{ServiceError, ServiceResult};

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
    /// Whether the container named its volume (`-v name:/path`, `--mount src=name`): `rm -v`
    /// keeps such a volume even when it is anonymous (made by `volume create` without a
    /// name), as moby keeps its `Named` mount points. Records from before the field read
    /// `false` and still keep named volumes, which never carry the anonymous label.
    #[serde(default)]
    pub named: bool,
    /// Driver options and labels for a volume that create has to make (`volume-opt`).
    #[serde(skip)]
    pub volume_options: HashMap<String, String>,
    /// Labels for a volume that create has to make (`volume-label`).
    #[serde(skip)]
    pub volume_labels: HashMap<String, String>,
}

impl MountPoint {
    pub(super) fn new(kind: MountKind, destination: &str) -> MountPoint {
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
            named: false,
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
pub(super) fn clean_destination(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

pub(super) fn check_destination(kind: MountKind, destination: &str) -> ServiceResult<()> {
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

#[cfg(test)]
mod tests {
    use berth_api::models::{
        ContainerConfig, HostConfig, MountBindOptions, MountTmpfsOptions, MountVolumeOptions,
    };
    use chrono::Utc;

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
}
