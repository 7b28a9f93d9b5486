//! What builds need from the store: writable layers on a chain of layers (not an image),
//! such a layer turned into a stored layer, images assembled from stored layers, the build
//! cache (a step's resulting layer chain, remembered by the step's cache key), and leases
//! that keep a running build's layers safe from garbage collection until it records them.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::image::{ImageRecord, LayerInfo, parse_config};
use crate::layer::{self, chain_id};
use crate::snapshot::Mount;
use crate::store::{Store, snapshot_key};

/// The record kind of build cache entries in the records table.
pub const BUILD_CACHE_KIND: &str = "build-cache";

/// Media type of the uncompressed layers builds store (compressed, if at all, on push).
const MEDIA_TYPE_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// One build cache entry: the filesystem a step produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildCacheRecord {
    /// The layer chain, base first.
    pub layers: Vec<LayerInfo>,
    /// When the step ran.
    pub created: DateTime<Utc>,
    /// When a build last used the entry.
    pub last_used: DateTime<Utc>,
    /// Bytes of the step's own layer (0 for steps that reused their parent's files).
    pub size: u64,
}

/// Layer chains a running build holds; garbage collection keeps them while the lease lives.
#[derive(Debug)]
pub struct Lease {
    id: u64,
    table: Arc<LeaseTable>,
}

/// Every live lease's chains.
#[derive(Debug, Default)]
pub(crate) struct LeaseTable {
    next: Mutex<u64>,
    chains: Mutex<HashMap<u64, Vec<Vec<LayerInfo>>>>,
}

impl LeaseTable {
    /// The blobs and chain IDs that live leases hold.
    pub(crate) fn roots(&self) -> (Vec<Digest>, Vec<Digest>) {
        let chains = self.chains.lock().unwrap_or_else(|p| p.into_inner());
        let mut blobs = Vec::new();
        let mut chain_ids = Vec::new();
        for chain in chains.values().flatten() {
            blobs.extend(chain.iter().map(|l| l.digest.clone()));
            chain_ids.extend(chain_id(&diff_ids(chain)));
        }
        (blobs, chain_ids)
    }
}

