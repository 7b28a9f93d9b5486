//! `--change` instructions for `import` and `commit`: the Dockerfile instructions that only
//! alter an image's config, applied as Docker's `BuildFromConfig` does. The lines are parsed
//! and expanded by berth-build's Dockerfile parser and applied by the same code as build
//! steps, so `CMD`, `ENV` and friends mean exactly what they mean in a Dockerfile.

use std::collections::BTreeSet;

use berth_build::exec::{CommandState, HealthConfig, ImageConfig, apply_metadata};
use berth_build::expand::Lexer;
use berth_build::instructions::parse_dockerfile;
use serde_json::{Map, Value, json};

use crate::error::{ServiceError, ServiceResult};

/// The instructions Docker accepts as changes (its `validCommitCommands`).
const VALID_CHANGES: &[&str] = &[
    "cmd",
    "entrypoint",
    "env",
    "expose",
    "healthcheck",
    "label",
    "onbuild",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// Applies `lines` to a Docker `Config` object (`{"Cmd": .., "Env": .., ...}`), in order.
/// Only the fields the instructions change are rewritten; every other field is kept as is.
pub fn apply_to_json(config: &mut Map<String, Value>, lines: &[String]) -> ServiceResult<()> {
    let lines: Vec<&str> = lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return Ok(());
    }
    for line in &lines {
        let word = line.split_whitespace().next().unwrap_or_default();
        if !word.starts_with('#') && !VALID_CHANGES.contains(&word.to_ascii_lowercase().as_str()) {
            return Err(ServiceError::invalid(format!(
                "{} is not a valid change command",
                word.to_ascii_lowercase()
            )));
        }
    }
    // Docker parses the changes as a Dockerfile; a stage needs a FROM first.
    let parsed = parse_dockerfile(&format!("FROM scratch\n{}\n", lines.join("\n")))
        .map_err(|e| ServiceError::invalid(format!("invalid change: {}", e.message)))?;
    let lexer = Lexer::new(parsed.directives.escape);
    let before = image_config_from_json(config);
    let mut after = before.clone();
    let mut state = CommandState::default();
    for stage in &parsed.stages {
        for instruction in &stage.instructions {
            let expanded = instruction
                .expand(&lexer, &after.env_pairs())
                .map_err(|e| ServiceError::invalid(format!("invalid change: {}", e.message)))?;
            apply_metadata(&mut after, &mut state, &expanded.kind);
        }
    }
    write_changed_fields(config, &before, &after);
    Ok(())
}

/// [`apply_to_json`] for an OCI image config (`import`).
pub fn apply_to_oci(config: &mut oci_spec::image::Config, lines: &[String]) -> ServiceResult<()> {
    let mut object = match serde_json::to_value(&*config) {
        Ok(Value::Object(o)) => o,
        Ok(_) => Map::new(),
        Err(e) => return Err(ServiceError::internal(format!("encode image config: {e}"))),
    };
    apply_to_json(&mut object, lines)?;
    *config = serde_json::from_value(Value::Object(object))
        .map_err(|e| ServiceError::invalid(format!("image config after changes: {e}")))?;
    Ok(())
}

