//! Event messages with the legacy fields that compose and old clients still read.

use serde::{Deserialize, Serialize};

use crate::models::EventActor;

/// An event as moby sends it: the modern fields plus legacy `status`, `id` and `from`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Legacy: the action, for container and image events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Legacy: the actor's ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Legacy: the container's image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Object type: container, image, network, volume, daemon.
    #[serde(rename = "Type")]
    pub typ: String,
    /// What happened: create, start, die, destroy, tag, delete...
    #[serde(rename = "Action")]
    pub action: String,
    /// The object, with its attributes (labels, image, name, exitCode).
    #[serde(rename = "Actor")]
    pub actor: EventActor,
    /// Always `local`.
    pub scope: String,
    /// Unix seconds.
    pub time: i64,
    /// Unix nanoseconds.
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}
