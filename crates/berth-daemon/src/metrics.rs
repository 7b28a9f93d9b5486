//! Prometheus metrics for `--metrics-addr`, named like dockerd's (`engine_daemon_*`) where
//! dockerd has the metric and `berth_*` where it has not. The handle records values; it knows
//! nothing of HTTP (the API middleware hands it plain method, route and status values).
//!
//! When `--metrics-addr` is not set the handle is empty and recording is a branch.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::containers::Status;
use crate::daemon::Daemon;

/// The `Content-Type` of [`Daemon::metrics_exposition`]'s text (what prometheus-client
/// writes: the OpenMetrics text format, which Prometheus scrapes natively).
pub const EXPOSITION_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The route label of requests no route matched (404s of the fallback).
const UNMATCHED_ROUTE: &str = "unmatched";

/// API latencies: a local daemon answers most requests in well under a millisecond.
const REQUEST_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Pulls and builds take seconds to minutes.
const IMAGE_ACTION_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// The daemon's metrics handle.
#[derive(Debug)]
pub struct Metrics(Option<Box<Recorder>>);

#[derive(Debug)]
struct Recorder {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    image_action_seconds: Family<ActionLabels, Histogram, fn() -> Histogram>,
    image_action_failures: Family<ActionLabels, Counter>,
    /// Route templates seen so far, shared by every series of a route so that recording a
    /// request allocates nothing once its series exist.
    routes: RwLock<HashSet<Arc<str>>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: Arc<str>,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EngineLabels {
    version: &'static str,
    commit: &'static str,
    architecture: &'static str,
    graphdriver: &'static str,
    os_type: &'static str,
}

/// Image actions timed by [`Metrics::time`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageAction {
    /// Pulling one tag or digest (also a build's pull of its base image).
    Pull,
    /// Building an image from a Dockerfile.
    Build,
}

impl ImageAction {
    fn as_str(self) -> &'static str {
        match self {
            ImageAction::Pull => "pull",
            ImageAction::Build => "build",
        }
    }
}

/// Containers by dockerd's three metric states.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerStates {
    /// Running or restarting.
    pub running: i64,
    /// Frozen.
    pub paused: i64,
    /// Everything else: created, exited, dead, being removed.
    pub stopped: i64,
}

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

fn image_action_histogram() -> Histogram {
    Histogram::new(IMAGE_ACTION_BUCKETS)
}

/// A bounded method label: the methods the API routes, anything else as `other`.
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        _ => "other",
    }
}

impl Metrics {
    /// A handle that records (`enabled`, when `--metrics-addr` is set) or ignores everything.
    pub fn new(enabled: bool) -> Metrics {
        if !enabled {
            return Metrics(None);
        }
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds = Family::new_with_constructor(request_histogram as fn() -> Histogram);
        let image_action_seconds =
            Family::new_with_constructor(image_action_histogram as fn() -> Histogram);
        let image_action_failures = Family::<ActionLabels, Counter>::default();

        let engine = registry.sub_registry_with_prefix("engine_daemon");
        engine.register(
            "engine",
            "The information related to the engine and the OS it is running on",
            Info::new(EngineLabels {
                version: berth_api::ENGINE_VERSION,
                commit: option_env!("BERTH_GIT_COMMIT").unwrap_or("unknown"),
                architecture: std::env::consts::ARCH,
                graphdriver: "overlayfs",
                os_type: "linux",
            }),
        );
        engine.register_with_unit(
            "image_actions",
            "The number of seconds it takes to process each image action that succeeded",
            Unit::Seconds,
            image_action_seconds.clone(),
        );
        let berth = registry.sub_registry_with_prefix("berth");
        berth.register(
            "image_action_failures",
            "The number of image actions that failed",
            image_action_failures.clone(),
        );
        berth.register(
            "api_requests",
            "Engine API requests by method, route template and status code",
            requests.clone(),
        );
        berth.register_with_unit(
            "api_request_duration",
            "Time from receiving an Engine API request to its response head, by method and route template",
            Unit::Seconds,
            request_seconds.clone(),
        );
        Metrics(Some(Box::new(Recorder {
            registry,
            requests,
            request_seconds,
            image_action_seconds,
            image_action_failures,
            routes: RwLock::new(HashSet::new()),
        })))
    }

