//! Pull: resolve a reference to an image manifest (through an index if need be), then fetch
//! its config and layers into berth-store's content store.
//!
//! Every blob streams into a content-store ingest on a blocking thread while it downloads,
//! and is committed only if its digest and size match the manifest, so nothing unverified
//! ever becomes visible. Layers run a few at a time; a dropped connection resumes with
//! `Range` when the registry allows it and restarts otherwise, a bounded number of times.
//! The manifest (and index) are stored last, after everything they refer to.

use std::sync::Arc;
use std::time::Instant;

use berth_store::{ContentStore, Digest, Ingest, Reference};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use hyper::header::{self, HeaderValue};
use hyper::{Method, StatusCode};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::transport::{Host, empty, error_from, read_body};
use super::{Client, ClientError, Progress, ProgressEvent, ProgressFn, Result, repo_name};
use crate::manifest::{ACCEPT_MANIFESTS, Descriptor, Manifest, ManifestKind, Platform, kind_of};
use crate::routes::{MAX_MANIFEST_BYTES, ManifestRef, RepoName, Route};
use crate::sink::BlockingSink;

/// Progress is reported at most this often per layer while downloading.
const PROGRESS_STEP: u64 = 512 << 10;

/// A manifest as fetched, verified against the digest it was asked by.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The digest of the bytes.
    pub digest: Digest,
    /// The media type.
    pub media_type: String,
    /// The exact bytes (they are what the digest covers).
    pub bytes: Bytes,
    /// The parsed document.
    pub manifest: Manifest,
}

/// A reference resolved to one image manifest.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The index or manifest list the reference pointed at, if any.
    pub index: Option<FetchedManifest>,
    /// The image manifest for the selected platform.
    pub manifest: FetchedManifest,
}

impl ResolvedImage {
    /// The digest the reference resolves to (the index's if there is one): what docker
    /// shows as `Digest:` and records in RepoDigests.
    pub fn digest(&self) -> &Digest {
        self.index
            .as_ref()
            .map_or(&self.manifest.digest, |i| &i.digest)
    }
}

/// How to pull.
#[derive(Clone, Default)]
pub struct PullOptions {
    /// The platform to select from an index (default: the host's).
    pub platform: Option<Platform>,
    /// Receives per-layer progress.
    pub progress: Option<ProgressFn>,
}

/// What a pull stored.
#[derive(Debug, Clone, PartialEq)]
pub struct PulledImage {
    /// The digest the reference resolved to (index or manifest).
    pub digest: Digest,
    /// The image manifest's digest.
    pub manifest_digest: Digest,
    /// The image manifest's media type.
    pub manifest_media_type: String,
    /// The image configuration blob.
    pub config: Descriptor,
    /// The layers, base first.
    pub layers: Vec<Descriptor>,
}

/// A pull under way: the image is resolved and its configuration stored; the layers
/// follow with [`PullSession::fetch_layers`] and the manifests with
/// [`PullSession::finish`].
pub struct PullSession {
    client: Client,
    host: Arc<Host>,
    name: RepoName,
    content: ContentStore,
    resolved: ResolvedImage,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

impl PullSession {
    /// The image configuration blob (already in the content store).
    pub fn config(&self) -> &Descriptor {
        &self.config
    }

    /// The layers to fetch, base first (foreign layers left out).
    pub fn layers(&self) -> &[Descriptor] {
        &self.layers
    }

    /// The digest the reference resolved to (the index's if there is one).
    pub fn digest(&self) -> &Digest {
        self.resolved.digest()
    }

    /// The registry the image comes from (`scheme://host[:port]`, a mirror's URL if a
    /// mirror answered).
    pub fn source(&self) -> &str {
        &self.host.base
    }

