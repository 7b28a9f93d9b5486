//! Docker Engine API wire types and protocol helpers, shared by `berthd` (server) and `berth` (client).
//!
//! The bulk of the request and response bodies come from `bollard-stubs`, generated from the
//! Engine API swagger (re-exported as [`models`]). This crate adds what those models lack and what
//! real clients still read: the legacy event fields (`status`, `id`, `from`), `ContainerConfig` in
//! image inspect, `VirtualSize` in image lists; plus the protocol pieces: stdcopy framing, JSON
//! progress messages, filter and boolean query parsing, and the API version constants.
//!
//! Architecture invariant: this crate does no IO and knows nothing of HTTP servers or clients; it
//! is (de)serialisation and validation of wire values only.

pub mod archive;
pub mod auth;
pub mod errors;
pub mod events;
pub mod filters;
pub mod images;
pub mod progress;
pub mod query;
pub mod stdcopy;
pub mod units;

pub use bollard_stubs::models;

/// The API version the daemon advertises. 1.44 is the last version in which moby still emits
/// `ContainerConfig` in image inspect, which docker-compose 1.29 needs.
pub const API_VERSION: &str = "1.44";
/// The oldest API version the daemon accepts in a `/vX.Y/` path prefix.
pub const MIN_API_VERSION: &str = "1.24";
/// The engine version reported by `/version` and the `Server` header.
pub const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");
