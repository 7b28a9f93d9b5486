//! Blob upload sessions, as distribution's `blobupload.go` runs them: `POST` starts one
//! (or mounts from another repository, or takes the whole blob with `?digest=`), `PATCH`
//! appends a chunk at the offset `Content-Range` names, `PUT ?digest=` appends the last
//! bytes and commits, `GET` reports progress, `DELETE` cancels.
//!
//! A session is a content-store ingest that hashes as it writes, so committing never
//! re-reads the data; the commit refuses a digest that does not match (DIGEST_INVALID) and
//! only then does the blob become visible. Sessions live in memory: a restarted server
//! forgets them and clients start over. Idle sessions are dropped after an hour.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_store::{Digest, Ingest, StoreError};
use futures_util::StreamExt;

use super::AppState;
use super::auth::{Access, Grant};
use super::handlers::{DOCKER_CONTENT_DIGEST, blocking, set};
use crate::errors::{ApiError, ErrorCode};
use crate::routes::{RepoName, Route, parse_upload_range};
use crate::sink::BlockingSink;

/// How long an untouched session is kept.
const SESSION_IDLE: Duration = Duration::from_secs(3600);

/// One upload session; `ingest` is `None` while a request is writing to it.
pub(crate) struct Slot {
    name: RepoName,
    offset: u64,
    touched: Instant,
    ingest: Option<Ingest>,
}

enum WriteError {
    TooLarge(u64),
    Body(String),
    Disk(std::io::Error),
}

impl WriteError {
    fn into_api(self, what: &str) -> ApiError {
        match self {
            WriteError::TooLarge(limit) => ApiError::new(ErrorCode::SizeInvalid)
                .message("blob too large")
                .detail(format!("{what}: uploads are limited to {limit} bytes"))
                .status(StatusCode::PAYLOAD_TOO_LARGE),
            WriteError::Body(e) => ApiError::new(ErrorCode::BlobUploadInvalid)
                .detail(format!("{what}: reading request body: {e}")),
            WriteError::Disk(e) => ApiError::internal(format!("{what}: {e}")),
        }
    }
}

/// Streams a request body into the ingest on a blocking thread, refusing to grow past `limit`.
async fn write_body(
    ingest: Ingest,
    body: Body,
    limit: Option<u64>,
) -> (Ingest, Result<(), WriteError>) {
    let mut written = ingest.written();
    let sink = BlockingSink::new(ingest);
    let mut stream = body.into_data_stream();
    let mut outcome = Ok(());
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                written += bytes.len() as u64;
                if let Some(limit) = limit
                    && written > limit
                {
                    outcome = Err(WriteError::TooLarge(limit));
                    break;
                }
                if !sink.write(bytes).await {
                    break;
                }
            }
            Err(e) => {
                outcome = Err(WriteError::Body(e.to_string()));
                break;
            }
        }
    }
    let (ingest, res) = sink.finish().await;
    match res {
        Err(e) => (ingest, Err(WriteError::Disk(e))),
        Ok(()) => (ingest, outcome),
    }
}

