//! Creating containers: merge the request with the image's config, reserve the name,
//! prepare the writable layer, persist the record.

use std::collections::HashMap;

use berth_api::models::{ContainerConfig, HostConfig};
use berth_store::image::ImageRecord;

use super::{Container, ContainerRecord, RECORD_KIND, State};
use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

/// What the client asked for.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    /// `?name=`; generated when empty.
    pub name: Option<String>,
    /// The container config from the body.
    pub config: ContainerConfig,
    /// The host config from the body.
    pub host_config: HostConfig,
    /// `NetworkingConfig.EndpointsConfig` by network name.
    pub endpoints: HashMap<String, crate::networks::EndpointRequest>,
}

/// Docker's default PATH, used when the image sets none.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Daemon {
    /// Creates a container; returns its ID and warnings.
    pub async fn create_container(
        &self,
        req: CreateRequest,
    ) -> ServiceResult<(String, Vec<String>)> {
        let image_ref = req.config.image.clone().unwrap_or_default();
        if image_ref.is_empty() {
            return Err(ServiceError::invalid(
                "config cannot be empty in order to create a container",
            ));
        }
        let store = self.store.clone();
        let lookup = image_ref.clone();
        let image = tokio::task::spawn_blocking(move || store.resolve(&lookup)).await??;
        let id = random_id();
        let name = match req.name.as_deref().map(|n| n.trim_start_matches('/')) {
            Some(n) if !n.is_empty() => {
                validate_name(n)?;
                n.to_string()
            }
            _ => generate_name(&id),
        };
        let hostname_given = req
            .config
            .hostname
            .as_deref()
            .is_some_and(|h| !h.is_empty());
        validate_net_container_mode(&req.config, &req.host_config, &req.endpoints)?;
        super::health::validate_healthcheck(req.config.healthcheck.as_ref())?;
        let image_healthcheck = self.image_healthcheck(&image).await?;
        let mut config = merge_config(req.config, &image, &id)?;
        config.healthcheck =
            super::health::merge_healthcheck(config.healthcheck.take(), image_healthcheck);
        let mut host_config = req.host_config;
        validate_host_config(&mut host_config, &self.config.runtimes)?;
        self.pin_shared_network(&mut host_config);
        if host_config.network_mode.as_deref() == Some("host") && !hostname_given {
            // Sharing the host's network means sharing its name too, as Docker does.
            config.hostname = nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok());
        }
        let networks = self.plan_container_networks(
            host_config.network_mode.as_deref().unwrap_or_default(),
            &req.endpoints,
        )?;
        let words: Vec<String> = config
            .entrypoint
            .iter()
            .flatten()
            .chain(config.cmd.iter().flatten())
            .cloned()
            .collect();
        let Some((path, args)) = words.split_first() else {
            return Err(ServiceError::invalid("No command specified"));
        };
        let image_volumes = image_config_volumes(&image);
        let mut mounts = self.plan_mounts(&config, &host_config, &image_volumes)?;
        let created_volumes = self.ensure_volumes(&mut mounts).await?;
        let runtime = host_config
            .runtime
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| self.config.default_runtime.clone());
        let record = ContainerRecord {
            id: id.clone(),
            name,
            created: chrono::Utc::now(),
            image_id: image.id.to_string(),
            config,
            host_config,
            path: path.clone(),
            args: args.to_vec(),
            runtime,
            state: State::default(),
            mounts,
            build_layers: None,
        };
        self.admit(record, networks, &created_volumes).await?;
        Ok((id, Vec::new()))
    }

    /// Names the container of `--network container:<name>` by its id, as moby does, so that
    /// renaming it keeps the link; a container that does not exist (yet) is left for the
    /// start to report.
    fn pin_shared_network(&self, host: &mut HostConfig) {
        let Some(reference) = host
            .network_mode
            .as_deref()
            .and_then(|m| m.strip_prefix("container:"))
        else {
            return;
        };
        if let Ok(owner) = self.containers.get(reference) {
            host.network_mode = Some(format!("container:{}", owner.id));
        }
    }

    /// Creates the container of a build step: it runs `config.cmd` as given (no image
    /// defaults are merged) on a writable layer over `layers`.
    pub(crate) async fn create_build_container(
        &self,
        config: ContainerConfig,
        host_config: HostConfig,
        image_id: String,
        layers: Vec<berth_store::LayerInfo>,
        mounts: Vec<crate::volumes::MountPoint>,
    ) -> ServiceResult<String> {
        let id = random_id();
        let Some((path, args)) = config.cmd.as_deref().unwrap_or_default().split_first() else {
            return Err(ServiceError::invalid("No command specified"));
        };
        let (path, args) = (path.clone(), args.to_vec());
        let networks = self.plan_container_networks(
            host_config.network_mode.as_deref().unwrap_or_default(),
            &HashMap::new(),
        )?;
        let record = ContainerRecord {
            id: id.clone(),
            name: generate_name(&id),
            created: chrono::Utc::now(),
            image_id,
            config: ContainerConfig {
                hostname: Some(id[..12].to_string()),
                ..config
            },
            host_config,
            path,
            args,
            runtime: self.config.default_runtime.clone(),
            state: State::default(),
            mounts,
            build_layers: Some(layers),
        };
        self.admit(record, networks, &[]).await?;
        Ok(id)
    }

    /// Indexes, stores and plugs in a new container; undoes all of it if a part fails.
    async fn admit(
        &self,
        record: ContainerRecord,
        networks: crate::networks::ContainerNetworks,
        created_volumes: &[String],
    ) -> ServiceResult<()> {
        let id = record.id.clone();
        let container = Container::new(record.clone());
        // Reserve the name first so a conflict costs little; undo it if anything later fails.
        if let Err(e) = self.containers.insert(container.clone()) {
            self.remove_volumes(created_volumes).await;
            return Err(e);
        }
        if let Err(e) = self.materialise(&record).await {
            self.containers.remove(&id);
            self.remove_volumes(created_volumes).await;
            return Err(e);
        }
        if let Err(e) = self.save_container_networks(&id, networks).await {
            // Without its endpoints the container could not start: undo the create.
            let _ = self.remove_container(&id, true, false).await;
            return Err(e);
        }
        self.container_event(&container, "create", HashMap::new());
        Ok(())
    }

    /// Creates the writable layer, the container directory and the persisted record.
    async fn materialise(&self, record: &ContainerRecord) -> ServiceResult<()> {
        let store = self.store.clone();
        let dir = self.container_dir(&record.id);
        let id = record.id.clone();
        let image_id = match record.build_layers {
            Some(_) => None,
            None => Some(berth_store::digest::Digest::parse(&record.image_id)?),
        };
        let build_layers = record.build_layers.clone();
        let bytes =
            serde_json::to_vec(record).map_err(|e| ServiceError::internal(e.to_string()))?;
        tokio::task::spawn_blocking(move || -> ServiceResult<()> {
            std::fs::create_dir_all(&dir)?;
            let prepared = match (&image_id, &build_layers) {
                (Some(image), _) => store.prepare_container(&id, image),
                (None, layers) => store.prepare_container_on(&id, layers.as_deref().unwrap_or(&[])),
            }
            .and_then(|_| store.put_record(RECORD_KIND, &id, &bytes));
            if let Err(e) = prepared {
                let _ = store.remove_container(&id);
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e.into());
            }
            Ok(())
        })
        .await?
    }

    /// Persists a container's current record.
    pub(crate) async fn persist(&self, container: &Container) -> ServiceResult<()> {
        let bytes = serde_json::to_vec(&*container.record())
            .map_err(|e| ServiceError::internal(e.to_string()))?;
        let store = self.store.clone();
        let id = container.id.clone();
        tokio::task::spawn_blocking(move || store.put_record(RECORD_KIND, &id, &bytes)).await??;
        Ok(())
    }

    /// Publishes a container event with docker's attributes (labels, image, name).
    pub(crate) fn container_event(
        &self,
        container: &Container,
        action: &str,
        mut extra: HashMap<String, String>,
    ) {
        let (image, name, labels) = {
            let r = container.record();
            (
                r.config.image.clone().unwrap_or_default(),
                r.name.clone(),
                r.config.labels.clone(),
            )
        };
        let mut attributes: HashMap<String, String> =
            labels.unwrap_or_default().into_iter().collect();
        attributes.insert("image".into(), image);
        attributes.insert("name".into(), name);
        attributes.extend(extra.drain());
        self.events
            .publish("container", action, &container.id, attributes);
    }

    /// Renames a container.
    pub async fn rename_container(&self, reference: &str, new_name: &str) -> ServiceResult<()> {
        let container = self.containers.get(reference)?;
        let new_name = new_name.trim_start_matches('/');
        validate_name(new_name)?;
        let old = container.record().name.clone();
        if old == new_name {
            return Err(ServiceError::invalid(
                "Renaming a container with the same name as its current name",
            ));
        }
        self.containers.rename(&container.id, &old, new_name)?;
        container.record().name = new_name.to_string();
        if let Err(e) = self.persist(&container).await {
            container.record().name = old.clone();
            let _ = self.containers.rename(&container.id, new_name, &old);
            return Err(e);
        }
        let attrs = HashMap::from([("oldName".to_string(), format!("/{old}"))]);
        self.container_event(&container, "rename", attrs);
        Ok(())
    }
}

