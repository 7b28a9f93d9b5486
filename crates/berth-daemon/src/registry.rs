//! The registry service: pull, push and login through berth-registry's client, with
//! docker's JSON progress messages.

use std::collections::HashMap;
use std::sync::Arc;

use berth_api::auth::AuthConfig;
use berth_api::progress::{JsonMessage, ProgressDetail};
use berth_registry::client::{
    Client, ClientOptions, CredentialStore, Credentials, Progress, ProgressEvent, PullOptions,
    PushOptions,
};
use berth_registry::manifest::{DOCKER_MANIFEST, Descriptor, Manifest, Platform};
use berth_store::distribution::CompressedLayer;
use berth_store::distribution::pulled::PulledBlob;
use berth_store::reference::Reference;
use berth_store::{Digest, LayerInfo, Lease, Store};
use tokio::sync::mpsc::UnboundedSender;

use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

/// Where progress messages go; a closed receiver (client gone) is not an error.
pub type ProgressSink = UnboundedSender<JsonMessage>;

fn send(sink: &ProgressSink, message: JsonMessage) {
    let _ = sink.send(message);
}

/// Docker's last line of a pull: whether anything new came for `name`.
fn send_verdict(sink: &ProgressSink, newer: bool, name: &str) {
    let verdict = if newer {
        "Downloaded newer image for"
    } else {
        "Image is up to date for"
    };
    send(sink, status(None, &format!("Status: {verdict} {name}")));
}

/// The registry domain an `AuthConfig`'s server address names (`docker.io` for Docker Hub's
/// historical key or none).
pub(crate) fn registry_domain(server_address: &str) -> String {
    match server_address {
        "" | DOCKER_HUB_KEY => "docker.io".to_string(),
        other => other
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string(),
    }
}

fn status(id: Option<&str>, text: &str) -> JsonMessage {
    JsonMessage {
        id: id.map(str::to_string),
        ..JsonMessage::status(text)
    }
}

/// Docker's media type of a gzip layer in a Docker schema 2 manifest.
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The registry key docker uses for Docker Hub credentials.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

impl Daemon {
    fn registry_client(
        &self,
        auth: Option<&AuthConfig>,
        reference: &Reference,
    ) -> ServiceResult<Client> {
        let mut credentials = CredentialStore::empty();
        if let Some(a) = auth {
            let creds = if a.identitytoken.is_empty() {
                Credentials::basic(&a.username, &a.password)
            } else {
                Credentials {
                    username: a.username.clone(),
                    password: String::new(),
                    identity_token: Some(a.identitytoken.clone()),
                }
            };
            credentials.insert(reference.domain(), creds);
        }
        let options = ClientOptions {
            insecure_registries: self.config.insecure_registries.clone(),
            loopback_insecure: true,
            certs_dir: Some(std::path::PathBuf::from("/etc/docker/certs.d")),
            registry_mirrors: self.config.registry_mirrors.clone(),
            max_concurrent_downloads: self.config.max_concurrent_downloads,
            max_concurrent_uploads: self.config.max_concurrent_uploads,
            ..Default::default()
        };
        Client::new(options, credentials).map_err(|e| ServiceError::internal(e.to_string()))
    }

    /// `POST /images/create?fromImage=`: pulls an image, streaming progress to `sink`.
    /// Errors after streaming started are sent as an `errorDetail` message by the caller.
    pub async fn pull_image(
        &self,
        image: &str,
        tag: Option<&str>,
        platform: Option<&str>,
        auth: Option<AuthConfig>,
        sink: ProgressSink,
    ) -> ServiceResult<()> {
        let text = match tag.filter(|t| !t.is_empty()) {
            Some(t) if t.starts_with("sha256:") => format!("{image}@{t}"),
            Some(t) => format!("{image}:{t}"),
            None => image.to_string(),
        };
        let reference = Reference::parse(&text)?;
        let platform = parse_platform(platform)?;
        let client = self.registry_client(auth.as_ref(), &reference)?;
        let pulled = self
            .pull_reference(&client, &reference, platform, &sink)
            .await?;
        send(&sink, status(None, &format!("Digest: {}", pulled.digest)));
        send_verdict(&sink, pulled.newer, &reference.familiar_string());
        Ok(())
    }

