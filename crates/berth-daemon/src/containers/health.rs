//! Healthchecks, as moby runs them.
//!
//! A container's healthcheck is its image's `HEALTHCHECK` with the create request's
//! `Config.Healthcheck` over it, field by field ([`merge_healthcheck`]); `Test: ["NONE"]`
//! turns it off. While the container runs, a monitor task runs the test as an exec (`CMD`:
//! the arguments as given; `CMD-SHELL`: through `/bin/sh -c`, or the container's `Shell`)
//! every `Interval` (30 s), or every `StartInterval` (5 s) while the container is still
//! `starting` within its `StartPeriod` (0), when failures do not count either. A probe that
//! outlives `Timeout` (30 s) is killed and fails. Exit 0 makes the container `healthy`;
//! `Retries` (3) failures in a row make it `unhealthy`. Each status change is published as
//! a `health_status: <status>` event and persisted; the last five results (output capped at
//! 4096 bytes) are kept for inspect. The monitor stops when the container's process exits,
//! leaving the status `unhealthy` (moby does the same "for compatibility"), and starts over
//! at `starting` when it runs again. While the container is paused no probe runs.

use std::sync::Arc;
use std::time::Duration;

use berth_api::models::{ContainerConfig, ExecConfig, HealthConfig};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::Container;
use super::state::Status;
use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};
use crate::exec::ExecStart;

/// Longest probe output kept; longer output is cut and ends in `...`.
const MAX_OUTPUT: usize = 4096;
/// How many probe results are kept.
const MAX_LOG: usize = 5;
/// Time between probes (and before the first) when `Interval` is 0.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Longest a probe may run when `Timeout` is 0.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Time between probes during the start period when `StartInterval` is 0.
const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
/// Failures in a row that make a container unhealthy when `Retries` is 0.
const DEFAULT_RETRIES: i64 = 3;
/// The shortest non-zero duration a healthcheck may ask for (moby's `MinimumDuration`).
const MIN_DURATION_NS: i64 = 1_000_000;
/// How long a killed probe's stream may take to report its end.
const KILLED_PROBE_GRACE: Duration = Duration::from_secs(10);

/// A container's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// No probe has passed since the container started.
    Starting,
    /// The last probe passed.
    Healthy,
    /// `Retries` probes in a row failed, or the monitor stopped.
    Unhealthy,
}

impl HealthStatus {
    /// The name Docker prints, filters on and puts in events.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// When the probe started.
    pub start: DateTime<Utc>,
    /// When it ended.
    pub end: DateTime<Utc>,
    /// 0 healthy, else a failure (-1: the probe could not run or timed out).
    pub exit_code: i64,
    /// Its stdout and stderr together, capped at [`MAX_OUTPUT`] bytes.
    pub output: String,
}

/// The persisted health state of a container (`State.Health`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Current status.
    pub status: HealthStatus,
    /// Failures in a row.
    pub failing_streak: i64,
    /// The last [`MAX_LOG`] results, oldest first.
    pub log: Vec<ProbeResult>,
}

impl Health {
    /// The health of a container that (re)starts: `starting` with no failures, the results
    /// of earlier runs kept (moby's `initHealthMonitor`).
    pub fn starting(previous: Option<Health>) -> Health {
        Health {
            status: HealthStatus::Starting,
            failing_streak: 0,
            log: previous.map(|h| h.log).unwrap_or_default(),
        }
    }

    /// Takes a probe result into account (moby's `handleProbeResult`): a pass makes the
    /// container healthy; a failure counts unless the container is still starting within
    /// its start period, and `retries` of them in a row make it unhealthy.
    pub fn record(&mut self, result: ProbeResult, retries: i64, within_start_period: bool) {
        if self.log.len() >= MAX_LOG {
            self.log.drain(..=self.log.len() - MAX_LOG);
        }
        let passed = result.exit_code == 0;
        self.log.push(result);
        if passed {
            self.failing_streak = 0;
            self.status = HealthStatus::Healthy;
        } else if !(self.status == HealthStatus::Starting && within_start_period) {
            self.failing_streak += 1;
            if self.failing_streak >= retries {
                self.status = HealthStatus::Unhealthy;
            }
        }
    }

