//! Pulled images, layer by layer: a puller hands each layer over as soon as its blob (and
//! the blobs below it) are in the content store, so unpacking runs while later layers
//! still download, then records the image once its manifest is stored.
//!
//! A layer whose snapshot exists is not read again when the blob is known to unpack to
//! its diff ID: it is the uncompressed layer itself, a compressed-layer record pairs them
//! (written here after a verified unpack, and by pushes), or an image in the store already
//! uses that blob for that diff ID. That makes pulling an image whose layers are all present
//! a few metadata reads and one write.

use std::io::{self, Read};

use oci_spec::image::ImageConfiguration;

use super::compressed::{CompressedLayer, is_uncompressed};
use crate::build::{Lease, top_chain_id};
use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::image::{ImageRecord, LayerInfo, parse_config};
use crate::reference::Reference;
use crate::store::Store;

/// Bytes read between two progress reports while unpacking.
const PROGRESS_STEP: u64 = 1 << 20;

/// One pulled layer, ready in its snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledLayer {
    /// The layer as the image record will list it.
    pub layer: LayerInfo,
    /// Whether the blob was unpacked now (false: the snapshot was there already).
    pub extracted: bool,
}

/// One downloaded layer blob, as the manifest and configuration describe it.
#[derive(Debug, Clone, Copy)]
pub struct PulledBlob<'a> {
    /// The blob's digest (it is in the content store).
    pub digest: &'a Digest,
    /// Its media type from the manifest (detected from the content when empty).
    pub media_type: &'a str,
    /// The diff ID the configuration lists for it.
    pub diff_id: &'a Digest,
    /// The repository (`domain/path`) it came from, remembered for cross-repository mounts.
    pub repository: Option<&'a str>,
}

/// Counts bytes read and reports them every [`PROGRESS_STEP`].
struct Counting<'a, R> {
    inner: R,
    read: u64,
    reported: u64,
    total: u64,
    progress: &'a mut dyn FnMut(u64, u64),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read - self.reported >= PROGRESS_STEP || (n == 0 && self.read != self.reported) {
            self.reported = self.read;
            (self.progress)(self.read, self.total);
        }
        Ok(n)
    }
}

fn diff_ids_of(config: &ImageConfiguration, id: &Digest) -> Result<Vec<Digest>> {
    config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| Digest::parse(d))
        .collect::<Result<Vec<_>>>()
        .map_err(|e| StoreError::InvalidImage {
            what: format!("config {id}"),
            reason: e.to_string(),
        })
}

impl Store {
    /// The diff IDs (`rootfs.diff_ids`, base first) of the image configuration blob `config`.
    pub fn config_diff_ids(&self, config: &Digest) -> Result<Vec<Digest>> {
        let bytes = self.content.read_to_vec(config)?;
        diff_ids_of(&parse_config(&bytes, config)?, config)
    }