    /// `POST /images/create?fromImage=NAME` without a tag (`pull -a`): pulls every tag of
    /// the repository, as moby does: a tag that fails is skipped with a warning unless
    /// every tag fails.
    pub async fn pull_all_tags(
        &self,
        image: &str,
        platform: Option<&str>,
        auth: Option<AuthConfig>,
        sink: ProgressSink,
    ) -> ServiceResult<()> {
        let repository = Reference::parse_named(image)?;
        if repository.tag().is_some() || repository.digest().is_some() {
            return Err(ServiceError::invalid(format!(
                "pull of all tags needs a repository name without tag or digest: {image}"
            )));
        }
        let platform = parse_platform(platform)?;
        let client = self.registry_client(auth.as_ref(), &repository)?;
        let mut tags = client
            .list_tags(&repository)
            .await
            .map_err(|e| ServiceError::not_found(e.to_string()))?;
        tags.sort();
        tags.dedup();
        let mut newer = false;
        let mut pulled_any = false;
        let mut last_error = None;
        for tag in &tags {
            let reference = repository.with_tag(tag)?;
            match self
                .pull_reference(&client, &reference, platform.clone(), &sink)
                .await
            {
                Ok(p) => {
                    send(&sink, status(None, &format!("Digest: {}", p.digest)));
                    newer |= p.newer;
                    pulled_any = true;
                }
                Err(e) => {
                    tracing::warn!("pull {reference}: {}", e.message);
                    last_error = Some(e);
                }
            }
        }
        if let (false, Some(e)) = (pulled_any, last_error) {
            return Err(e);
        }
        send_verdict(&sink, newer, &repository.familiar_name());
        Ok(())
    }

    /// Pulls one tag or digest: fetches the layers a few at a time and unpacks each as
    /// soon as it and those below it are stored (docker's per-layer progress lines all
    /// the way), then records the image and names it.
    async fn pull_reference(
        &self,
        client: &Client,
        reference: &Reference,
        platform: Option<Platform>,
        sink: &ProgressSink,
    ) -> ServiceResult<PullResult> {
        let timer = self.metrics.time(crate::metrics::ImageAction::Pull);
        let shown = match (reference.tag(), reference.digest()) {
            (Some(t), _) => t.to_string(),
            (None, Some(d)) => d.to_string(),
            (None, None) => "latest".to_string(),
        };
        send(
            sink,
            status(
                Some(&shown),
                &format!("Pulling from {}", familiar_repo(reference)),
            ),
        );
        let existing = self
            .store
            .resolve(&reference.to_string())
            .ok()
            .map(|i| i.id);
        let progress_sink = sink.clone();
        let options = PullOptions {
            platform,
            progress: Some(Arc::new(move |p: Progress| {
                if let Some(m) = pull_progress(&p) {
                    send(&progress_sink, m);
                }
            })),
        };
        let not_found = |e: berth_registry::ClientError| ServiceError::not_found(e.to_string());
        let session = client
            .start_pull(reference, self.store.content(), &options)
            .await
            .map_err(not_found)?;
        let store = self.store.clone();
        let config = session.config().digest.clone();
        let diff_ids =
            tokio::task::spawn_blocking(move || store.config_diff_ids(&config)).await??;
        let layers = session.layers().to_vec();
        if diff_ids.len() != layers.len() {
            return Err(ServiceError::invalid(format!(
                "image {reference}: config {} lists {} layers, the manifest {}",
                session.config().digest,
                diff_ids.len(),
                layers.len()
            )));
        }

        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<usize>();
        let (store, unpack_sink, source) = (self.store.clone(), sink.clone(), reference.name());
        let mut unpack = tokio::task::spawn_blocking(move || {
            unpack_in_order(&store, &layers, &diff_ids, &source, &ready_rx, &unpack_sink)
        });
        let mut fetch = Box::pin(session.fetch_layers(&options.progress, move |i| {
            // The unpacker stops listening only when it failed; its error is reported.
            let _ = ready_tx.send(i);
        }));
        let (fetched, unpacked) = tokio::select! {
            fetched = &mut fetch => {
                drop(fetch);
                (fetched, unpack.await)
            }
            unpacked = &mut unpack => {
                let fetched = if matches!(unpacked, Ok(Ok(_))) {
                    fetch.await
                } else {
                    // Unpacking failed: stop the downloads.
                    drop(fetch);
                    Ok(())
                };
                (fetched, unpacked)
            }
        };
        let outcome = match (fetched, unpacked) {
            (Err(e), _) => Err(not_found(e)),
            (Ok(()), Err(e)) => Err(e.into()),
            (Ok(()), Ok(Err(e))) => Err(e),
            (Ok(()), Ok(Ok((lease, unpacked)))) => {
                let recorded = async {
                    let pulled = session.finish().await.map_err(not_found)?;
                    let store = self.store.clone();
                    let tag = reference.digest().is_none().then(|| reference.clone());
                    let (manifest, media_type, config) = (
                        pulled.manifest_digest.clone(),
                        pulled.manifest_media_type.clone(),
                        pulled.config.digest.clone(),
                    );
                    let record = tokio::task::spawn_blocking(move || {
                        store.record_pulled_image(
                            &manifest,
                            &media_type,
                            &config,
                            unpacked,
                            tag.as_ref(),
                        )
                    })
                    .await??;
                    Ok::<_, ServiceError>((pulled, record))
                }
                .await;
                drop(lease);
                recorded
            }
        };
        let (pulled, record) = match outcome {
            Ok(v) => v,
            Err(e) => {
                // Nothing partial stays: unreferenced snapshots and blobs go.
                let store = self.store.clone();
                if let Ok(Err(gc)) = tokio::task::spawn_blocking(move || store.gc()).await {
                    tracing::warn!("cleanup after failed pull of {reference}: {gc}");
                }
                return Err(e);
            }
        };
        let attrs = HashMap::from([("name".to_string(), reference.familiar_string())]);
        self.events
            .publish("image", "pull", &reference.familiar_string(), attrs);
        timer.succeeded();
        Ok(PullResult {
            digest: pulled.digest,
            newer: existing.as_ref() != Some(&record.id),
        })
    }