    /// Fetches the layers missing from the content store, a few at a time; `ready(i)` is
    /// called (from any task) as soon as layer `i` is in the content store, at once for
    /// layers already there. The first failure ends the fetch and aborts the others.
    pub async fn fetch_layers(
        &self,
        progress: &Option<ProgressFn>,
        ready: impl Fn(usize) + Send + Sync + 'static,
    ) -> Result<()> {
        let ready = Arc::new(ready);
        let limit = Arc::new(Semaphore::new(
            self.client.options().max_concurrent_downloads.max(1),
        ));
        let mut tasks = JoinSet::new();
        for (i, layer) in self.layers.iter().cloned().enumerate() {
            if self.content.exists(&layer.digest) {
                report(progress, &layer.digest, ProgressEvent::AlreadyExists);
                ready(i);
                continue;
            }
            report(progress, &layer.digest, ProgressEvent::Pending);
            let (client, host, name, content, limit, progress, ready) = (
                self.client.clone(),
                self.host.clone(),
                self.name.clone(),
                self.content.clone(),
                limit.clone(),
                progress.clone(),
                ready.clone(),
            );
            tasks.spawn(async move {
                let _permit = match limit.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        report(&progress, &layer.digest, ProgressEvent::Waiting);
                        limit
                            .acquire_owned()
                            .await
                            .expect("semaphore is never closed")
                    }
                };
                client
                    .fetch_blob(&host, &name, &layer, &content, &progress)
                    .await?;
                ready(i);
                Ok::<(), ClientError>(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            // The first failure ends the pull; dropping the set aborts the other layers.
            done.expect("layer download task does not panic")?;
        }
        Ok(())
    }

    /// Stores the manifest (and index) after everything they refer to; returns what the
    /// pull stored.
    pub async fn finish(self) -> Result<PulledImage> {
        let stored = [Some(&self.resolved.manifest), self.resolved.index.as_ref()];
        for fetched in stored.into_iter().flatten() {
            let (cs, bytes, d) = (
                self.content.clone(),
                fetched.bytes.clone(),
                fetched.digest.clone(),
            );
            blocking(move || cs.put_bytes(&bytes))
                .await
                .map_err(|e| ClientError::store(&d, e))?;
        }
        Ok(PulledImage {
            digest: self.resolved.digest().clone(),
            manifest_digest: self.resolved.manifest.digest.clone(),
            manifest_media_type: self.resolved.manifest.media_type.clone(),
            config: self.config,
            layers: self.layers,
        })
    }
}

fn report(progress: &Option<ProgressFn>, digest: &Digest, event: ProgressEvent) {
    if let Some(p) = progress {
        p(Progress {
            digest: digest.clone(),
            event,
        });
    }
}

/// What a reference asks the registry for: its digest, else its tag (default `latest`).
fn manifest_target(reference: &Reference) -> ManifestRef {
    match (reference.digest(), reference.tag()) {
        (Some(d), _) => ManifestRef::Digest(d.clone()),
        (None, Some(t)) => ManifestRef::Tag(t.to_string()),
        (None, None) => ManifestRef::Tag(berth_store::reference::DEFAULT_TAG.to_string()),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking content-store work does not panic")
}

impl Client {
    /// Fetches the manifest `reference` names (by digest if it has one, else by tag),
    /// refusing more than 4 MiB, unknown media types and digest mismatches.
    pub async fn fetch_manifest(&self, reference: &Reference) -> Result<FetchedManifest> {
        let name = repo_name(reference)?;
        let host = self.transport.host(reference.domain()).await?;
        let target = manifest_target(reference);
        self.fetch_manifest_in(&host, &name, &target, &reference.to_string())
            .await
    }

    async fn fetch_manifest_in(
        &self,
        host: &Host,
        name: &RepoName,
        target: &ManifestRef,
        shown: &str,
    ) -> Result<FetchedManifest> {
        let url = format!(
            "{}{}",
            host.base,
            Route::Manifest {
                name: name.clone(),
                reference: target.clone(),
            }
            .path()
        );
        let scopes = [format!("repository:{name}:pull")];
        let accept = [(header::ACCEPT, HeaderValue::from_static(ACCEPT_MANIFESTS))];
        let resp = self
            .transport
            .request(host, &scopes, Method::GET, &url, &accept, &empty)
            .await?;
        if !resp.status().is_success() {
            return Err(error_from(&Method::GET, &url, resp).await);
        }
        let too_large = || ClientError::ManifestTooLarge {
            reference: shown.to_string(),
            limit: MAX_MANIFEST_BYTES,
        };
        let declared = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_MANIFEST_BYTES) {
            return Err(too_large());
        }
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = read_body(&url, resp, MAX_MANIFEST_BYTES as usize)
            .await
            .map_err(|e| match e {
                ClientError::Url { .. } => too_large(),
                other => other,
            })?;
        let digest = Digest::from_bytes(&bytes);
        if let ManifestRef::Digest(expected) = target
            && *expected != digest
        {
            return Err(ClientError::ManifestDigest {
                reference: shown.to_string(),
                expected: expected.clone(),
                actual: digest,
            });
        }
        let (manifest, media_type) =
            Manifest::parse(&bytes, &content_type).map_err(|source| ClientError::Manifest {
                reference: shown.to_string(),
                source,
            })?;
        Ok(FetchedManifest {
            digest,
            media_type,
            bytes,
            manifest,
        })
    }

    /// Resolves `reference` to an image manifest, choosing from an index the manifest for
    /// `platform` (default: the host's).
    pub async fn resolve(
        &self,
        reference: &Reference,
        platform: Option<&Platform>,
    ) -> Result<ResolvedImage> {
        let host = self.transport.host(reference.domain()).await?;
        self.resolve_on(&host, reference, platform).await
    }

    async fn resolve_on(
        &self,
        host: &Host,
        reference: &Reference,
        platform: Option<&Platform>,
    ) -> Result<ResolvedImage> {
        let name = repo_name(reference)?;
        let target = manifest_target(reference);
        let top = self
            .fetch_manifest_in(host, &name, &target, &reference.to_string())
            .await?;
        if kind_of(&top.media_type) == Some(ManifestKind::Image) {
            return Ok(ResolvedImage {
                index: None,
                manifest: top,
            });
        }
        let wanted = platform.cloned().unwrap_or_else(Platform::host);
        let child = top
            .manifest
            .select_platform(&wanted)
            .ok_or_else(|| ClientError::NoMatchingPlatform {
                reference: reference.to_string(),
                platform: wanted.to_string(),
            })?
            .clone();
        let shown = format!("{}@{}", reference.name(), child.digest);
        let manifest = self
            .fetch_manifest_in(
                host,
                &name,
                &ManifestRef::Digest(child.digest.clone()),
                &shown,
            )
            .await?;
        if kind_of(&manifest.media_type) != Some(ManifestKind::Image) {
            return Err(ClientError::Manifest {
                reference: shown,
                source: crate::manifest::ManifestError::UnsupportedMediaType(manifest.media_type),
            });
        }
        Ok(ResolvedImage {
            index: Some(top),
            manifest,
        })
    }

    /// Pulls `reference` into `content`: config and layers (skipping those present), then
    /// the manifest and index. Returns what was stored. [`Client::start_pull`] does the
    /// same in steps, for callers that unpack layers while others download.
    pub async fn pull(
        &self,
        reference: &Reference,
        content: &ContentStore,
        options: &PullOptions,
    ) -> Result<PulledImage> {
        let session = self.start_pull(reference, content, options).await?;
        session.fetch_layers(&options.progress, |_| {}).await?;
        session.finish().await
    }

    /// Starts a pull: resolves `reference` (from the first answering mirror for Docker
    /// Hub names when mirrors are configured, else from its registry) and fetches the
    /// image configuration into `content`.
    pub async fn start_pull(
        &self,
        reference: &Reference,
        content: &ContentStore,
        options: &PullOptions,
    ) -> Result<PullSession> {
        let name = repo_name(reference)?;
        if reference.domain() == berth_store::reference::DEFAULT_DOMAIN {
            for mirror in &self.options().registry_mirrors {
                let attempt = async {
                    let host = self.transport.mirror(mirror).await?;
                    self.start_pull_on(host, &name, reference, content, options)
                        .await
                };
                match attempt.await {
                    Ok(session) => return Ok(session),
                    Err(e) => tracing::warn!("pull {reference} from mirror {mirror}: {e}"),
                }
            }
        }
        let host = self.transport.host(reference.domain()).await?;
        self.start_pull_on(host, &name, reference, content, options)
            .await
    }

    async fn start_pull_on(
        &self,
        host: Arc<Host>,
        name: &RepoName,
        reference: &Reference,
        content: &ContentStore,
        options: &PullOptions,
    ) -> Result<PullSession> {
        let resolved = self
            .resolve_on(&host, reference, options.platform.as_ref())
            .await?;
        let config = resolved
            .manifest
            .manifest
            .config
            .clone()
            .expect("image manifests have a config (checked by parse)");
        if !content.exists(&config.digest) {
            self.fetch_blob(&host, name, &config, content, &None)
                .await?;
        }
        let layers = resolved
            .manifest
            .manifest
            .layers
            .iter()
            .filter(|l| !l.is_foreign())
            .cloned()
            .collect();
        Ok(PullSession {
            client: self.clone(),
            host,
            name: name.clone(),
            content: content.clone(),
            resolved,
            config,
            layers,
        })
    }

    /// The size of blob `digest` in the repository `reference` names (a HEAD request);
    /// `None` when the registry does not have it.
    pub async fn blob_size(&self, reference: &Reference, digest: &Digest) -> Result<Option<u64>> {
        let name = repo_name(reference)?;
        let host = self.transport.host(reference.domain()).await?;
        let route = Route::Blob {
            name: name.clone(),
            digest: digest.clone(),
        };
        let url = format!("{}{}", host.base, route.path());
        let scopes = [format!("repository:{name}:pull")];
        let resp = self
            .transport
            .request(&host, &scopes, Method::HEAD, &url, &[], &empty)
            .await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .map(Some)
                .ok_or_else(|| ClientError::BlobInvalid {
                    digest: digest.clone(),
                    url,
                    reason: "HEAD answer has no Content-Length".to_string(),
                }),
            _ => Err(error_from(&Method::HEAD, &url, resp).await),
        }
    }

