//! `POST /commit` (`docker commit`): a container's writable layer becomes a new layer on top
//! of its image, and the container's config (or the one in the request, completed from the
//! container's) with the `--change` instructions applied becomes the new image's config.
//!
//! The configuration blob starts from the parent image's (so Docker's fields beyond OCI's,
//! its platform and history carry over), takes the runtime fields from the merged config as
//! Docker's commit does, and gains one history entry (`created_by` is the container's
//! command). A container that changed nothing gets no layer: the entry is an empty layer, as
//! with Docker. Like Docker, a running container is paused while its layer is read, unless
//! `pause=0`.

use std::collections::HashMap;

use berth_api::models::ContainerConfig;
use berth_store::{Digest, ImageRecord, LayerInfo, Reference, Store};
use serde_json::{Map, Value, json};

use super::ContainerRecord;
use super::diff;
use super::state::Status;
use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

/// What `POST /commit` asks for.
#[derive(Debug, Clone, Default)]
pub struct CommitRequest {
    /// The container: name, ID or unique ID prefix.
    pub container: String,
    /// The repository to tag the image into (it may carry the tag); empty for no tag.
    pub repo: String,
    /// The tag (`latest` when empty and a repository is given).
    pub tag: String,
    /// The image's author.
    pub author: String,
    /// The commit message (the history entry's comment).
    pub comment: String,
    /// Freeze a running container while its layer is read.
    pub pause: bool,
    /// Dockerfile instructions applied to the config (`--change`).
    pub changes: Vec<String>,
    /// A config to start from instead of the container's (the request body).
    pub config: Option<ContainerConfig>,
}

/// What the new image is made of, besides its parent.
struct NewImage<'a> {
    config: &'a Map<String, Value>,
    layers: &'a [LayerInfo],
    /// Whether the commit added a layer (else its history entry is an empty layer).
    added_layer: bool,
    container_id: &'a str,
    created_by: String,
    author: &'a str,
    comment: &'a str,
    created: String,
}

impl Daemon {
    /// `POST /commit`: returns the new image's ID (`sha256:...`).
    pub async fn commit_container(&self, req: CommitRequest) -> ServiceResult<String> {
        let container = self.containers.get(&req.container)?;
        let reference = commit_reference(&req.repo, &req.tag)?;
        let status = container.record().state.status;
        match status {
            Status::Dead => {
                return Err(ServiceError::conflict(format!(
                    "You cannot commit container {} which is Dead",
                    container.id
                )));
            }
            Status::Removing => {
                return Err(ServiceError::conflict(format!(
                    "You cannot commit container {} which is being removed",
                    container.id
                )));
            }
            _ => {}
        }
        let record = container.snapshot();
        let config = committed_config(&record.config, req.config.as_ref(), &req.changes)?;

        let paused_here = req.pause
            && status == Status::Running
            && match self.pause_container(&container.id).await {
                Ok(()) => true,
                Err(e) => {
                    // Docker commits anyway when the pause fails.
                    tracing::warn!(container = %container.id, "cannot pause for commit: {e}");
                    false
                }
            };
        let committed = {
            // No start, stop or removal while the layer is read.
            let _guard = container.op_lock.lock().await;
            let store = self.store.clone();
            let reference = reference.clone();
            let (author, comment) = (req.author.clone(), req.comment.clone());
            tokio::task::spawn_blocking(move || {
                commit_blocking(
                    &store,
                    &record,
                    &config,
                    &author,
                    &comment,
                    reference.as_ref(),
                )
            })
            .await
            .map_err(ServiceError::from)
            .and_then(|r| r)
        };
        let result = committed.map(|image| {
            let id = image.id.to_string();
            let image_ref = reference
                .as_ref()
                .map(Reference::familiar_string)
                .unwrap_or_default();
            if reference.is_some() {
                let attrs = HashMap::from([("name".to_string(), image_ref.clone())]);
                self.events.publish("image", "tag", &id, attrs);
            }
            let attrs = HashMap::from([
                ("comment".to_string(), req.comment.clone()),
                ("imageID".to_string(), id.clone()),
                ("imageRef".to_string(), image_ref),
            ]);
            self.container_event(&container, "commit", attrs);
            id
        });
        // Thawed last, as Docker does: its events read pause, tag, commit, unpause.
        if paused_here && let Err(e) = self.unpause_container(&container.id).await {
            tracing::warn!(container = %container.id, "cannot unpause after commit: {e}");
        }
        result
    }
}

