//! berth's image store: content-addressed blobs, image metadata, overlay snapshots,
//! layer application and export, `docker save`/`load` archives and garbage collection.
//!
//! It knows nothing about container runtimes, HTTP or Docker API types. [`Store`] is the
//! entry point; all its methods block (call them from `spawn_blocking`).

pub mod archive;
pub mod build;
pub mod content;
pub mod digest;
pub mod distribution;
pub mod error;
pub mod image;
pub mod layer;
pub mod meta;
pub mod reference;
pub mod snapshot;
pub mod store;
mod sys;

pub use archive::{ImageSelector, LoadedImage};
pub use build::{BuildCacheRecord, Lease};
pub use content::{ContentStore, Ingest};
pub use digest::{Digest, Hashing};
pub use error::{Result, StoreError};
pub use image::{HistoryEntry, ImageRecord, ImportOptions, LayerInfo};
pub use layer::{ApplyStats, DiffOptions, apply_layer, chain_id, diff_tar, diff_tar_with, tar_dir};
pub use meta::MetaDb;
pub use reference::Reference;
pub use snapshot::{Mount, SnapshotKind, SnapshotRecord, Snapshotter, mount_all, unmount};
pub use store::{GcStats, Store};

/// Re-exported so callers build image configurations with the same version of the types.
pub use oci_spec::image::ImageConfiguration;

#[cfg(test)]
mod tests;
