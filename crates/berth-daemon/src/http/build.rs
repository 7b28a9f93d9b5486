//! `POST /build` (classic builder protocol: a context tar in, a JSON message stream out) and
//! `POST /build/prune`.

use std::collections::{BTreeMap, HashMap};

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;

use super::images::progress_stream;
use super::stream;
use super::{AppState, QueryParams, json};
use crate::build::{BuildRequest, PruneOptions};
use crate::error::{ServiceError, ServiceResult};

/// berth's own header carrying `--secret` values: base64 of a JSON map from secret id to
/// base64 content. Clients that don't know it (docker) never send secrets.
pub(crate) const SECRETS_HEADER: &str = "X-Berth-Build-Secrets";

/// berth's own header naming a context directory on the daemon's host, read in place
/// instead of a context tar (the request then has no body): `<device>:<inode>:<path>`, as
/// the client sees the directory.
pub(crate) const CONTEXT_DIR_HEADER: &str = "X-Berth-Context-Dir";

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/build", post(build))
        .route("/build/prune", post(prune))
}

/// A JSON object parameter (`buildargs`, `labels`); empty means none.
fn json_map(p: &QueryParams, key: &str) -> ServiceResult<BTreeMap<String, String>> {
    match p.get(key).filter(|v| !v.is_empty()) {
        None => Ok(BTreeMap::new()),
        Some(text) => {
            let map: BTreeMap<String, Option<String>> = serde_json::from_str(text)
                .map_err(|e| ServiceError::invalid(format!("invalid {key}: {e}")))?;
            // docker-py sends null for args given without a value: those are left unset.
            Ok(map
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect())
        }
    }
}

fn secrets(headers: &HeaderMap) -> ServiceResult<HashMap<String, Vec<u8>>> {
    let Some(value) = headers.get(SECRETS_HEADER) else {
        return Ok(HashMap::new());
    };
    let invalid =
        |e: &dyn std::fmt::Display| ServiceError::invalid(format!("invalid {SECRETS_HEADER}: {e}"));
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.as_bytes())
        .map_err(|e| invalid(&e))?;
    let map: HashMap<String, String> = serde_json::from_slice(&decoded).map_err(|e| invalid(&e))?;
    map.into_iter()
        .map(|(id, content)| {
            base64::engine::general_purpose::STANDARD
                .decode(content.as_bytes())
                .map(|bytes| (id, bytes))
                .map_err(|e| invalid(&e))
        })
        .collect()
}

fn context_dir(value: &[u8]) -> ServiceResult<crate::build::ContextDir> {
    let invalid = || ServiceError::invalid(format!("invalid {CONTEXT_DIR_HEADER}"));
    let text = std::str::from_utf8(value).map_err(|_| invalid())?;
    let mut parts = text.splitn(3, ':');
    let (Some(dev), Some(ino), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    Ok(crate::build::ContextDir {
        device: dev.parse().map_err(|_| invalid())?,
        inode: ino.parse().map_err(|_| invalid())?,
        path: std::path::PathBuf::from(path),
    })
}

fn request(p: &QueryParams, headers: &HeaderMap) -> ServiceResult<BuildRequest> {
    Ok(BuildRequest {
        dockerfile: p.get("dockerfile").unwrap_or_default().to_string(),
        tags: p.all("t").into_iter().filter(|t| !t.is_empty()).collect(),
        build_args: json_map(p, "buildargs")?,
        target: p.get("target").map(str::to_string),
        no_cache: p.bool("nocache", false),
        pull: p.bool("pull", false),
        labels: json_map(p, "labels")?,
        network_mode: p.get("networkmode").map(str::to_string),
        platform: p.get("platform").map(str::to_string),
        quiet: p.bool("q", false),
        secrets: secrets(headers)?,
        registry_auths: headers
            .get("X-Registry-Config")
            .and_then(|v| v.to_str().ok())
            .map(berth_api::auth::AuthConfig::from_config_header)
            .unwrap_or_default(),
        context_dir: headers
            .get(CONTEXT_DIR_HEADER)
            .map(|v| context_dir(v.as_bytes()))
            .transpose()?,
    })
}

async fn build(
    State(d): State<AppState>,
    query: RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let p = QueryParams::parse(query.0.as_deref());
    // Refused before the stream starts, so a client can fall back to sending a tar.
    let req = match request(&p, &headers).and_then(|req| {
        req.context_dir.as_ref().map(|d| d.verified()).transpose()?;
        Ok(req)
    }) {
        Ok(req) => req,
        Err(e) => return e.into_response(),
    };
    let remote = p
        .get("remote")
        .filter(|r| !r.is_empty())
        .map(str::to_string);
    progress_stream(move |sink| async move {
        let context = match remote {
            Some(url) => crate::remote::fetch(&url).await?,
            None => stream::body_reader(body),
        };
        d.build_image(req, context, sink).await.map(drop)
    })
}

async fn prune(State(d): State<AppState>, query: RawQuery) -> Response {
    let p = QueryParams::parse(query.0.as_deref());
    let opts = match (p.filters(), p.int("keep-storage")) {
        (Ok(filters), Ok(keep)) => PruneOptions {
            all: p.bool("all", false),
            keep_storage: keep.filter(|k| *k > 0).map(|k| k as u64),
            filters,
        },
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    match d.prune_build_cache(opts).await {
        Ok((deleted, freed)) => json(
            StatusCode::OK,
            &serde_json::json!({"CachesDeleted": deleted, "SpaceReclaimed": freed}),
        ),
        Err(e) => e.into_response(),
    }
}