/// Applies the image's defaults the way Docker does: the request wins field by field;
/// environment variables merge by key; an explicit entrypoint drops the image's cmd.
fn merge_config(
    mut config: ContainerConfig,
    image: &ImageRecord,
    id: &str,
) -> ServiceResult<ContainerConfig> {
    let image_config = image.config.config().clone().unwrap_or_default();
    let entrypoint_given = config.entrypoint.is_some();
    if !entrypoint_given {
        config.entrypoint = image_config.entrypoint().clone();
    } else if config
        .entrypoint
        .as_ref()
        .is_some_and(|e| e.iter().all(String::is_empty))
    {
        // `--entrypoint ""` clears the image's entrypoint.
        config.entrypoint = None;
    }
    if config.cmd.as_ref().is_none_or(Vec::is_empty) && !entrypoint_given {
        config.cmd = image_config.cmd().clone();
    }
    let mut env: Vec<String> = image_config.env().clone().unwrap_or_default();
    for var in config.env.take().unwrap_or_default() {
        let key = var.split('=').next().unwrap_or_default().to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(var);
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    config.env = Some(env);
    if config.working_dir.as_deref().is_none_or(str::is_empty) {
        config.working_dir = image_config.working_dir().clone().filter(|w| !w.is_empty());
    }
    if config
        .working_dir
        .as_deref()
        .is_some_and(|w| !w.starts_with('/'))
    {
        return Err(ServiceError::invalid(format!(
            "the working directory '{}' is invalid, it needs to be an absolute path",
            config.working_dir.unwrap_or_default()
        )));
    }
    if config.user.as_deref().is_none_or(str::is_empty) {
        config.user = image_config.user().clone();
    }
    let mut labels: HashMap<String, String> = image_config
        .labels()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.extend(config.labels.take().unwrap_or_default());
    config.labels = Some(labels);
    if config.stop_signal.as_deref().is_none_or(str::is_empty) {
        config.stop_signal = image_config.stop_signal().clone();
    }
    let mut ports = image_config.exposed_ports().clone().unwrap_or_default();
    ports.extend(config.exposed_ports.take().unwrap_or_default());
    ports.sort();
    ports.dedup();
    config.exposed_ports = (!ports.is_empty()).then_some(ports);
    if config.hostname.as_deref().is_none_or(str::is_empty) {
        config.hostname = Some(id[..12].to_string());
    }
    config.domainname.get_or_insert_with(String::new);
    config.image.get_or_insert_with(String::new);
    for flag in [
        &mut config.attach_stdin,
        &mut config.attach_stdout,
        &mut config.attach_stderr,
        &mut config.tty,
        &mut config.open_stdin,
        &mut config.stdin_once,
    ] {
        flag.get_or_insert(false);
    }
    Ok(config)
}

/// The image's `VOLUME`s: each gets an anonymous volume unless mounted otherwise.
fn image_config_volumes(image: &ImageRecord) -> Vec<String> {
    image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.volumes().clone())
        .unwrap_or_default()
}