/// The fields of a Docker `Config` object that Dockerfile instructions change.
fn image_config_from_json(c: &Map<String, Value>) -> ImageConfig {
    let strings = |key: &str| -> Option<Vec<String>> {
        c.get(key).and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
    };
    let text = |key: &str| {
        c.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let keys = |key: &str| -> BTreeSet<String> {
        c.get(key)
            .and_then(Value::as_object)
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    ImageConfig {
        user: text("User"),
        env: strings("Env").unwrap_or_default(),
        entrypoint: strings("Entrypoint"),
        cmd: strings("Cmd"),
        working_dir: text("WorkingDir"),
        labels: c
            .get("Labels")
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default(),
        exposed_ports: keys("ExposedPorts"),
        volumes: keys("Volumes"),
        stop_signal: text("StopSignal"),
        healthcheck: c
            .get("Healthcheck")
            .and_then(|h| serde_json::from_value::<HealthConfig>(h.clone()).ok()),
        shell: strings("Shell").filter(|s| !s.is_empty()),
        on_build: strings("OnBuild").unwrap_or_default(),
        author: None,
    }
}

/// Writes the fields that differ between `before` and `after` into `c`, in Docker's shapes
/// (sets as `{"key": {}}` objects).
fn write_changed_fields(c: &mut Map<String, Value>, before: &ImageConfig, after: &ImageConfig) {
    let set = |keys: &BTreeSet<String>| -> Value {
        Value::Object(keys.iter().map(|k| (k.clone(), json!({}))).collect())
    };
    let mut put = |key: &str, value: Value| {
        c.insert(key.to_string(), value);
    };
    if before.user != after.user {
        put("User", json!(after.user.clone().unwrap_or_default()));
    }
    if before.env != after.env {
        put("Env", json!(after.env));
    }
    if before.entrypoint != after.entrypoint {
        put("Entrypoint", json!(after.entrypoint));
    }
    if before.cmd != after.cmd {
        put("Cmd", json!(after.cmd));
    }
    if before.working_dir != after.working_dir {
        put(
            "WorkingDir",
            json!(after.working_dir.clone().unwrap_or_default()),
        );
    }
    if before.labels != after.labels {
        put("Labels", json!(after.labels));
    }
    if before.exposed_ports != after.exposed_ports {
        put("ExposedPorts", set(&after.exposed_ports));
    }
    if before.volumes != after.volumes {
        put("Volumes", set(&after.volumes));
    }
    if before.stop_signal != after.stop_signal {
        put("StopSignal", json!(after.stop_signal));
    }
    if before.healthcheck != after.healthcheck {
        put("Healthcheck", json!(after.healthcheck));
    }
    if before.on_build != after.on_build {
        put("OnBuild", json!(after.on_build));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn changes_apply_like_dockerfile_instructions() {
        let mut c = oci_spec::image::Config::default();
        apply_to_oci(&mut c, &changes(&[r#"CMD ["echo","imported"]"#])).unwrap();
        assert_eq!(c.cmd().clone().unwrap(), vec!["echo", "imported"]);
        apply_to_oci(
            &mut c,
            &changes(&[
                "ENTRYPOINT run me",
                r#"ENV A=1 B="two words""#,
                "ENV A=3",
                "EXPOSE 80 53/udp",
                "WORKDIR /srv",
                "WORKDIR sub",
                "LABEL k=v",
            ]),
        )
        .unwrap();
        assert_eq!(
            c.entrypoint().clone().unwrap(),
            vec!["/bin/sh", "-c", "run me"]
        );
        // An ENTRYPOINT drops a CMD the changes did not set themselves, as in Docker.
        assert_eq!(c.cmd().clone(), None);
        assert_eq!(c.env().clone().unwrap(), vec!["A=3", "B=two words"]);
        let mut ports = c.exposed_ports().clone().unwrap();
        ports.sort();
        assert_eq!(ports, vec!["53/udp", "80/tcp"]);
        assert_eq!(c.working_dir().as_deref(), Some("/srv/sub"));
        assert_eq!(
            c.labels().clone().unwrap().get("k").map(String::as_str),
            Some("v")
        );
    }

    #[test]
    fn invalid_change_commands_are_refused_with_dockers_words() {
        let mut c = Map::new();
        let err = apply_to_json(&mut c, &changes(&["RUN echo no"])).unwrap_err();
        assert!(
            err.to_string()
                .contains("run is not a valid change command")
        );
        let err = apply_to_json(&mut c, &changes(&["FROM busybox"])).unwrap_err();
        assert!(
            err.to_string()
                .contains("from is not a valid change command")
        );
        assert!(c.is_empty(), "a refused change alters nothing: {c:?}");
    }

    #[test]
    fn json_changes_keep_untouched_fields_and_expand_variables() {
        let mut c = serde_json::from_value::<Map<String, Value>>(json!({
            "Hostname": "abc",
            "Env": ["PATH=/bin"],
            "Cmd": ["sh"],
            "Healthcheck": {"Test": ["CMD", "true"], "Interval": 5}
        }))
        .unwrap();
        apply_to_json(
            &mut c,
            &changes(&[
                "ENV PATH=$PATH:/opt/bin",
                "HEALTHCHECK --retries=2 CMD wget -q localhost",
                "ONBUILD RUN make",
            ]),
        )
        .unwrap();
        assert_eq!(c["Hostname"], json!("abc"));
        assert_eq!(c["Cmd"], json!(["sh"]));
        assert_eq!(c["Env"], json!(["PATH=/bin:/opt/bin"]));
        assert_eq!(
            c["Healthcheck"],
            json!({"Test": ["CMD-SHELL", "wget -q localhost"], "Retries": 2})
        );
        assert_eq!(c["OnBuild"], json!(["RUN make"]));
        assert!(c.get("Labels").is_none(), "untouched fields are not added");
    }
}