    /// `POST /images/{name}/push`: pushes an image with gzip layers. Uncompressed local
    /// layers are compressed once (in parallel) and the copies remembered by the store,
    /// so pushing again compresses nothing; blobs the registry has are skipped, blobs it
    /// has in another repository are mounted. The local image is not changed.
    pub async fn push_image(
        &self,
        name: &str,
        tag: Option<&str>,
        auth: Option<AuthConfig>,
        sink: ProgressSink,
    ) -> ServiceResult<()> {
        let text = match tag.filter(|t| !t.is_empty()) {
            Some(t) => format!("{name}:{t}"),
            None => name.to_string(),
        };
        let reference = Reference::parse(&text)?;
        let image = self.store.resolve(&reference.to_string()).map_err(|_| {
            ServiceError::not_found(format!(
                "An image does not exist locally with the tag: {}",
                reference.familiar_name()
            ))
        })?;
        let client = self.registry_client(auth.as_ref(), &reference)?;
        send(
            &sink,
            status(
                None,
                &format!("The push refers to repository [{}]", reference.name()),
            ),
        );
        for layer in image.layers.iter().rev() {
            send(&sink, status(Some(layer.diff_id.short()), "Preparing"));
        }
        let compressed = self.compressed_layers(&image.layers).await?;
        let store = self.store.clone();
        let (manifest_digest, manifest_type) = (
            image.manifest_digest.clone(),
            image.manifest_media_type.clone(),
        );
        let local =
            tokio::task::spawn_blocking(move || store.content().read_to_vec(&manifest_digest))
                .await??;
        let manifest =
            push_manifest(&local, &manifest_type, &image.layers, &compressed).map_err(|e| {
                ServiceError::internal(format!("manifest of {}: {e}", reference.familiar_string()))
            })?;
        // Progress lines are named by diff ID, like docker's; the config blob has none.
        let ids: HashMap<Digest, String> = image
            .layers
            .iter()
            .zip(&compressed)
            .map(|(l, c)| (c.digest.clone(), l.diff_id.short().to_string()))
            .collect();
        let progress_sink = sink.clone();
        let options = PushOptions {
            chunk_size: None,
            mount_from: mount_sources(&reference, &compressed),
            progress: Some(Arc::new(move |p: Progress| {
                if let Some(id) = ids.get(&p.digest)
                    && let Some(m) = push_progress(id, &p.event)
                {
                    send(&progress_sink, m);
                }
            })),
        };
        let size = manifest.len();
        let digest = client
            .push_manifest_bytes(
                &reference,
                self.store.content(),
                bytes::Bytes::from(manifest),
                &options,
            )
            .await
            .map_err(|e| ServiceError::internal(e.to_string()))?;
        let store = self.store.clone();
        let pairs: Vec<(Digest, CompressedLayer)> = image
            .layers
            .iter()
            .map(|l| l.diff_id.clone())
            .zip(compressed)
            .collect();
        let repository = reference.name();
        let remembered = tokio::task::spawn_blocking(move || {
            store.remember_compressed_layers(&pairs, Some(&repository))
        })
        .await?;
        if let Err(e) = remembered {
            tracing::warn!("push {reference}: cannot remember where the layers are: {e}");
        }
        let tag = reference.tag().unwrap_or("latest").to_string();
        send(
            &sink,
            status(None, &format!("{tag}: digest: {digest} size: {size}")),
        );
        send(
            &sink,
            JsonMessage {
                progress_detail: Some(ProgressDetail::default()),
                aux: Some(
                    serde_json::json!({"Tag": tag, "Digest": digest.to_string(), "Size": size}),
                ),
                ..Default::default()
            },
        );
        let attrs = HashMap::from([("name".to_string(), reference.familiar_string())]);
        self.events
            .publish("image", "push", &reference.familiar_string(), attrs);
        Ok(())
    }