    /// Makes the snapshot of one pulled layer exist on top of `below` (the image's layers
    /// under it, as this function returned them), from the stored blob `pulled`, checked
    /// against its diff ID; `progress(read, total)` follows the blob while it is unpacked. Afterwards `lease` holds the chain up to this layer, so GC
    /// keeps it until the image is recorded.
    pub fn unpack_pulled_layer(
        &self,
        lease: &Lease,
        below: &[LayerInfo],
        pulled: &PulledBlob<'_>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<PulledLayer> {
        let (blob, diff_id) = (pulled.digest, pulled.diff_id);
        let parent = top_chain_id(below);
        let chain = match &parent {
            None => diff_id.clone(),
            Some(p) => Digest::from_bytes(format!("{p} {diff_id}").as_bytes()),
        };
        let size = self.content.size(blob)?;
        let (unpacked_size, extracted) = {
            let _guard = self.gc_lock.read().unwrap_or_else(|p| p.into_inner());
            match self.snapshots.get(chain.as_str()) {
                Ok(snap) if self.layer_pair_known(blob, diff_id)? => {
                    let unpacked = match snap.size {
                        Some(s) => s,
                        None => self.snapshots.usage(chain.as_str())?,
                    };
                    (unpacked, false)
                }
                // Present, but this blob was never seen to unpack to it: check by hashing.
                Ok(_) => (
                    self.ensure_layer(parent.as_ref(), blob, diff_id)?
                        .unpacked_size,
                    false,
                ),
                Err(StoreError::SnapshotNotFound(_)) => {
                    let mut reader = Counting {
                        inner: self.content.read(blob)?,
                        read: 0,
                        reported: 0,
                        total: size,
                        progress,
                    };
                    let unpacked =
                        self.unpack_layer(parent.as_ref(), &mut reader, Some(diff_id))?;
                    (unpacked.unpacked_size, true)
                }
                Err(e) => return Err(e),
            }
        };
        let media_type = match pulled.media_type {
            "" => self.blob_compression(blob)?.layer_media_type().to_string(),
            given => given.to_string(),
        };
        let layer = LayerInfo {
            diff_id: diff_id.clone(),
            digest: blob.clone(),
            media_type: media_type.clone(),
            size,
            unpacked_size,
        };
        let mut chain_layers = below.to_vec();
        chain_layers.push(layer.clone());
        lease.hold(&chain_layers);
        if !is_uncompressed(&media_type) && !self.compressed_pair_recorded(blob, diff_id)? {
            let rec = CompressedLayer {
                digest: blob.clone(),
                size,
                media_type,
                repositories: Vec::new(),
            };
            self.remember_compressed_layers(&[(diff_id.clone(), rec)], pulled.repository)?;
        }
        Ok(PulledLayer { layer, extracted })
    }

    /// Whether a compressed-layer record pairs `blob` with `diff_id`.
    fn compressed_pair_recorded(&self, blob: &Digest, diff_id: &Digest) -> Result<bool> {
        Ok(self
            .compressed_layer(diff_id)?
            .is_some_and(|c| c.digest == *blob))
    }

    /// Whether `blob` is known to unpack to `diff_id` without reading it.
    fn layer_pair_known(&self, blob: &Digest, diff_id: &Digest) -> Result<bool> {
        if blob == diff_id || self.compressed_pair_recorded(blob, diff_id)? {
            return Ok(true);
        }
        let images = self.meta.read(|tx| tx.images())?;
        Ok(images
            .iter()
            .flat_map(|i| &i.layers)
            .any(|l| l.digest == *blob && l.diff_id == *diff_id))
    }

    /// Records a pulled image whose layers [`Store::unpack_pulled_layer`] prepared (base
    /// first) and whose manifest and config are stored, and points `tag` at it, in one
    /// transaction. On error nothing is named or recorded.
    pub fn record_pulled_image(
        &self,
        manifest: &Digest,
        manifest_media_type: &str,
        config: &Digest,
        layers: Vec<LayerInfo>,
        tag: Option<&Reference>,
    ) -> Result<ImageRecord> {
        let _guard = self.gc_lock.read().unwrap_or_else(|p| p.into_inner());
        let bytes = self.content.read_to_vec(config)?;
        let parsed = parse_config(&bytes, config)?;
        let diff_ids = diff_ids_of(&parsed, config)?;
        let have: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
        if diff_ids != have {
            return Err(StoreError::InvalidImage {
                what: format!("config {config}"),
                reason: format!("rootfs.diff_ids {diff_ids:?} do not match the layers {have:?}"),
            });
        }
        if !self.content.exists(manifest) {
            return Err(StoreError::BlobNotFound(manifest.clone()));
        }
        let mut record = self.image_record(
            config.clone(),
            manifest.clone(),
            manifest_media_type.to_string(),
            parsed,
            layers,
        );
        if tag.is_some() {
            record.last_tag_time = Some(chrono::Utc::now());
        }
        self.meta.write(|tx| {
            tx.put_image(&record)?;
            if let Some(t) = tag {
                tx.put_name(&t.to_string(), &record.id)?;
            }
            Ok(())
        })?;
        Ok(record)
    }
}
