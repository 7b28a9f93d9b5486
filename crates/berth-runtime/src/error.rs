use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What kind of failure a shim or runtime operation hit.
///
/// The exec kinds map onto the exit codes `docker run` uses when the container process
/// cannot be started (see [`ErrorKind::docker_exit_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The container's executable does not exist (docker exits 127).
    NotFound,
    /// The container's executable exists but cannot be executed (docker exits 126).
    NotExecutable,
    /// The request does not fit the container's current state (e.g. start twice).
    InvalidState,
    /// Anything else (docker exits 125).
    Other,
}

impl ErrorKind {
    /// The exit code `docker run` reports for a failure of this kind.
    pub fn docker_exit_code(self) -> i32 {
        match self {
            ErrorKind::NotFound => 127,
            ErrorKind::NotExecutable => 126,
            ErrorKind::InvalidState | ErrorKind::Other => 125,
        }
    }
}

/// Errors of the runtime crate.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The shim (or the OCI runtime behind it) reported a failure.
    #[error("{message}")]
    Shim {
        /// Classification of the failure.
        kind: ErrorKind,
        /// Message in the form docker users expect.
        message: String,
    },
    /// The run configuration cannot be turned into a spec.
    #[error("invalid container configuration: {0}")]
    InvalidConfig(String),
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path or object.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// No shim answers on the state directory's socket.
    #[error("shim for state dir {0} is not running")]
    ShimNotRunning(PathBuf),
    /// The shim sent something that does not follow the protocol.
    #[error("shim protocol error: {0}")]
    Protocol(String),
}

impl RuntimeError {
    /// The classification of this error; everything that is not a shim report is `Other`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RuntimeError::Shim { kind, .. } => *kind,
            _ => ErrorKind::Other,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        RuntimeError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
