//! The container state machine: one table decides which lifecycle operation is legal in
//! which state and what state it leads to. Every lifecycle call goes through [`transition`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Docker's container statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, never started (or start failed before the process ran).
    Created,
    /// The process runs.
    Running,
    /// Frozen by the freezer cgroup.
    Paused,
    /// Waiting to be restarted by its restart policy.
    Restarting,
    /// Being removed.
    Removing,
    /// The process ended.
    Exited,
    /// Removal failed half-way.
    Dead,
}

impl Status {
    /// The lower-case name Docker prints and filters on.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }

    /// Whether a process exists for the container.
    pub fn is_active(self) -> bool {
        matches!(self, Status::Running | Status::Paused | Status::Restarting)
    }
}

/// Lifecycle operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The process was started.
    Start,
    /// The process ended.
    Exit,
    /// Starting failed; the container stays startable.
    StartFailed,
    /// Begin removal.
    Remove,
    /// Freeze the processes (`docker pause`).
    Pause,
    /// Thaw them again (`docker unpause`, or after a signal to a paused container).
    Unpause,
    /// The process ended and the restart policy will start it again after a delay.
    ScheduleRestart,
    /// The restart policy's delay is over: the process is started again.
    AutoRestart,
    /// A user's stop, kill or removal called off a pending restart.
    CancelRestart,
}

/// Why an operation is refused in a state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionError {
    /// The operation is a no-op in this state (start while running: 304).
    AlreadyThere,
    /// The operation is not legal in this state (409), with docker's reason.
    Illegal(String),
}

/// The one transition table.
pub fn transition(from: Status, op: Op) -> Result<Status, TransitionError> {
    use Status as S;
    match (from, op) {
        (S::Created | S::Exited, Op::Start) => Ok(S::Running),
        // moby counts a restarting container as running: a user's start is a no-op (304).
        (S::Running | S::Paused | S::Restarting, Op::Start) => Err(TransitionError::AlreadyThere),
        (S::Running | S::Paused, Op::Exit) => Ok(S::Exited),
        (S::Exited, Op::ScheduleRestart) => Ok(S::Restarting),
        (_, Op::ScheduleRestart) => Err(TransitionError::Illegal("has not exited".into())),
        (S::Restarting, Op::AutoRestart) => Ok(S::Running),
        (S::Restarting, Op::CancelRestart) => Ok(S::Exited),
        (_, Op::AutoRestart | Op::CancelRestart) => {
            Err(TransitionError::Illegal("is not restarting".into()))
        }
        (S::Created | S::Exited | S::Restarting, Op::StartFailed) => Ok(if from == S::Created {
            S::Created
        } else {
            S::Exited
        }),
        (S::Removing, Op::Remove) => Err(TransitionError::Illegal(
            "removal of container is already in progress".into(),
        )),
        (_, Op::Remove) => Ok(S::Removing),
        (_, Op::Exit) => Err(TransitionError::Illegal("is not running".into())),
        (S::Running | S::Paused, Op::StartFailed) => {
            Err(TransitionError::Illegal("is already running".into()))
        }
        (S::Removing | S::Dead, Op::Start | Op::StartFailed) => Err(TransitionError::Illegal(
            "is marked for removal and cannot be started".into(),
        )),
        (S::Running, Op::Pause) => Ok(S::Paused),
        (S::Paused, Op::Pause) => Err(TransitionError::Illegal("is already paused".into())),
        (S::Restarting, Op::Pause) => Err(TransitionError::Illegal(
            "is restarting, wait until the container is running".into(),
        )),
        (_, Op::Pause) => Err(TransitionError::Illegal("is not running".into())),
        (S::Paused, Op::Unpause) => Ok(S::Running),
        (_, Op::Unpause) => Err(TransitionError::Illegal("is not paused".into())),
    }
}

/// The mutable state of a container, persisted beside its immutable config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// Current status.
    pub status: Status,
    /// Host PID of the container's init process while active, else 0.
    pub pid: i64,
    /// Exit code of the last run (128+n for signal n).
    pub exit_code: i64,
    /// Whether the last run was killed by the memory cgroup.
    pub oom_killed: bool,
    /// The last start error, empty if none.
    pub error: String,
    /// When the process last started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the process last ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Restarts done by the restart policy.
    pub restart_count: i64,
    /// Set by an explicit stop or kill; `unless-stopped` leaves such containers alone.
    pub stopped_by_user: bool,
    /// The healthcheck's state, once a container with a healthcheck was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<super::health::Health>,
}