/// Docker's `RepoTagReference`: no reference without a repository; the tag defaults to
/// `latest`; digests are refused.
fn commit_reference(repo: &str, tag: &str) -> ServiceResult<Option<Reference>> {
    if repo.is_empty() {
        return Ok(None);
    }
    let named = Reference::parse_named(repo)?;
    if named.digest().is_some() {
        return Err(ServiceError::invalid("cannot import digest reference"));
    }
    let reference = if tag.is_empty() {
        named.with_default_tag()
    } else {
        named.with_tag(tag)?
    };
    Ok(Some(reference))
}

/// Stores the layer and the image, and tags it (blocking).
fn commit_blocking(
    store: &Store,
    record: &ContainerRecord,
    config: &Map<String, Value>,
    author: &str,
    comment: &str,
    reference: Option<&Reference>,
) -> ServiceResult<ImageRecord> {
    let (mut layers, parent_blob) = parent_image(store, record)?;
    let (upper, lowers) = diff::container_layers(store, &record.id)?;
    let mount_points = diff::mount_points(record);
    let changed = !diff::changes(&upper, &lowers, &mount_points)
        .map_err(|e| {
            ServiceError::internal(format!("read changes of container {}: {e}", record.id))
        })?
        .is_empty();
    // Holds the new layer until the image references it.
    let lease = store.lease();
    if changed {
        let layer = store.commit_container_layer(&record.id, &layers, &mount_points, None)?;
        layers.push(layer);
        lease.hold(&layers);
    }
    let blob = image_blob(
        &parent_blob,
        &NewImage {
            config,
            layers: &layers,
            added_layer: changed,
            container_id: &record.id,
            created_by: record.config.cmd.clone().unwrap_or_default().join(" "),
            author,
            comment,
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        },
    );
    let bytes = serde_json::to_vec(&blob)
        .map_err(|e| ServiceError::internal(format!("encode image config: {e}")))?;
    let image = store.create_image_from_layers(bytes, layers)?;
    if let Some(reference) = reference {
        store.tag(reference, &image.id)?;
    }
    Ok(image)
}

/// The layers the container's writable layer sits on and the configuration blob of its
/// image (a bare one for a container without an image).
fn parent_image(store: &Store, record: &ContainerRecord) -> ServiceResult<(Vec<LayerInfo>, Value)> {
    let image = if record.image_id.is_empty() {
        None
    } else {
        let digest = Digest::parse(&record.image_id)?;
        Some((store.image(&digest)?, store.image_config_json(&digest)?))
    };
    let layers = match (&record.build_layers, &image) {
        (Some(layers), _) => layers.clone(),
        (None, Some((image, _))) => image.layers.clone(),
        (None, None) => Vec::new(),
    };
    let blob = image.map(|(_, blob)| blob).unwrap_or_else(|| {
        json!({
            "architecture": crate::system::go_arch(),
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [],
        })
    });
    Ok((layers, blob))
}

/// The config of the new image, as Docker builds it: the request's config (else the
/// container's), the changes applied, and what it leaves empty taken from the container's.
fn committed_config(
    container: &ContainerConfig,
    requested: Option<&ContainerConfig>,
    changes: &[String],
) -> ServiceResult<Map<String, Value>> {
    let object = |c: &ContainerConfig| match serde_json::to_value(c) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Ok(Map::new()),
        Err(e) => Err(ServiceError::internal(format!(
            "encode container config: {e}"
        ))),
    };
    let own = object(container)?;
    let mut config = match requested {
        Some(c) => object(c)?,
        None => own.clone(),
    };
    crate::changes::apply_to_json(&mut config, changes)?;
    merge_config(&mut config, &own);
    Ok(config)
}

/// Null, missing, `""`, `[]` or `{}`.
fn is_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(_) => false,
    }
}

