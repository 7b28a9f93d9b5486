//! berth-registry: OCI distribution for berth, both sides of the wire.
//!
//! - [`routes`] is the one route table of the distribution API v1.1: the client builds
//!   request paths with it and the server parses request paths with it, so the two cannot
//!   disagree. Repository names are validated there.
//! - [`errors`] holds the spec's error codes, each registered once with its HTTP status,
//!   and the `{"errors":[…]}` body.
//! - [`manifest`] reads Docker schema 2 and OCI manifests and indexes and selects a platform.
//! - [`server`] is an axum registry over filesystem storage (a global blob store plus
//!   per-repository links), with htpasswd Basic auth or its own Bearer token service,
//!   optional TLS, garbage collection and a read-only pull-through cache mode; the
//!   `berth-registry` binary runs it.
//! - [`client`] pulls and pushes against any registry: ping, Basic or Bearer auth as the
//!   registry asks, manifest resolution, blobs streamed into berth-store's content store
//!   (verified by digest and size before they become visible), concurrent layers with
//!   per-layer progress, cross-repository mounts and chunked uploads.
//!
//! Invariants:
//! - Nothing unverified becomes visible: uploads (server) and downloads (client) stream
//!   into a berth-store ingest that hashes as it writes, and only a commit whose digest
//!   (and size) match renames it into place. A pulled manifest is stored after its blobs.
//! - A repository reads only blobs linked into it; a manifest is accepted only when every
//!   blob (or child manifest) it names is linked in its repository.
//! - The crate depends on berth-store only; it knows nothing of containers, Docker API
//!   types or the daemon. All blocking work (disk, bcrypt, credential helpers) runs on
//!   `spawn_blocking`.

pub mod client;
pub mod errors;
pub mod manifest;
pub mod routes;
pub mod server;
mod sink;

pub use client::{
    Client, ClientError, ClientOptions, CredentialStore, Credentials, Progress, ProgressEvent,
    ProgressFn, PullOptions, PullSession, PulledImage, PushOptions,
};
pub use errors::{ApiError, ErrorBody, ErrorCode, ErrorInfo};
pub use manifest::{Descriptor, Manifest, Platform};
pub use routes::{ManifestRef, RepoName, Route};
pub use server::{Registry, ServerConfig};
