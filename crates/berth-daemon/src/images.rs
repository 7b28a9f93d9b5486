//! The image service: list, inspect, history, tag, remove, prune, import, load, save and
//! container export, over the store.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};

use berth_api::filters::{Filters, labels_match};
use berth_api::images::ImageInspectLegacy;
use berth_api::models::{
    DriverData, ImageConfig, ImageDeleteResponseItem, ImageHistoryResponseItem, ImageInspect,
    ImageInspectMetadata, ImageInspectRootFs, ImagePruneResponse, ImageSummary,
};
use berth_store::digest::Digest;
use berth_store::image::{ImageRecord, ImportOptions};
use berth_store::reference::Reference;

use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

const LIST_FILTERS: &[&str] = &["dangling", "reference", "label", "before", "since", "until"];

impl Daemon {
    /// `GET /images/json`.
    pub fn list_images(&self, all: bool, filters: &Filters) -> ServiceResult<Vec<ImageSummary>> {
        let _ = all; // Every image is a top-level image: there are no intermediate build images.
        filters
            .check_names(LIST_FILTERS)
            .map_err(|e| ServiceError::invalid(e.to_string()))?;
        let images = self.store.list_images()?;
        let created_of = |name: &str| -> ServiceResult<i64> {
            Ok(self.store.resolve(name)?.created.timestamp())
        };
        let before = filters
            .get("before")
            .first()
            .map(|n| created_of(n))
            .transpose()?;
        let since = filters
            .get("since")
            .first()
            .map(|n| created_of(n))
            .transpose()?;
        let containers_by_image = self.container_counts();
        let mut out = Vec::new();
        for (image, names) in images {
            let tags: Vec<String> = names.iter().map(Reference::familiar_string).collect();
            if let Some(d) = filters.get("dangling").first()
                && berth_api::query::parse_bool(d) != tags.is_empty()
            {
                continue;
            }
            let refs = filters.get("reference");
            if !refs.is_empty()
                && !tags
                    .iter()
                    .any(|t| refs.iter().any(|p| reference_matches(p, t)))
            {
                continue;
            }
            let labels = image_labels(&image);
            if !labels_match(filters.get("label"), |k| labels.get(k).map(String::as_str)) {
                continue;
            }
            let created = image.created.timestamp();
            if before.is_some_and(|b| created >= b) || since.is_some_and(|s| created <= s) {
                continue;
            }
            let containers = containers_by_image
                .get(&image.id.to_string())
                .copied()
                .unwrap_or(-1);
            out.push(image_summary(&image, tags, labels, containers, -1));
        }
        sort_newest_first(&mut out);
        Ok(out)
    }

    /// The images of `system df` and the bytes of their layers, as moby counts them: every
    /// image with how many containers use it and its `SharedSize` (the bytes of its layers
    /// other images use too), and `LayersSize`, each distinct layer once.
    pub(crate) fn images_disk_usage(&self) -> ServiceResult<(Vec<ImageSummary>, i64)> {
        let images = self.store.list_images()?;
        let chains: Vec<Vec<(Digest, i64)>> = images
            .iter()
            .map(|(image, _)| {
                image
                    .chain_ids()
                    .into_iter()
                    .zip(image.layers.iter().map(|l| l.unpacked_size as i64))
                    .collect()
            })
            .collect();
        let (shared, layers_size) = layer_sharing(&chains);
        let containers_by_image = self.container_counts();
        let mut out: Vec<ImageSummary> = images
            .iter()
            .zip(shared)
            .map(|((image, names), shared_size)| {
                let tags = names.iter().map(Reference::familiar_string).collect();
                let containers = containers_by_image
                    .get(&image.id.to_string())
                    .copied()
                    .unwrap_or(0);
                image_summary(image, tags, image_labels(image), containers, shared_size)
            })
            .collect();
        sort_newest_first(&mut out);
        Ok((out, layers_size))
    }