    /// Whether values are recorded (the API middleware is only installed then).
    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Records one answered API request; `route` is the matched route template
    /// (`/containers/{id}/json`), `None` when no route matched.
    pub fn record_request(&self, method: &str, route: Option<&str>, code: u16, elapsed: Duration) {
        let Some(recorder) = &self.0 else {
            return;
        };
        let route = recorder.intern(route.unwrap_or(UNMATCHED_ROUTE));
        let method = method_label(method);
        recorder
            .requests
            .get_or_create(&RequestLabels {
                method,
                route: route.clone(),
                code,
            })
            .inc();
        recorder
            .request_seconds
            .get_or_create(&RouteLabels { method, route })
            .observe(elapsed.as_secs_f64());
    }

    /// Starts timing an image action; call [`ActionTimer::succeeded`] when it did. A timer
    /// dropped without that (an error returned, or the work cancelled) counts a failure.
    pub fn time(&self, action: ImageAction) -> ActionTimer<'_> {
        ActionTimer {
            metrics: self,
            action,
            started: Instant::now(),
            finished: false,
        }
    }

    fn record_action(&self, action: ImageAction, succeeded_after: Option<Duration>) {
        let Some(recorder) = &self.0 else {
            return;
        };
        let labels = ActionLabels {
            action: action.as_str(),
        };
        match succeeded_after {
            Some(elapsed) => recorder
                .image_action_seconds
                .get_or_create(&labels)
                .observe(elapsed.as_secs_f64()),
            None => {
                recorder.image_action_failures.get_or_create(&labels).inc();
            }
        }
    }

    /// The exposition text: everything recorded, and the container states given (counted at
    /// scrape time by the caller). `None` when metrics are disabled.
    pub fn render(&self, states: ContainerStates) -> Option<String> {
        let recorder = self.0.as_ref()?;
        let by_state = Family::<StateLabels, Gauge>::default();
        for (state, count) in [
            ("running", states.running),
            ("paused", states.paused),
            ("stopped", states.stopped),
        ] {
            by_state.get_or_create(&StateLabels { state }).set(count);
        }
        let mut scrape = Registry::with_prefix("engine_daemon");
        scrape.register_with_unit(
            "container_states",
            "The count of containers in various states",
            Unit::Other("containers".into()),
            by_state,
        );
        let mut text = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut text, &recorder.registry);
        let _ = encode_registry(&mut text, &scrape);
        let _ = encode_eof(&mut text);
        Some(text)
    }
}

impl Recorder {
    /// The shared copy of a route template (allocated once per template; templates come
    /// from the router, so there are as many as it has routes).
    fn intern(&self, route: &str) -> Arc<str> {
        if let Some(known) = self
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(route)
        {
            return known.clone();
        }
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = routes.get(route) {
            return known.clone();
        }
        let shared: Arc<str> = Arc::from(route);
        routes.insert(shared.clone());
        shared
    }
}

/// Times one image action from [`Metrics::time`] until [`ActionTimer::succeeded`] or drop.
#[derive(Debug)]
#[must_use = "a dropped timer counts a failure"]
pub struct ActionTimer<'a> {
    metrics: &'a Metrics,
    action: ImageAction,
    started: Instant,
    finished: bool,
}

impl ActionTimer<'_> {
    /// Records the action's duration as a success.
    pub fn succeeded(mut self) {
        self.finished = true;
        self.metrics
            .record_action(self.action, Some(self.started.elapsed()));
    }
}

impl Drop for ActionTimer<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.metrics.record_action(self.action, None);
        }
    }
}