    /// `State.Health` on the wire.
    pub fn to_api(&self) -> berth_api::models::Health {
        use berth_api::models::{HealthStatusEnum, HealthcheckResult};
        let time = |t: DateTime<Utc>| super::rfc3339(Some(t));
        berth_api::models::Health {
            status: Some(match self.status {
                HealthStatus::Starting => HealthStatusEnum::STARTING,
                HealthStatus::Healthy => HealthStatusEnum::HEALTHY,
                HealthStatus::Unhealthy => HealthStatusEnum::UNHEALTHY,
            }),
            failing_streak: Some(self.failing_streak),
            log: Some(
                self.log
                    .iter()
                    .map(|r| HealthcheckResult {
                        start: Some(time(r.start)),
                        end: Some(time(r.end)),
                        exit_code: Some(r.exit_code),
                        output: Some(r.output.clone()),
                    })
                    .collect(),
            ),
        }
    }
}

/// The health filter value of a container: its status, or `none` without a healthcheck
/// that ever ran.
pub(crate) fn health_filter_value(health: Option<&Health>) -> &'static str {
    health.map_or("none", |h| h.status.as_str())
}

/// A container's healthcheck with moby's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Probe {
    /// What runs in the container (empty: a `CMD` without a command, which fails).
    pub argv: Vec<String>,
    /// Between probes, and before the first.
    pub interval: Duration,
    /// Longest a probe may run.
    pub timeout: Duration,
    /// Time after start during which a starting container's failures do not count.
    pub start_period: Duration,
    /// Between probes during the start period while the container is starting.
    pub start_interval: Duration,
    /// Failures in a row that make the container unhealthy.
    pub retries: i64,
}

impl Probe {
    /// The probe of a container config (moby's `getProbe`): `None` without a healthcheck,
    /// with `NONE`, or with a test type other than `CMD` and `CMD-SHELL`.
    pub fn of(config: &ContainerConfig) -> Option<Probe> {
        let health = config.healthcheck.as_ref()?;
        let test = health.test.as_deref().unwrap_or_default();
        let (kind, command) = test.split_first()?;
        let argv = match kind.as_str() {
            "CMD" => command.to_vec(),
            "CMD-SHELL" if command.is_empty() => Vec::new(),
            "CMD-SHELL" => {
                let shell = config
                    .shell
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
                shell.into_iter().chain(command.iter().cloned()).collect()
            }
            "NONE" => return None,
            other => {
                tracing::warn!("unknown healthcheck type '{other}' (expected 'CMD'), ignored");
                return None;
            }
        };
        let duration = |ns: Option<i64>, default: Duration| match ns {
            Some(ns) if ns > 0 => Duration::from_nanos(ns as u64),
            _ => default,
        };
        Some(Probe {
            argv,
            interval: duration(health.interval, DEFAULT_INTERVAL),
            timeout: duration(health.timeout, DEFAULT_TIMEOUT),
            start_period: duration(health.start_period, Duration::ZERO),
            start_interval: duration(health.start_interval, DEFAULT_START_INTERVAL),
            retries: health.retries.filter(|r| *r > 0).unwrap_or(DEFAULT_RETRIES),
        })
    }

    /// The wait before the next probe, `since_start` after the container started.
    pub fn next_interval(&self, since_start: Duration, status: HealthStatus) -> Duration {
        if since_start < self.start_period && status == HealthStatus::Starting {
            self.start_interval
        } else {
            self.interval
        }
    }
}

/// The image's healthcheck under the request's, as moby merges them: the request's wins
/// as a whole when the image has none; otherwise each unset (empty, zero) field of the
/// request's comes from the image's.
pub(crate) fn merge_healthcheck(
    request: Option<HealthConfig>,
    image: Option<HealthConfig>,
) -> Option<HealthConfig> {
    let Some(image) = image else {
        return request;
    };
    let Some(mut merged) = request else {
        return Some(image);
    };
    if merged.test.as_ref().is_none_or(Vec::is_empty) {
        merged.test = image.test;
    }
    for (field, from_image) in [
        (&mut merged.interval, image.interval),
        (&mut merged.timeout, image.timeout),
        (&mut merged.start_period, image.start_period),
        (&mut merged.start_interval, image.start_interval),
        (&mut merged.retries, image.retries),
    ] {
        if field.is_none_or(|v| v == 0) {
            *field = from_image;
        }
    }
    Some(merged)
}