/// Docker's commit `merge`: fills what `user` leaves empty from the container's config.
fn merge_config(user: &mut Map<String, Value>, container: &Map<String, Value>) {
    let theirs = |key: &str| container.get(key).cloned().unwrap_or(Value::Null);
    for key in ["User", "WorkingDir", "StopSignal"] {
        if is_empty(user.get(key)) && !is_empty(container.get(key)) {
            user.insert(key.to_string(), theirs(key));
        }
    }
    // Sets (ports, volumes) and labels: the union, the user's values winning.
    for key in ["ExposedPorts", "Volumes", "Labels"] {
        let mut merged = user
            .get(key)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (k, v) in container
            .get(key)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            merged.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if !merged.is_empty() || key == "Labels" {
            user.insert(key.to_string(), Value::Object(merged));
        }
    }
    // Environment: the user's, plus the container's variables it does not set.
    let mut env: Vec<Value> = user
        .get("Env")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let name = |e: &Value| {
        e.as_str()
            .map(|s| s.split('=').next().unwrap_or_default().to_string())
    };
    for e in container
        .get("Env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if !env.iter().any(|u| name(u) == name(e)) {
            env.push(e.clone());
        }
    }
    if !env.is_empty() {
        user.insert("Env".to_string(), Value::Array(env));
    }
    // An entrypoint of the user's own keeps its (possibly empty) command.
    if is_empty(user.get("Entrypoint")) {
        if is_empty(user.get("Cmd")) {
            user.insert("Cmd".to_string(), theirs("Cmd"));
            if let Some(escaped) = container.get("ArgsEscaped") {
                user.insert("ArgsEscaped".to_string(), escaped.clone());
            }
        }
        if user.get("Entrypoint").is_none_or(Value::is_null) {
            user.insert("Entrypoint".to_string(), theirs("Entrypoint"));
        }
    }
    if let Some(Value::Object(health)) = container.get("Healthcheck") {
        match user.get_mut("Healthcheck") {
            Some(Value::Object(mine)) => {
                for (k, v) in health {
                    if is_empty(mine.get(k)) || mine.get(k) == Some(&json!(0)) {
                        mine.insert(k.clone(), v.clone());
                    }
                }
            }
            _ => {
                user.insert("Healthcheck".to_string(), Value::Object(health.clone()));
            }
        }
    }
}