/// Checks and normalises the host config: network modes this engine has, runtimes it knows.
fn validate_host_config(
    host: &mut HostConfig,
    runtimes: &std::collections::BTreeMap<String, std::path::PathBuf>,
) -> ServiceResult<()> {
    let mode = host.network_mode.clone().unwrap_or_default();
    let mode = match mode.as_str() {
        "" | "default" => "bridge".to_string(),
        other => other.to_string(),
    };
    host.network_mode = Some(mode);
    crate::networks::normalise_extra_hosts(host)?;
    crate::networks::dns_overrides(host)?;
    if let Some(rt) = host.runtime.as_deref().filter(|r| !r.is_empty())
        && rt != crate::config::BUILTIN_RUNTIME
        && !runtimes.contains_key(rt)
    {
        return Err(ServiceError::invalid(format!(
            "unknown or invalid runtime name: {rt}"
        )));
    }
    let log = host.log_config.get_or_insert_with(Default::default);
    match log.typ.as_deref() {
        None | Some("") | Some("json-file") => log.typ = Some("json-file".into()),
        Some(other) => {
            return Err(ServiceError::invalid(format!(
                "logger: no log driver named '{other}' is registered"
            )));
        }
    }
    log.config.get_or_insert_with(Default::default);
    super::restart::validate_restart_policy(host)?;
    host.restart_policy
        .get_or_insert(berth_api::models::RestartPolicy {
            name: Some(berth_api::models::RestartPolicyNameEnum::NO),
            maximum_retry_count: Some(0),
        });
    Ok(())
}

