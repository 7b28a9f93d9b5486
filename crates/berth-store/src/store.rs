//! The [`Store`]: one handle over the content store, metadata database and snapshotter of a
//! data root. It owns image names (tag/untag/resolve), listing and deletion, containers'
//! writable layers, and garbage collection. All methods block; share it with `Arc`.
//!
//! Locking: operations that create blobs or snapshots which are not yet referenced by an
//! image record (create, import, load, save, prepare_container) hold the GC lock shared;
//! [`Store::gc`] holds it exclusively, so it never sweeps work in progress.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use chrono::Utc;

use crate::build::{BUILD_CACHE_KIND, BuildCacheRecord, LeaseTable};
use crate::content::ContentStore;
use crate::digest::{Digest, is_lower_hex};
use crate::error::{IoContext, Result, StoreError};
use crate::image::ImageRecord;
use crate::meta::MetaDb;
use crate::reference::Reference;
use crate::snapshot::{Mount, SnapshotKind, Snapshotter};

const CONTAINER_PREFIX: &str = "container-";

/// What [`Store::gc`] freed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Blobs deleted from the content store.
    pub blobs_removed: usize,
    /// Committed snapshots removed.
    pub snapshots_removed: usize,
    /// Bytes freed (blob sizes plus snapshot usage).
    pub bytes: u64,
}

/// The image store of one data root.
#[derive(Debug)]
pub struct Store {
    pub(crate) root: PathBuf,
    pub(crate) content: ContentStore,
    pub(crate) meta: Arc<MetaDb>,
    pub(crate) snapshots: Snapshotter,
    pub(crate) gc_lock: RwLock<()>,
    pub(crate) leases: Arc<LeaseTable>,
}

pub(crate) fn snapshot_key(container_id: &str) -> String {
    format!("{CONTAINER_PREFIX}{container_id}")
}

impl Store {
    /// Opens (creating if needed) the store under `root`, recovering from any crash: stale
    /// ingests, interrupted layer extractions and unrecorded snapshot directories are removed.
    pub fn open(root: &Path) -> Result<Store> {
        fs::create_dir_all(root).ctx("create directory", root)?;
        let meta = Arc::new(MetaDb::open(&root.join("meta.redb"))?);
        let content = ContentStore::open(root)?;
        let snapshots = Snapshotter::open(root, meta.clone())?;
        Ok(Store {
            root: root.to_path_buf(),
            content,
            meta,
            snapshots,
            gc_lock: RwLock::new(()),
            leases: Arc::default(),
        })
    }

    /// The data root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The content store.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// The snapshotter.
    pub fn snapshotter(&self) -> &Snapshotter {
        &self.snapshots
    }

    /// The metadata database, for callers that keep their own records in it.
    pub fn meta(&self) -> &MetaDb {
        &self.meta
    }

    /// Stores a caller-owned record (e.g. kind `container`).
    pub fn put_record(&self, kind: &str, id: &str, value: &[u8]) -> Result<()> {
        self.meta.put_record(kind, id, value)
    }

    /// Reads a caller-owned record.
    pub fn get_record(&self, kind: &str, id: &str) -> Result<Option<Vec<u8>>> {
        self.meta.get_record(kind, id)
    }

    /// Removes a caller-owned record; returns whether it existed.
    pub fn delete_record(&self, kind: &str, id: &str) -> Result<bool> {
        self.meta.delete_record(kind, id)
    }

    /// Lists caller-owned records of `kind` as (id, bytes).
    pub fn list_records(&self, kind: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.meta.list_records(kind)
    }

    /// The record of image `id`.
    pub fn image(&self, id: &Digest) -> Result<ImageRecord> {
        self.meta
            .read(|tx| tx.get_image(id))?
            .ok_or_else(|| StoreError::ImageNotFound(id.to_string()))
    }

    /// Points `reference` at image `id` (replacing what it pointed to).
    pub fn tag(&self, reference: &Reference, id: &Digest) -> Result<()> {
        self.meta.write(|tx| {
            let mut rec = tx
                .get_image(id)?
                .ok_or_else(|| StoreError::ImageNotFound(id.to_string()))?;
            tx.put_name(&reference.to_string(), id)?;
            rec.last_tag_time = Some(Utc::now());
            tx.put_image(&rec)
        })
    }

    /// Removes the name `reference`, returning the image it pointed to.
    pub fn untag(&self, reference: &Reference) -> Result<Digest> {
        self.meta
            .write(|tx| tx.delete_name(&reference.to_string()))?
            .ok_or_else(|| StoreError::ImageNotFound(reference.familiar_string()))
    }

