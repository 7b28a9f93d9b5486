//! Between the build library's `ImageConfig` and the image configuration blob, in Docker's
//! shape: the blob keeps the fields OCI lacks (Healthcheck, OnBuild, Shell), so base images
//! built here or by docker hand them on, and built images carry them.

use berth_build::exec::{HealthConfig, HistoryEntry, ImageConfig};
use berth_build::plan::Platform;
use berth_store::LayerInfo;
use serde_json::{Map, Value, json};

/// The runtime config of an image blob (`config` and the top-level `author`).
pub(crate) fn from_json(blob: &Value) -> ImageConfig {
    let c = &blob["config"];
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_array().map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
    };
    let keys = |v: &Value| -> std::collections::BTreeSet<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    ImageConfig {
        user: text(&c["User"]),
        env: strings(&c["Env"]).unwrap_or_default(),
        entrypoint: strings(&c["Entrypoint"]),
        cmd: strings(&c["Cmd"]),
        working_dir: text(&c["WorkingDir"]),
        labels: c["Labels"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default(),
        exposed_ports: keys(&c["ExposedPorts"]),
        volumes: keys(&c["Volumes"]),
        stop_signal: text(&c["StopSignal"]),
        healthcheck: serde_json::from_value::<HealthConfig>(c["Healthcheck"].clone()).ok(),
        shell: strings(&c["Shell"]).filter(|s| !s.is_empty()),
        on_build: strings(&c["OnBuild"]).unwrap_or_default(),
        author: text(&blob["author"]),
    }
}

/// The history of an image blob, as the build library tracks it.
pub(crate) fn history_from_json(blob: &Value) -> Vec<HistoryEntry> {
    blob["history"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|h| HistoryEntry {
                    created_by: h["created_by"].as_str().unwrap_or_default().to_string(),
                    empty_layer: h["empty_layer"].as_bool().unwrap_or(false),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What the configuration blob of a built image is made of.
pub(crate) struct BuiltImage<'a> {
    pub config: &'a ImageConfig,
    pub history: &'a [HistoryEntry],
    pub layers: &'a [LayerInfo],
    pub platform: &'a Platform,
    /// RFC 3339 creation time (the epoch's when reproducible).
    pub created: String,
}

/// The configuration blob of a built image, in Docker's shape.
pub(crate) fn to_json(image: &BuiltImage<'_>) -> Value {
    let c = image.config;
    let set = |keys: &std::collections::BTreeSet<String>| -> Value {
        if keys.is_empty() {
            Value::Null
        } else {
            Value::Object(keys.iter().map(|k| (k.clone(), json!({}))).collect())
        }
    };
    let mut config = Map::new();
    config.insert("User".into(), json!(c.user.clone().unwrap_or_default()));
    config.insert("Env".into(), json!(c.env));
    config.insert("Entrypoint".into(), json!(c.entrypoint));
    config.insert("Cmd".into(), json!(c.cmd));
    config.insert(
        "WorkingDir".into(),
        json!(c.working_dir.clone().unwrap_or_default()),
    );
    config.insert("Labels".into(), json!(c.labels));
    config.insert("ExposedPorts".into(), set(&c.exposed_ports));
    config.insert("Volumes".into(), set(&c.volumes));
    config.insert("OnBuild".into(), json!(c.on_build));
    if let Some(signal) = &c.stop_signal {
        config.insert("StopSignal".into(), json!(signal));
    }
    if let Some(health) = &c.healthcheck {
        config.insert("Healthcheck".into(), json!(health));
    }
    if let Some(shell) = &c.shell {
        config.insert("Shell".into(), json!(shell));
    }
    let history: Vec<Value> = image
        .history
        .iter()
        .map(|h| {
            let mut entry = json!({
                "created": image.created,
                "created_by": h.created_by,
                "comment": "buildkit.dockerfile.v0",
            });
            if h.empty_layer {
                entry["empty_layer"] = json!(true);
            }
            entry
        })
        .collect();
    let mut blob = json!({
        "architecture": image.platform.arch,
        "os": image.platform.os,
        "created": image.created,
        "config": Value::Object(config),
        "rootfs": {
            "type": "layers",
            "diff_ids": image.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
        },
        "history": history,
    });
    if let Some(variant) = &image.platform.variant {
        blob["variant"] = json!(variant);
    }
    if let Some(author) = &c.author {
        blob["author"] = json!(author);
    }
    blob
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_fields_round_trip_through_the_blob() {
        let mut config = ImageConfig {
            user: Some("app".into()),
            env: vec!["PATH=/bin".into(), "A=1".into()],
            cmd: Some(vec!["serve".into()]),
            working_dir: Some("/srv".into()),
            shell: Some(vec!["/bin/bash".into(), "-c".into()]),
            on_build: vec!["RUN echo child".into()],
            stop_signal: Some("SIGINT".into()),
            author: Some("me".into()),
            healthcheck: Some(HealthConfig {
                test: vec!["CMD-SHELL".into(), "true".into()],
                interval: Some(5_000_000_000),
                retries: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        };
        config.labels.insert("l".into(), "v".into());
        config.exposed_ports.insert("80/tcp".into());
        config.volumes.insert("/data".into());
        let history = vec![HistoryEntry {
            created_by: "ENV A=1".into(),
            empty_layer: true,
        }];
        let blob = to_json(&BuiltImage {
            config: &config,
            history: &history,
            layers: &[],
            platform: &Platform::host(),
            created: "1970-01-01T00:00:00Z".into(),
        });
        assert_eq!(blob["config"]["ExposedPorts"], json!({"80/tcp": {}}));
        assert_eq!(
            blob["config"]["Healthcheck"]["Interval"],
            json!(5_000_000_000u64)
        );
        assert_eq!(blob["history"][0]["empty_layer"], json!(true));
        assert_eq!(from_json(&blob), config);
        assert_eq!(history_from_json(&blob), history);
        // And the blob is a valid OCI image configuration.
        let bytes = serde_json::to_vec(&blob).unwrap();
        serde_json::from_slice::<oci_spec::image::ImageConfiguration>(&bytes).unwrap();
    }

    #[test]
    fn null_fields_of_docker_blobs_read_as_empty() {
        let blob = json!({"config": {"Env": null, "Labels": null, "OnBuild": null, "Cmd": ["sh"]}});
        let config = from_json(&blob);
        assert!(config.env.is_empty() && config.labels.is_empty() && config.on_build.is_empty());
        assert_eq!(config.cmd, Some(vec!["sh".to_string()]));
    }
}
