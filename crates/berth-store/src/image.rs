//! Image records and image creation: turning an image configuration plus layer tars into
//! stored blobs (layers, config, OCI manifest), committed layer snapshots named by ChainID,
//! and an [`ImageRecord`] in the metadata database. Used by `import`, `load` and the
//! daemon's `commit`.

use std::io::{self, Read, Write};

use chrono::{DateTime, SecondsFormat, Utc};
use oci_spec::image::{HistoryBuilder, ImageConfiguration};
use serde::{Deserialize, Serialize};

use crate::content::{Ingest, random_name};
use crate::digest::{Digest, Hashing};
use crate::error::{Result, StoreError};
use crate::layer::{self, Compression, apply_layer_with_parents, chain_id};
use crate::snapshot::EXTRACT_PREFIX;
use crate::store::Store;

/// Media type of an OCI image manifest.
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image index.
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an OCI image configuration.
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of a Docker schema 2 manifest.
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Media type of a Docker manifest list.
pub const MEDIA_TYPE_DOCKER_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// sha256 of the uncompressed layer tar.
    pub diff_id: Digest,
    /// Digest of the stored blob (equal to `diff_id` for uncompressed layers).
    pub digest: Digest,
    /// OCI media type of the blob.
    pub media_type: String,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Bytes of file content in the unpacked layer.
    #[serde(default)]
    pub unpacked_size: u64,
}

/// Everything the store knows about one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image id: the digest of its configuration blob.
    pub id: Digest,
    /// Digest of the manifest blob in the content store.
    pub manifest_digest: Digest,
    /// Media type of that manifest.
    pub manifest_media_type: String,
    /// The parsed image configuration.
    pub config: ImageConfiguration,
    /// The layers, base first.
    pub layers: Vec<LayerInfo>,
    /// Total unpacked size of all layers in bytes.
    pub size: u64,
    /// When the image was created (from the config, else when it was stored).
    pub created: DateTime<Utc>,
    /// When a name was last pointed at this image.
    #[serde(default)]
    pub last_tag_time: Option<DateTime<Utc>>,
}

impl ImageRecord {
    /// The layers' DiffIDs, base first.
    pub fn diff_ids(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }

    /// The layers' ChainIDs, base first (the names of their committed snapshots).
    pub fn chain_ids(&self) -> Vec<Digest> {
        chain_id(&self.diff_ids())
    }

    /// The ChainID of the top layer, `None` for an image without layers.
    pub fn top_chain_id(&self) -> Option<Digest> {
        self.chain_ids().pop()
    }
}

/// One history entry of an image, oldest first, with the size of the layer it made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// RFC 3339 creation time.
    pub created: Option<String>,
    /// The command that made the step.
    pub created_by: Option<String>,
    /// Free-form comment.
    pub comment: Option<String>,
    /// Whether the step made no layer.
    pub empty_layer: bool,
    /// Unpacked size of the layer this step made (0 for empty layers).
    pub size: u64,
}

/// Options of [`Store::import`].
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The image configuration, with the caller's `--change`s already applied; its rootfs and
    /// history are filled in by the store.
    pub config: ImageConfiguration,
    /// The history comment; `Imported from -` when `None`.
    pub message: Option<String>,
}

/// The stored layer blob and committed snapshot that one layer tar became.
#[derive(Debug, Clone)]
pub(crate) struct UnpackedLayer {
    pub(crate) diff_id: Digest,
    pub(crate) chain_id: Digest,
    pub(crate) unpacked_size: u64,
}

/// A reader that copies everything it reads into an ingest.
struct Tee<'a, R> {
    inner: R,
    out: &'a mut Ingest,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// The current time in the RFC 3339 form image configs use.
pub(crate) fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Serialises an OCI image manifest for a config and layers.
pub(crate) fn manifest_json(
    config: &Digest,
    config_size: u64,
    layers: &[LayerInfo],
) -> Result<Vec<u8>> {
    let layers: Vec<_> = layers
        .iter()
        .map(|l| serde_json::json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size}))
        .collect();
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": {"mediaType": MEDIA_TYPE_CONFIG, "digest": config, "size": config_size},
        "layers": layers,
    });
    serde_json::to_vec(&m).map_err(|e| StoreError::json("encode manifest", e))
}

/// Parses an image configuration blob.
pub(crate) fn parse_config(bytes: &[u8], id: &Digest) -> Result<ImageConfiguration> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::InvalidImage {
        what: format!("config {id}"),
        reason: e.to_string(),
    })
}

