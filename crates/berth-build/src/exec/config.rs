//! The image configuration a build produces, and how metadata instructions change it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::context::clean_path;
use crate::instructions::{Command, HealthTest, InstructionKind};

/// The default shell of Linux images.
pub fn default_shell() -> Vec<String> {
    vec!["/bin/sh".to_string(), "-c".to_string()]
}

/// The PATH Docker sets when a base image has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A HEALTHCHECK as stored in the image config (durations in nanoseconds).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", "..."]`.
    pub test: Vec<String>,
    /// Time between checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<u64>,
    /// Time a check may take.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Grace period after start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_period: Option<u64>,
    /// Interval during the start period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<u64>,
    /// Failures before unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

/// The runtime configuration of an image, with Docker's field names.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    /// `user[:group]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Environment as `NAME=value`, in order.
    #[serde(default)]
    pub env: Vec<String>,
    /// ENTRYPOINT argv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// CMD argv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// WORKDIR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// LABELs.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// EXPOSEd ports as `port/proto`.
    #[serde(default)]
    pub exposed_ports: BTreeSet<String>,
    /// VOLUMEs.
    #[serde(default)]
    pub volumes: BTreeSet<String>,
    /// STOPSIGNAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// HEALTHCHECK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// SHELL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    /// ONBUILD triggers.
    #[serde(default)]
    pub on_build: Vec<String>,
    /// MAINTAINER (the image author).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
}

impl ImageConfig {
    /// The value of environment variable `name`.
    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix(name)?.strip_prefix('='))
    }

    /// Sets `name=value`, replacing an earlier value in place.
    pub fn set_env(&mut self, name: &str, value: &str) {
        let entry = format!("{name}={value}");
        match self
            .env
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == name)
        {
            Some(slot) => *slot = entry,
            None => self.env.push(entry),
        }
    }

    /// The environment as pairs.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e.clone(), String::new()),
            })
            .collect()
    }

    /// The shell for shell-form commands.
    pub fn shell_or_default(&self) -> Vec<String> {
        self.shell.clone().unwrap_or_else(default_shell)
    }
}

/// One entry of the image history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// What created the step, as `docker history` shows it.
    pub created_by: String,
    /// Whether the step changed only the configuration.
    pub empty_layer: bool,
}

/// Per-stage facts that decide how CMD and ENTRYPOINT combine.
#[derive(Debug, Clone, Default)]
pub struct CommandState {
    /// Whether this stage set CMD itself (an inherited CMD is dropped by ENTRYPOINT).
    pub cmd_set: bool,
}

/// Joins a path onto the working directory and cleans it, as Docker does for WORKDIR.
pub fn resolve_path(workdir: Option<&str>, path: &str) -> String {
    if path.starts_with('/') {
        return clean_path(path);
    }
    clean_path(&format!("{}/{path}", workdir.unwrap_or("/")))
}

/// Resolves a COPY/ADD destination against the working directory; a
/// destination naming a directory (`dir/`, `.`, `..`) keeps a trailing `/`.
pub fn resolve_dest(workdir: Option<&str>, dest: &str) -> String {
    let mut resolved = resolve_path(workdir, dest);
    let names_dir = dest.ends_with('/')
        || dest.ends_with("/.")
        || dest.ends_with("/..")
        || dest == "."
        || dest == "..";
    if names_dir && !resolved.ends_with('/') {
        resolved.push('/');
    }
    resolved
}

fn normalize_port(port: &str) -> String {
    if port.contains('/') {
        port.to_ascii_lowercase()
    } else {
        format!("{port}/tcp")
    }
}

