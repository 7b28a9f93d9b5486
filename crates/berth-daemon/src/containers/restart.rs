//! Restart policies (`--restart no|always|on-failure[:N]|unless-stopped`), decided the way
//! moby's restart manager decides.
//!
//! When a container's process exits, [`Daemon::plan_restart`] asks the policy: `always`
//! restarts, `unless-stopped` unless the user stopped or killed the container, `on-failure`
//! for a non-zero exit while fewer than `MaximumRetryCount` (0: no limit) restarts were made.
//! A user's stop or kill before the exit calls the policy off altogether until the next user
//! start. The restart waits a back-off delay (100 ms, doubling for each restart in a row up
//! to a minute, back to 100 ms once the container ran for 10 s) during which the container
//! is `restarting`; then it is started again (`die` then `start` events, no `restart` event:
//! that one is for `docker restart`). A stop, kill or forced removal during the delay calls
//! the restart off and leaves the container exited.
//!
//! At daemon start ([`Daemon::restart_containers_at_startup`]) the policy is asked once more
//! about every stopped container that was started before, as moby's restore does: `always`
//! comes back even after a user's stop, `unless-stopped` unless stopped by the user,
//! `on-failure` after a failed last run with retries left; their restart count starts over.
//! A container joining another's network namespace (`--network container:<id>`) starts
//! after that owner when both come back. A user's `restart` of an owner leaves the
//! containers in its namespace alone, as moby does: they keep the old namespace (loopback
//! only) until they are started again, which joins the owner's new one.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use berth_api::models::{HostConfig, RestartPolicyNameEnum};
use tokio::sync::{oneshot, watch};

use super::state::{Op, State, Status, transition};
use super::{Container, ContainerRecord};
use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

/// The first back-off delay.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest back-off delay.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// A run at least this long starts the back-off over.
const RESET_AFTER: Duration = Duration::from_secs(10);
/// At daemon start, how long containers wait in all for the owners of the namespaces they
/// join to be started (moby's restore waits 5 s).
const DEPENDENCY_WAIT: Duration = Duration::from_secs(5);

/// A container's restart policy, from `HostConfig.RestartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RestartPolicy {
    /// Never restart (`no`, or no policy).
    No,
    /// Restart after every exit.
    Always,
    /// Restart unless the user stopped the container.
    UnlessStopped,
    /// Restart after a non-zero exit, at most `max_retries` times (0: no limit).
    OnFailure {
        /// `MaximumRetryCount`.
        max_retries: i64,
    },
}

impl RestartPolicy {
    /// The policy a host config asks for.
    pub(crate) fn of(host: &HostConfig) -> RestartPolicy {
        let Some(policy) = &host.restart_policy else {
            return RestartPolicy::No;
        };
        match policy.name {
            Some(RestartPolicyNameEnum::ALWAYS) => RestartPolicy::Always,
            Some(RestartPolicyNameEnum::UNLESS_STOPPED) => RestartPolicy::UnlessStopped,
            Some(RestartPolicyNameEnum::ON_FAILURE) => RestartPolicy::OnFailure {
                max_retries: policy.maximum_retry_count.unwrap_or(0),
            },
            Some(RestartPolicyNameEnum::NO | RestartPolicyNameEnum::EMPTY) | None => {
                RestartPolicy::No
            }
        }
    }

    /// Whether the policy restarts after an exit with `exit_code`, given whether the user
    /// stopped the container and how many restarts the policy made already.
    pub(crate) fn wants_restart(
        self,
        exit_code: i64,
        stopped_by_user: bool,
        restarts: i64,
    ) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always => true,
            RestartPolicy::UnlessStopped => !stopped_by_user,
            RestartPolicy::OnFailure { max_retries } => {
                exit_code != 0 && (max_retries == 0 || restarts < max_retries)
            }
        }
    }
}