/// moby's `validateNetContainerMode`: what `--network container:<name|id>` cannot be combined
/// with, since the container gets the other one's network as it is. Checked on the request,
/// before the image's defaults (its `EXPOSE`s are no conflict).
fn validate_net_container_mode(
    config: &ContainerConfig,
    host: &HostConfig,
    endpoints: &HashMap<String, crate::networks::EndpointRequest>,
) -> ServiceResult<()> {
    let mode = host.network_mode.as_deref().unwrap_or_default();
    // A network named `container` is taken for a malformed mode, as moby does.
    if mode != "container" && !mode.starts_with("container:") {
        return Ok(());
    }
    let conflict = |what: &str| {
        Err(ServiceError::invalid(format!(
            "conflicting options: {what}"
        )))
    };
    if mode.strip_prefix("container:").is_none_or(str::is_empty) {
        return Err(ServiceError::invalid(
            "invalid network mode: invalid container format container:<name|id>",
        ));
    }
    let given = |list: &Option<Vec<String>>| list.as_ref().is_some_and(|l| !l.is_empty());
    if config.hostname.as_deref().is_some_and(|h| !h.is_empty()) {
        return conflict("hostname and the network mode");
    }
    if given(&host.links) {
        return conflict(
            "container type network can't be used with links. This would result in undefined behavior",
        );
    }
    if given(&host.dns) {
        return conflict("dns and the network mode");
    }
    if given(&host.extra_hosts) {
        return conflict("custom host-to-IP mapping and the network mode");
    }
    if host.port_bindings.as_ref().is_some_and(|p| !p.is_empty())
        || host.publish_all_ports.unwrap_or(false)
    {
        return conflict("port publishing and the container type network mode");
    }
    if config.exposed_ports.as_ref().is_some_and(|p| !p.is_empty()) {
        return conflict("port exposing and the container type network mode");
    }
    if endpoints
        .values()
        .any(|e| e.mac.as_deref().is_some_and(|m| !m.is_empty()))
    {
        return conflict("mac-address and the network mode");
    }
    Ok(())
}

/// Docker's `RestrictedNamePattern`, `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, shared by container and
/// volume names.
pub(crate) fn is_restricted_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    first_ok && rest_ok && name.len() > 1
}

/// Docker's container-name rule.
fn validate_name(name: &str) -> ServiceResult<()> {
    if is_restricted_name(name) {
        Ok(())
    } else {
        Err(ServiceError::invalid(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )))
    }
}

