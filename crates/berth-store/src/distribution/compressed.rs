//! Compressed copies of layers, made once and remembered.
//!
//! Builds and commits store layers uncompressed (digest = diff ID); registries want them
//! compressed. [`Store::compress_layer`] gzips a layer the first time it is pushed, keeps
//! the gzip blob in the content store and records it under the layer's diff ID (record kind
//! [`COMPRESSED_LAYER_KIND`]), so later pushes, to any registry or repository, reuse it.
//! Pulls record their compressed layers the same way, which also says "this blob was
//! verified to unpack to that diff ID" (see `pulled.rs`).
//!
//! A record's blob is a GC root while some image or build cache entry uses a layer with
//! that diff ID; records of diff IDs nothing uses are dropped by the same GC
//! ([`Store::compressed_layer_roots`], called from [`Store::gc`]).

use std::collections::HashSet;
use std::io::BufReader;

use serde::{Deserialize, Serialize};

use super::gzip::{self, GzipStats};
use crate::build::BuildCacheRecord;
use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::image::{ImageRecord, LayerInfo};
use crate::layer::{MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR};
use crate::store::Store;

/// Record kind of the diff ID → compressed blob records.
pub const COMPRESSED_LAYER_KIND: &str = "compressed-layer";
/// Docker's media type of an uncompressed layer (docker-archive loads may carry it).
const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker's media type of a gzip layer.
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Repositories remembered per blob (most recent first), for cross-repository mounts.
const MAX_REPOSITORIES: usize = 8;

/// A layer blob as registries want it: compressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompressedLayer {
    /// Digest of the compressed blob.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Its OCI media type (`…tar+gzip`, or `…tar+zstd` for pulled zstd layers).
    pub media_type: String,
    /// Repositories (`domain/path`) known to hold the blob, most recent first.
    #[serde(default)]
    pub repositories: Vec<String>,
}

/// Whether a layer media type is an uncompressed tar.
pub fn is_uncompressed(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_LAYER_TAR || media_type == DOCKER_LAYER_TAR
}

fn is_gzip(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_LAYER_GZIP || media_type == DOCKER_LAYER_GZIP
}

fn decode(diff_id: &str, bytes: &[u8]) -> Result<CompressedLayer> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::json(format!("decode compressed layer record {diff_id}"), e))
}

fn encode(diff_id: &Digest, rec: &CompressedLayer) -> Result<Vec<u8>> {
    serde_json::to_vec(rec)
        .map_err(|e| StoreError::json(format!("encode compressed layer record {diff_id}"), e))
}

/// `new` merged over `old`: the same blob gains the repositories; a different blob
/// replaces a zstd one, or a gzip one that is gone, but never a present gzip blob by a
/// non-gzip one (pushes need gzip).
fn merge(
    old: Option<CompressedLayer>,
    new: &CompressedLayer,
    old_present: bool,
) -> CompressedLayer {
    let mut out = match old {
        Some(o) if o.digest == new.digest => {
            let mut m = new.clone();
            m.repositories = o.repositories;
            m
        }
        Some(o) if old_present && is_gzip(&o.media_type) && !is_gzip(&new.media_type) => {
            return o;
        }
        _ => CompressedLayer {
            repositories: Vec::new(),
            ..new.clone()
        },
    };
    for repo in new.repositories.iter().rev() {
        out.repositories.retain(|r| r != repo);
        out.repositories.insert(0, repo.clone());
    }
    out.repositories.truncate(MAX_REPOSITORIES);
    out
}

impl Store {
    /// The compressed blob recorded for layer `diff_id`, if its blob is still stored.
    pub fn compressed_layer(&self, diff_id: &Digest) -> Result<Option<CompressedLayer>> {
        let Some(bytes) = self
            .meta
            .read(|tx| tx.get_record(COMPRESSED_LAYER_KIND, diff_id.as_str()))?
        else {
            return Ok(None);
        };
        let rec = decode(diff_id.as_str(), &bytes)?;
        Ok(self.content.exists(&rec.digest).then_some(rec))
    }

    /// The blob a push sends for `layer`, and whether it had to be made now. A compressed
    /// layer is its own blob; an uncompressed one gets its recorded gzip copy, or a new
    /// one (see `gzip.rs`) that is stored and recorded for next time.
    pub fn compress_layer(&self, layer: &LayerInfo) -> Result<(CompressedLayer, bool)> {
        let known = self.compressed_layer(&layer.diff_id)?;
        if !is_uncompressed(&layer.media_type) {
            let repositories = known
                .filter(|k| k.digest == layer.digest)
                .map(|k| k.repositories)
                .unwrap_or_default();
            let own = CompressedLayer {
                digest: layer.digest.clone(),
                size: layer.size,
                media_type: layer.media_type.clone(),
                repositories,
            };
            return Ok((own, false));
        }
        if let Some(k) = known.filter(|k| is_gzip(&k.media_type)) {
            return Ok((k, false));
        }
        // Shared GC lock: the new blob must not be swept before its record exists.
        let _guard = self.gc_lock.read().unwrap_or_else(|p| p.into_inner());
        let source = self.content.read(&layer.digest)?;
        let mut ingest = self.content.writer()?;
        let started = std::time::Instant::now();
        let stats: GzipStats = gzip::gzip(
            &mut BufReader::with_capacity(256 << 10, source),
            &mut ingest,
        )
        .map_err(|e| StoreError::Io {
            context: format!("compress layer {}", layer.diff_id),
            source: e,
        })?;
        let compressed = started.elapsed();
        let digest = ingest.commit(None, Some(stats.output))?;
        tracing::info!(
            diff_id = %layer.diff_id,
            %digest,
            input = stats.input,
            output = stats.output,
            ms = compressed.as_millis() as u64,
            mb_per_s = (stats.input as f64 / 1e6 / compressed.as_secs_f64().max(1e-6)) as u64,
            commit_ms = (started.elapsed() - compressed).as_millis() as u64,
            "compressed layer"
        );
        let rec = CompressedLayer {
            digest,
            size: stats.output,
            media_type: MEDIA_TYPE_LAYER_GZIP.to_string(),
            repositories: Vec::new(),
        };
        self.remember_compressed_layers(&[(layer.diff_id.clone(), rec.clone())], None)?;
        Ok((rec, true))
    }