    /// The blob each layer is pushed as (base first): compressed copies made at most once,
    /// as many at a time as there are CPUs.
    async fn compressed_layers(&self, layers: &[LayerInfo]) -> ServiceResult<Vec<CompressedLayer>> {
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        let limit = Arc::new(tokio::sync::Semaphore::new(cpus));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, layer) in layers.iter().cloned().enumerate() {
            let (store, limit) = (self.store.clone(), limit.clone());
            tasks.spawn(async move {
                let _permit = limit
                    .acquire_owned()
                    .await
                    .expect("semaphore is never closed");
                let done = tokio::task::spawn_blocking(move || store.compress_layer(&layer)).await;
                (i, done)
            });
        }
        let mut out: Vec<Option<CompressedLayer>> = vec![None; layers.len()];
        while let Some(joined) = tasks.join_next().await {
            let (i, done) = joined?;
            let (compressed, _) = done??;
            out[i] = Some(compressed);
        }
        Ok(out
            .into_iter()
            .map(|c| c.expect("every layer task reported"))
            .collect())
    }

    /// `POST /auth`: checks credentials against a registry.
    pub async fn login(&self, auth: AuthConfig) -> ServiceResult<()> {
        let server = registry_domain(&auth.serveraddress);
        let reference = Reference::parse(&format!("{server}/library/probe"))?;
        let client = self.registry_client(Some(&auth), &reference)?;
        client
            .login(&server, Credentials::basic(&auth.username, &auth.password))
            .await
            .map_err(|e| ServiceError {
                kind: crate::error::ErrorKind::Unauthorized,
                message: e.to_string(),
            })
    }
}

/// `library/busybox` for Docker Hub's official images, else the path.
fn familiar_repo(reference: &Reference) -> String {
    reference.path().to_string()
}

fn bar(current: u64, total: u64) -> String {
    const WIDTH: u64 = 50;
    let filled = (current.min(total) * WIDTH).checked_div(total).unwrap_or(0) as usize;
    let arrow = if filled < WIDTH as usize { ">" } else { "" };
    format!(
        "[{}{arrow}{}] {}/{}",
        "=".repeat(filled),
        " ".repeat((WIDTH as usize).saturating_sub(filled + arrow.len())),
        berth_api::units::human_size(current as f64),
        berth_api::units::human_size(total as f64)
    )
}

fn with_bar(id: &str, text: &str, current: u64, total: u64) -> JsonMessage {
    JsonMessage {
        progress_detail: Some(ProgressDetail {
            current: Some(current as i64),
            total: Some(total as i64),
        }),
        progress: Some(bar(current, total)),
        ..status(Some(id), text)
    }
}