/// A fresh 64-hex-character container ID.
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).unwrap_or_else(|_| {
        // The kernel's CSPRNG failing is not recoverable in any useful way; fall back to
        // time-derived bytes so creation still works.
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        bytes[..8].copy_from_slice(&nanos.to_le_bytes());
    });
    hex::encode(bytes)
}

/// A readable name like docker's `adjective_scientist`, derived from the ID.
fn generate_name(id: &str) -> String {
    const LEFT: &[&str] = &[
        "brave", "calm", "clever", "eager", "fond", "gentle", "happy", "jolly", "keen", "lucid",
        "merry", "nimble", "proud", "quiet", "sharp", "steady", "swift", "tender", "vivid",
        "witty",
    ];
    const RIGHT: &[&str] = &[
        "anchor", "beacon", "buoy", "capstan", "compass", "dory", "ferry", "galley", "harbor",
        "keel", "lantern", "mooring", "pier", "quay", "rudder", "schooner", "tiller", "wharf",
    ];
    let n = u64::from_str_radix(&id[..12], 16).unwrap_or_default();
    let left = LEFT[(n % LEFT.len() as u64) as usize];
    let right = RIGHT[((n / 64) % RIGHT.len() as u64) as usize];
    format!("{left}_{right}_{}", &id[..4])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule() {
        assert!(validate_name("web").is_ok());
        assert!(validate_name("my_app.v1-2").is_ok());
        assert!(validate_name("-bad").is_err());
        assert!(validate_name("a").is_err());
        assert!(validate_name("has space").is_err());
        assert!(validate_name(&generate_name(&random_id())).is_ok());
    }

    #[test]
    fn a_shared_network_refuses_what_it_cannot_honour() {
        let mode = |m: &str| HostConfig {
            network_mode: Some(m.into()),
            ..Default::default()
        };
        let check = |config: &ContainerConfig, host: &HostConfig| {
            validate_net_container_mode(config, host, &HashMap::new()).map_err(|e| e.message)
        };
        let none = ContainerConfig::default();
        assert_eq!(check(&none, &mode("container:web")), Ok(()));
        assert_eq!(check(&none, &mode("appnet")), Ok(()));
        for bad in ["container", "container:"] {
            assert_eq!(
                check(&none, &mode(bad)),
                Err("invalid network mode: invalid container format container:<name|id>".into())
            );
        }
        let named = ContainerConfig {
            hostname: Some("h".into()),
            ..Default::default()
        };
        assert_eq!(
            check(&named, &mode("container:web")),
            Err("conflicting options: hostname and the network mode".into())
        );
        let with_dns = HostConfig {
            dns: Some(vec!["1.1.1.1".into()]),
            ..mode("container:web")
        };
        assert_eq!(
            check(&none, &with_dns),
            Err("conflicting options: dns and the network mode".into())
        );
        // Empty lists, as the CLIs send them, are no conflict.
        let empty = HostConfig {
            dns: Some(Vec::new()),
            extra_hosts: Some(Vec::new()),
            port_bindings: Some(HashMap::new()),
            ..mode("container:web")
        };
        assert_eq!(check(&none, &empty), Ok(()));
        let publish_all = HostConfig {
            publish_all_ports: Some(true),
            ..mode("container:web")
        };
        assert_eq!(
            check(&none, &publish_all),
            Err("conflicting options: port publishing and the container type network mode".into())
        );
        let exposing = ContainerConfig {
            exposed_ports: Some(vec!["80/tcp".into()]),
            ..Default::default()
        };
        assert_eq!(
            check(&exposing, &mode("container:web")),
            Err("conflicting options: port exposing and the container type network mode".into())
        );
        let mac = HashMap::from([(
            "container:web".to_string(),
            crate::networks::EndpointRequest {
                mac: Some("02:42:ac:11:00:09".into()),
                ..Default::default()
            },
        )]);
        assert_eq!(
            validate_net_container_mode(&none, &mode("container:web"), &mac).map_err(|e| e.message),
            Err("conflicting options: mac-address and the network mode".into())
        );
    }
}