    /// Records compressed blobs of layers (diff ID, blob), optionally as present in
    /// `repository` (`domain/path`), in one transaction: after a pull (the blobs were
    /// verified against their diff IDs while unpacking) and after a push.
    pub fn remember_compressed_layers(
        &self,
        layers: &[(Digest, CompressedLayer)],
        repository: Option<&str>,
    ) -> Result<()> {
        let present: Vec<bool> = self.meta.read(|tx| {
            layers
                .iter()
                .map(|(diff_id, _)| {
                    Ok(
                        match tx.get_record(COMPRESSED_LAYER_KIND, diff_id.as_str())? {
                            Some(b) => self.content.exists(&decode(diff_id.as_str(), &b)?.digest),
                            None => false,
                        },
                    )
                })
                .collect()
        })?;
        self.meta.write(|tx| {
            for ((diff_id, new), old_present) in layers.iter().zip(present) {
                let old = tx
                    .get_record(COMPRESSED_LAYER_KIND, diff_id.as_str())?
                    .map(|b| decode(diff_id.as_str(), &b))
                    .transpose()?;
                let mut new = new.clone();
                if let Some(r) = repository {
                    new.repositories.retain(|x| x != r);
                    new.repositories.insert(0, r.to_string());
                }
                let merged = merge(old, &new, old_present);
                tx.put_record(
                    COMPRESSED_LAYER_KIND,
                    diff_id.as_str(),
                    &encode(diff_id, &merged)?,
                )?;
            }
            Ok(())
        })
    }

    /// GC roots of the compressed-layer records: the blobs of records whose diff ID a live
    /// image or build cache entry uses. Records of other diff IDs are deleted. Called by
    /// [`Store::gc`] with the GC lock held exclusively.
    pub(crate) fn compressed_layer_roots(
        &self,
        images: &[ImageRecord],
        cache: &[(String, Vec<u8>)],
    ) -> Result<Vec<Digest>> {
        let mut live: HashSet<&str> = images
            .iter()
            .flat_map(|i| i.layers.iter().map(|l| l.diff_id.as_str()))
            .collect();
        let entries: Vec<BuildCacheRecord> = cache
            .iter()
            .filter_map(|(_, b)| serde_json::from_slice(b).ok())
            .collect();
        live.extend(
            entries
                .iter()
                .flat_map(|e| e.layers.iter().map(|l| l.diff_id.as_str())),
        );
        let records = self.meta.read(|tx| tx.records(COMPRESSED_LAYER_KIND))?;
        let mut roots = Vec::new();
        let mut dead = Vec::new();
        for (diff_id, bytes) in records {
            if live.contains(diff_id.as_str()) {
                roots.push(decode(&diff_id, &bytes)?.digest);
            } else {
                dead.push(diff_id);
            }
        }
        if !dead.is_empty() {
            self.meta.write(|tx| {
                for id in &dead {
                    tx.delete_record(COMPRESSED_LAYER_KIND, id)?;
                }
                Ok(())
            })?;
        }
        Ok(roots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(d: &str, media_type: &str, repos: &[&str]) -> CompressedLayer {
        CompressedLayer {
            digest: Digest::from_bytes(d.as_bytes()),
            size: 1,
            media_type: media_type.to_string(),
            repositories: repos.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn merging_keeps_gzip_and_collects_repositories() {
        let gz = layer("a", MEDIA_TYPE_LAYER_GZIP, &["r/one"]);
        let zst = layer(
            "b",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            &["r/two"],
        );
        // Same blob: repositories merge, newest first, no duplicates.
        let again = layer("a", MEDIA_TYPE_LAYER_GZIP, &["r/two", "r/one"]);
        assert_eq!(
            merge(Some(gz.clone()), &again, true).repositories,
            vec!["r/two", "r/one"]
        );
        // A present gzip blob is not replaced by a zstd one, but a missing one is.
        assert_eq!(merge(Some(gz.clone()), &zst, true), gz);
        assert_eq!(merge(Some(gz.clone()), &zst, false).digest, zst.digest);
        // gzip replaces zstd.
        assert_eq!(merge(Some(zst), &gz, true).digest, gz.digest);
        let many: Vec<String> = (0..20).map(|i| format!("r/{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            merge(None, &layer("c", MEDIA_TYPE_LAYER_GZIP, &refs), false)
                .repositories
                .len(),
            MAX_REPOSITORIES
        );
    }
}