fn pull_progress(p: &Progress) -> Option<JsonMessage> {
    let id = p.digest.short();
    Some(match &p.event {
        ProgressEvent::Pending => status(Some(id), "Pulling fs layer"),
        ProgressEvent::Waiting => status(Some(id), "Waiting"),
        ProgressEvent::Downloading { current, total } => {
            with_bar(id, "Downloading", *current, *total)
        }
        ProgressEvent::Verifying => status(Some(id), "Verifying Checksum"),
        ProgressEvent::DownloadComplete => status(Some(id), "Download complete"),
        ProgressEvent::AlreadyExists => status(Some(id), "Already exists"),
        ProgressEvent::Retrying { attempt, .. } => status(
            Some(id),
            &format!("Retrying in 1 second (attempt {attempt})"),
        ),
        _ => return None,
    })
}

fn push_progress(id: &str, event: &ProgressEvent) -> Option<JsonMessage> {
    Some(match event {
        ProgressEvent::Waiting => status(Some(id), "Waiting"),
        ProgressEvent::Uploading { current, total } => with_bar(id, "Pushing", *current, *total),
        ProgressEvent::Pushed => status(Some(id), "Pushed"),
        ProgressEvent::AlreadyExists => status(Some(id), "Layer already exists"),
        ProgressEvent::Mounted { from } => status(Some(id), &format!("Mounted from {from}")),
        _ => return None,
    })
}

/// What one pulled reference came to.
struct PullResult {
    /// The digest the reference resolved to.
    digest: Digest,
    /// Whether the name now points at another image than before.
    newer: bool,
}

fn parse_platform(platform: Option<&str>) -> ServiceResult<Option<Platform>> {
    platform
        .filter(|p| !p.is_empty())
        .map(|p| {
            Platform::parse(p)
                .ok_or_else(|| ServiceError::invalid(format!("invalid platform: {p}")))
        })
        .transpose()
}

/// Unpacks the layers of a pull base first, each once `ready` announced it (and every
/// layer below it) stored; runs on a blocking thread. Sends docker's `Extracting` and
/// `Pull complete` lines. Returns the lease holding the layers and the layers.
fn unpack_in_order(
    store: &Store,
    layers: &[Descriptor],
    diff_ids: &[Digest],
    source: &str,
    ready: &std::sync::mpsc::Receiver<usize>,
    sink: &ProgressSink,
) -> ServiceResult<(Lease, Vec<LayerInfo>)> {
    let lease = store.lease();
    let mut arrived = vec![false; layers.len()];
    let mut done: Vec<LayerInfo> = Vec::with_capacity(layers.len());
    for (i, (layer, diff_id)) in layers.iter().zip(diff_ids).enumerate() {
        while !arrived[i] {
            match ready.recv() {
                Ok(j) if j < arrived.len() => arrived[j] = true,
                Ok(_) => {}
                // The downloads stopped; their error is what the pull reports.
                Err(_) => {
                    return Err(ServiceError::internal(
                        "pull stopped before its layers arrived",
                    ));
                }
            }
        }
        let id = layer.digest.short();
        let blob = PulledBlob {
            digest: &layer.digest,
            media_type: &layer.media_type,
            diff_id,
            repository: Some(source),
        };
        let pulled = store.unpack_pulled_layer(&lease, &done, &blob, &mut |current, total| {
            send(sink, with_bar(id, "Extracting", current, total));
        })?;
        if pulled.extracted {
            send(sink, status(Some(id), "Pull complete"));
        }
        done.push(pulled.layer);
    }
    Ok((lease, done))
}

/// The manifest to push: the local one, with each uncompressed layer replaced by its
/// compressed copy (Docker's gzip media type in a Docker manifest, OCI's in an OCI one).
/// A manifest without uncompressed layers goes out byte for byte.
fn push_manifest(
    local: &[u8],
    media_type: &str,
    layers: &[LayerInfo],
    compressed: &[CompressedLayer],
) -> Result<Vec<u8>, String> {
    let replacements: HashMap<&Digest, &CompressedLayer> = layers
        .iter()
        .zip(compressed)
        .filter(|(l, c)| l.digest != c.digest)
        .map(|(l, c)| (&l.digest, c))
        .collect();
    if replacements.is_empty() {
        return Ok(local.to_vec());
    }
    let (mut manifest, media_type) =
        Manifest::parse(local, media_type).map_err(|e| e.to_string())?;
    let docker = media_type == DOCKER_MANIFEST;
    for d in &mut manifest.layers {
        if let Some(c) = replacements.get(&d.digest) {
            d.digest = c.digest.clone();
            d.size = c.size;
            d.media_type = if docker {
                DOCKER_LAYER_GZIP.to_string()
            } else {
                c.media_type.clone()
            };
        }
    }
    serde_json::to_vec(&manifest).map_err(|e| e.to_string())
}