    fn container_counts(&self) -> HashMap<String, i64> {
        let mut counts = HashMap::new();
        for c in self.containers.all() {
            *counts.entry(c.record().image_id.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// `GET /images/{name}/json`.
    pub fn inspect_image(&self, name: &str) -> ServiceResult<ImageInspectLegacy> {
        let image = self.store.resolve(name)?;
        let names = self.store.image_names(&image.id)?;
        let oci = image.config.config().clone().unwrap_or_default();
        // Docker's fields beyond OCI's live only in the stored blob.
        let blob = self.store.image_config_json(&image.id)?;
        let docker_field = |name: &str| blob["config"].get(name).cloned().unwrap_or_default();
        let config = ImageConfig {
            healthcheck: serde_json::from_value(docker_field("Healthcheck")).ok(),
            on_build: serde_json::from_value(docker_field("OnBuild")).ok(),
            shell: serde_json::from_value(docker_field("Shell")).ok(),
            user: Some(oci.user().clone().unwrap_or_default()),
            exposed_ports: oci.exposed_ports().clone(),
            env: oci.env().clone(),
            cmd: oci.cmd().clone(),
            volumes: oci.volumes().clone(),
            working_dir: Some(oci.working_dir().clone().unwrap_or_default()),
            entrypoint: oci.entrypoint().clone(),
            labels: oci.labels().clone(),
            stop_signal: oci.stop_signal().clone(),
            ..Default::default()
        };
        let comment = image
            .config
            .history()
            .as_ref()
            .and_then(|h| h.last())
            .and_then(|h| h.comment().clone())
            .unwrap_or_default();
        Ok(ImageInspectLegacy {
            inspect: ImageInspect {
                id: Some(image.id.to_string()),
                repo_tags: Some(names.iter().map(Reference::familiar_string).collect()),
                repo_digests: Some(Vec::new()),
                comment: Some(comment),
                created: Some(crate::containers::rfc3339(Some(image.created))),
                author: Some(image.config.author().clone().unwrap_or_default()),
                config: Some(config),
                architecture: Some(image.config.architecture().to_string()),
                os: Some(image.config.os().to_string()),
                size: Some(image.size as i64),
                graph_driver: Some(DriverData {
                    name: "overlayfs".into(),
                    data: HashMap::new(),
                }),
                root_fs: Some(ImageInspectRootFs {
                    typ: "layers".into(),
                    layers: Some(image.layers.iter().map(|l| l.diff_id.to_string()).collect()),
                }),
                metadata: Some(ImageInspectMetadata {
                    last_tag_time: image
                        .last_tag_time
                        .map(|t| crate::containers::rfc3339(Some(t))),
                }),
                ..Default::default()
            },
            container_config: Default::default(),
        })
    }

    /// `GET /images/{name}/history`: newest first, layers sized, empty layers zero.
    pub fn image_history(&self, name: &str) -> ServiceResult<Vec<ImageHistoryResponseItem>> {
        let image = self.store.resolve(name)?;
        let tags: Vec<String> = self
            .store
            .image_names(&image.id)?
            .iter()
            .map(Reference::familiar_string)
            .collect();
        let history = image.config.history().clone().unwrap_or_default();
        let mut layer_sizes = image.layers.iter().map(|l| l.size as i64);
        let mut items: Vec<ImageHistoryResponseItem> = history
            .iter()
            .map(|h| {
                let empty = h.empty_layer().unwrap_or(false);
                ImageHistoryResponseItem {
                    id: "<missing>".into(),
                    created: h
                        .created()
                        .as_deref()
                        .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                        .map(|t| t.timestamp())
                        .unwrap_or_default(),
                    created_by: h.created_by().clone().unwrap_or_default(),
                    tags: Vec::new(),
                    size: if empty {
                        0
                    } else {
                        layer_sizes.next().unwrap_or_default()
                    },
                    comment: h.comment().clone().unwrap_or_default(),
                }
            })
            .collect();
        items.reverse();
        if let Some(top) = items.first_mut() {
            top.id = image.id.to_string();
            top.tags = tags;
        }
        Ok(items)
    }

    /// `POST /images/{name}/tag?repo=&tag=`.
    pub async fn tag_image(&self, source: &str, repo: &str, tag: &str) -> ServiceResult<()> {
        let image = self.store.resolve(source)?;
        let target = if tag.is_empty() {
            repo.to_string()
        } else {
            format!("{repo}:{tag}")
        };
        let reference = Reference::parse(&target)?.with_default_tag();
        if reference.digest().is_some() {
            return Err(ServiceError::invalid(
                "refusing to create a tag with a digest reference",
            ));
        }
        let store = self.store.clone();
        let id = image.id.clone();
        let r = reference.clone();
        tokio::task::spawn_blocking(move || store.tag(&r, &id)).await??;
        self.image_event("tag", &image.id, &reference.familiar_string());
        Ok(())
    }

    /// `DELETE /images/{name}`: untags, and deletes the image when no name is left.
    pub async fn remove_image(
        &self,
        name: &str,
        force: bool,
    ) -> ServiceResult<Vec<ImageDeleteResponseItem>> {
        let image = self.store.resolve(name)?;
        let names = self.store.image_names(&image.id)?;
        let by_name = Reference::parse(name)
            .ok()
            .map(|r| r.with_default_tag())
            .filter(|r| names.contains(r));
        let users = self.containers.uses_image(&image.id.to_string());
        let mut out = Vec::new();
        let to_untag: Vec<Reference> = match &by_name {
            // Removing by name untags that name; the image goes only with its last name.
            Some(r) => vec![r.clone()],
            None if names.len() > 1 && !force => {
                return Err(ServiceError::conflict(format!(
                    "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                    image.id.short()
                )));
            }
            None => names.clone(),
        };
        let deleting = names.len() == to_untag.len();
        if deleting && !users.is_empty() && !force {
            return Err(ServiceError::conflict(format!(
                "conflict: unable to delete {} (must be forced) - image is being used by container {}",
                image.id.short(),
                &users[0][..12]
            )));
        }
        for r in &to_untag {
            let store = self.store.clone();
            let rr = r.clone();
            tokio::task::spawn_blocking(move || store.untag(&rr)).await??;
            out.push(ImageDeleteResponseItem {
                untagged: Some(r.familiar_string()),
                deleted: None,
            });
            self.image_event("untag", &image.id, &r.familiar_string());
        }
        if deleting && users.is_empty() {
            let store = self.store.clone();
            let id = image.id.clone();
            tokio::task::spawn_blocking(move || store.delete_image(&id)).await??;
            out.push(ImageDeleteResponseItem {
                untagged: None,
                deleted: Some(image.id.to_string()),
            });
            self.image_event("delete", &image.id, &image.id.to_string());
        }
        Ok(out)
    }

    /// `POST /images/prune`: dangling images, or with `dangling=false` every unused image.
    pub async fn prune_images(&self, filters: &Filters) -> ServiceResult<ImagePruneResponse> {
        let _running = self.prunes.begin(crate::system::PruneKind::Images)?;
        let dangling_only = filters
            .get("dangling")
            .first()
            .is_none_or(|d| berth_api::query::parse_bool(d));
        let until = prune_until(filters, &["dangling", "until", "label", "label!"])?;
        let used: HashSet<String> = self
            .containers
            .all()
            .iter()
            .map(|c| c.record().image_id.clone())
            .collect();
        let mut deleted = Vec::new();
        let mut reclaimed = 0i64;
        for (image, names) in self.store.list_images()? {
            if used.contains(&image.id.to_string()) || (dangling_only && !names.is_empty()) {
                continue;
            }
            if until.is_some_and(|u| image.created >= u) {
                continue;
            }
            let labels = image_labels(&image);
            if !labels_match(filters.get("label"), |k| labels.get(k).map(String::as_str)) {
                continue;
            }
            for r in &names {
                deleted.push(ImageDeleteResponseItem {
                    untagged: Some(r.familiar_string()),
                    deleted: None,
                });
            }
            let store = self.store.clone();
            let id = image.id.clone();
            let stats = tokio::task::spawn_blocking(move || -> berth_store::Result<u64> {
                for r in store.image_names(&id)? {
                    store.untag(&r)?;
                }
                Ok(store.delete_image(&id)?.bytes)
            })
            .await??;
            reclaimed += stats as i64;
            deleted.push(ImageDeleteResponseItem {
                untagged: None,
                deleted: Some(image.id.to_string()),
            });
            self.image_event("delete", &image.id, &image.id.to_string());
        }
        Ok(ImagePruneResponse {
            images_deleted: (!deleted.is_empty()).then_some(deleted),
            space_reclaimed: Some(reclaimed),
        })
    }

    /// `POST /images/create?fromSrc=-`: a one-layer image from a rootfs tar.
    pub async fn import_image(
        &self,
        body: Box<dyn Read + Send>,
        repo: Option<&str>,
        changes: &[String],
        message: Option<String>,
    ) -> ServiceResult<String> {
        let reference = repo
            .filter(|r| !r.is_empty())
            .map(|r| Reference::parse(r).map(|r| r.with_default_tag()))
            .transpose()?;
        let mut config = oci_spec::image::Config::default();
        crate::changes::apply_to_oci(&mut config, changes)?;
        let mut image_config = oci_spec::image::ImageConfiguration::default();
        image_config.set_config(Some(config));
        let store = self.store.clone();
        let r = reference.clone();
        let image = tokio::task::spawn_blocking(move || -> berth_store::Result<ImageRecord> {
            let image = store.import(
                body,
                ImportOptions {
                    config: image_config,
                    message,
                },
            )?;
            if let Some(r) = r {
                store.tag(&r, &image.id)?;
            }
            Ok(image)
        })
        .await??;
        self.image_event("import", &image.id, &image.id.to_string());
        if let Some(r) = reference {
            self.image_event("tag", &image.id, &r.familiar_string());
        }
        Ok(image.id.to_string())
    }

    /// `POST /images/load`: returns docker's `Loaded image: ...` lines.
    pub async fn load_images(&self, body: Box<dyn Read + Send>) -> ServiceResult<Vec<String>> {
        let store = self.store.clone();
        let loaded = tokio::task::spawn_blocking(move || store.load(body)).await??;
        let mut lines = Vec::new();
        for image in loaded {
            if image.tags.is_empty() {
                lines.push(format!("Loaded image ID: {}", image.id));
            }
            for tag in &image.tags {
                lines.push(format!("Loaded image: {}", tag.familiar_string()));
            }
            self.image_event("load", &image.id, &image.id.to_string());
        }
        Ok(lines)
    }

    /// `GET /images/get`: checks every name first so a 404 comes before any byte is sent.
    pub fn check_images_exist(&self, names: &[String]) -> ServiceResult<()> {
        for name in names {
            self.store.resolve(name)?;
        }
        Ok(())
    }

    /// Writes the save tar (blocking; call from a blocking task).
    pub fn save_images(&self, names: &[String], out: impl Write) -> ServiceResult<()> {
        let selectors = names
            .iter()
            .map(|n| self.store.selector(n))
            .collect::<berth_store::Result<Vec<_>>>()?;
        self.store.save(&selectors, out)?;
        Ok(())
    }

    /// Writes a container's filesystem as a tar (blocking; call from a blocking task).
    pub fn export_container(&self, reference: &str, out: impl Write) -> ServiceResult<()> {
        let container = self.containers.get(reference)?;
        let mounts = self.store.container_mounts(&container.id)?;
        let target = tempfile::Builder::new()
            .prefix("export-")
            .tempdir_in(&self.config.exec_root)?;
        berth_store::snapshot::mount_all(&mounts, target.path())?;
        let result = berth_store::layer::tar_dir(target.path(), out);
        let unmounted = berth_store::snapshot::unmount(target.path());
        result?;
        unmounted?;
        self.container_event(&container, "export", HashMap::new());
        Ok(())
    }

    fn image_event(&self, action: &str, id: &Digest, name: &str) {
        let attrs = HashMap::from([("name".to_string(), name.to_string())]);
        self.events.publish("image", action, &id.to_string(), attrs);
    }
}

/// An image as `GET /images/json` and `system df` list it.
fn image_summary(
    image: &ImageRecord,
    repo_tags: Vec<String>,
    labels: HashMap<String, String>,
    containers: i64,
    shared_size: i64,
) -> ImageSummary {
    ImageSummary {
        id: image.id.to_string(),
        parent_id: String::new(),
        repo_tags,
        repo_digests: Vec::new(),
        created: image.created.timestamp(),
        size: image.size as i64,
        shared_size,
        labels,
        containers,
        manifests: None,
        descriptor: None,
    }
}

fn sort_newest_first(images: &mut [ImageSummary]) {
    images.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
}

/// moby's layer accounting over images given as their layers' (chain ID, size), base
/// first: for each image the bytes of its layers that another image also uses (a layer is
/// the same layer only with the same chain ID, so the same content on different parents is
/// not shared), and the bytes of all distinct layers.
fn layer_sharing(images: &[Vec<(Digest, i64)>]) -> (Vec<i64>, i64) {
    let mut users: HashMap<&Digest, (usize, i64)> = HashMap::new();
    for layers in images {
        for (chain, size) in layers {
            users.entry(chain).or_insert((0, *size)).0 += 1;
        }
    }
    let shared = images
        .iter()
        .map(|layers| {
            layers
                .iter()
                .filter(|(chain, _)| users[chain].0 > 1)
                .map(|(_, size)| size)
                .sum()
        })
        .collect();
    let total = users.values().map(|(_, size)| size).sum();
    (shared, total)
}

fn image_labels(image: &ImageRecord) -> HashMap<String, String> {
    image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.labels().clone())
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// `reference=` filter: a glob over `name:tag`, or over the name alone when no tag is given.
fn reference_matches(pattern: &str, tag: &str) -> bool {
    let name = tag.rsplit_once(':').map(|(n, _)| n).unwrap_or(tag);
    glob(pattern, tag) || (!pattern.contains(':') && glob(pattern, name))
}

fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], t) || (!t.is_empty() && t[0] != b'/' && go(p, &t[1..])),
            (Some(b'?'), Some(c)) if *c != b'/' => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

/// Checks a prune request's filter names against those the endpoint accepts and reads its
/// `until=` filter, which every prune shares.
pub(crate) fn prune_until(
    filters: &Filters,
    accepted: &[&str],
) -> ServiceResult<Option<chrono::DateTime<chrono::Utc>>> {
    filters
        .check_names(accepted)
        .map_err(|e| ServiceError::invalid(e.to_string()))?;
    filters
        .get("until")
        .first()
        .map(|u| parse_until(u))
        .transpose()
}

/// `until=` accepts a unix timestamp, an RFC 3339 time, or a duration such as `24h`.
pub(crate) fn parse_until(value: &str) -> ServiceResult<chrono::DateTime<chrono::Utc>> {
    if let Ok(secs) = value.parse::<f64>() {
        return chrono::DateTime::from_timestamp(secs as i64, 0)
            .ok_or_else(|| ServiceError::invalid(format!("invalid until: {value}")));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let (num, unit) = value.split_at(
        value
            .find(|c: char| c.is_alphabetic())
            .unwrap_or(value.len()),
    );
    let n: i64 = num
        .parse()
        .map_err(|_| ServiceError::invalid(format!("invalid until: {value}")))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(ServiceError::invalid(format!("invalid until: {value}"))),
    };
    Ok(chrono::Utc::now() - chrono::TimeDelta::seconds(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_filter_globs() {
        assert!(reference_matches("busybox", "busybox:latest"));
        assert!(reference_matches("busy*", "busybox:latest"));
        assert!(reference_matches("busybox:lat*", "busybox:latest"));
        assert!(!reference_matches("alpine", "busybox:latest"));
        assert!(!reference_matches("*", "library/busybox:1"));
    }

    #[test]
    fn shared_size_counts_layers_other_images_use() {
        let chain =
            |n: u8| Digest::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).unwrap();
        let base = (chain(1), 1000);
        let images = vec![
            // Two images on one base layer, a third alone, a fourth identical to the first.
            vec![base.clone(), (chain(2), 200)],
            vec![base.clone(), (chain(3), 30)],
            vec![(chain(4), 5)],
            vec![base.clone(), (chain(2), 200)],
        ];
        let (shared, total) = layer_sharing(&images);
        assert_eq!(shared, vec![1200, 1000, 0, 1200]);
        assert_eq!(total, 1000 + 200 + 30 + 5);
        let (shared, total) = layer_sharing(&[]);
        assert!(shared.is_empty());
        assert_eq!(total, 0);
    }

    #[test]
    fn until_parses_three_forms() {
        assert_eq!(parse_until("100").unwrap().timestamp(), 100);
        assert!(parse_until("2026-01-01T00:00:00Z").is_ok());
        assert!(parse_until("24h").unwrap() < chrono::Utc::now());
        assert!(parse_until("soon").is_err());
    }
}