impl Daemon {
    /// `GET /metrics` on `--metrics-addr`: the exposition text with the containers counted
    /// now, or `None` when metrics are disabled.
    pub fn metrics_exposition(&self) -> Option<String> {
        if !self.metrics.is_enabled() {
            return None;
        }
        let mut states = ContainerStates::default();
        for container in self.containers.all() {
            match container.record().state.status {
                Status::Running | Status::Restarting => states.running += 1,
                Status::Paused => states.paused += 1,
                _ => states.stopped += 1,
            }
        }
        self.metrics.render(states)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample lines of `text` whose name is `name` and that carry every label in `labels`.
    fn samples<'t>(text: &'t str, name: &str, labels: &[&str]) -> Vec<&'t str> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter(|l| labels.iter().all(|label| l.contains(label)))
            .collect()
    }

    fn value(line: &str) -> f64 {
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[test]
    fn metrics_disabled_record_nothing_and_render_nothing() {
        let metrics = Metrics::new(false);
        metrics.record_request("GET", Some("/_ping"), 200, Duration::from_millis(1));
        metrics.time(ImageAction::Pull).succeeded();
        assert!(!metrics.is_enabled());
        assert_eq!(metrics.render(ContainerStates::default()), None);
    }

    #[test]
    fn metrics_requests_are_counted_by_method_route_and_code() {
        let metrics = Metrics::new(true);
        for _ in 0..3 {
            metrics.record_request(
                "GET",
                Some("/containers/{id}/json"),
                404,
                Duration::from_micros(300),
            );
        }
        metrics.record_request(
            "GET",
            Some("/containers/{id}/json"),
            200,
            Duration::from_millis(20),
        );
        metrics.record_request("BREW", None, 404, Duration::from_millis(1));
        let text = metrics.render(ContainerStates::default()).unwrap();

        let route = r#"route="/containers/{id}/json""#;
        let not_found = samples(
            &text,
            "berth_api_requests_total",
            &[r#"method="GET""#, route, r#"code="404""#],
        );
        assert_eq!(not_found.len(), 1, "{text}");
        assert_eq!(value(not_found[0]), 3.0);
        let found = samples(&text, "berth_api_requests_total", &[route, r#"code="200""#]);
        assert_eq!(value(found[0]), 1.0, "{text}");
        let unmatched = samples(
            &text,
            "berth_api_requests_total",
            &[r#"method="other""#, r#"route="unmatched""#],
        );
        assert_eq!(unmatched.len(), 1, "{text}");

        // The histogram is by method and route only: four requests, one of them above 10 ms.
        let count = samples(&text, "berth_api_request_duration_seconds_count", &[route]);
        assert_eq!(count.len(), 1, "{text}");
        assert_eq!(value(count[0]), 4.0);
        assert!(!count[0].contains("code="), "{}", count[0]);
        let fast = samples(
            &text,
            "berth_api_request_duration_seconds_bucket",
            &[route, r#"le="0.01""#],
        );
        assert_eq!(value(fast[0]), 3.0, "{text}");
        assert!(text.contains("# TYPE berth_api_request_duration_seconds histogram"));
        assert!(text.contains("# TYPE berth_api_requests counter"));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn metrics_route_templates_are_shared_between_series() {
        let metrics = Metrics::new(true);
        let recorder = metrics.0.as_ref().unwrap();
        let first = recorder.intern("/containers/{id}/json");
        let second = recorder.intern(&String::from("/containers/{id}/json"));
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(recorder.routes.read().unwrap().len(), 1);
    }

    #[test]
    fn metrics_image_actions_time_successes_and_count_failures() {
        let metrics = Metrics::new(true);
        metrics.time(ImageAction::Pull).succeeded();
        drop(metrics.time(ImageAction::Pull));
        drop(metrics.time(ImageAction::Build));
        let text = metrics.render(ContainerStates::default()).unwrap();

        let pulls = samples(
            &text,
            "engine_daemon_image_actions_seconds_count",
            &[r#"action="pull""#],
        );
        assert_eq!(value(pulls[0]), 1.0, "{text}");
        assert!(
            samples(
                &text,
                "engine_daemon_image_actions_seconds_count",
                &[r#"action="build""#]
            )
            .is_empty(),
            "{text}"
        );
        for action in ["pull", "build"] {
            let failures = samples(
                &text,
                "berth_image_action_failures_total",
                &[&format!("action=\"{action}\"")],
            );
            assert_eq!(value(failures[0]), 1.0, "{text}");
        }
    }

    #[test]
    fn metrics_container_states_are_the_counts_given_at_render() {
        let metrics = Metrics::new(true);
        let states = ContainerStates {
            running: 2,
            paused: 1,
            stopped: 5,
        };
        let text = metrics.render(states).unwrap();
        assert!(text.contains("# TYPE engine_daemon_container_states_containers gauge"));
        for (state, count) in [("running", 2.0), ("paused", 1.0), ("stopped", 5.0)] {
            let line = samples(
                &text,
                "engine_daemon_container_states_containers",
                &[&format!("state=\"{state}\"")],
            );
            assert_eq!(value(line[0]), count, "{text}");
        }
        let text = metrics.render(ContainerStates::default()).unwrap();
        let running = samples(
            &text,
            "engine_daemon_container_states_containers",
            &[r#"state="running""#],
        );
        assert_eq!(value(running[0]), 0.0, "{text}");
        let info = samples(&text, "engine_daemon_engine_info", &[r#"os_type="linux""#]);
        assert_eq!(info.len(), 1, "{text}");
    }
}
