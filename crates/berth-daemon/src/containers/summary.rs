//! Container views: `ps` summaries with their filters, and inspect.

use std::collections::HashMap;

use berth_api::filters::{Filters, labels_match};
use berth_api::models::{
    ContainerInspectResponse, ContainerState, ContainerSummary, ContainerSummaryHostConfig,
    ContainerSummaryNetworkSettings, DriverData,
};
use chrono::{DateTime, Utc};

use super::{ContainerRecord, Status};
use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

/// `ps` options.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Include stopped containers.
    pub all: bool,
    /// Newest N only (`-n`); negative or zero means no limit.
    pub limit: i64,
    /// Compute sizes.
    pub size: bool,
    /// The filters.
    pub filters: Filters,
}

/// How many `container:` links [`Daemon::network_files_owner`] follows.
const MAX_OWNER_HOPS: usize = 16;

const FILTERS: &[&str] = &[
    "id", "name", "label", "status", "ancestor", "exited", "before", "since", "health", "network",
    "volume", "publish", "expose", "is-task",
];

impl Daemon {
    /// Lists containers like `GET /containers/json`.
    pub fn list_containers(&self, opts: &ListOptions) -> ServiceResult<Vec<ContainerSummary>> {
        opts.filters
            .check_names(FILTERS)
            .map_err(|e| ServiceError::invalid(e.to_string()))?;
        if let Some(bad) = opts
            .filters
            .get("health")
            .iter()
            .find(|v| !["none", "starting", "healthy", "unhealthy"].contains(&v.as_str()))
        {
            return Err(ServiceError::invalid(format!(
                "invalid filter 'health={bad}': invalid value for health ({bad}): must be one of none, starting, healthy, unhealthy"
            )));
        }
        let mut records: Vec<ContainerRecord> =
            self.containers.all().iter().map(|c| c.snapshot()).collect();
        records.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
        let f = &opts.filters;
        let created_of = |reference: &str| -> ServiceResult<DateTime<Utc>> {
            Ok(self.containers.get(reference)?.record().created)
        };
        let before = f.get("before").first().map(|r| created_of(r)).transpose()?;
        let since = f.get("since").first().map(|r| created_of(r)).transpose()?;
        let ancestors: Vec<String> = f
            .get("ancestor")
            .iter()
            .filter_map(|a| self.store.resolve(a).ok().map(|img| img.id.to_string()))
            .collect();
        let all = opts.all || !f.get("status").is_empty() || !f.get("exited").is_empty();
        let mut out = Vec::new();
        for r in records {
            if !all && !r.state.status.is_active() {
                continue;
            }
            if let Some(b) = before
                && r.created >= b
            {
                continue;
            }
            if let Some(s) = since
                && r.created <= s
            {
                continue;
            }
            if !record_matches(&r, f, &ancestors) {
                continue;
            }
            let mut line = summary(&r, opts.size.then(|| self.container_size(&r.id)));
            let (ports, networks) = self.container_summary_networks(&r);
            line.ports = Some(ports);
            line.network_settings = Some(ContainerSummaryNetworkSettings {
                networks: Some(networks),
            });
            out.push(line);
            if opts.limit > 0 && out.len() as i64 >= opts.limit {
                break;
            }
        }
        Ok(out)
    }

    /// The container whose `hostname`, `hosts` and `resolv.conf` this one uses: itself, or
    /// for `--network container:<id>` the container at the end of the chain of owners (moby
    /// gives a joining container its owner's paths, which are the owner's owner's if it joins
    /// in turn). An owner removed since is still named by its id, as moby keeps the paths.
    fn network_files_owner(&self, record: &ContainerRecord) -> String {
        let owner_of =
            |r: &ContainerRecord| super::restart::network_owner(&r.host_config).map(str::to_string);
        let Some(mut owner) = owner_of(record) else {
            return record.id.clone();
        };
        // Bounded: an owner named before it existed (not pinned to an id) could close a loop.
        for _ in 0..MAX_OWNER_HOPS {
            let Ok(container) = self.containers.get(&owner) else {
                break;
            };
            let next = owner_of(&container.record());
            owner = container.id.clone();
            match next {
                Some(next) => owner = next,
                None => break,
            }
        }
        owner
    }

    fn container_size(&self, id: &str) -> i64 {
        self.store
            .container_usage(id)
            .map(|u| u as i64)
            .unwrap_or_default()
    }

    /// Inspects a container like `GET /containers/{id}/json`.
    pub fn inspect_container(
        &self,
        reference: &str,
        size: bool,
    ) -> ServiceResult<ContainerInspectResponse> {
        let c = self.containers.get(reference)?;
        let r = c.snapshot();
        let dir = self.container_dir(&self.network_files_owner(&r));
        let path = |name: &str| Some(dir.join(name).display().to_string());
        let rw = size.then(|| self.container_size(&r.id));
        Ok(ContainerInspectResponse {
            id: Some(r.id.clone()),
            created: Some(rfc3339(Some(r.created))),
            path: Some(r.path.clone()),
            args: Some(r.args.clone()),
            state: Some(inspect_state(&r)),
            image: Some(r.image_id.clone()),
            resolv_conf_path: path("resolv.conf"),
            hostname_path: path("hostname"),
            hosts_path: path("hosts"),
            log_path: Some(self.log_path(&r.id).display().to_string()),
            name: Some(format!("/{}", r.name)),
            restart_count: Some(r.state.restart_count),
            driver: Some("overlayfs".into()),
            platform: Some("linux".into()),
            mount_label: Some(String::new()),
            process_label: Some(String::new()),
            app_armor_profile: Some(String::new()),
            exec_ids: Some(self.execs.of_container(&r.id)).filter(|ids| !ids.is_empty()),
            host_config: Some(r.host_config.clone()),
            graph_driver: Some(DriverData {
                name: "overlayfs".into(),
                data: HashMap::new(),
            }),
            size_rw: rw,
            size_root_fs: rw,
            mounts: Some(
                r.mounts
                    .iter()
                    .map(crate::volumes::MountPoint::to_api)
                    .collect(),
            ),
            config: Some(r.config.clone()),
            network_settings: Some(self.container_network_settings(&r)),
            ..Default::default()
        })
    }
}