/// moby's `ValidateRestartPolicy` and its refusal of a restart policy with `--rm`, at create.
pub(crate) fn validate_restart_policy(host: &HostConfig) -> ServiceResult<()> {
    let policy = RestartPolicy::of(host);
    if host.auto_remove.unwrap_or(false) && policy != RestartPolicy::No {
        return Err(ServiceError::invalid(
            "can't create 'AutoRemove' container with restart policy",
        ));
    }
    let count = host
        .restart_policy
        .as_ref()
        .and_then(|p| p.maximum_retry_count)
        .unwrap_or(0);
    match policy {
        RestartPolicy::OnFailure { .. } if count < 0 => Err(ServiceError::invalid(
            "invalid restart policy: maximum retry count cannot be negative",
        )),
        RestartPolicy::OnFailure { .. } => Ok(()),
        // An empty name with any count is accepted, as moby does for old clients.
        _ if host
            .restart_policy
            .as_ref()
            .is_none_or(|p| p.name.is_none_or(|n| n == RestartPolicyNameEnum::EMPTY)) =>
        {
            Ok(())
        }
        _ if count != 0 => {
            let mut message =
                "invalid restart policy: maximum retry count can only be used with 'on-failure'"
                    .to_string();
            if count < 0 {
                message.push_str(" and cannot be negative");
            }
            Err(ServiceError::invalid(message))
        }
        _ => Ok(()),
    }
}

/// The in-memory part of a container's restart policy state (the restart count and whether
/// the user stopped it are persisted in its [`State`]).
#[derive(Debug, Default)]
pub(crate) struct RestartManager {
    /// The last back-off delay; zero before the first restart.
    delay: Duration,
    /// Set by a user's stop or kill: no restart until the next user start.
    cancelled: bool,
    /// Changed by every scheduled restart, cancellation and reset, so that a delay that
    /// was called off does nothing when it ends.
    generation: u64,
    /// Dropping it wakes the pending restart's timer early.
    wake: Option<oneshot::Sender<()>>,
}

impl RestartManager {
    /// moby's `ShouldRestart`: advances the back-off, then returns the delay before the
    /// restart, or `None` when the policy does not restart after this exit.
    pub(crate) fn should_restart(
        &mut self,
        policy: RestartPolicy,
        state: &State,
        ran_for: Duration,
    ) -> Option<Duration> {
        if policy == RestartPolicy::No || self.cancelled {
            return None;
        }
        if ran_for >= RESET_AFTER {
            self.delay = Duration::ZERO;
        }
        self.delay = if self.delay.is_zero() {
            FIRST_DELAY
        } else {
            (self.delay * 2).min(MAX_DELAY)
        };
        policy
            .wants_restart(state.exit_code, state.stopped_by_user, state.restart_count)
            .then_some(self.delay)
    }

    /// A user's stop or kill: no restart after the next exit, and none pending.
    fn cancel(&mut self) {
        self.cancelled = true;
        self.generation += 1;
        self.wake = None;
    }

    /// A user's start (or the daemon's start): a fresh back-off, nothing called off.
    fn reset(&mut self) {
        self.delay = Duration::ZERO;
        self.cancelled = false;
        self.generation += 1;
        self.wake = None;
    }
}

