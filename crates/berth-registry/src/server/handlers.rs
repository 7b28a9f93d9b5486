//! The endpoint handlers other than uploads: base, catalog, tags, manifests, blobs and
//! referrers.

use std::io::SeekFrom;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_store::Digest;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::auth::Grant;
use super::{AppState, uploads};
use crate::errors::{ApiError, ErrorCode};
use crate::manifest::{Descriptor, Manifest, ManifestKind, OCI_INDEX, kind_of};
use crate::routes::{MAX_MANIFEST_BYTES, ManifestRef, RepoName, Route, next_link};

/// Runs blocking storage work off the async workers; failures are internal errors.
pub(super) async fn blocking<T, E>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

/// Sets a header from a string known to be a valid header value.
pub(super) fn set(resp: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}

/// Dispatches an authorised request to its handler.
pub(super) async fn handle(
    state: Arc<AppState>,
    route: Route,
    method: Method,
    query: &str,
    headers: HeaderMap,
    body: Body,
    grant: Grant,
) -> Result<Response, ApiError> {
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let param = |k: &str| params.iter().find(|p| p.0 == k).map(|p| p.1.clone());
    match route {
        Route::Base => Ok(axum::Json(json!({})).into_response()),
        Route::Catalog => {
            let repos = blocking({
                let st = state.clone();
                move || st.storage.repositories()
            })
            .await?;
            let (page, link) = paginate(repos, param("n"), param("last"), &Route::Catalog)?;
            let mut resp = axum::Json(json!({ "repositories": page })).into_response();
            if let Some(l) = link {
                set(&mut resp, header::LINK, &l);
            }
            Ok(resp)
        }
        Route::Tags { name } => {
            let st = state.clone();
            let n = name.clone();
            let tags = blocking(move || st.storage.tags(&n))
                .await?
                .ok_or_else(|| ApiError::new(ErrorCode::NameUnknown).detail(name.to_string()))?;
            let route = Route::Tags { name: name.clone() };
            let (page, link) = paginate(tags, param("n"), param("last"), &route)?;
            let mut resp =
                axum::Json(json!({ "name": name.as_str(), "tags": page })).into_response();
            if let Some(l) = link {
                set(&mut resp, header::LINK, &l);
            }
            Ok(resp)
        }
        Route::Manifest { name, reference } => match method {
            Method::PUT => put_manifest(state, name, reference, headers, body).await,
            Method::DELETE => {
                let st = state.clone();
                let (n, r) = (name, reference.clone());
                if blocking(move || st.storage.delete_manifest(&n, &r)).await? {
                    Ok(StatusCode::ACCEPTED.into_response())
                } else {
                    Err(ApiError::new(ErrorCode::ManifestUnknown).detail(reference.to_string()))
                }
            }
            _ => get_manifest(state, name, reference, method == Method::HEAD).await,
        },
        Route::Blob { name, digest } => match method {
            Method::DELETE => {
                let st = state.clone();
                let d = digest.clone();
                if blocking(move || st.storage.unlink_blob(&name, &d)).await? {
                    Ok(StatusCode::ACCEPTED.into_response())
                } else {
                    Err(ApiError::new(ErrorCode::BlobUnknown).detail(digest.to_string()))
                }
            }
            _ => get_blob(state, name, digest, &headers, method == Method::HEAD).await,
        },
        Route::Referrers { name, digest } => {
            let st = state.clone();
            let d = digest.clone();
            let mut list = blocking(move || st.storage.referrers(&name, &d)).await?;
            let filter = param("artifactType");
            if let Some(f) = &filter {
                list.retain(|r| r.artifact_type.as_deref() == Some(f.as_str()));
            }
            let body = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list});
            let mut resp = (
                [(header::CONTENT_TYPE, OCI_INDEX)],
                serde_json::to_vec(&body).map_err(ApiError::internal)?,
            )
                .into_response();
            if filter.is_some() {
                set(
                    &mut resp,
                    header::HeaderName::from_static("oci-filters-applied"),
                    "artifactType",
                );
            }
            Ok(resp)
        }
        Route::UploadStart { name } => {
            uploads::start(
                state,
                name,
                param("mount"),
                param("from"),
                param("digest"),
                body,
                grant,
            )
            .await
        }
        Route::Upload { name, id } => match method {
            Method::PATCH => uploads::patch(state, name, id, &headers, body).await,
            Method::PUT => uploads::finish(state, name, id, param("digest"), body).await,
            Method::DELETE => uploads::cancel(state, name, id),
            _ => uploads::status(state, name, id),
        },
    }
}