fn record_matches(r: &ContainerRecord, f: &Filters, ancestors: &[String]) -> bool {
    let any = |values: &[String], pred: &dyn Fn(&str) -> bool| {
        values.is_empty() || values.iter().any(|v| pred(v))
    };
    let labels = r.config.labels.clone().unwrap_or_default();
    any(f.get("id"), &|v| r.id.starts_with(v))
        && any(f.get("name"), &|v| {
            r.name.contains(v.trim_start_matches('/'))
        })
        && any(f.get("status"), &|v| r.state.status.as_str() == v)
        && any(f.get("exited"), &|v| {
            r.state.status == Status::Exited && v.parse::<i64>().ok() == Some(r.state.exit_code)
        })
        && any(f.get("health"), &|v| {
            super::health::health_filter_value(r.state.health.as_ref()) == v
        })
        && (f.get("ancestor").is_empty() || ancestors.contains(&r.image_id))
        && any(f.get("volume"), &|v| {
            r.mounts
                .iter()
                .any(|m| (!m.name.is_empty() && m.name == v) || m.destination == v)
        })
        && labels_match(f.get("label"), |k| labels.get(k).map(String::as_str))
}

fn summary(r: &ContainerRecord, size: Option<i64>) -> ContainerSummary {
    let state =
        serde_json::from_value(serde_json::Value::String(r.state.status.as_str().into())).ok();
    // moby joins path and args with spaces, unquoted; the CLI quotes the whole string.
    let command = std::iter::once(r.path.as_str())
        .chain(r.args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    ContainerSummary {
        id: Some(r.id.clone()),
        names: Some(vec![format!("/{}", r.name)]),
        image: r.config.image.clone(),
        image_id: Some(r.image_id.clone()),
        command: Some(command),
        created: Some(r.created.timestamp()),
        ports: Some(Vec::new()),
        size_rw: size,
        size_root_fs: size,
        labels: r.config.labels.clone().or_else(|| Some(HashMap::new())),
        state,
        status: Some(status_text(r, Utc::now())),
        host_config: Some(ContainerSummaryHostConfig {
            network_mode: r.host_config.network_mode.clone(),
            ..Default::default()
        }),
        network_settings: Some(ContainerSummaryNetworkSettings {
            networks: Some(HashMap::new()),
        }),
        mounts: Some(
            r.mounts
                .iter()
                .map(crate::volumes::MountPoint::to_api)
                .collect(),
        ),
        ..Default::default()
    }
}

fn inspect_state(r: &ContainerRecord) -> ContainerState {
    let s = &r.state;
    ContainerState {
        status: serde_json::from_value(serde_json::Value::String(s.status.as_str().into())).ok(),
        // moby counts a container waiting for its restart as running.
        running: Some(s.status.is_active()),
        paused: Some(s.status == Status::Paused),
        restarting: Some(s.status == Status::Restarting),
        oom_killed: Some(s.oom_killed),
        dead: Some(s.status == Status::Dead),
        pid: Some(s.pid),
        exit_code: Some(s.exit_code),
        error: Some(s.error.clone()),
        started_at: Some(rfc3339(s.started_at)),
        finished_at: Some(rfc3339(s.finished_at)),
        health: s.health.as_ref().map(super::health::Health::to_api),
    }
}

/// RFC 3339 with nanoseconds; Go's zero time for never.
pub(crate) fn rfc3339(t: Option<DateTime<Utc>>) -> String {
    match t {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        None => "0001-01-01T00:00:00Z".to_string(),
    }
}

/// The `Status` column: `Up 5 minutes`, `Exited (0) 3 seconds ago`, `Created`.
fn status_text(r: &ContainerRecord, now: DateTime<Utc>) -> String {
    let s = &r.state;
    let since = |t: Option<DateTime<Utc>>| human_duration(now - t.unwrap_or(now));
    match s.status {
        Status::Created => "Created".into(),
        Status::Running => match &s.health {
            Some(h) if h.status == super::health::HealthStatus::Starting => {
                format!("Up {} (health: starting)", since(s.started_at))
            }
            Some(h) => format!("Up {} ({})", since(s.started_at), h.status.as_str()),
            None => format!("Up {}", since(s.started_at)),
        },
        Status::Paused => format!("Up {} (Paused)", since(s.started_at)),
        Status::Restarting => format!("Restarting ({}) {} ago", s.exit_code, since(s.finished_at)),
        Status::Removing => "Removal In Progress".into(),
        Status::Exited => {
            if s.finished_at.is_none() {
                "Created".into()
            } else {
                format!("Exited ({}) {} ago", s.exit_code, since(s.finished_at))
            }
        }
        Status::Dead => "Dead".into(),
    }
}

/// Go-units `HumanDuration` of a time span.
fn human_duration(d: chrono::TimeDelta) -> String {
    berth_api::units::human_duration(d.num_milliseconds() as f64 / 1000.0)
}