    /// Finds an image by name (normalised, `latest` by default), `name@sha256:…`, full id
    /// `sha256:…`, bare hex id, or unique id prefix. A miss is [`StoreError::ImageNotFound`]
    /// carrying `s`; an ambiguous prefix is [`StoreError::AmbiguousImage`].
    pub fn resolve(&self, s: &str) -> Result<ImageRecord> {
        let not_found = || StoreError::ImageNotFound(s.to_string());
        self.meta.read(|tx| {
            if let Ok(d) = Digest::parse(s) {
                return tx.get_image(&d)?.ok_or_else(not_found);
            }
            if crate::digest::is_hex64(s) {
                return tx.get_image(&Digest::from_hex(s)?)?.ok_or_else(not_found);
            }
            if let Ok(r) = Reference::parse(s) {
                if let Some(id) = tx.get_name(&r.to_string())? {
                    return tx.get_image(&id)?.ok_or_else(not_found);
                }
                if let Some(d) = r.digest() {
                    let name = r.name();
                    let by_digest = tx
                        .images()?
                        .into_iter()
                        .find(|img| &img.manifest_digest == d || &img.id == d);
                    // A digest reference matches only if the repository holds that image.
                    if let Some(img) = by_digest {
                        let names = tx.names()?;
                        let in_repo = |n: &str| {
                            n.strip_prefix(name.as_str())
                                .is_some_and(|rest| rest.starts_with([':', '@']))
                        };
                        if names.iter().any(|(n, id)| *id == img.id && in_repo(n)) {
                            return Ok(img);
                        }
                    }
                }
            }
            let prefix = s.strip_prefix("sha256:").unwrap_or(s);
            if is_lower_hex(prefix) && prefix.len() < 64 {
                let mut matches = tx
                    .images()?
                    .into_iter()
                    .filter(|img| img.id.hex().starts_with(prefix));
                return match (matches.next(), matches.next()) {
                    (Some(img), None) => Ok(img),
                    (Some(_), Some(_)) => Err(StoreError::AmbiguousImage(s.to_string())),
                    _ => Err(not_found()),
                };
            }
            Err(not_found())
        })
    }

    /// Every image with the references that point to it.
    pub fn list_images(&self) -> Result<Vec<(ImageRecord, Vec<Reference>)>> {
        self.meta.read(|tx| {
            let mut by_id: BTreeMap<Digest, Vec<Reference>> = BTreeMap::new();
            for (name, id) in tx.names()? {
                if let Ok(r) = Reference::parse(&name) {
                    by_id.entry(id).or_default().push(r);
                }
            }
            Ok(tx
                .images()?
                .into_iter()
                .map(|img| {
                    let mut refs = by_id.remove(&img.id).unwrap_or_default();
                    refs.sort();
                    (img, refs)
                })
                .collect())
        })
    }

    /// The references that point to image `id`.
    pub fn image_names(&self, id: &Digest) -> Result<Vec<Reference>> {
        self.meta.read(|tx| {
            let mut refs: Vec<Reference> = tx
                .names()?
                .into_iter()
                .filter(|(_, i)| i == id)
                .filter_map(|(n, _)| Reference::parse(&n).ok())
                .collect();
            refs.sort();
            Ok(refs)
        })
    }

    /// Deletes image `id` and every name pointing to it, then collects garbage.
    pub fn delete_image(&self, id: &Digest) -> Result<GcStats> {
        self.meta.write(|tx| {
            if !tx.delete_image(id)? {
                return Err(StoreError::ImageNotFound(id.to_string()));
            }
            for (name, target) in tx.names()? {
                if target == *id {
                    tx.delete_name(&name)?;
                }
            }
            Ok(())
        })?;
        self.gc()
    }

    /// Creates the writable layer of a container on top of image `image` and returns the
    /// mounts of its root filesystem (a plain bind mount for an image without layers).
    pub fn prepare_container(&self, container_id: &str, image: &Digest) -> Result<Vec<Mount>> {
        let _guard = self.gc_lock.read().unwrap_or_else(|p| p.into_inner());
        let rec = self.image(image)?;
        let top = rec.top_chain_id();
        self.snapshots.prepare(
            &snapshot_key(container_id),
            top.as_ref().map(Digest::as_str),
        )
    }

    /// The root filesystem mounts of a prepared container.
    pub fn container_mounts(&self, container_id: &str) -> Result<Vec<Mount>> {
        self.snapshots.mounts(&snapshot_key(container_id))
    }

    /// Removes a container's writable layer (it must be unmounted); missing is not an error.
    pub fn remove_container(&self, container_id: &str) -> Result<()> {
        match self.snapshots.remove(&snapshot_key(container_id)) {
            Err(StoreError::SnapshotNotFound(_)) => Ok(()),
            other => other,
        }
    }

    /// The container's upper directory: its changes relative to the image.
    pub fn container_upper_dir(&self, container_id: &str) -> Result<PathBuf> {
        self.snapshots.fs_dir(&snapshot_key(container_id))
    }