impl Store {
    /// Creates an image from `config` and layer tars (plain or gzip, base first): stores each
    /// blob as given, unpacks it into a snapshot named by its ChainID, fills in
    /// `rootfs.diff_ids` (or checks them if present) and a history if there is none, then
    /// writes the config and an OCI manifest and records the image.
    pub fn create_image<'r>(
        &self,
        config: ImageConfiguration,
        layer_tars: Vec<Box<dyn Read + 'r>>,
    ) -> Result<ImageRecord> {
        self.create_image_on(None, config, layer_tars)
    }

    /// Like [`Store::create_image`], but the new layers go on top of the layers of image
    /// `base` (for `docker commit` and builds). `config.rootfs.diff_ids`, if given, must list
    /// the base's layers followed by the new ones; the history is the caller's to extend.
    pub fn create_image_on<'r>(
        &self,
        base: Option<&Digest>,
        config: ImageConfiguration,
        layer_tars: Vec<Box<dyn Read + 'r>>,
    ) -> Result<ImageRecord> {
        let result = {
            let _guard = self.gc_lock.read().unwrap_or_else(|p| p.into_inner());
            let base = base.map(|id| self.image(id)).transpose();
            base.and_then(|base| self.create_image_locked(base, config, layer_tars))
        };
        if result.is_err() {
            self.cleanup_after_failure();
        }
        result
    }

    fn create_image_locked<'r>(
        &self,
        base: Option<ImageRecord>,
        mut config: ImageConfiguration,
        layer_tars: Vec<Box<dyn Read + 'r>>,
    ) -> Result<ImageRecord> {
        let mut parent: Option<Digest> = base.as_ref().and_then(ImageRecord::top_chain_id);
        let mut layers = base.map(|b| b.layers).unwrap_or_default();
        for reader in layer_tars {
            let mut ingest = self.content.writer()?;
            let (compression, unpacked) = {
                let mut br = io::BufReader::new(Tee {
                    inner: reader,
                    out: &mut ingest,
                });
                let compression = layer::detect_compression(&mut br)?;
                let unpacked = self.unpack_layer(parent.as_ref(), &mut br, None)?;
                // Keep the blob whole even if bytes follow the end of the tar.
                io::copy(&mut br, &mut io::sink())
                    .map_err(|e| StoreError::InvalidLayer(format!("read layer: {e}")))?;
                (compression, unpacked)
            };
            let size = ingest.written();
            let digest = ingest.commit(None, None)?;
            layers.push(LayerInfo {
                diff_id: unpacked.diff_id.clone(),
                digest,
                media_type: compression.layer_media_type().to_string(),
                size,
                unpacked_size: unpacked.unpacked_size,
            });
            parent = Some(unpacked.chain_id);
        }
        let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
        let given = config.rootfs().diff_ids().clone();
        if given.is_empty() {
            config.rootfs_mut().set_diff_ids(diff_ids);
        } else if given != diff_ids {
            return Err(StoreError::InvalidImage {
                what: "config".to_string(),
                reason: format!("rootfs.diff_ids {given:?} do not match the layers {diff_ids:?}"),
            });
        }
        if config.created().is_none() {
            config.set_created(Some(now_rfc3339()));
        }
        if config.history().as_ref().is_none_or(|h| h.is_empty()) {
            let created = config.created().clone();
            let history = layers
                .iter()
                .map(|_| {
                    let mut b = HistoryBuilder::default();
                    if let Some(c) = &created {
                        b = b.created(c.clone());
                    }
                    b.build().map_err(|e| StoreError::InvalidImage {
                        what: "history".to_string(),
                        reason: e.to_string(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            config.set_history(Some(history));
        }
        self.record_image(config, layers, None)
    }

    /// Writes the config (and, unless given, a manifest) and records the image.
    pub(crate) fn record_image(
        &self,
        config: ImageConfiguration,
        layers: Vec<LayerInfo>,
        config_bytes: Option<Vec<u8>>,
    ) -> Result<ImageRecord> {
        let bytes = match config_bytes {
            Some(b) => b,
            None => serde_json::to_vec(&config)
                .map_err(|e| StoreError::json("encode image config", e))?,
        };
        let id = self.content.put_bytes(&bytes)?;
        let manifest = manifest_json(&id, bytes.len() as u64, &layers)?;
        let manifest_digest = self.content.put_bytes(&manifest)?;
        let record = self.image_record(
            id,
            manifest_digest,
            MEDIA_TYPE_MANIFEST.to_string(),
            config,
            layers,
        );
        self.meta.write(|tx| tx.put_image(&record))?;
        Ok(record)
    }

    pub(crate) fn image_record(
        &self,
        id: Digest,
        manifest_digest: Digest,
        manifest_media_type: String,
        config: ImageConfiguration,
        layers: Vec<LayerInfo>,
    ) -> ImageRecord {
        let created = config
            .created()
            .as_deref()
            .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
            .map_or_else(Utc::now, |d| d.with_timezone(&Utc));
        let size = layers.iter().map(|l| l.unpacked_size).sum();
        ImageRecord {
            id,
            manifest_digest,
            manifest_media_type,
            config,
            layers,
            size,
            created,
            last_tag_time: None,
        }
    }

    /// Imports a root filesystem tar (plain or gzip) as a one-layer image, like `docker import`.
    pub fn import(&self, reader: impl Read, opts: ImportOptions) -> Result<ImageRecord> {
        let mut config = opts.config;
        let created = config.created().clone().unwrap_or_else(now_rfc3339);
        config.set_created(Some(created.clone()));
        config.rootfs_mut().set_diff_ids(Vec::new());
        let comment = opts
            .message
            .unwrap_or_else(|| "Imported from -".to_string());
        let entry = HistoryBuilder::default()
            .created(created)
            .comment(comment)
            .build()
            .map_err(|e| StoreError::InvalidImage {
                what: "history".to_string(),
                reason: e.to_string(),
            })?;
        config.set_history(Some(vec![entry]));
        self.create_image(config, vec![Box::new(reader)])
    }

    /// Applies one layer stream on top of the committed snapshot `parent` and commits it
    /// under its ChainID (or drops it if that snapshot already exists). The caller holds
    /// the GC read lock.
    pub(crate) fn unpack_layer(
        &self,
        parent: Option<&Digest>,
        reader: &mut dyn Read,
        expected_diff_id: Option<&Digest>,
    ) -> Result<UnpackedLayer> {
        let key = format!("{EXTRACT_PREFIX}{}", random_name("layer"));
        self.snapshots.prepare(&key, parent.map(Digest::as_str))?;
        let result = (|| {
            let target = self.snapshots.fs_dir(&key)?;
            let parents = self.snapshots.parent_dirs(&key)?;
            let stats = apply_layer_with_parents(reader, &target, &parents)?;
            if let Some(expected) = expected_diff_id
                && *expected != stats.diff_id
            {
                return Err(StoreError::InvalidLayer(format!(
                    "layer content is {}, expected diff id {expected}",
                    stats.diff_id
                )));
            }
            let chain = match parent {
                None => stats.diff_id.clone(),
                Some(p) => Digest::from_bytes(format!("{p} {}", stats.diff_id).as_bytes()),
            };
            Ok((stats, chain))
        })();
        let (stats, chain) = match result {
            Ok(v) => v,
            Err(e) => {
                if let Err(re) = self.snapshots.remove(&key) {
                    tracing::warn!(snapshot = %key, "cannot remove failed extraction: {re}");
                }
                return Err(e);
            }
        };
        match self.snapshots.commit(chain.as_str(), &key) {
            Ok(()) => {}
            Err(StoreError::SnapshotExists(_)) => self.snapshots.remove(&key)?,
            Err(e) => {
                let _ = self.snapshots.remove(&key);
                return Err(e);
            }
        }
        Ok(UnpackedLayer {
            diff_id: stats.diff_id,
            chain_id: chain,
            unpacked_size: stats.size,
        })
    }

    /// Makes sure the committed snapshot for layer `blob` exists on top of `parent`,
    /// verifying the blob against `diff_id` either way.
    pub(crate) fn ensure_layer(
        &self,
        parent: Option<&Digest>,
        blob: &Digest,
        diff_id: &Digest,
    ) -> Result<UnpackedLayer> {
        let chain = match parent {
            None => diff_id.clone(),
            Some(p) => Digest::from_bytes(format!("{p} {diff_id}").as_bytes()),
        };
        if let Ok(rec) = self.snapshots.get(chain.as_str()) {
            let (_, stream) = layer::decompress(self.content.read(blob)?)?;
            let mut h = Hashing::new(stream);
            io::copy(&mut h, &mut io::sink())
                .map_err(|e| StoreError::InvalidLayer(format!("read layer {blob}: {e}")))?;
            if h.digest() != *diff_id {
                return Err(StoreError::InvalidLayer(format!(
                    "layer {blob} uncompresses to {}, expected diff id {diff_id}",
                    h.digest()
                )));
            }
            let unpacked_size = match rec.size {
                Some(s) => s,
                None => self.snapshots.usage(chain.as_str())?,
            };
            return Ok(UnpackedLayer {
                diff_id: diff_id.clone(),
                chain_id: chain,
                unpacked_size,
            });
        }
        let mut file = self.content.read(blob)?;
        self.unpack_layer(parent, &mut file, Some(diff_id))
    }

    /// The compression of a stored blob.
    pub(crate) fn blob_compression(&self, blob: &Digest) -> Result<Compression> {
        let mut br = io::BufReader::new(self.content.read(blob)?);
        layer::detect_compression(&mut br)
    }

    /// The history of an image, oldest first, with layer sizes.
    pub fn history(&self, id: &Digest) -> Result<Vec<HistoryEntry>> {
        let rec = self
            .meta
            .read(|tx| tx.get_image(id))?
            .ok_or_else(|| StoreError::ImageNotFound(id.to_string()))?;
        let mut layer_sizes = rec.layers.iter().map(|l| l.unpacked_size);
        let history = rec.config.history().clone().unwrap_or_default();
        Ok(history
            .iter()
            .map(|h| {
                let empty = h.empty_layer().unwrap_or(false);
                HistoryEntry {
                    created: h.created().clone(),
                    created_by: h.created_by().clone(),
                    comment: h.comment().clone(),
                    empty_layer: empty,
                    size: if empty {
                        0
                    } else {
                        layer_sizes.next().unwrap_or(0)
                    },
                }
            })
            .collect())
    }
}
