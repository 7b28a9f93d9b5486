//! Helpers shared by the test modules.

use std::time::Duration;

use berth_e2e::{OutputExt, TestDaemon, wait_until};

/// Starts a daemon with `busybox:latest` imported; `None` when the tests are skipped (not root).
pub fn daemon_with_busybox() -> Option<TestDaemon> {
    let d = TestDaemon::start()?;
    d.busybox_image();
    Some(d)
}

/// Unwraps a daemon or returns from the test (the skip notice was already printed).
macro_rules! daemon_or_skip {
    ($start:expr) => {
        match $start {
            Some(d) => d,
            None => return,
        }
    };
}
pub(crate) use daemon_or_skip;

/// `berth inspect -f <format> <name>`, trimmed; panics on failure.
pub fn inspect_field(d: &TestDaemon, name: &str, format: &str) -> String {
    d.berth(&["inspect", "-f", format, name])
        .ok(&format!("inspect -f {format} {name}"))
}

/// Waits until the container's `State.Status` is `status`.
pub fn wait_for_status(d: &TestDaemon, name: &str, status: &str, timeout: Duration) {
    wait_until(timeout, &format!("container {name} to be {status}"), || {
        d.inspect_container(name)["State"]["Status"].as_str() == Some(status)
    });
}

/// Non-empty trimmed lines of a text.
pub fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The interface names listed in a /proc/net/dev dump.
pub fn interfaces(proc_net_dev: &str) -> Vec<String> {
    let mut names: Vec<String> = proc_net_dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim().to_string()))
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names
}

/// Whether `text` is a full 64-hex container or image id (optionally with `sha256:`).
pub fn is_id(text: &str) -> bool {
    berth_e2e::cleanup::is_full_id(text.strip_prefix("sha256:").unwrap_or(text))
}

/// Builds `dockerfile` as `tag` through the API and returns the image ID.
pub fn build_via_api(d: &TestDaemon, tag: &str, dockerfile: &str) -> String {
    let mut tar = berth_e2e::fixtures::RawTar::new();
    tar.file("Dockerfile", 0o644, dockerfile.as_bytes());
    let r = d.api(
        "POST",
        &format!("/build?t={tag}"),
        Some(("application/x-tar", &tar.finish())),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains("errorDetail"), "{}", r.text());
    d.inspect_image(tag).expect("the built image")["Id"]
        .as_str()
        .unwrap()
        .to_string()
}
