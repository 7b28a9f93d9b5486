//! The build cache as users see it: `builder prune` and the `BuildCache` of `system df`.

use std::collections::HashSet;

use berth_api::filters::Filters;
use berth_store::{BuildCacheRecord, LayerInfo};

use crate::daemon::Daemon;
use crate::error::ServiceResult;

/// What `POST /build/prune` asks.
#[derive(Debug, Default)]
pub struct PruneOptions {
    /// `-a`: also entries whose filesystem a stored image has (the final steps of builds).
    pub all: bool,
    /// `--keep-storage`: stop once the cache is this small (bytes).
    pub keep_storage: Option<u64>,
    /// `--filter`: `until=<time or duration>` keeps entries used since then.
    pub filters: Filters,
}

/// One entry as `system df` shows it.
fn entry_json(key: &str, record: &BuildCacheRecord, in_use: bool) -> serde_json::Value {
    serde_json::json!({
        "ID": &key[..key.len().min(25)],
        "Type": "regular",
        "Description": format!("{} layer(s)", record.layers.len()),
        "InUse": in_use,
        "Shared": in_use,
        "Size": record.size,
        "CreatedAt": crate::containers::rfc3339(Some(record.created)),
        "LastUsedAt": crate::containers::rfc3339(Some(record.last_used)),
        "UsageCount": 1,
    })
}

impl Daemon {
    /// The top layers of every stored image: cache entries ending there are "in use".
    fn image_tops(&self) -> ServiceResult<HashSet<String>> {
        Ok(self
            .store
            .list_images()?
            .into_iter()
            .filter_map(|(image, _)| image.layers.last().map(|l| l.digest.to_string()))
            .collect())
    }

    /// The `BuildCache` list of `system df`.
    pub fn build_cache_usage(&self) -> ServiceResult<Vec<serde_json::Value>> {
        let tops = self.image_tops()?;
        Ok(self
            .store
            .list_build_cache()?
            .iter()
            .map(|(key, record)| entry_json(key, record, is_in(&tops, &record.layers)))
            .collect())
    }

    /// `POST /build/prune`: forgets cache entries, then frees what nothing else uses.
    /// Returns the keys forgotten and the bytes freed.
    pub async fn prune_build_cache(&self, opts: PruneOptions) -> ServiceResult<(Vec<String>, u64)> {
        let _running = self.prunes.begin(crate::system::PruneKind::BuildCache)?;
        let until = crate::images::prune_until(&opts.filters, &["until"])?;
        let store = self.store.clone();
        let tops = self.image_tops()?;
        tokio::task::spawn_blocking(move || -> ServiceResult<(Vec<String>, u64)> {
            let mut entries = store.list_build_cache()?;
            // Least recently used first, so --keep-storage keeps the freshest.
            entries.sort_by_key(|(_, r)| r.last_used);
            let mut remaining: u64 = entries.iter().map(|(_, r)| r.size).sum();
            let mut forgotten = Vec::new();
            for (key, record) in entries {
                if opts.keep_storage.is_some_and(|keep| remaining <= keep) {
                    break;
                }
                if until.is_some_and(|u| record.last_used >= u) {
                    continue;
                }
                if !opts.all && is_in(&tops, &record.layers) {
                    continue;
                }
                if store.delete_build_cache(&key)? {
                    remaining = remaining.saturating_sub(record.size);
                    forgotten.push(key);
                }
            }
            let freed = store.gc()?.bytes;
            Ok((forgotten, freed))
        })
        .await?
    }
}

fn is_in(tops: &HashSet<String>, layers: &[LayerInfo]) -> bool {
    layers
        .last()
        .is_some_and(|l| tops.contains(&l.digest.to_string()))
}