    /// Downloads one blob of the repository `reference` names into `content`, verified
    /// against `blob`'s digest and size.
    pub async fn pull_blob(
        &self,
        reference: &Reference,
        blob: &Descriptor,
        content: &ContentStore,
        progress: Option<ProgressFn>,
    ) -> Result<()> {
        let name = repo_name(reference)?;
        let host = self.transport.host(reference.domain()).await?;
        self.fetch_blob(&host, &name, blob, content, &progress)
            .await
    }

    /// Downloads one blob into `content`, verified against `blob`'s digest and size,
    /// retrying dropped connections.
    async fn fetch_blob(
        &self,
        host: &Host,
        name: &RepoName,
        blob: &Descriptor,
        content: &ContentStore,
        progress: &Option<ProgressFn>,
    ) -> Result<()> {
        let digest = &blob.digest;
        let url = format!(
            "{}{}",
            host.base,
            Route::Blob {
                name: name.clone(),
                digest: digest.clone(),
            }
            .path()
        );
        let scopes = [format!("repository:{name}:pull")];
        let store_err = |e| ClientError::store(digest, e);
        let new_ingest = || {
            let cs = content.clone();
            blocking(move || cs.writer())
        };
        let mut ingest: Ingest = new_ingest().await.map_err(store_err)?;
        let retries = self.options().download_retries;
        let mut attempt = 0;
        loop {
            let offset = ingest.written();
            let range = (offset > 0).then(|| {
                HeaderValue::from_str(&format!("bytes={offset}-")).expect("valid range header")
            });
            let headers: Vec<_> = range.into_iter().map(|r| (header::RANGE, r)).collect();
            let outcome = match self
                .transport
                .request(host, &scopes, Method::GET, &url, &headers, &empty)
                .await
            {
                Ok(resp) if resp.status() == StatusCode::PARTIAL_CONTENT && offset > 0 => {
                    let resumes = resp
                        .headers()
                        .get(header::CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("bytes "))
                        .and_then(|v| v.split('-').next())
                        .and_then(|s| s.parse::<u64>().ok())
                        == Some(offset);
                    if !resumes {
                        return Err(ClientError::BlobInvalid {
                            digest: digest.clone(),
                            url,
                            reason: format!("asked to resume at byte {offset}, got another range"),
                        });
                    }
                    self.stream_into(ingest, resp, blob, &url, progress).await
                }
                Ok(resp) if resp.status() == StatusCode::OK => {
                    if offset > 0 {
                        // No range support: start over.
                        drop(ingest);
                        ingest = new_ingest().await.map_err(store_err)?;
                    }
                    self.stream_into(ingest, resp, blob, &url, progress).await
                }
                Ok(resp) => return Err(error_from(&Method::GET, &url, resp).await),
                Err(e @ ClientError::Http { .. }) => Err((ingest, e)),
                Err(e) => return Err(e),
            };
            match outcome {
                Ok(done) => {
                    ingest = done;
                    break;
                }
                Err((partial, e))
                    if attempt < retries
                        && matches!(e, ClientError::Http { .. } | ClientError::Body { .. }) =>
                {
                    attempt += 1;
                    tracing::warn!("pull {digest} from {url}: {e}; retry {attempt}/{retries}");
                    report(
                        progress,
                        digest,
                        ProgressEvent::Retrying {
                            attempt,
                            error: e.to_string(),
                        },
                    );
                    tokio::time::sleep(self.options().retry_delay * 2u32.pow(attempt - 1)).await;
                    ingest = partial;
                }
                Err((_, e)) => return Err(e),
            }
        }
        report(progress, digest, ProgressEvent::Verifying);
        if ingest.written() != blob.size {
            let got = ingest.written();
            blocking(move || drop(ingest)).await;
            return Err(ClientError::BlobInvalid {
                digest: digest.clone(),
                url,
                reason: format!("truncated: got {got} of {} bytes", blob.size),
            });
        }
        let (d, size) = (digest.clone(), blob.size);
        blocking(move || ingest.commit(Some(&d), Some(size)))
            .await
            .map_err(store_err)?;
        report(progress, digest, ProgressEvent::DownloadComplete);
        Ok(())
    }

