//! Metrics over HTTP: the middleware that records every API request, and the `/metrics`
//! endpoint served on `--metrics-addr`.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use crate::daemon::Daemon;
use crate::metrics::EXPOSITION_CONTENT_TYPE;

/// Records a request's method, route template (never the concrete path, so label values stay
/// as few as the routes), status and time to the response head. Installed with
/// `Router::layer`, so the route is already matched.
pub(super) async fn record_request(
    State(daemon): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    daemon.metrics.record_request(
        method.as_str(),
        route.as_ref().map(MatchedPath::as_str),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Serves `GET /metrics` on `listener` (plain HTTP over TCP) until the process ends.
pub async fn serve_metrics(listener: tokio::net::TcpListener, daemon: Arc<Daemon>) {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(daemon);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("metrics endpoint stopped: {e}");
    }
}

async fn scrape(State(daemon): State<AppState>) -> Response {
    match daemon.metrics_exposition() {
        Some(text) => ([(header::CONTENT_TYPE, EXPOSITION_CONTENT_TYPE)], text).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
