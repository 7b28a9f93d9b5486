//! Push: upload an image's blobs from berth-store's content store (skipping those the
//! registry has, mounting from sibling repositories when possible, monolithic or chunked),
//! then PUT its manifest. Indexes push their child manifests first.

use std::io::{Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use berth_store::{ContentStore, Digest, Reference};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::transport::{Host, ReqBody, empty, error_from, full, resolve_location};
use super::{Client, ClientError, Progress, ProgressEvent, ProgressFn, Result, repo_name};
use crate::manifest::{Descriptor, Manifest, ManifestKind, kind_of};
use crate::routes::{ManifestRef, RepoName, Route, with_query};

/// How to push.
#[derive(Clone, Default)]
pub struct PushOptions {
    /// Upload blobs larger than this in PATCH chunks of this size; `None`: one request.
    pub chunk_size: Option<u64>,
    /// Repositories on the same registry to try mounting blobs from.
    pub mount_from: Vec<String>,
    /// Receives per-blob progress.
    pub progress: Option<ProgressFn>,
}

fn report(progress: &Option<ProgressFn>, digest: &Digest, event: ProgressEvent) {
    if let Some(p) = progress {
        p(Progress {
            digest: digest.clone(),
            event,
        });
    }
}

const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("numeric and digest header values are valid")
}

/// A body streaming `len` bytes of `path` from `offset`, counting sent bytes into `sent`.
fn file_body(
    path: &std::path::Path,
    offset: u64,
    len: u64,
    sent: Arc<AtomicU64>,
) -> std::io::Result<ReqBody> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let reader = tokio::fs::File::from_std(file).take(len);
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, 256 << 10).map(move |chunk| {
        chunk.map(|b: Bytes| {
            sent.fetch_add(b.len() as u64, Ordering::Relaxed);
            Frame::data(b)
        })
    });
    Ok(StreamBody::new(stream).boxed_unsync())
}

struct PushJob {
    client: Client,
    host: Arc<Host>,
    name: RepoName,
    scopes: Vec<String>,
    content: ContentStore,
    options: PushOptions,
    shown: String,
}

impl Client {
    /// Pushes the manifest `manifest` (and everything it refers to) from `content` to
    /// `reference` (its tag, or its digest when it has no tag). Returns the manifest digest.
    pub async fn push(
        &self,
        reference: &Reference,
        content: &ContentStore,
        manifest: &Digest,
        options: &PushOptions,
    ) -> Result<Digest> {
        let job = self.push_job(reference, content, options).await?;
        let target = match reference.tag() {
            Some(t) => ManifestRef::Tag(t.to_string()),
            None => ManifestRef::Digest(manifest.clone()),
        };
        job.push_manifest(manifest, &target).await
    }

    /// Pushes an image manifest given as `bytes` (not stored locally: e.g. one listing
    /// compressed copies of local layers) after the blobs it names, which must be in
    /// `content`. Returns the manifest digest.
    pub async fn push_manifest_bytes(
        &self,
        reference: &Reference,
        content: &ContentStore,
        bytes: Bytes,
        options: &PushOptions,
    ) -> Result<Digest> {
        let job = self.push_job(reference, content, options).await?;
        let target = match reference.tag() {
            Some(t) => ManifestRef::Tag(t.to_string()),
            None => ManifestRef::Digest(Digest::from_bytes(&bytes)),
        };
        job.push_document(bytes, &target).await
    }

    async fn push_job(
        &self,
        reference: &Reference,
        content: &ContentStore,
        options: &PushOptions,
    ) -> Result<Arc<PushJob>> {
        let name = repo_name(reference)?;
        let host = self.transport.host(reference.domain()).await?;
        let mut scopes = vec![format!("repository:{name}:pull,push")];
        for from in &options.mount_from {
            if *from != name.as_str() {
                scopes.push(format!("repository:{from}:pull"));
            }
        }
        Ok(Arc::new(PushJob {
            client: self.clone(),
            host,
            name,
            scopes,
            content: content.clone(),
            options: options.clone(),
            shown: reference.to_string(),
        }))
    }
}

impl PushJob {
    async fn read_content(&self, digest: &Digest) -> Result<Bytes> {
        let cs = self.content.clone();
        let d = digest.clone();
        let read = tokio::task::spawn_blocking(move || cs.read_to_vec(&d))
            .await
            .expect("content read does not panic");
        match read {
            Ok(v) => Ok(Bytes::from(v)),
            Err(berth_store::StoreError::BlobNotFound(_)) => Err(ClientError::MissingContent {
                reference: self.shown.clone(),
                digest: digest.clone(),
            }),
            Err(e) => Err(ClientError::store(digest, e)),
        }
    }