/// moby's `validateHealthCheck` of a create request.
pub(crate) fn validate_healthcheck(health: Option<&HealthConfig>) -> ServiceResult<()> {
    let Some(h) = health else {
        return Ok(());
    };
    for (name, value) in [
        ("Interval", h.interval),
        ("Timeout", h.timeout),
        ("StartPeriod", h.start_period),
        ("StartInterval", h.start_interval),
    ] {
        if let Some(ns) = value
            && ns != 0
            && ns < MIN_DURATION_NS
        {
            return Err(ServiceError::invalid(format!(
                "{name} in Healthcheck cannot be less than 1ms"
            )));
        }
    }
    if h.retries.is_some_and(|r| r < 0) {
        return Err(ServiceError::invalid(
            "Retries in Healthcheck cannot be negative",
        ));
    }
    Ok(())
}

/// Probe output up to [`MAX_OUTPUT`] bytes; what does not fit is dropped.
#[derive(Debug, Default)]
struct LimitedOutput {
    bytes: Vec<u8>,
    truncated: bool,
}

impl LimitedOutput {
    fn push(&mut self, data: &[u8]) {
        let keep = data.len().min(MAX_OUTPUT - self.bytes.len());
        self.bytes.extend_from_slice(&data[..keep]);
        self.truncated |= keep < data.len();
    }

    /// The text, with `...` appended when output was dropped.
    fn text(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.bytes).into_owned();
        if self.truncated {
            text.push_str("...");
        }
        text
    }
}

/// Go's `time.Duration.String()`, for moby's timeout message (`30s`, `200ms`, `1m30s`).
fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    let with_fraction = |value: u128, unit: u128| -> String {
        let (whole, rest) = (value / unit, value % unit);
        if rest == 0 {
            return whole.to_string();
        }
        let digits = unit.ilog10() as usize;
        let fraction = format!("{rest:0digits$}");
        format!("{whole}.{}", fraction.trim_end_matches('0'))
    };
    const SECOND: u128 = 1_000_000_000;
    match ns {
        0 => "0s".into(),
        n if n < 1_000 => format!("{n}ns"),
        n if n < 1_000_000 => format!("{}µs", with_fraction(n, 1_000)),
        n if n < SECOND => format!("{}ms", with_fraction(n, 1_000_000)),
        n => {
            let (hours, rest) = (n / (3600 * SECOND), n % (3600 * SECOND));
            let (minutes, seconds) = (rest / (60 * SECOND), rest % (60 * SECOND));
            let mut out = String::new();
            if hours > 0 {
                out.push_str(&format!("{hours}h{minutes}m"));
            } else if minutes > 0 {
                out.push_str(&format!("{minutes}m"));
            }
            out.push_str(&with_fraction(seconds, SECOND));
            out.push('s');
            out
        }
    }
}

impl Container {
    fn stop_monitor(&self) -> bool {
        let stop = self
            .health_monitor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        // The flag is set before the caller touches the record, so a probe result applied
        // after that sees it and is dropped.
        stop.map(|s| s.send(true)).is_some()
    }
}

impl Daemon {
    /// The `Healthcheck` of an image's config blob (the OCI-parsed config drops it).
    pub(super) async fn image_healthcheck(
        &self,
        image: &berth_store::image::ImageRecord,
    ) -> ServiceResult<Option<HealthConfig>> {
        let store = self.store.clone();
        let id = image.id.clone();
        let blob = tokio::task::spawn_blocking(move || store.image_config_json(&id)).await??;
        Ok(serde_json::from_value(blob["config"]["Healthcheck"].clone()).unwrap_or_default())
    }

    /// A container's process started (by a user, its restart policy or a recovery): with a
    /// healthcheck, its health is `starting` and a monitor runs the probes. Called with the
    /// op lock held, once the record says `running`.
    pub(super) fn start_health_monitor(&self, container: &Arc<Container>) {
        let (probe, started_at) = {
            let mut r = container.record();
            if r.build_layers.is_some() {
                return;
            }
            let Some(probe) = Probe::of(&r.config) else {
                return;
            };
            r.state.health = Some(Health::starting(r.state.health.take()));
            (probe, r.state.started_at.unwrap_or_else(Utc::now))
        };
        container.stop_monitor();
        let (stop, stopped) = watch::channel(false);
        *container
            .health_monitor
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(stop);
        let daemon = self.handle();
        let container = container.clone();
        tokio::spawn(async move {
            daemon
                .monitor_health(&container, &probe, started_at, stopped)
                .await;
            tracing::debug!(container = %container.id, "healthcheck monitor stopped");
        });
    }

    /// The container's process exited: its monitor stops and its health is `unhealthy`.
    /// Called with the op lock held, before the exit is persisted.
    pub(super) fn stop_health_monitor(&self, container: &Container) {
        container.stop_monitor();
        if let Some(health) = container.record().state.health.as_mut() {
            health.status = HealthStatus::Unhealthy;
        }
    }