/// Repositories of the same registry the compressed blobs are known to be in: a push
/// tries to mount from them before uploading (at most 3, most recently used first).
fn mount_sources(reference: &Reference, compressed: &[CompressedLayer]) -> Vec<String> {
    let prefix = format!("{}/", reference.domain());
    let mut out: Vec<String> = Vec::new();
    for repo in compressed.iter().flat_map(|c| &c.repositories) {
        if let Some(path) = repo.strip_prefix(&prefix)
            && path != reference.path()
            && !out.iter().any(|o| o == path)
        {
            out.push(path.to_string());
        }
    }
    out.truncate(3);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(content: &str, media_type: &str) -> LayerInfo {
        let d = Digest::from_bytes(content.as_bytes());
        LayerInfo {
            diff_id: d.clone(),
            digest: d,
            media_type: media_type.to_string(),
            size: content.len() as u64,
            unpacked_size: 0,
        }
    }

    fn gz(name: &str, repos: &[&str]) -> CompressedLayer {
        CompressedLayer {
            digest: Digest::from_bytes(name.as_bytes()),
            size: 7,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".to_string(),
            repositories: repos.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn local_manifest(media_type: &str, layers: &[LayerInfo]) -> Vec<u8> {
        let config = Digest::from_bytes(b"config");
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 6},
            "layers": layers.iter().map(|l| serde_json::json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn pushed_manifests_list_the_compressed_layers() {
        let tar = "application/vnd.oci.image.layer.v1.tar";
        let layers = [layer("a", tar), layer("b", tar)];
        let compressed = [gz("a.gz", &[]), gz("b.gz", &[])];
        for (mt, want) in [
            (
                berth_registry::manifest::OCI_MANIFEST,
                "application/vnd.oci.image.layer.v1.tar+gzip",
            ),
            (DOCKER_MANIFEST, DOCKER_LAYER_GZIP),
        ] {
            let local = local_manifest(mt, &layers);
            let out = push_manifest(&local, mt, &layers, &compressed).unwrap();
            let (m, media_type) = Manifest::parse(&out, "").unwrap();
            assert_eq!(media_type, mt);
            let got: Vec<(&Digest, u64, &str)> = m
                .layers
                .iter()
                .map(|d| (&d.digest, d.size, d.media_type.as_str()))
                .collect();
            assert_eq!(
                got,
                vec![
                    (&compressed[0].digest, 7, want),
                    (&compressed[1].digest, 7, want)
                ]
            );
        }
        // Already compressed layers: the manifest goes out unchanged.
        let pulled = [layer("c", "application/vnd.oci.image.layer.v1.tar+gzip")];
        let own = [CompressedLayer {
            digest: pulled[0].digest.clone(),
            size: pulled[0].size,
            media_type: pulled[0].media_type.clone(),
            repositories: Vec::new(),
        }];
        let local = local_manifest(berth_registry::manifest::OCI_MANIFEST, &pulled);
        assert_eq!(push_manifest(&local, "", &pulled, &own).unwrap(), local);
    }

    #[test]
    fn mounts_come_from_other_repositories_of_the_same_registry() {
        let r = Reference::parse("127.0.0.1:5000/team/app:v1").unwrap();
        let c = [
            gz(
                "a",
                &[
                    "127.0.0.1:5000/team/app",
                    "127.0.0.1:5000/old/app",
                    "docker.io/x/y",
                ],
            ),
            gz(
                "b",
                &[
                    "127.0.0.1:5000/old/app",
                    "127.0.0.1:5000/b/1",
                    "127.0.0.1:5000/b/2",
                    "127.0.0.1:5000/b/3",
                ],
            ),
        ];
        assert_eq!(mount_sources(&r, &c), vec!["old/app", "b/1", "b/2"]);
    }
}