/// The new image's configuration blob: the parent's, with the runtime config, rootfs,
/// history, author and creation time of the commit.
fn image_blob(parent: &Value, image: &NewImage<'_>) -> Value {
    let mut blob = match parent {
        Value::Object(o) => o.clone(),
        _ => Map::new(),
    };
    let mut config = blob
        .get("config")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    // What Docker's commit takes from the container, always.
    for key in [
        "User",
        "Env",
        "Cmd",
        "Entrypoint",
        "WorkingDir",
        "Labels",
        "ExposedPorts",
        "Volumes",
    ] {
        let value = image.config.get(key).cloned().unwrap_or(Value::Null);
        config.insert(key.to_string(), value);
    }
    // What the image had unless the container (or a change) says otherwise.
    for key in [
        "StopSignal",
        "Healthcheck",
        "OnBuild",
        "Shell",
        "ArgsEscaped",
    ] {
        if !is_empty(image.config.get(key)) {
            config.insert(key.to_string(), image.config[key].clone());
        }
    }
    blob.insert("config".to_string(), Value::Object(config));
    blob.insert("created".to_string(), json!(image.created));
    blob.insert("container".to_string(), json!(image.container_id));
    blob.remove("container_config");
    if image.author.is_empty() {
        blob.remove("author");
    } else {
        blob.insert("author".to_string(), json!(image.author));
    }
    blob.insert(
        "rootfs".to_string(),
        json!({
            "type": "layers",
            "diff_ids": image.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
        }),
    );
    let mut entry = json!({"created": image.created, "created_by": image.created_by});
    if !image.author.is_empty() {
        entry["author"] = json!(image.author);
    }
    if !image.comment.is_empty() {
        entry["comment"] = json!(image.comment);
    }
    if !image.added_layer {
        entry["empty_layer"] = json!(true);
    }
    let mut history = blob
        .get("history")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    history.push(entry);
    blob.insert("history".to_string(), Value::Array(history));
    Value::Object(blob)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container_config() -> ContainerConfig {
        serde_json::from_value(json!({
            "Hostname": "c0ffee",
            "User": "app",
            "Env": ["PATH=/bin", "MODE=dev"],
            "Cmd": ["sh", "-c", "serve"],
            "WorkingDir": "/srv",
            "Labels": {"from": "container"},
            "ExposedPorts": {"80/tcp": {}},
            "Volumes": {"/data": {}},
            "Image": "busybox",
        }))
        .unwrap()
    }

    #[test]
    fn commit_takes_the_container_config_and_applies_changes() {
        let c = container_config();
        let config = committed_config(
            &c,
            None,
            &[r#"CMD ["x"]"#.to_string(), "ENV MODE=prod".to_string()],
        )
        .unwrap();
        assert_eq!(config["Cmd"], json!(["x"]));
        assert_eq!(config["Env"], json!(["PATH=/bin", "MODE=prod"]));
        assert_eq!(config["User"], json!("app"));
        assert_eq!(config["WorkingDir"], json!("/srv"));
        assert_eq!(config["ExposedPorts"], json!({"80/tcp": {}}));
    }

    #[test]
    fn a_requested_config_is_completed_from_the_container() {
        let c = container_config();
        let requested: ContainerConfig = serde_json::from_value(json!({
            "Env": ["MODE=test", "EXTRA=1"],
            "Labels": {"from": "request", "only": "request"},
            "ExposedPorts": {"443/tcp": {}},
            "Entrypoint": ["/entry"],
        }))
        .unwrap();
        let config = committed_config(&c, Some(&requested), &[]).unwrap();
        assert_eq!(config["Env"], json!(["MODE=test", "EXTRA=1", "PATH=/bin"]));
        assert_eq!(
            config["Labels"],
            json!({"from": "request", "only": "request"})
        );
        assert_eq!(config["ExposedPorts"], json!({"443/tcp": {}, "80/tcp": {}}));
        assert_eq!(config["Volumes"], json!({"/data": {}}));
        assert_eq!(config["User"], json!("app"));
        // An entrypoint of the request's own keeps the request's (empty) command.
        assert_eq!(config["Entrypoint"], json!(["/entry"]));
        assert!(is_empty(config.get("Cmd")), "{:?}", config.get("Cmd"));

        // An empty request config takes the container's command and entrypoint.
        let config = committed_config(&c, Some(&ContainerConfig::default()), &[]).unwrap();
        assert_eq!(config["Cmd"], json!(["sh", "-c", "serve"]));
        // An ENTRYPOINT change drops the inherited command, as in a Dockerfile.
        let config = committed_config(&c, None, &[r#"ENTRYPOINT ["/e"]"#.to_string()]).unwrap();
        assert_eq!(config["Entrypoint"], json!(["/e"]));
        assert!(is_empty(config.get("Cmd")));
    }

    #[test]
    fn the_blob_keeps_the_parents_extras_and_appends_history() {
        let parent = json!({
            "architecture": "arm64",
            "os": "linux",
            "author": "base author",
            "config": {"Cmd": ["sh"], "Healthcheck": {"Test": ["CMD", "true"]}, "Shell": ["/bin/ash", "-c"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:aa"]},
            "history": [{"created_by": "ADD rootfs"}],
            "container_config": {"Cmd": ["old"]},
        });
        let config = committed_config(&container_config(), None, &[]).unwrap();
        let layer = |d: &str| LayerInfo {
            diff_id: Digest::parse(&format!("sha256:{}", d.repeat(32))).unwrap(),
            digest: Digest::parse(&format!("sha256:{}", d.repeat(32))).unwrap(),
            media_type: String::new(),
            size: 0,
            unpacked_size: 0,
        };
        let layers = [layer("aa"), layer("bb")];
        let blob = image_blob(
            &parent,
            &NewImage {
                config: &config,
                layers: &layers,
                added_layer: true,
                container_id: "c0ffee",
                created_by: "sh -c serve".into(),
                author: "",
                comment: "snapshot",
                created: "2025-01-02T03:04:05.000000006Z".into(),
            },
        );
        assert_eq!(blob["architecture"], json!("arm64"));
        assert!(
            blob.get("author").is_none(),
            "the parent's author is not inherited"
        );
        assert!(blob.get("container_config").is_none());
        assert_eq!(blob["config"]["Cmd"], json!(["sh", "-c", "serve"]));
        assert_eq!(blob["config"]["Shell"], json!(["/bin/ash", "-c"]));
        assert_eq!(
            blob["config"]["Healthcheck"]["Test"],
            json!(["CMD", "true"])
        );
        assert!(blob["config"].get("Hostname").is_none());
        assert_eq!(blob["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
        let history = blob["history"].as_array().unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(
            history[1],
            json!({"created": "2025-01-02T03:04:05.000000006Z", "created_by": "sh -c serve", "comment": "snapshot"})
        );

        let unchanged = image_blob(
            &parent,
            &NewImage {
                config: &config,
                layers: &layers[..1],
                added_layer: false,
                container_id: "c0ffee",
                created_by: "sh".into(),
                author: "me",
                comment: "",
                created: "2025-01-02T03:04:05Z".into(),
            },
        );
        assert_eq!(unchanged["author"], json!("me"));
        assert_eq!(unchanged["history"][1]["empty_layer"], json!(true));
        assert_eq!(unchanged["history"][1]["author"], json!("me"));
    }

    #[test]
    fn references_follow_dockers_repo_and_tag_rules() {
        assert!(commit_reference("", "x").unwrap().is_none());
        let r = commit_reference("snap", "").unwrap().unwrap();
        assert_eq!(r.familiar_string(), "snap:latest");
        let r = commit_reference("docker.io/library/snap", "v2")
            .unwrap()
            .unwrap();
        assert_eq!(r.familiar_string(), "snap:v2");
        let r = commit_reference("snap:v3", "").unwrap().unwrap();
        assert_eq!(r.familiar_string(), "snap:v3");
        assert!(commit_reference("UPPER", "").is_err());
        assert!(commit_reference("snap", "bad tag").is_err());
    }
}