    async fn monitor_health(
        &self,
        container: &Arc<Container>,
        probe: &Probe,
        started_at: DateTime<Utc>,
        mut stopped: watch::Receiver<bool>,
    ) {
        loop {
            let Some(status) = container.record().state.health.as_ref().map(|h| h.status) else {
                return;
            };
            let since_start = (Utc::now() - started_at).to_std().unwrap_or_default();
            tokio::select! {
                () = tokio::time::sleep(probe.next_interval(since_start, status)) => {}
                _ = stopped.wait_for(|stop| *stop) => return,
            }
            if *stopped.borrow() {
                return;
            }
            match container.record().state.status {
                Status::Running => {}
                Status::Paused => continue,
                // Its exit was never seen (a lost shim): nothing left to probe.
                _ => return,
            }
            let start = Utc::now();
            // Not raced against `stopped`: the probe ends with the container's processes
            // (or at its timeout), and its exec is then recorded as finished.
            let (exit_code, output) = self.run_probe(container, probe).await;
            let result = ProbeResult {
                start,
                end: Utc::now(),
                exit_code,
                output,
            };
            let within_start_period = (start - started_at)
                .to_std()
                .is_ok_and(|d| d < probe.start_period)
                || start < started_at;
            let changed = {
                let mut r = container.record();
                if *stopped.borrow() {
                    return;
                }
                let Some(health) = r.state.health.as_mut() else {
                    return;
                };
                let before = health.status;
                health.record(result, probe.retries, within_start_period);
                (health.status != before).then_some(health.status)
            };
            if let Some(status) = changed {
                // Under the op lock, which the exit holds while stopping the monitor: a
                // container that exited (and may be removed) is never written again here.
                let _guard = container.op_lock.lock().await;
                if *stopped.borrow() {
                    return;
                }
                if let Err(e) = self.persist(container).await {
                    tracing::warn!(container = %container.id, "cannot persist health: {e}");
                }
                self.container_event(
                    container,
                    &format!("health_status: {}", status.as_str()),
                    Default::default(),
                );
            }
        }
    }