    /// Pushes a stored manifest's dependencies, then the manifest under `target`.
    async fn push_manifest(
        self: &Arc<Self>,
        digest: &Digest,
        target: &ManifestRef,
    ) -> Result<Digest> {
        let bytes = self.read_content(digest).await?;
        self.push_document(bytes, target).await
    }

    /// Pushes a manifest's dependencies, then the manifest `bytes` under `target`.
    async fn push_document(self: &Arc<Self>, bytes: Bytes, target: &ManifestRef) -> Result<Digest> {
        let digest = Digest::from_bytes(&bytes);
        let (manifest, media_type) =
            Manifest::parse(&bytes, "").map_err(|source| ClientError::Manifest {
                reference: format!("{}@{digest}", self.shown),
                source,
            })?;
        match kind_of(&media_type) {
            Some(ManifestKind::Index) => {
                for child in &manifest.manifests {
                    Box::pin(
                        self.push_manifest(
                            &child.digest,
                            &ManifestRef::Digest(child.digest.clone()),
                        ),
                    )
                    .await?;
                }
            }
            _ => {
                self.push_blobs(manifest.blobs().into_iter().cloned().collect())
                    .await?
            }
        }
        let url = format!(
            "{}{}",
            self.host.base,
            Route::Manifest {
                name: self.name.clone(),
                reference: target.clone(),
            }
            .path()
        );
        let headers = [(header::CONTENT_TYPE, hv(&media_type))];
        let body = bytes.clone();
        let resp = self
            .client
            .transport
            .request(
                &self.host,
                &self.scopes,
                Method::PUT,
                &url,
                &headers,
                &move || Ok(full(body.clone())),
            )
            .await?;
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            return Err(error_from(&Method::PUT, &url, resp).await);
        }
        if let Some(d) = docker_digest(&resp)
            && d != digest
        {
            return Err(ClientError::ManifestDigest {
                reference: self.shown.clone(),
                expected: digest,
                actual: d,
            });
        }
        Ok(digest)
    }

    async fn push_blobs(self: &Arc<Self>, blobs: Vec<Descriptor>) -> Result<()> {
        let limit = Arc::new(Semaphore::new(
            self.client.options().max_concurrent_uploads.max(1),
        ));
        let mut tasks = JoinSet::new();
        for blob in blobs {
            let (job, limit) = (self.clone(), limit.clone());
            tasks.spawn(async move {
                let _permit = match limit.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        report(&job.options.progress, &blob.digest, ProgressEvent::Waiting);
                        limit
                            .acquire_owned()
                            .await
                            .expect("semaphore is never closed")
                    }
                };
                job.push_blob(&blob).await
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("blob upload task does not panic")?;
        }
        Ok(())
    }

    fn url(&self, route: Route) -> String {
        format!("{}{}", self.host.base, route.path())
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        self.client
            .transport
            .request(&self.host, &self.scopes, method, url, headers, &empty)
            .await
    }

    async fn push_blob(&self, blob: &Descriptor) -> Result<()> {
        let digest = &blob.digest;
        let progress = &self.options.progress;
        let head_url = self.url(Route::Blob {
            name: self.name.clone(),
            digest: digest.clone(),
        });
        let resp = self.send(Method::HEAD, &head_url, &[]).await?;
        match resp.status() {
            s if s.is_success() => {
                report(progress, digest, ProgressEvent::AlreadyExists);
                return Ok(());
            }
            StatusCode::NOT_FOUND => {}
            _ => return Err(error_from(&Method::HEAD, &head_url, resp).await),
        }
        let start_url = self.url(Route::UploadStart {
            name: self.name.clone(),
        });
        let mut session = None;
        let candidates: Vec<&String> = self
            .options
            .mount_from
            .iter()
            .filter(|f| f.as_str() != self.name.as_str())
            .collect();
        for (i, from) in candidates.iter().enumerate() {
            let url = with_query(&start_url, &[("mount", digest.as_str()), ("from", from)]);
            let resp = self.send(Method::POST, &url, &[]).await?;
            match resp.status() {
                StatusCode::CREATED => {
                    report(
                        progress,
                        digest,
                        ProgressEvent::Mounted {
                            from: from.to_string(),
                        },
                    );
                    return Ok(());
                }
                StatusCode::ACCEPTED => {
                    let loc = self.location(&resp, &url)?;
                    if i + 1 == candidates.len() {
                        session = Some(loc);
                    } else {
                        // Another candidate follows: drop this session rather than leak it.
                        let _ = self.send(Method::DELETE, &loc, &[]).await;
                    }
                }
                _ => return Err(error_from(&Method::POST, &url, resp).await),
            }
        }
        let mut location = match session {
            Some(l) => l,
            None => {
                let resp = self.send(Method::POST, &start_url, &[]).await?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(error_from(&Method::POST, &start_url, resp).await);
                }
                self.location(&resp, &start_url)?
            }
        };
        let path = self.content.path(digest);
        if !path.is_file() {
            return Err(ClientError::MissingContent {
                reference: self.shown.clone(),
                digest: digest.clone(),
            });
        }
        let sent = Arc::new(AtomicU64::new(0));
        let ticker = progress.clone().map(|p| {
            let (sent, d, total) = (sent.clone(), digest.clone(), blob.size);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    let current = sent.load(Ordering::Relaxed).min(total);
                    p(Progress {
                        digest: d.clone(),
                        event: ProgressEvent::Uploading { current, total },
                    });
                }
            })
        });
        let result = self.upload(&mut location, &path, blob, sent).await;
        if let Some(t) = ticker {
            t.abort();
        }
        result?;
        report(progress, digest, ProgressEvent::Pushed);
        Ok(())
    }

    fn location(&self, resp: &hyper::Response<hyper::body::Incoming>, url: &str) -> Result<String> {
        resp.headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(|l| resolve_location(&self.host.base, l))
            .ok_or_else(|| ClientError::Url {
                url: url.to_string(),
                reason: "upload response has no Location".to_string(),
            })
    }

    /// Sends the blob's bytes to the upload session at `location` and commits it.
    async fn upload(
        &self,
        location: &mut String,
        path: &std::path::Path,
        blob: &Descriptor,
        sent: Arc<AtomicU64>,
    ) -> Result<()> {
        let size = blob.size;
        let digest = &blob.digest;
        let chunk = self.options.chunk_size.filter(|c| *c > 0 && *c < size);
        let transport = &self.client.transport;
        let final_body_len = if let Some(chunk) = chunk {
            let mut offset = 0;
            while offset < size {
                let len = chunk.min(size - offset);
                let headers = [
                    (header::CONTENT_TYPE, OCTET_STREAM),
                    (header::CONTENT_LENGTH, hv(&len.to_string())),
                    (
                        header::CONTENT_RANGE,
                        hv(&format!("{offset}-{}", offset + len - 1)),
                    ),
                ];
                let (p, s) = (path.to_path_buf(), sent.clone());
                let resp = transport
                    .request(
                        &self.host,
                        &self.scopes,
                        Method::PATCH,
                        location,
                        &headers,
                        &move || file_body(&p, offset, len, s.clone()),
                    )
                    .await?;
                if resp.status() != StatusCode::ACCEPTED && resp.status() != StatusCode::NO_CONTENT
                {
                    return Err(error_from(&Method::PATCH, location, resp).await);
                }
                *location = self.location(&resp, location)?;
                offset += len;
            }
            0
        } else {
            size
        };
        let url = with_query(location, &[("digest", digest.as_str())]);
        let headers = [
            (header::CONTENT_TYPE, OCTET_STREAM),
            (header::CONTENT_LENGTH, hv(&final_body_len.to_string())),
        ];
        let (p, s) = (path.to_path_buf(), sent.clone());
        let resp = transport
            .request(
                &self.host,
                &self.scopes,
                Method::PUT,
                &url,
                &headers,
                &move || {
                    if final_body_len == 0 {
                        empty()
                    } else {
                        file_body(&p, 0, final_body_len, s.clone())
                    }
                },
            )
            .await?;
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            return Err(error_from(&Method::PUT, &url, resp).await);
        }
        if let Some(d) = docker_digest(&resp)
            && d != *digest
        {
            return Err(ClientError::BlobInvalid {
                digest: digest.clone(),
                url,
                reason: format!("registry stored it as {d}"),
            });
        }
        Ok(())
    }
}

fn docker_digest(resp: &hyper::Response<hyper::body::Incoming>) -> Option<Digest> {
    resp.headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Digest::parse(v).ok())
}
