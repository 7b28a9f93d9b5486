//! JSON progress messages streamed by pull, push, load, import and build.

use serde::{Deserialize, Serialize};

/// One message of a JSON message stream (moby's `jsonmessage.JSONMessage`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JsonMessage {
    /// Build output text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Status line (`Pulling fs layer`, `sha256:...` for import).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Byte counts for a progress bar.
    #[serde(rename = "progressDetail", skip_serializing_if = "Option::is_none")]
    pub progress_detail: Option<ProgressDetail>,
    /// Rendered progress bar.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// The layer or tag the message is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A failure; the Go CLI fails only on this field.
    #[serde(rename = "errorDetail", skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<ErrorDetail>,
    /// Deprecated copy of the error message, still read by docker-py users.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Out-of-band data such as a built image's ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux: Option<serde_json::Value>,
}

/// Progress counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProgressDetail {
    /// Bytes done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<i64>,
    /// Bytes expected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
}

/// Error payload of a message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Optional numeric code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    /// The error text.
    pub message: String,
}

impl JsonMessage {
    /// A `stream` message.
    pub fn stream(text: impl Into<String>) -> Self {
        JsonMessage {
            stream: Some(text.into()),
            ..Default::default()
        }
    }

    /// A `status` message.
    pub fn status(text: impl Into<String>) -> Self {
        JsonMessage {
            status: Some(text.into()),
            ..Default::default()
        }
    }

    /// An error message in moby's shape: `errorDetail` plus the legacy `error`.
    pub fn error(text: impl Into<String>) -> Self {
        let message = text.into();
        JsonMessage {
            error_detail: Some(ErrorDetail {
                code: None,
                message: message.clone(),
            }),
            error: Some(message),
            ..Default::default()
        }
    }
}
