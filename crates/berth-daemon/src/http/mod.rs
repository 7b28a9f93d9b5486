//! The Docker Engine API over HTTP: routing, version prefixes, errors, and the response
//! headers every reply carries. Handlers parse wire values, call one service method, and
//! turn its result into a response; no engine logic lives here.

mod build;
mod containers;
mod exec;
mod images;
mod metrics;
mod networks;
mod query;
mod stream;
mod system;
mod volumes;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::daemon::Daemon;
use crate::error::{ErrorKind, ServiceError};

pub use metrics::serve_metrics;
pub(crate) use query::QueryParams;

/// Shared state of every handler.
pub(crate) type AppState = Arc<Daemon>;

/// The API version a request asked for (its `/vX.Y` prefix, clamped), or the default.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub(crate) struct ApiVersion(pub u32, pub u32);

impl ApiVersion {
    fn parse(text: &str) -> Option<ApiVersion> {
        let (major, minor) = text.split_once('.')?;
        Some(ApiVersion(major.parse().ok()?, minor.parse().ok()?))
    }

    fn max() -> ApiVersion {
        Self::parse(berth_api::API_VERSION).unwrap_or(ApiVersion(1, 44))
    }

    /// Whether the request's version is below `major.minor`.
    pub(crate) fn below(self, major: u32, minor: u32) -> bool {
        self < ApiVersion(major, minor)
    }
}

/// Serves the API on `listener` until the process ends.
pub async fn serve(listener: tokio::net::UnixListener, daemon: Arc<Daemon>) -> std::io::Result<()> {
    // The prefix rewrite must run before routing, so it wraps the router rather than
    // being one of its layers.
    let app = tower::Layer::layer(
        &axum::middleware::map_request(strip_version),
        router(daemon),
    );
    axum::serve(
        listener,
        axum::ServiceExt::<Request>::into_make_service(app),
    )
    .await
}

fn router(daemon: Arc<Daemon>) -> Router {
    let router = Router::new()
        .route("/_ping", get(system::ping).head(system::ping))
        .route("/version", get(system::version))
        .route("/info", get(system::info))
        .route("/events", get(system::events))
        .route("/system/df", get(system::disk_usage))
        .route("/auth", post(system::auth))
        .merge(containers::routes())
        .merge(images::routes())
        .merge(exec::routes())
        .merge(networks::routes())
        .merge(volumes::routes())
        .merge(build::routes())
        .route("/session", post(not_implemented))
        .route("/grpc", post(not_implemented))
        .fallback(page_not_found)
        .layer(axum::middleware::map_response(common_headers));
    // Only with `--metrics-addr`: otherwise requests pay nothing for metrics.
    let router = if daemon.metrics.is_enabled() {
        router.layer(axum::middleware::from_fn_with_state(
            daemon.clone(),
            metrics::record_request,
        ))
    } else {
        router
    };
    router.with_state(daemon)
}

/// Strips `/vX.Y` and records the version; versions above ours are clamped, not refused,
/// because bollard pins newer versions than any daemon advertises.
async fn strip_version(mut req: Request) -> Result<Request, Response> {
    let path = req.uri().path().to_string();
    let mut version = ApiVersion::max();
    if let Some(rest) = path.strip_prefix("/v")
        && let Some((v, tail)) = rest.split_once('/')
        && let Some(parsed) = ApiVersion::parse(v)
    {
        let min = ApiVersion::parse(berth_api::MIN_API_VERSION).unwrap_or(ApiVersion(1, 24));
        if parsed < min {
            let message = format!(
                "client version {v} is too old. Minimum supported API version is {}, please upgrade your client to a newer version",
                berth_api::MIN_API_VERSION
            );
            return Err(error_response(StatusCode::BAD_REQUEST, &message));
        }
        version = if parsed > version { version } else { parsed };
        let new_path = format!("/{tail}");
        let pq = match req.uri().query() {
            Some(q) => format!("{new_path}?{q}"),
            None => new_path,
        };
        if let Ok(uri) = pq.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    req.extensions_mut().insert(version);
    Ok(req)
}

async fn common_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        "Api-Version",
        HeaderValue::from_static(berth_api::API_VERSION),
    );
    h.insert("Ostype", HeaderValue::from_static("linux"));
    if let Ok(server) =
        HeaderValue::from_str(&format!("Berth/{} (linux)", berth_api::ENGINE_VERSION))
    {
        h.insert(header::SERVER, server);
    }
    res
}

async fn page_not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "page not found")
}

async fn not_implemented() -> Response {
    error_response(
        StatusCode::NOT_IMPLEMENTED,
        "this engine does not implement this endpoint yet (BuildKit sessions need DOCKER_BUILDKIT=0)",
    )
}

/// A JSON error body with `Content-Type: application/json` exactly.
pub(crate) fn error_response(status: StatusCode, message: &str) -> Response {
    let body = serde_json::to_vec(&berth_api::errors::ErrorResponse {
        message: message.to_string(),
    })
    .unwrap_or_default();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let status = match self.kind {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::NotModified => return StatusCode::NOT_MODIFIED.into_response(),
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!("{}", self.message);
        }
        error_response(status, &self.message)
    }
}

/// A JSON body with the exact content type clients compare against.
pub(crate) fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Parses a JSON request body, answering 400 with the decoder's message on failure.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned + Default>(
    bytes: &[u8],
) -> Result<T, ServiceError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| ServiceError::invalid(format!("invalid JSON: {e}")))
}