    /// Runs one probe as an exec: its exit code (-1 when it could not run or timed out)
    /// and output.
    async fn run_probe(&self, container: &Container, probe: &Probe) -> (i64, String) {
        if probe.argv.is_empty() {
            return (
                -1,
                format!("healthcheck for container {} has no command", container.id),
            );
        }
        let config = ExecConfig {
            cmd: Some(probe.argv.clone()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let exec_id = match self.create_exec(&container.id, config) {
            Ok(id) => id,
            Err(e) => return (-1, e.message),
        };
        let mut stream = match self.start_exec(&exec_id, false).await {
            Ok(ExecStart::Attached(stream)) => stream,
            Ok(ExecStart::Detached) => {
                return (-1, format!("health check exec {exec_id} was detached"));
            }
            Err(e) => return (-1, e.message),
        };
        let mut output = LimitedOutput::default();
        let finished = tokio::time::timeout(probe.timeout, drain(&mut stream, &mut output)).await;
        let timed_out = finished.is_err();
        let ended = match finished {
            Ok(ended) => ended,
            Err(_) => {
                self.kill_probe(container, &exec_id, stream.pid()).await;
                tokio::time::timeout(KILLED_PROBE_GRACE, drain(&mut stream, &mut output))
                    .await
                    .unwrap_or(false)
            }
        };
        let code = if ended { stream.exit_code() } else { None };
        self.finish_exec(&exec_id, code);
        if timed_out {
            let limit = go_duration(probe.timeout);
            let text = output.text();
            let message = if text.is_empty() {
                format!("Health check exceeded timeout ({limit})")
            } else {
                format!("Health check exceeded timeout ({limit}): {text}")
            };
            return (-1, message);
        }
        match code {
            Some(code) => (i64::from(code), output.text()),
            None => (
                -1,
                format!(
                    "healthcheck for container {} has no exit code",
                    container.id
                ),
            ),
        }
    }

    /// Kills a probe that outlived its timeout, if the shim still reports it running (its
    /// pid is not reused before the shim has reaped it and said so).
    async fn kill_probe(&self, container: &Container, exec_id: &str, pid: i32) {
        let Some(shim) = container.shim() else {
            return;
        };
        let running = shim.exec_state(exec_id).await.is_ok_and(|s| s.running);
        if running && pid > 0 {
            let killed = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            if let Err(e) = killed {
                tracing::debug!(container = %container.id, "cannot kill timed-out probe {pid}: {e}");
            }
        }
    }
}

/// Reads an exec's output to its end; false if the stream broke.
async fn drain(stream: &mut berth_runtime::client::ExecStream, output: &mut LimitedOutput) -> bool {
    loop {
        match stream.next_frame().await {
            Ok(Some((_, bytes))) => output.push(&bytes),
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(exit_code: i64, secs: i64) -> ProbeResult {
        let t = DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap();
        ProbeResult {
            start: t,
            end: t,
            exit_code,
            output: format!("run {secs}"),
        }
    }

    fn health_config(test: &[&str]) -> HealthConfig {
        HealthConfig {
            test: Some(test.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn passes_and_failures_move_the_status() {
        let mut h = Health::starting(None);
        assert_eq!(h.status, HealthStatus::Starting);
        h.record(result(1, 0), 3, false);
        h.record(result(1, 1), 3, false);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Starting, 2));
        h.record(result(0, 2), 3, false);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Healthy, 0));
        h.record(result(1, 3), 3, false);
        h.record(result(2, 4), 3, false);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Healthy, 2));
        h.record(result(-1, 5), 3, false);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Unhealthy, 3));
        h.record(result(1, 6), 3, false);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Unhealthy, 4));
        h.record(result(0, 7), 3, false);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Healthy, 0));
        // The last five results, oldest first.
        let kept: Vec<&str> = h.log.iter().map(|r| r.output.as_str()).collect();
        assert_eq!(kept, ["run 3", "run 4", "run 5", "run 6", "run 7"]);
    }

    #[test]
    fn the_start_period_forgives_failures_only_while_starting() {
        let mut h = Health::starting(None);
        for i in 0..10 {
            h.record(result(1, i), 1, true);
        }
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Starting, 0));
        h.record(result(0, 10), 1, true);
        assert_eq!(h.status, HealthStatus::Healthy);
        // Once healthy, a failure in the start period counts.
        h.record(result(1, 11), 1, true);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Unhealthy, 1));
    }

    #[test]
    fn a_restart_starts_over_but_keeps_the_log() {
        let mut h = Health::starting(None);
        for i in 0..3 {
            h.record(result(1, i), 3, false);
        }
        assert_eq!(h.status, HealthStatus::Unhealthy);
        let again = Health::starting(Some(h));
        assert_eq!(
            (again.status, again.failing_streak),
            (HealthStatus::Starting, 0)
        );
        assert_eq!(again.log.len(), 3);
    }

    #[test]
    fn probes_take_moby_defaults_and_test_types() {
        let mut config = ContainerConfig {
            healthcheck: Some(health_config(&["CMD-SHELL", "test -f /tmp/ok"])),
            ..Default::default()
        };
        let p = Probe::of(&config).unwrap();
        assert_eq!(p.argv, ["/bin/sh", "-c", "test -f /tmp/ok"]);
        assert_eq!(
            (
                p.interval,
                p.timeout,
                p.start_period,
                p.start_interval,
                p.retries
            ),
            (
                Duration::from_secs(30),
                Duration::from_secs(30),
                Duration::ZERO,
                Duration::from_secs(5),
                3
            )
        );
        config.shell = Some(vec!["/bin/bash".into(), "-ec".into()]);
        assert_eq!(
            Probe::of(&config).unwrap().argv,
            ["/bin/bash", "-ec", "test -f /tmp/ok"]
        );
        config.healthcheck = Some(HealthConfig {
            interval: Some(200_000_000),
            timeout: Some(1_500_000_000),
            retries: Some(2),
            start_period: Some(3_000_000_000),
            start_interval: Some(50_000_000),
            ..health_config(&["CMD", "cat", "/etc/hostname"])
        });
        let p = Probe::of(&config).unwrap();
        assert_eq!(p.argv, ["cat", "/etc/hostname"]);
        assert_eq!(p.interval, Duration::from_millis(200));
        assert_eq!(p.timeout, Duration::from_millis(1500));
        assert_eq!(p.retries, 2);
        for off in [&["NONE"][..], &[], &["HTTP", "x"]] {
            config.healthcheck = Some(health_config(off));
            assert_eq!(Probe::of(&config), None, "{off:?}");
        }
        config.healthcheck = None;
        assert_eq!(Probe::of(&config), None);
        config.healthcheck = Some(health_config(&["CMD"]));
        assert!(Probe::of(&config).unwrap().argv.is_empty());
    }

    #[test]
    fn the_interval_follows_the_start_period() {
        let p = Probe {
            argv: vec!["true".into()],
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
            start_period: Duration::from_secs(10),
            start_interval: Duration::from_secs(2),
            retries: 3,
        };
        let s = Duration::from_secs;
        assert_eq!(p.next_interval(s(1), HealthStatus::Starting), s(2));
        assert_eq!(p.next_interval(s(1), HealthStatus::Healthy), s(30));
        assert_eq!(p.next_interval(s(10), HealthStatus::Starting), s(30));
        assert_eq!(p.next_interval(s(11), HealthStatus::Unhealthy), s(30));
    }

    #[test]
    fn the_request_overrides_the_image_field_by_field() {
        let image = HealthConfig {
            interval: Some(5_000_000_000),
            timeout: Some(2_000_000_000),
            retries: Some(4),
            start_period: Some(0),
            start_interval: None,
            ..health_config(&["CMD", "check"])
        };
        assert_eq!(
            merge_healthcheck(None, Some(image.clone())),
            Some(image.clone())
        );
        assert_eq!(merge_healthcheck(None, None), None);
        let request = health_config(&["CMD-SHELL", "mine"]);
        assert_eq!(
            merge_healthcheck(Some(request.clone()), None),
            Some(request)
        );
        // The docker CLI's `--health-interval 1s` alone: zeros and no test.
        let request = HealthConfig {
            test: None,
            interval: Some(1_000_000_000),
            timeout: Some(0),
            retries: Some(0),
            start_period: Some(0),
            start_interval: Some(0),
        };
        let merged = merge_healthcheck(Some(request), Some(image.clone())).unwrap();
        assert_eq!(merged.test, image.test);
        assert_eq!(merged.interval, Some(1_000_000_000));
        assert_eq!(merged.timeout, Some(2_000_000_000));
        assert_eq!(merged.retries, Some(4));
        // `--no-healthcheck` keeps NONE and so turns the image's check off.
        let none = merge_healthcheck(Some(health_config(&["NONE"])), Some(image)).unwrap();
        let config = ContainerConfig {
            healthcheck: Some(none),
            ..Default::default()
        };
        assert_eq!(Probe::of(&config), None);
    }

    #[test]
    fn create_validates_like_moby() {
        assert!(validate_healthcheck(None).is_ok());
        let ok = HealthConfig {
            interval: Some(1_000_000),
            timeout: Some(0),
            ..health_config(&["CMD", "true"])
        };
        assert!(validate_healthcheck(Some(&ok)).is_ok());
        let short = HealthConfig {
            interval: Some(999_999),
            ..ok.clone()
        };
        assert_eq!(
            validate_healthcheck(Some(&short)).unwrap_err().message,
            "Interval in Healthcheck cannot be less than 1ms"
        );
        let negative = HealthConfig {
            retries: Some(-1),
            ..ok
        };
        assert_eq!(
            validate_healthcheck(Some(&negative)).unwrap_err().message,
            "Retries in Healthcheck cannot be negative"
        );
    }

    #[test]
    fn output_is_capped() {
        let mut out = LimitedOutput::default();
        out.push(b"hello ");
        out.push(&[b'x'; MAX_OUTPUT]);
        out.push(b"more");
        let text = out.text();
        assert_eq!(text.len(), MAX_OUTPUT + 3);
        assert!(text.starts_with("hello xx") && text.ends_with("x..."));
        let mut short = LimitedOutput::default();
        short.push(b"ok\n");
        assert_eq!(short.text(), "ok\n");
    }

    #[test]
    fn durations_print_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(5), "5ns"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_millis(200), "200ms"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
        ];
        for (d, want) in cases {
            assert_eq!(go_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn health_goes_on_the_wire_as_moby_writes_it() {
        let mut h = Health::starting(None);
        h.record(result(0, 0), 3, false);
        let wire = serde_json::to_value(h.to_api()).unwrap();
        assert_eq!(wire["Status"], "healthy");
        assert_eq!(wire["FailingStreak"], 0);
        assert_eq!(wire["Log"][0]["ExitCode"], 0);
        assert_eq!(wire["Log"][0]["Output"], "run 0");
        assert!(
            wire["Log"][0]["Start"]
                .as_str()
                .unwrap()
                .starts_with("2023-11-14T22:13:20")
        );
        assert_eq!(health_filter_value(None), "none");
        assert_eq!(health_filter_value(Some(&h)), "healthy");
    }
}