    /// Bytes used by the container's writable layer.
    pub fn container_usage(&self, container_id: &str) -> Result<u64> {
        self.snapshots.usage(&snapshot_key(container_id))
    }

    /// Bytes used by all committed layer snapshots (shared layers counted once).
    pub fn layers_size(&self) -> Result<u64> {
        let mut total = 0;
        for (key, rec) in self.snapshots.list()? {
            if rec.kind == SnapshotKind::Committed {
                total += match rec.size {
                    Some(s) => s,
                    None => self.snapshots.usage(&key)?,
                };
            }
        }
        Ok(total)
    }

    /// Unpacked size of image `id`.
    pub fn image_size(&self, id: &Digest) -> Result<u64> {
        Ok(self.image(id)?.size)
    }

    /// Removes blobs and committed snapshots that no image and no container snapshot uses.
    pub fn gc(&self) -> Result<GcStats> {
        let _guard = self.gc_lock.write().unwrap_or_else(|p| p.into_inner());
        let mut stats = GcStats::default();
        let (images, snapshots, cache) = self
            .meta
            .read(|tx| Ok((tx.images()?, tx.snapshots()?, tx.records(BUILD_CACHE_KIND)?)))?;
        let mut blobs: HashSet<Digest> = HashSet::new();
        let mut live: HashSet<String> = HashSet::new();
        for img in &images {
            blobs.insert(img.id.clone());
            blobs.insert(img.manifest_digest.clone());
            blobs.extend(img.layers.iter().map(|l| l.digest.clone()));
            live.extend(img.chain_ids().iter().map(|c| c.to_string()));
        }
        // Build cache entries and running builds' leases are roots too.
        for (_, bytes) in &cache {
            let Ok(entry) = serde_json::from_slice::<BuildCacheRecord>(bytes) else {
                continue;
            };
            blobs.extend(entry.layers.iter().map(|l| l.digest.clone()));
            let diff_ids: Vec<Digest> = entry.layers.iter().map(|l| l.diff_id.clone()).collect();
            live.extend(
                crate::layer::chain_id(&diff_ids)
                    .iter()
                    .map(|c| c.to_string()),
            );
        }
        // Compressed copies of layers still in use, kept for pushes (distribution/compressed.rs).
        blobs.extend(self.compressed_layer_roots(&images, &cache)?);
        let (leased_blobs, leased_chains) = self.leases.roots();
        blobs.extend(leased_blobs);
        live.extend(leased_chains.iter().map(|c| c.to_string()));
        let parent_of: BTreeMap<&str, Option<&str>> = snapshots
            .iter()
            .map(|(k, r)| (k.as_str(), r.parent.as_deref()))
            .collect();
        for (key, rec) in &snapshots {
            if rec.kind != SnapshotKind::Committed {
                live.insert(key.clone());
            }
        }
        // Every ancestor of a live snapshot is live.
        for key in live.clone() {
            let mut next = parent_of.get(key.as_str()).copied().flatten();
            while let Some(p) = next {
                if !live.insert(p.to_string()) {
                    break;
                }
                next = parent_of.get(p).copied().flatten();
            }
        }
        for d in self.content.list()? {
            if !blobs.contains(&d) {
                stats.bytes += self.content.size(&d).unwrap_or(0);
                self.content.delete(&d)?;
                stats.blobs_removed += 1;
            }
        }
        // Dead snapshots' children are dead too; remove children before parents.
        let mut dead: Vec<(String, Option<String>, u64)> = snapshots
            .iter()
            .filter(|(k, _)| !live.contains(k))
            .map(|(k, r)| (k.clone(), r.parent.clone(), r.size.unwrap_or(0)))
            .collect();
        while !dead.is_empty() {
            let parents: HashSet<String> = dead.iter().filter_map(|(_, p, _)| p.clone()).collect();
            let (leaves, rest): (Vec<_>, Vec<_>) =
                dead.into_iter().partition(|(k, _, _)| !parents.contains(k));
            if leaves.is_empty() {
                break;
            }
            for (key, _, size) in leaves {
                self.snapshots.remove(&key)?;
                stats.snapshots_removed += 1;
                stats.bytes += size;
            }
            dead = rest;
        }
        if stats.blobs_removed + stats.snapshots_removed > 0 {
            tracing::info!(
                blobs = stats.blobs_removed,
                snapshots = stats.snapshots_removed,
                bytes = stats.bytes,
                "garbage collected"
            );
        }
        Ok(stats)
    }

    /// Collects what a failed create/load left behind; errors are only logged because the
    /// caller is already returning the original error.
    pub(crate) fn cleanup_after_failure(&self) {
        if let Err(e) = self.gc() {
            tracing::warn!("cleanup after failed image creation: {e}");
        }
    }
}