/// Commits the ingest as `digest` and links it into `name`.
async fn commit(
    state: &Arc<AppState>,
    name: &RepoName,
    ingest: Ingest,
    digest: Digest,
) -> Result<Response, ApiError> {
    let st = state.clone();
    let n = name.clone();
    let d = digest.clone();
    let committed = tokio::task::spawn_blocking(move || match ingest.commit(Some(&d), None) {
        Ok(_) => st.storage.link_blob(&n, &d).map(|()| Ok(())),
        Err(StoreError::DigestMismatch { actual, .. }) => Ok(Err(actual)),
        Err(e) => Err(super::StorageError::from(e)),
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    if let Err(actual) = committed {
        return Err(ApiError::new(ErrorCode::DigestInvalid).detail(format!(
            "upload to {name} has digest {actual}, not {digest}"
        )));
    }
    Ok(blob_created(name, &digest))
}

fn blob_created(name: &RepoName, digest: &Digest) -> Response {
    let mut resp = StatusCode::CREATED.into_response();
    let location = Route::Blob {
        name: name.clone(),
        digest: digest.clone(),
    }
    .path();
    set(&mut resp, header::LOCATION, &location);
    set(&mut resp, DOCKER_CONTENT_DIGEST, digest.as_str());
    set(&mut resp, header::CONTENT_LENGTH, "0");
    resp
}

fn session_response(status: StatusCode, name: &RepoName, id: &str, offset: u64) -> Response {
    let mut resp = status.into_response();
    let location = Route::Upload {
        name: name.clone(),
        id: id.to_string(),
    }
    .path();
    set(&mut resp, header::LOCATION, &location);
    set(
        &mut resp,
        header::RANGE,
        &format!("0-{}", offset.saturating_sub(1)),
    );
    set(
        &mut resp,
        header::HeaderName::from_static("docker-upload-uuid"),
        id,
    );
    set(&mut resp, header::CONTENT_LENGTH, "0");
    resp
}

fn parse_digest(d: Option<String>) -> Result<Digest, ApiError> {
    let d = d.ok_or_else(|| {
        ApiError::new(ErrorCode::DigestInvalid).detail("digest parameter missing")
    })?;
    Digest::parse(&d).map_err(|_| ApiError::new(ErrorCode::DigestInvalid).detail(d))
}

fn unknown(id: &str) -> ApiError {
    ApiError::new(ErrorCode::BlobUploadUnknown).detail(id.to_string())
}

fn new_id() -> Result<String, ApiError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(ApiError::internal)?;
    Ok(hex::encode(b))
}

/// `POST /v2/<name>/blobs/uploads/`.
pub(super) async fn start(
    state: Arc<AppState>,
    name: RepoName,
    mount: Option<String>,
    from: Option<String>,
    digest: Option<String>,
    body: Body,
    grant: Grant,
) -> Result<Response, ApiError> {
    if let (Some(mount), Some(from)) = (&mount, &from)
        && let (Ok(d), Ok(from)) = (Digest::parse(mount), RepoName::parse(from))
        && grant.covers(&[Access::repository(from.as_str(), &["pull"])])
    {
        let st = state.clone();
        let (n, d2) = (name.clone(), d.clone());
        let mounted = blocking(move || {
            if st.storage.blob_linked(&from, &d2) {
                st.storage.link_blob(&n, &d2).map(|()| true)
            } else {
                Ok(false)
            }
        })
        .await?;
        if mounted {
            return Ok(blob_created(&name, &d));
        }
    }
    let ingest = {
        let st = state.clone();
        blocking(move || st.storage.content().writer()).await?
    };
    if digest.is_some() {
        let digest = parse_digest(digest)?;
        let (ingest, written) = write_body(ingest, body, state.max_upload_size).await;
        written.map_err(|e| e.into_api(&format!("upload to {name}")))?;
        return commit(&state, &name, ingest, digest).await;
    }
    let id = new_id()?;
    let stale: Vec<Slot> = {
        let mut uploads = state.uploads.lock().unwrap_or_else(|p| p.into_inner());
        let expired: Vec<String> = uploads
            .iter()
            .filter(|(_, s)| s.touched.elapsed() > SESSION_IDLE)
            .map(|(k, _)| k.clone())
            .collect();
        let stale = expired.iter().filter_map(|k| uploads.remove(k)).collect();
        uploads.insert(
            id.clone(),
            Slot {
                name: name.clone(),
                offset: 0,
                touched: Instant::now(),
                ingest: Some(ingest),
            },
        );
        stale
    };
    if !stale.is_empty() {
        // Dropping an ingest removes its file: do it off the async workers.
        tokio::task::spawn_blocking(move || drop(stale));
    }
    Ok(session_response(StatusCode::ACCEPTED, &name, &id, 0))
}

/// Takes the session's ingest for writing; the slot stays, marked busy.
fn take(state: &AppState, name: &RepoName, id: &str) -> Result<(Ingest, u64), ApiError> {
    let mut uploads = state.uploads.lock().unwrap_or_else(|p| p.into_inner());
    let slot = uploads
        .get_mut(id)
        .filter(|s| s.name == *name)
        .ok_or_else(|| unknown(id))?;
    let ingest = slot.ingest.take().ok_or_else(|| {
        ApiError::new(ErrorCode::BlobUploadInvalid)
            .detail(format!("upload {id} is busy with another request"))
    })?;
    slot.touched = Instant::now();
    Ok((ingest, slot.offset))
}

fn put_back(state: &AppState, id: &str, ingest: Ingest) -> u64 {
    let mut uploads = state.uploads.lock().unwrap_or_else(|p| p.into_inner());
    let offset = ingest.written();
    if let Some(slot) = uploads.get_mut(id) {
        slot.offset = offset;
        slot.touched = Instant::now();
        slot.ingest = Some(ingest);
    }
    offset
}

fn remove(state: &AppState, id: &str) -> Option<Slot> {
    state
        .uploads
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(id)
}

/// `PATCH /v2/<name>/blobs/uploads/<id>`.
pub(super) async fn patch(
    state: Arc<AppState>,
    name: RepoName,
    id: String,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (ingest, offset) = take(&state, &name, &id)?;
    if let Some(range) = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
    {
        match parse_upload_range(range) {
            Some((start, _)) if start == offset => {}
            _ => {
                put_back(&state, &id, ingest);
                return Err(ApiError::new(ErrorCode::RangeInvalid).detail(format!(
                    "upload {id} is at offset {offset}, chunk says {range}"
                )));
            }
        }
    }
    let (ingest, written) = write_body(ingest, body, state.max_upload_size).await;
    match written {
        Ok(()) => {
            let offset = put_back(&state, &id, ingest);
            Ok(session_response(StatusCode::ACCEPTED, &name, &id, offset))
        }
        Err(e) => {
            if matches!(e, WriteError::Body(_)) {
                // A dropped chunk keeps what arrived; the client resumes from GET's Range.
                put_back(&state, &id, ingest);
            } else {
                remove(&state, &id);
                tokio::task::spawn_blocking(move || drop(ingest));
            }
            Err(e.into_api(&format!("upload {id} to {name}")))
        }
    }
}

/// `PUT /v2/<name>/blobs/uploads/<id>?digest=`.
pub(super) async fn finish(
    state: Arc<AppState>,
    name: RepoName,
    id: String,
    digest: Option<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let digest = parse_digest(digest)?;
    let (ingest, _) = take(&state, &name, &id)?;
    remove(&state, &id);
    let (ingest, written) = write_body(ingest, body, state.max_upload_size).await;
    if let Err(e) = written {
        tokio::task::spawn_blocking(move || drop(ingest));
        return Err(e.into_api(&format!("upload {id} to {name}")));
    }
    commit(&state, &name, ingest, digest).await
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`.
pub(super) fn cancel(
    state: Arc<AppState>,
    name: RepoName,
    id: String,
) -> Result<Response, ApiError> {
    let slot = {
        let mut uploads = state.uploads.lock().unwrap_or_else(|p| p.into_inner());
        match uploads.get(&id) {
            Some(s) if s.name == name => uploads.remove(&id),
            _ => None,
        }
    };
    let slot = slot.ok_or_else(|| unknown(&id))?;
    tokio::task::spawn_blocking(move || drop(slot));
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v2/<name>/blobs/uploads/<id>`.
pub(super) fn status(
    state: Arc<AppState>,
    name: RepoName,
    id: String,
) -> Result<Response, ApiError> {
    let uploads = state.uploads.lock().unwrap_or_else(|p| p.into_inner());
    let slot = uploads
        .get(&id)
        .filter(|s| s.name == name)
        .ok_or_else(|| unknown(&id))?;
    Ok(session_response(
        StatusCode::NO_CONTENT,
        &name,
        &id,
        slot.offset,
    ))
}