impl Container {
    fn restart_manager(&self) -> MutexGuard<'_, RestartManager> {
        self.restart.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Daemon {
    /// A user's start: moby's `ResetRestartManager(true)`, a fresh back-off and a restart
    /// count of 0. Called with the container's op lock held.
    pub(super) fn reset_restart_policy(&self, container: &Container) {
        container.restart_manager().reset();
        container.record().state.restart_count = 0;
    }

    /// Asks the restart policy about the exit just recorded in `r`, the container's locked
    /// record (status `exited`, op lock held). When it restarts, the container becomes
    /// `restarting` and its restart count grows; the delay to pass to
    /// [`Self::schedule_restart`] is returned.
    pub(super) fn plan_restart(
        &self,
        container: &Container,
        r: &mut ContainerRecord,
    ) -> Option<Duration> {
        if r.build_layers.is_some() || r.host_config.auto_remove.unwrap_or(false) {
            return None;
        }
        let ran_for = match (r.state.started_at, r.state.finished_at) {
            (Some(started), Some(finished)) => (finished - started).to_std().unwrap_or_default(),
            _ => Duration::ZERO,
        };
        let policy = RestartPolicy::of(&r.host_config);
        let delay = container
            .restart_manager()
            .should_restart(policy, &r.state, ran_for)?;
        r.state.status = transition(r.state.status, Op::ScheduleRestart).ok()?;
        r.state.restart_count += 1;
        tracing::info!(
            container = %container.id,
            restart_count = r.state.restart_count,
            exit_code = r.state.exit_code,
            ?delay,
            "restarting container by its restart policy"
        );
        Some(delay)
    }

    /// Starts a `restarting` container again once `delay` has passed, unless a user's stop,
    /// kill or start comes first.
    pub(super) fn schedule_restart(&self, container: Arc<Container>, delay: Duration) {
        let (generation, woken) = {
            let mut m = container.restart_manager();
            let (wake, woken) = oneshot::channel();
            m.generation += 1;
            m.wake = Some(wake);
            (m.generation, woken)
        };
        let daemon = self.handle();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = woken => {}
            }
            daemon.restart_by_policy(&container, generation).await;
        });
    }

    async fn restart_by_policy(&self, container: &Arc<Container>, generation: u64) {
        let guard = container.op_lock.lock().await;
        {
            let m = container.restart_manager();
            if m.cancelled || m.generation != generation {
                return;
            }
        }
        if transition(container.record().state.status, Op::AutoRestart).is_err() {
            return;
        }
        let launched = self.launch(container).await;
        drop(guard);
        if let Err(e) = launched {
            tracing::warn!(container = %container.id, "restart by policy failed: {}", e.message);
            self.fail_pending_attaches(container, &e);
            self.start_failed(container, &e).await;
            container.lifecycle.send_modify(|l| l.active = false);
        }
    }

    /// A user's stop, restart or forced removal: the exit it causes is not restarted, and a
    /// pending restart is called off, leaving the container exited. Returns whether a
    /// restart was pending (then there is no process to stop).
    pub(super) async fn cancel_restart(&self, container: &Arc<Container>) -> bool {
        container.restart_manager().cancel();
        self.settle_cancelled_restart(container).await
    }

    /// A user's kill of an active container, as moby's `killWithSignal` treats it: the
    /// container counts as stopped by the user, and SIGKILL or its stop signal (any signal
    /// when it has none) calls the restart policy off. Returns whether the container is
    /// still waiting for its restart, or was and is now exited: then there is no process to
    /// signal.
    pub(super) async fn restart_policy_on_kill(
        &self,
        container: &Arc<Container>,
        signal: i32,
    ) -> bool {
        if !container.record().state.status.is_active() {
            return false;
        }
        let stop_signal = container
            .record()
            .config
            .stop_signal
            .clone()
            .filter(|s| !s.is_empty());
        let exits_on_this = match stop_signal {
            Some(name) if signal != libc::SIGKILL => {
                super::lifecycle::parse_signal(&name).is_ok_and(|s| s == signal)
            }
            _ => true,
        };
        if exits_on_this {
            container.restart_manager().cancel();
        }
        let restarting = {
            let mut r = container.record();
            r.state.stopped_by_user = true;
            r.state.status == Status::Restarting
        };
        if !restarting {
            // Under the op lock, and only while it runs: an exit (and a removal after it)
            // may be racing this kill, and a removed container's record must stay gone.
            let _guard = container.op_lock.lock().await;
            if container.record().state.status.is_active()
                && let Err(e) = self.persist(container).await
            {
                tracing::warn!(container = %container.id, "cannot persist the user's kill: {e}");
            }
            return false;
        }
        // A restart that was already under way has finished first when the settling fails:
        // then its process is to be signalled.
        !exits_on_this || self.settle_cancelled_restart(container).await
    }

    /// Moves a `restarting` container whose restart was called off to `exited`; false if it
    /// was not restarting (any more: a restart that was under way has finished first).
    async fn settle_cancelled_restart(&self, container: &Arc<Container>) -> bool {
        if container.record().state.status != Status::Restarting {
            return false;
        }
        let _guard = container.op_lock.lock().await;
        {
            let mut r = container.record();
            match transition(r.state.status, Op::CancelRestart) {
                Ok(next) => r.state.status = next,
                Err(_) => return false,
            }
        }
        if let Err(e) = self.persist(container).await {
            tracing::warn!(container = %container.id, "cannot persist the cancelled restart: {e}");
        }
        container.lifecycle.send_modify(|l| l.active = false);
        true
    }

    /// During recovery, before a container that was active is reconciled with its shim:
    /// an exit found now is left to [`Self::restart_containers_at_startup`], which runs once
    /// networks are restored (moby cancels the restart manager the same way).
    pub(super) fn suspend_restart_policy(&self, container: &Container) {
        container.restart_manager().cancel();
    }

    /// During recovery: a container that was waiting for its restart when the daemon
    /// stopped is exited now; [`Self::restart_containers_at_startup`] decides again.
    pub(super) async fn settle_interrupted_restart(&self, container: &Arc<Container>) {
        container.restart_manager().cancel();
        self.settle_cancelled_restart(container).await;
    }

    /// Once containers and networks are recovered: asks every restart policy about the
    /// stopped containers, like moby's restore, and starts those it wants running, all at
    /// once except that a `--network container:<id>` container first waits (up to
    /// [`DEPENDENCY_WAIT`] in all, as moby's restore does) for the start of an owner that is
    /// coming back too; every policy is in force again afterwards.
    pub(crate) async fn restart_containers_at_startup(&self) {
        let mut wanted = Vec::new();
        for container in self.containers.all() {
            let _guard = container.op_lock.lock().await;
            container.restart_manager().reset();
            let r = container.record();
            if r.state.status == Status::Exited
                && r.build_layers.is_none()
                && r.state.started_at.is_some()
                && RestartPolicy::of(&r.host_config).wants_restart(
                    r.state.exit_code,
                    r.state.stopped_by_user,
                    r.state.restart_count,
                )
            {
                wanted.push(container.clone());
            }
        }
        // Raised by each start once it was tried, whatever its outcome.
        let (tried, tried_watch): (Vec<_>, HashMap<String, _>) = wanted
            .iter()
            .map(|c| {
                let (tx, rx) = watch::channel(false);
                (tx, (c.id.clone(), rx))
            })
            .unzip();
        let deadline = tokio::time::Instant::now() + DEPENDENCY_WAIT;
        let mut starts = Vec::new();
        for (container, tried) in wanted.into_iter().zip(tried) {
            let host = container.record().host_config.clone();
            let owners: Vec<watch::Receiver<bool>> = self
                .start_dependencies(&host)
                .iter()
                .filter_map(|id| tried_watch.get(id).cloned())
                .collect();
            let daemon = self.handle();
            starts.push(tokio::spawn(async move {
                for mut owner in owners {
                    // An owner whose start ended either way (or whose task is gone) is waited
                    // for no longer.
                    let _ = tokio::time::timeout_at(deadline, owner.wait_for(|done| *done)).await;
                }
                let result = daemon.start_container(&container.id).await;
                let _ = tried.send(true);
                (container.id.clone(), result)
            }));
        }
        for start in starts {
            match start.await {
                Ok((id, Ok(()))) => {
                    tracing::info!(container = %id, "restarted by its restart policy at daemon start");
                }
                // Started by a client meanwhile.
                Ok((_, Err(e))) if e.kind == crate::error::ErrorKind::NotModified => {}
                Ok((id, Err(e))) => {
                    tracing::warn!(container = %id, "restart at daemon start failed: {}", e.message);
                }
                Err(e) => tracing::warn!("restart at daemon start panicked: {e}"),
            }
        }
    }

    /// The containers that must run before a container with `host` can start (moby's
    /// `GetDependentContainers`): the owner of the network namespace it joins.
    fn start_dependencies(&self, host: &HostConfig) -> Vec<String> {
        network_owner(host)
            .and_then(|reference| self.containers.get(reference).ok())
            .map(|owner| vec![owner.id.clone()])
            .unwrap_or_default()
    }
}