/// Applies a metadata-only instruction (already expanded) to `config`;
/// returns the history text, or `None` for instructions that change files.
pub fn apply_metadata(
    config: &mut ImageConfig,
    state: &mut CommandState,
    kind: &InstructionKind,
) -> Option<String> {
    let shell = config.shell_or_default();
    let text = match kind {
        InstructionKind::Env { vars } => {
            for kv in vars {
                config.set_env(&kv.key, &kv.value);
            }
            let pairs: Vec<String> = vars
                .iter()
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect();
            format!("ENV {}", pairs.join(" "))
        }
        InstructionKind::Label { labels } => {
            for kv in labels {
                config.labels.insert(kv.key.clone(), kv.value.clone());
            }
            let pairs: Vec<String> = labels
                .iter()
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect();
            format!("LABEL {}", pairs.join(" "))
        }
        InstructionKind::Maintainer { name } => {
            config.author = Some(name.clone());
            format!("MAINTAINER {name}")
        }
        InstructionKind::Expose { ports } => {
            let normalized: Vec<String> = ports.iter().map(|p| normalize_port(p)).collect();
            config.exposed_ports.extend(normalized.iter().cloned());
            format!(
                "EXPOSE map[{}]",
                normalized
                    .iter()
                    .map(|p| format!("{p}:{{}}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
        InstructionKind::Volume { paths } => {
            config.volumes.extend(paths.iter().cloned());
            format!(
                "VOLUME {}",
                serde_json::to_string(paths).unwrap_or_default()
            )
        }
        InstructionKind::User { user } => {
            config.user = Some(user.clone());
            format!("USER {user}")
        }
        InstructionKind::Workdir { path } => {
            let resolved = resolve_path(config.working_dir.as_deref(), path);
            config.working_dir = Some(resolved.clone());
            format!("WORKDIR {resolved}")
        }
        InstructionKind::Stopsignal { signal } => {
            config.stop_signal = Some(signal.clone());
            format!("STOPSIGNAL {signal}")
        }
        InstructionKind::Cmd { command } => {
            config.cmd = Some(command.to_argv(&shell));
            state.cmd_set = true;
            format!(
                "CMD {}",
                serde_json::to_string(&command.to_argv(&shell)).unwrap_or_default()
            )
        }
        InstructionKind::Entrypoint { command } => {
            config.entrypoint = Some(command.to_argv(&shell));
            if !state.cmd_set {
                config.cmd = None;
            }
            format!(
                "ENTRYPOINT {}",
                serde_json::to_string(&command.to_argv(&shell)).unwrap_or_default()
            )
        }
        InstructionKind::Shell { shell } => {
            config.shell = Some(shell.clone());
            format!("SHELL {}", serde_json::to_string(shell).unwrap_or_default())
        }
        InstructionKind::Onbuild { expression, .. } => {
            config.on_build.push(expression.clone());
            format!("ONBUILD {expression}")
        }
        InstructionKind::Healthcheck(h) => {
            let test = match &h.test {
                HealthTest::None => vec!["NONE".to_string()],
                HealthTest::Cmd(Command::Exec(argv)) => std::iter::once("CMD".to_string())
                    .chain(argv.iter().cloned())
                    .collect(),
                HealthTest::Cmd(Command::Shell(s)) => vec!["CMD-SHELL".to_string(), s.clone()],
            };
            // A new HEALTHCHECK replaces an inherited one entirely, options included.
            config.healthcheck = Some(HealthConfig {
                test: test.clone(),
                interval: h.interval_ns,
                timeout: h.timeout_ns,
                start_period: h.start_period_ns,
                start_interval: h.start_interval_ns,
                retries: h.retries,
            });
            format!(
                "HEALTHCHECK {}",
                serde_json::to_string(&test).unwrap_or_default()
            )
        }
        InstructionKind::From(_)
        | InstructionKind::Run(_)
        | InstructionKind::Add(_)
        | InstructionKind::Copy(_)
        | InstructionKind::Arg { .. } => return None,
    };
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instructions::parse_dockerfile;

    fn apply(config: &mut ImageConfig, state: &mut CommandState, line: &str) -> Option<String> {
        let parsed = parse_dockerfile(&format!("FROM scratch\n{line}\n")).unwrap();
        apply_metadata(config, state, &parsed.stages[0].instructions[0].kind)
    }

    #[test]
    fn entrypoint_drops_inherited_cmd_but_not_own() {
        let mut config = ImageConfig {
            cmd: Some(vec!["bash".into()]),
            ..Default::default()
        };
        let mut state = CommandState::default();
        apply(&mut config, &mut state, "ENTRYPOINT [\"/entry\"]");
        assert_eq!(config.cmd, None);
        apply(&mut config, &mut state, "CMD [\"serve\"]");
        apply(&mut config, &mut state, "ENTRYPOINT /entry2 --flag");
        assert_eq!(config.cmd, Some(vec!["serve".to_string()]));
        assert_eq!(
            config.entrypoint,
            Some(vec!["/bin/sh".into(), "-c".into(), "/entry2 --flag".into()])
        );
    }

    #[test]
    fn shell_form_uses_the_current_shell() {
        let mut config = ImageConfig::default();
        let mut state = CommandState::default();
        apply(
            &mut config,
            &mut state,
            "SHELL [\"/bin/bash\", \"-eu\", \"-c\"]",
        );
        apply(&mut config, &mut state, "CMD echo hi");
        assert_eq!(
            config.cmd,
            Some(vec![
                "/bin/bash".into(),
                "-eu".into(),
                "-c".into(),
                "echo hi".into()
            ])
        );
    }

    #[test]
    fn workdir_env_expose_healthcheck() {
        let mut config = ImageConfig::default();
        let mut state = CommandState::default();
        apply(&mut config, &mut state, "WORKDIR /srv");
        apply(&mut config, &mut state, "WORKDIR app");
        assert_eq!(config.working_dir.as_deref(), Some("/srv/app"));
        assert_eq!(resolve_dest(Some("/srv/app"), "./"), "/srv/app/");
        assert_eq!(resolve_dest(Some("/srv/app"), "."), "/srv/app/");
        assert_eq!(resolve_dest(Some("/srv/app"), "../x"), "/srv/x");
        assert_eq!(resolve_dest(None, "/etc//conf.d/"), "/etc/conf.d/");
        apply(&mut config, &mut state, "ENV A=1 B=2");
        apply(&mut config, &mut state, "ENV A=3");
        assert_eq!(config.env, vec!["A=3", "B=2"]);
        apply(&mut config, &mut state, "EXPOSE 80 53/UDP");
        assert!(config.exposed_ports.contains("80/tcp") && config.exposed_ports.contains("53/udp"));
        apply(
            &mut config,
            &mut state,
            "HEALTHCHECK --interval=5s CMD curl -f localhost",
        );
        apply(
            &mut config,
            &mut state,
            "HEALTHCHECK --retries=2 CMD [\"true\"]",
        );
        let h = config.healthcheck.clone().unwrap();
        assert_eq!(h.test, vec!["CMD", "true"]);
        assert_eq!(
            (h.interval, h.retries),
            (None, Some(2)),
            "the second check replaces the first"
        );
        let text = apply(&mut config, &mut state, "ONBUILD RUN make").unwrap();
        assert_eq!(text, "ONBUILD RUN make");
        assert_eq!(config.on_build, vec!["RUN make"]);
        assert!(apply(&mut config, &mut state, "RUN make").is_none());
    }
}