impl Lease {
    /// Protects `layers` (a whole chain, base first) until the lease is dropped.
    pub fn hold(&self, layers: &[LayerInfo]) {
        self.table
            .chains
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(self.id)
            .or_default()
            .push(layers.to_vec());
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.table
            .chains
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// The files and directories of `upper` that only exist because the runtime mounted
/// something on `mount_points`: empty files or directories (or directories holding only
/// such stubs) there and on the way there, where no lower layer has the path. They are
/// left out of a layer; the upper directory, maybe still mounted, is not touched.
fn mount_stubs(
    upper: &Path,
    lowers: &[PathBuf],
    mount_points: &[String],
) -> Result<HashSet<PathBuf>> {
    let mut stubs = HashSet::new();
    for point in mount_points {
        let mut rel = PathBuf::from(point.trim_start_matches('/'));
        while !rel.as_os_str().is_empty() {
            let Some(meta) = lstat_beneath(upper, &rel) else {
                break;
            };
            if lowers.iter().any(|l| lstat_beneath(l, &rel).is_some()) {
                break;
            }
            let full = upper.join(&rel);
            let empty = if meta.is_dir() {
                let mut entries =
                    fs::read_dir(&full).map_err(|e| StoreError::io("read directory", &full, e))?;
                entries.all(|e| e.is_ok_and(|e| stubs.contains(&rel.join(e.file_name()))))
            } else {
                meta.is_file() && meta.len() == 0
            };
            if !empty {
                break;
            }
            stubs.insert(rel.clone());
            rel = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        }
    }
    Ok(stubs)
}

/// `lstat` of `base/rel`, or `None` if it is missing or a component on the way is not a real
/// directory (a symlink there could lead out of `base`).
fn lstat_beneath(base: &Path, rel: &Path) -> Option<fs::Metadata> {
    let mut path = base.to_path_buf();
    let mut components = rel.components().peekable();
    while let Some(component) = components.next() {
        path.push(component);
        let meta = fs::symlink_metadata(&path).ok()?;
        if components.peek().is_none() {
            return Some(meta);
        }
        if !meta.is_dir() {
            return None;
        }
    }
    None
}

fn diff_ids(layers: &[LayerInfo]) -> Vec<Digest> {
    layers.iter().map(|l| l.diff_id.clone()).collect()
}

/// The ChainID of the top of `layers`, or `None` for the empty filesystem.
pub fn top_chain_id(layers: &[LayerInfo]) -> Option<Digest> {
    chain_id(&diff_ids(layers)).pop()
}

impl Store {
    /// Takes a lease: what it holds survives [`Store::gc`] until it is dropped.
    pub fn lease(&self) -> Lease {
        let mut next = self.leases.next.lock().unwrap_or_else(|p| p.into_inner());
        *next += 1;
        Lease {
            id: *next,
            table: self.leases.clone(),
        }
    }

    /// Prepares a container's writable layer on top of `layers` (which must be stored).
    pub fn prepare_container_on(
        &self,
        container_id: &str,
        layers: &[LayerInfo],
    ) -> Result<Vec<Mount>> {
        let _guard = self.gc_lock.read().unwrap_or_else(|p| p.into_inner());
        let top = top_chain_id(layers);
        self.snapshots.prepare(
            &snapshot_key(container_id),
            top.as_ref().map(Digest::as_str),
        )
    }

    /// Stores the changes in a container's writable layer (which must be unmounted or
    /// quiescent) as an uncompressed layer on top of `parent`, the chain it was prepared on,
    /// and returns it. `mount_points` are where the runtime mounted things: the empty files
    /// and directories it had to create there are not changes and are left out of the tar
    /// (not deleted: a running container's upper directory is still mounted). With
    /// `epoch`, no file in the layer is newer than it (reproducible builds). The caller
    /// should hold a [`Lease`] on the result until it is referenced.
    pub fn commit_container_layer(
        &self,
        container_id: &str,
        parent: &[LayerInfo],
        mount_points: &[String],
        epoch: Option<u64>,
    ) -> Result<LayerInfo> {
        let key = snapshot_key(container_id);
        let upper = self.snapshots.fs_dir(&key)?;
        let lowers = self.snapshots.parent_dirs(&key)?;
        let options = layer::DiffOptions {
            epoch,
            leave_out: mount_stubs(&upper, &lowers, mount_points)?,
        };
        let _guard = self.gc_lock.read().unwrap_or_else(|p| p.into_inner());
        let mut ingest = self.content.writer()?;
        {
            let mut out = io::BufWriter::with_capacity(1 << 20, &mut ingest);
            layer::diff_tar_with(&upper, &mut out, &options)?;
            out.flush()
                .map_err(|e| StoreError::io("write layer of", &upper, e))?;
        }
        let size = ingest.written();
        let digest = ingest.commit(None, None)?;
        let parent_chain = top_chain_id(parent);
        let unpacked = self.ensure_layer(parent_chain.as_ref(), &digest, &digest)?;
        Ok(LayerInfo {
            diff_id: unpacked.diff_id,
            digest,
            media_type: MEDIA_TYPE_LAYER_TAR.to_string(),
            size,
            unpacked_size: unpacked.unpacked_size,
        })
    }

    /// Records an image made of stored `layers` whose configuration blob is `config_json`,
    /// kept byte for byte (it may carry Docker's fields beyond OCI's: Healthcheck, OnBuild,
    /// Shell). Its `rootfs.diff_ids` must list the layers.
    pub fn create_image_from_layers(
        &self,
        config_json: Vec<u8>,
        layers: Vec<LayerInfo>,
    ) -> Result<ImageRecord> {
        let _guard = self.gc_lock.read().unwrap_or_else(|p| p.into_inner());
        let config = parse_config(&config_json, &Digest::from_bytes(&config_json))?;
        let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
        if *config.rootfs().diff_ids() != diff_ids {
            return Err(StoreError::InvalidImage {
                what: "build result".to_string(),
                reason: format!(
                    "rootfs.diff_ids {:?} do not match the layers {diff_ids:?}",
                    config.rootfs().diff_ids()
                ),
            });
        }
        for l in &layers {
            if !self.content.exists(&l.digest) {
                return Err(StoreError::InvalidImage {
                    what: "build result".to_string(),
                    reason: format!("layer {} is not in the store", l.digest),
                });
            }
        }
        self.record_image(config, layers, Some(config_json))
    }

    /// The configuration blob of an image as stored, Docker's extra fields included.
    pub fn image_config_json(&self, image: &Digest) -> Result<serde_json::Value> {
        let bytes = self.content.read_to_vec(image)?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::json("decode image config", e))
    }

    /// Marks build cache entries as used now, in one transaction.
    pub fn touch_build_cache(&self, keys: &[String]) -> Result<()> {
        let now = Utc::now();
        self.meta.write(|tx| {
            for key in keys {
                let Some(bytes) = tx.get_record(BUILD_CACHE_KIND, key)? else {
                    continue;
                };
                let Ok(mut record) = serde_json::from_slice::<BuildCacheRecord>(&bytes) else {
                    continue;
                };
                record.last_used = now;
                let bytes = serde_json::to_vec(&record)
                    .map_err(|e| StoreError::json("encode build cache", e))?;
                tx.put_record(BUILD_CACHE_KIND, key, &bytes)?;
            }
            Ok(())
        })
    }

    /// Remembers the layer chain a step with cache key `key` produced.
    pub fn put_build_cache(&self, key: &str, record: &BuildCacheRecord) -> Result<()> {
        let bytes =
            serde_json::to_vec(record).map_err(|e| StoreError::json("encode build cache", e))?;
        self.meta.put_record(BUILD_CACHE_KIND, key, &bytes)
    }

    /// The chain remembered for `key`, if every one of its layers is still stored.
    pub fn get_build_cache(&self, key: &str) -> Result<Option<BuildCacheRecord>> {
        let Some(bytes) = self.meta.get_record(BUILD_CACHE_KIND, key)? else {
            return Ok(None);
        };
        let record: BuildCacheRecord = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::json("decode build cache", e))?;
        let chains = chain_id(&diff_ids(&record.layers));
        if !record.layers.iter().all(|l| self.content.exists(&l.digest)) {
            return Ok(None);
        }
        for chain in &chains {
            if !self.snapshots.exists(chain.as_str())? {
                return Ok(None);
            }
        }
        Ok(Some(record))
    }

    /// Every build cache entry with its key.
    pub fn list_build_cache(&self) -> Result<Vec<(String, BuildCacheRecord)>> {
        self.meta
            .list_records(BUILD_CACHE_KIND)?
            .into_iter()
            .map(|(key, bytes)| {
                serde_json::from_slice(&bytes)
                    .map(|r| (key, r))
                    .map_err(|e| StoreError::json("decode build cache", e))
            })
            .collect()
    }

    /// Forgets a build cache entry (its layers go at the next [`Store::gc`] unless used).
    pub fn delete_build_cache(&self, key: &str) -> Result<bool> {
        self.meta.delete_record(BUILD_CACHE_KIND, key)
    }
}