/// The container a `--network container:<id>` host config names.
pub(super) fn network_owner(host: &HostConfig) -> Option<&str> {
    host.network_mode
        .as_deref()?
        .strip_prefix("container:")
        .filter(|owner| !owner.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::models::RestartPolicy as ApiPolicy;

    fn host(name: RestartPolicyNameEnum, count: i64) -> HostConfig {
        HostConfig {
            restart_policy: Some(ApiPolicy {
                name: Some(name),
                maximum_retry_count: Some(count),
            }),
            ..Default::default()
        }
    }

    fn exited(code: i64, stopped_by_user: bool, restarts: i64) -> State {
        State {
            status: Status::Exited,
            exit_code: code,
            stopped_by_user,
            restart_count: restarts,
            ..State::default()
        }
    }

    #[test]
    fn the_owner_of_a_shared_namespace_is_a_dependency() {
        let mode = |m: &str| HostConfig {
            network_mode: Some(m.into()),
            ..Default::default()
        };
        assert_eq!(network_owner(&mode("container:abc")), Some("abc"));
        assert_eq!(network_owner(&mode("container:")), None);
        assert_eq!(network_owner(&mode("bridge")), None);
        assert_eq!(network_owner(&HostConfig::default()), None);
    }

    #[test]
    fn policies_parse_from_the_host_config() {
        assert_eq!(RestartPolicy::of(&HostConfig::default()), RestartPolicy::No);
        assert_eq!(
            RestartPolicy::of(&host(RestartPolicyNameEnum::EMPTY, 3)),
            RestartPolicy::No
        );
        assert_eq!(
            RestartPolicy::of(&host(RestartPolicyNameEnum::ALWAYS, 0)),
            RestartPolicy::Always
        );
        assert_eq!(
            RestartPolicy::of(&host(RestartPolicyNameEnum::UNLESS_STOPPED, 0)),
            RestartPolicy::UnlessStopped
        );
        assert_eq!(
            RestartPolicy::of(&host(RestartPolicyNameEnum::ON_FAILURE, 2)),
            RestartPolicy::OnFailure { max_retries: 2 }
        );
    }

    #[test]
    fn the_decision_per_policy() {
        let on_failure_2 = RestartPolicy::OnFailure { max_retries: 2 };
        let on_failure = RestartPolicy::OnFailure { max_retries: 0 };
        let cases = [
            // (policy, exit code, stopped by user, restarts so far, restart?)
            (RestartPolicy::No, 1, false, 0, false),
            (RestartPolicy::Always, 0, false, 0, true),
            (RestartPolicy::Always, 137, true, 50, true),
            (RestartPolicy::UnlessStopped, 0, false, 7, true),
            (RestartPolicy::UnlessStopped, 143, true, 0, false),
            (on_failure_2, 0, false, 0, false),
            (on_failure_2, 1, false, 0, true),
            (on_failure_2, 1, false, 1, true),
            (on_failure_2, 1, false, 2, false),
            (on_failure_2, 1, true, 1, true),
            (on_failure, 3, false, 1000, true),
            (on_failure, 0, false, 0, false),
        ];
        for (policy, code, by_user, restarts, want) in cases {
            assert_eq!(
                policy.wants_restart(code, by_user, restarts),
                want,
                "{policy:?} code {code} by user {by_user} after {restarts}"
            );
        }
    }

    #[test]
    fn back_off_doubles_caps_and_resets_after_a_long_run() {
        let mut m = RestartManager::default();
        let state = exited(1, false, 0);
        let quick = Duration::from_millis(50);
        let delays: Vec<Duration> = (0..12)
            .map(|_| {
                m.should_restart(RestartPolicy::Always, &state, quick)
                    .unwrap()
            })
            .collect();
        let ms = |n: u64| Duration::from_millis(n);
        assert_eq!(
            delays,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(3200),
                ms(6400),
                ms(12800),
                ms(25600),
                ms(51200),
                ms(60000),
                ms(60000)
            ]
        );
        // Ten seconds of running start the back-off over; nine do not.
        assert_eq!(
            m.should_restart(RestartPolicy::Always, &state, Duration::from_secs(10)),
            Some(ms(100))
        );
        assert_eq!(
            m.should_restart(RestartPolicy::Always, &state, Duration::from_secs(9)),
            Some(ms(200))
        );
    }

    #[test]
    fn cancellation_holds_until_a_reset() {
        let mut m = RestartManager::default();
        let state = exited(1, false, 0);
        let quick = Duration::from_millis(1);
        assert!(
            m.should_restart(RestartPolicy::Always, &state, quick)
                .is_some()
        );
        m.cancel();
        assert_eq!(m.should_restart(RestartPolicy::Always, &state, quick), None);
        assert_eq!(m.should_restart(RestartPolicy::Always, &state, quick), None);
        m.reset();
        assert_eq!(
            m.should_restart(RestartPolicy::Always, &state, quick),
            Some(FIRST_DELAY)
        );
    }

    #[test]
    fn on_failure_stops_at_its_maximum() {
        let mut m = RestartManager::default();
        let policy = RestartPolicy::OnFailure { max_retries: 2 };
        let quick = Duration::from_millis(1);
        let mut state = exited(2, false, 0);
        let mut restarts = 0;
        while m.should_restart(policy, &state, quick).is_some() {
            restarts += 1;
            state.restart_count += 1;
            assert!(restarts <= 2, "more restarts than the maximum");
        }
        assert_eq!(restarts, 2);
    }

    #[test]
    fn create_refuses_what_moby_refuses() {
        let mut auto_remove = host(RestartPolicyNameEnum::ALWAYS, 0);
        auto_remove.auto_remove = Some(true);
        let e = validate_restart_policy(&auto_remove).unwrap_err();
        assert_eq!(
            e.message,
            "can't create 'AutoRemove' container with restart policy"
        );
        let mut rm_no = host(RestartPolicyNameEnum::NO, 0);
        rm_no.auto_remove = Some(true);
        assert!(validate_restart_policy(&rm_no).is_ok());
        assert!(validate_restart_policy(&host(RestartPolicyNameEnum::ON_FAILURE, 5)).is_ok());
        assert!(
            validate_restart_policy(&host(RestartPolicyNameEnum::ON_FAILURE, -1))
                .unwrap_err()
                .message
                .contains("cannot be negative")
        );
        assert_eq!(
            validate_restart_policy(&host(RestartPolicyNameEnum::ALWAYS, 3))
                .unwrap_err()
                .message,
            "invalid restart policy: maximum retry count can only be used with 'on-failure'"
        );
        assert!(
            validate_restart_policy(&host(RestartPolicyNameEnum::ALWAYS, -3))
                .unwrap_err()
                .message
                .ends_with("and cannot be negative")
        );
        assert!(validate_restart_policy(&host(RestartPolicyNameEnum::EMPTY, 4)).is_ok());
        assert!(validate_restart_policy(&HostConfig::default()).is_ok());
    }
}
