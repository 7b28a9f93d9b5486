//! The crate-wide error type. Every message is lower-case and names the digest, path,
//! reference or snapshot that failed so the daemon can relay it as is.

use std::io;
use std::path::{Path, PathBuf};

use crate::digest::Digest;

/// Everything that can go wrong in the image store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed; `context` says what was attempted on which path.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. `open /var/lib/berth/content/blobs/sha256/ab…`.
        context: String,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
    /// A string is not a valid `sha256:<64 hex>` digest.
    #[error("invalid digest {0:?}")]
    InvalidDigest(String),
    /// A reference could not be parsed; the message follows Docker's wording.
    #[error("{0}")]
    InvalidReference(String),
    /// Content did not hash to the digest it was expected to have.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the caller asked for.
        expected: Digest,
        /// The digest of what was actually written.
        actual: Digest,
    },
    /// Content did not have the expected size.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The digest of the written content.
        digest: Digest,
        /// The size the caller asked for.
        expected: u64,
        /// The size actually written.
        actual: u64,
    },
    /// A blob is not in the content store.
    #[error("blob {0} not found")]
    BlobNotFound(Digest),
    /// No image matches the given name, id or prefix (the daemon says "No such image: X").
    #[error("no such image: {0}")]
    ImageNotFound(String),
    /// An id prefix matches more than one image.
    #[error("ambiguous image id prefix {0:?}: more than one image matches")]
    AmbiguousImage(String),
    /// A snapshot key or name does not exist.
    #[error("snapshot {0} not found")]
    SnapshotNotFound(String),
    /// A snapshot key or name is already taken.
    #[error("snapshot {0} already exists")]
    SnapshotExists(String),
    /// A snapshot cannot be removed because other snapshots are built on it.
    #[error("snapshot {0} is the parent of other snapshots")]
    SnapshotInUse(String),
    /// The operation does not apply to this kind of snapshot.
    #[error("snapshot {key}: {reason}")]
    SnapshotKind {
        /// The snapshot key.
        key: String,
        /// Why the kind does not fit.
        reason: &'static str,
    },
    /// A layer tar is corrupt, truncated or tries to escape its target directory.
    #[error("invalid layer tar: {0}")]
    InvalidLayer(String),
    /// A layer's uncompressed content does not match the DiffID in the image config.
    #[error("layer {index} diff id mismatch: config says {expected}, content is {actual}")]
    DiffIdMismatch {
        /// Zero-based index of the layer.
        index: usize,
        /// The DiffID from the image configuration.
        expected: Digest,
        /// The DiffID computed from the layer.
        actual: Digest,
    },
    /// An image archive (`docker save` output) is malformed.
    #[error("invalid image archive: {0}")]
    InvalidArchive(String),
    /// An image configuration or manifest is invalid.
    #[error("invalid image {what}: {reason}")]
    InvalidImage {
        /// Which document, e.g. `config sha256:…`.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The metadata database was written by a newer berth.
    #[error(
        "metadata database {path} has schema version {found}, this berth supports up to {supported}"
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The version found on disk.
        found: u64,
        /// The newest version this build understands.
        supported: u64,
    },
    /// The metadata database (redb) failed.
    #[error("metadata database: {0}")]
    Meta(String),
    /// JSON (de)serialisation failed.
    #[error("{context}: {source}")]
    Json {
        /// What was being (de)serialised.
        context: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// A mount or unmount system call failed.
    #[error("{op} {target}: {source}")]
    Mount {
        /// `mount` or `unmount`.
        op: &'static str,
        /// The mount point.
        target: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// An overlay mount would need a lowerdir option longer than the kernel accepts.
    #[error(
        "overlay mount at {target}: {layers} layers make a lowerdir option of {len} bytes, more than the {max} the kernel accepts"
    )]
    TooManyLayers {
        /// The mount point.
        target: PathBuf,
        /// Number of lower layers.
        layers: usize,
        /// Length of the option string.
        len: usize,
        /// Kernel limit (page size minus one).
        max: usize,
    },
}

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, StoreError>;

impl StoreError {
    /// Builds an [`StoreError::Io`] for operation `op` on `path`.
    pub fn io(op: &str, path: &Path, source: io::Error) -> Self {
        StoreError::Io {
            context: format!("{op} {}", path.display()),
            source,
        }
    }

    /// Builds a [`StoreError::Json`] with the given context.
    pub fn json(context: impl Into<String>, source: serde_json::Error) -> Self {
        StoreError::Json {
            context: context.into(),
            source,
        }
    }
}

/// Adds path context to `io::Result`s.
pub(crate) trait IoContext<T> {
    /// Converts an I/O error into [`StoreError::Io`] naming `op` and `path`.
    fn ctx(self, op: &str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &str, path: &Path) -> Result<T> {
        self.map_err(|e| StoreError::io(op, path, e))
    }
}

macro_rules! redb_error {
    ($($ty:ty),*) => {$(
        impl From<$ty> for StoreError {
            fn from(e: $ty) -> Self {
                StoreError::Meta(e.to_string())
            }
        }
    )*};
}

redb_error!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