    /// Streams a response body into the ingest. On failure the ingest comes back with
    /// what was written, for a resumed attempt.
    async fn stream_into(
        &self,
        ingest: Ingest,
        resp: hyper::Response<hyper::body::Incoming>,
        blob: &Descriptor,
        url: &str,
        progress: &Option<ProgressFn>,
    ) -> std::result::Result<Ingest, (Ingest, ClientError)> {
        let mut current = ingest.written();
        let mut reported = current;
        let mut last_report = Instant::now();
        let sink = BlockingSink::new(ingest);
        let mut body = resp.into_body().into_data_stream();
        let mut failure = None;
        while let Some(frame) = body.next().await {
            match frame {
                Ok(bytes) => {
                    current += bytes.len() as u64;
                    if current > blob.size {
                        failure = Some(ClientError::BlobInvalid {
                            digest: blob.digest.clone(),
                            url: url.to_string(),
                            reason: format!("more than the {} bytes the manifest says", blob.size),
                        });
                        break;
                    }
                    if !sink.write(bytes).await {
                        break;
                    }
                    if current - reported >= PROGRESS_STEP
                        || last_report.elapsed().as_millis() >= 100
                    {
                        reported = current;
                        last_report = Instant::now();
                        report(
                            progress,
                            &blob.digest,
                            ProgressEvent::Downloading {
                                current,
                                total: blob.size,
                            },
                        );
                    }
                }
                Err(source) => {
                    failure = Some(ClientError::Body {
                        url: url.to_string(),
                        source,
                    });
                    break;
                }
            }
        }
        let (ingest, written) = sink.finish().await;
        if let Err(e) = written {
            let source = berth_store::StoreError::Io {
                context: "write ingest".to_string(),
                source: e,
            };
            return Err((ingest, ClientError::store(&blob.digest, source)));
        }
        match failure {
            Some(e) => Err((ingest, e)),
            None => {
                if reported != current {
                    report(
                        progress,
                        &blob.digest,
                        ProgressEvent::Downloading {
                            current,
                            total: blob.size,
                        },
                    );
                }
                Ok(ingest)
            }
        }
    }
}