/// One page of a sorted listing after `last`, and the `Link` to the next page.
fn paginate(
    items: Vec<String>,
    n: Option<String>,
    last: Option<String>,
    route: &Route,
) -> Result<(Vec<String>, Option<String>), ApiError> {
    let n = match n {
        Some(s) => Some(
            s.parse::<usize>()
                .map_err(|_| ApiError::new(ErrorCode::PaginationNumberInvalid).detail(s.clone()))?,
        ),
        None => None,
    };
    let mut rest: Vec<String> = match &last {
        Some(l) => items.into_iter().filter(|i| i > l).collect(),
        None => items,
    };
    match n {
        Some(n) if rest.len() > n => {
            rest.truncate(n);
            let link = rest.last().map(|l| next_link(route, n, l));
            Ok((rest, link))
        }
        _ => Ok((rest, None)),
    }
}

/// In proxy mode, refreshes a tag from upstream (keeping the cached manifest if the
/// upstream fails) or fetches a digest the cache lacks.
async fn proxy_manifest(
    state: &Arc<AppState>,
    name: &RepoName,
    reference: &ManifestRef,
) -> Result<(), ApiError> {
    let Some(proxy) = &state.proxy else {
        return Ok(());
    };
    let st = state.clone();
    let (n, r) = (name.clone(), reference.clone());
    let cached = blocking(move || st.storage.manifest(&n, &r))
        .await?
        .is_some();
    match reference {
        ManifestRef::Digest(_) if cached => Ok(()),
        _ => match proxy.fetch_manifest(&state.storage, name, reference).await {
            Err(e) if cached => {
                tracing::warn!("proxy: serving cached {name}:{reference}, upstream failed: {e}");
                Ok(())
            }
            other => other,
        },
    }
}

async fn get_manifest(
    state: Arc<AppState>,
    name: RepoName,
    reference: ManifestRef,
    head: bool,
) -> Result<Response, ApiError> {
    proxy_manifest(&state, &name, &reference).await?;
    let st = state.clone();
    let (n, r) = (name.clone(), reference.clone());
    let found = blocking(move || {
        let Some((digest, media_type)) = st.storage.manifest(&n, &r)? else {
            return Ok::<_, super::StorageError>(None);
        };
        let bytes = if head {
            None
        } else {
            Some(st.storage.content().read_to_vec(&digest)?)
        };
        let size = st.storage.content().size(&digest)?;
        Ok(Some((digest, media_type, bytes, size)))
    })
    .await?;
    let Some((digest, media_type, bytes, size)) = found else {
        return Err(ApiError::new(ErrorCode::ManifestUnknown).detail(format!("{name}:{reference}")));
    };
    let mut resp = Body::from(bytes.unwrap_or_default()).into_response();
    set(&mut resp, header::CONTENT_TYPE, &media_type);
    set(&mut resp, header::CONTENT_LENGTH, &size.to_string());
    set(&mut resp, DOCKER_CONTENT_DIGEST, digest.as_str());
    set(&mut resp, header::ETAG, &format!("\"{digest}\""));
    Ok(resp)
}

/// `Docker-Content-Digest`.
pub(super) const DOCKER_CONTENT_DIGEST: header::HeaderName =
    header::HeaderName::from_static("docker-content-digest");

async fn put_manifest(
    state: Arc<AppState>,
    name: RepoName,
    reference: ManifestRef,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_MANIFEST_BYTES as usize)
        .await
        .map_err(|_| {
            ApiError::new(ErrorCode::ManifestInvalid)
                .message("manifest too large")
                .detail(format!(
                    "manifests are limited to {MAX_MANIFEST_BYTES} bytes"
                ))
                .status(StatusCode::PAYLOAD_TOO_LARGE)
        })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (manifest, media_type) = Manifest::parse(&bytes, content_type)
        .map_err(|e| ApiError::new(ErrorCode::ManifestInvalid).detail(e.to_string()))?;
    let digest = Digest::from_bytes(&bytes);
    if let ManifestRef::Digest(d) = &reference
        && *d != digest
    {
        return Err(ApiError::new(ErrorCode::DigestInvalid)
            .detail(format!("manifest digest is {digest}, url says {d}")));
    }
    let st = state.clone();
    let n = name.clone();
    let m = manifest.clone();
    let mt = media_type.clone();
    let d = digest.clone();
    let tag = match &reference {
        ManifestRef::Tag(t) => Some(t.clone()),
        ManifestRef::Digest(_) => None,
    };
    let size = bytes.len() as u64;
    blocking(
        move || -> Result<Result<(), ApiError>, super::StorageError> {
            // Every referenced blob (image) or child manifest (index) must already be here.
            match kind_of(&mt) {
                Some(ManifestKind::Image) => {
                    for b in m.blobs() {
                        if !st.storage.blob_linked(&n, &b.digest) {
                            return Ok(Err(ApiError::new(ErrorCode::ManifestBlobUnknown)
                                .detail(b.digest.to_string())));
                        }
                    }
                }
                _ => {
                    for c in &m.manifests {
                        if st
                            .storage
                            .manifest(&n, &ManifestRef::Digest(c.digest.clone()))?
                            .is_none()
                        {
                            return Ok(Err(ApiError::new(ErrorCode::ManifestBlobUnknown)
                                .detail(c.digest.to_string())));
                        }
                    }
                }
            }
            st.storage.content().put_bytes(&bytes)?;
            let referrer = m.subject.as_ref().map(|s| {
                let artifact_type = m
                    .artifact_type
                    .clone()
                    .or_else(|| m.config.as_ref().map(|c| c.media_type.clone()));
                (
                    s.digest.clone(),
                    Descriptor {
                        media_type: mt.clone(),
                        digest: d.clone(),
                        size,
                        urls: Vec::new(),
                        platform: None,
                        artifact_type,
                        annotations: m.annotations.clone(),
                    },
                )
            });
            st.storage.put_manifest(
                &n,
                &d,
                &mt,
                tag.as_deref(),
                referrer.as_ref().map(|(s, desc)| (s, desc)),
            )?;
            Ok(Ok(()))
        },
    )
    .await??;
    let mut resp = StatusCode::CREATED.into_response();
    set(
        &mut resp,
        header::LOCATION,
        &format!("/v2/{name}/manifests/{digest}"),
    );
    set(&mut resp, DOCKER_CONTENT_DIGEST, digest.as_str());
    if let Some(s) = &manifest.subject {
        set(
            &mut resp,
            header::HeaderName::from_static("oci-subject"),
            s.digest.as_str(),
        );
    }
    Ok(resp)
}