impl Default for State {
    fn default() -> Self {
        State {
            status: Status::Created,
            pid: 0,
            exit_code: 0,
            oom_killed: false,
            error: String::new(),
            started_at: None,
            finished_at: None,
            restart_count: 0,
            stopped_by_user: false,
            health: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_table() {
        assert_eq!(transition(Status::Created, Op::Start), Ok(Status::Running));
        assert_eq!(
            transition(Status::Running, Op::Start),
            Err(TransitionError::AlreadyThere)
        );
        assert_eq!(transition(Status::Running, Op::Exit), Ok(Status::Exited));
        assert_eq!(transition(Status::Exited, Op::Start), Ok(Status::Running));
        assert_eq!(
            transition(Status::Created, Op::StartFailed),
            Ok(Status::Created)
        );
        assert_eq!(
            transition(Status::Exited, Op::StartFailed),
            Ok(Status::Exited)
        );
        assert_eq!(transition(Status::Exited, Op::Remove), Ok(Status::Removing));
        assert!(transition(Status::Removing, Op::Remove).is_err());
        assert!(transition(Status::Removing, Op::Start).is_err());
        assert!(transition(Status::Created, Op::Exit).is_err());
    }

    #[test]
    fn pause_and_unpause() {
        assert_eq!(transition(Status::Running, Op::Pause), Ok(Status::Paused));
        assert_eq!(transition(Status::Paused, Op::Unpause), Ok(Status::Running));
        assert_eq!(
            transition(Status::Paused, Op::Pause),
            Err(TransitionError::Illegal("is already paused".into()))
        );
        for s in [
            Status::Created,
            Status::Exited,
            Status::Removing,
            Status::Dead,
        ] {
            assert_eq!(
                transition(s, Op::Pause),
                Err(TransitionError::Illegal("is not running".into())),
                "{s:?}"
            );
        }
        assert!(transition(Status::Restarting, Op::Pause).is_err());
        for s in [
            Status::Created,
            Status::Running,
            Status::Exited,
            Status::Restarting,
        ] {
            assert_eq!(
                transition(s, Op::Unpause),
                Err(TransitionError::Illegal("is not paused".into())),
                "{s:?}"
            );
        }
        // A paused container still has a process: it exits, is removed, is not restarted.
        assert_eq!(transition(Status::Paused, Op::Exit), Ok(Status::Exited));
        assert_eq!(transition(Status::Paused, Op::Remove), Ok(Status::Removing));
        assert_eq!(
            transition(Status::Paused, Op::Start),
            Err(TransitionError::AlreadyThere)
        );
    }

    #[test]
    fn restart_policy_transitions() {
        // An exit the policy acts on: exited, then restarting until the delay is over.
        assert_eq!(transition(Status::Running, Op::Exit), Ok(Status::Exited));
        assert_eq!(
            transition(Status::Exited, Op::ScheduleRestart),
            Ok(Status::Restarting)
        );
        assert_eq!(
            transition(Status::Restarting, Op::AutoRestart),
            Ok(Status::Running)
        );
        // Called off by the user: exited for good.
        assert_eq!(
            transition(Status::Restarting, Op::CancelRestart),
            Ok(Status::Exited)
        );
        // A restart that fails to start leaves it exited.
        assert_eq!(
            transition(Status::Restarting, Op::StartFailed),
            Ok(Status::Exited)
        );
        // Restarting has no process: no exit, and a user's start is a no-op like moby's.
        assert!(transition(Status::Restarting, Op::Exit).is_err());
        assert_eq!(
            transition(Status::Restarting, Op::Start),
            Err(TransitionError::AlreadyThere)
        );
        assert_eq!(
            transition(Status::Restarting, Op::Remove),
            Ok(Status::Removing)
        );
        for s in [
            Status::Created,
            Status::Running,
            Status::Paused,
            Status::Restarting,
            Status::Removing,
            Status::Dead,
        ] {
            assert!(transition(s, Op::ScheduleRestart).is_err(), "{s:?}");
        }
        for s in [
            Status::Created,
            Status::Running,
            Status::Paused,
            Status::Exited,
            Status::Removing,
            Status::Dead,
        ] {
            assert!(transition(s, Op::AutoRestart).is_err(), "{s:?}");
            assert!(transition(s, Op::CancelRestart).is_err(), "{s:?}");
        }
    }
}