/// Parses `Range: bytes=a-b` / `bytes=a-` against a blob of `size` bytes.
fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end: u64 = match b.trim() {
        "" => size.checked_sub(1)?,
        e => e.parse::<u64>().ok()?.min(size.checked_sub(1)?),
    };
    (start <= end).then_some((start, end))
}

async fn get_blob(
    state: Arc<AppState>,
    name: RepoName,
    digest: Digest,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, ApiError> {
    if let Some(proxy) = &state.proxy {
        let st = state.clone();
        let (n, d) = (name.clone(), digest.clone());
        if !blocking(move || Ok::<_, std::convert::Infallible>(st.storage.blob_linked(&n, &d)))
            .await?
            && !proxy.fetch_blob(&state.storage, &name, &digest).await?
        {
            return Err(ApiError::new(ErrorCode::BlobUnknown).detail(digest.to_string()));
        }
    }
    let st = state.clone();
    let (n, d) = (name.clone(), digest.clone());
    let size = blocking(move || {
        if st.storage.blob_linked(&n, &d) {
            st.storage.content().size(&d).map(Some)
        } else {
            Ok(None)
        }
    })
    .await?
    .ok_or_else(|| ApiError::new(ErrorCode::BlobUnknown).detail(digest.to_string()))?;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match range {
        Some(r) => match parse_range(r, size) {
            Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b),
            None => {
                return Err(ApiError::new(ErrorCode::RangeInvalid)
                    .detail(format!("{r} of a {size}-byte blob")));
            }
        },
        None => (StatusCode::OK, 0, size.saturating_sub(1)),
    };
    let len = if size == 0 { 0 } else { end - start + 1 };
    let body = if head || len == 0 {
        Body::empty()
    } else {
        let path = state.storage.content().path(&digest);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| ApiError::internal(format!("open {}: {e}", path.display())))?;
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(|e| ApiError::internal(format!("seek {}: {e}", path.display())))?;
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
            file.take(len),
            256 << 10,
        ))
    };
    let mut resp = (status, body).into_response();
    set(&mut resp, header::CONTENT_LENGTH, &len.to_string());
    set(&mut resp, header::CONTENT_TYPE, "application/octet-stream");
    set(&mut resp, header::ACCEPT_RANGES, "bytes");
    set(&mut resp, DOCKER_CONTENT_DIGEST, digest.as_str());
    set(&mut resp, header::ETAG, &format!("\"{digest}\""));
    if status == StatusCode::PARTIAL_CONTENT {
        set(
            &mut resp,
            header::CONTENT_RANGE,
            &format!("bytes {start}-{end}/{size}"),
        );
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_and_ranges() {
        let items: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let (page, link) =
            paginate(items.clone(), Some("2".into()), None, &Route::Catalog).unwrap();
        assert_eq!(page, ["a", "b"]);
        assert_eq!(
            link.as_deref(),
            Some("</v2/_catalog?last=b&n=2>; rel=\"next\"")
        );
        let (page, link) = paginate(
            items.clone(),
            Some("2".into()),
            Some("b".into()),
            &Route::Catalog,
        )
        .unwrap();
        assert_eq!(page, ["c", "d"]);
        assert!(link.is_none());
        assert!(paginate(items, Some("x".into()), None, &Route::Catalog).is_err());
        assert_eq!(parse_range("bytes=10-", 100), Some((10, 99)));
        assert_eq!(parse_range("bytes=0-1000", 100), Some((0, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
