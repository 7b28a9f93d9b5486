//! `/volumes/...` handlers.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_api::models::VolumeCreateRequest;

use super::{ApiVersion, AppState, QueryParams, json, parse_body};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/volumes", get(list))
        .route("/volumes/create", post(create))
        .route("/volumes/prune", post(prune))
        .route("/volumes/{name}", get(inspect).delete(remove))
}

async fn list(State(d): State<AppState>, query: RawQuery) -> Response {
    let listed = QueryParams::parse(query.0.as_deref())
        .filters()
        .and_then(|f| d.list_volumes(&f));
    match listed {
        Ok(list) => json(StatusCode::OK, &list),
        Err(e) => e.into_response(),
    }
}

async fn create(State(d): State<AppState>, body: Bytes) -> Response {
    let created = async {
        let req: VolumeCreateRequest = parse_body(&body)?;
        d.create_volume(req).await
    };
    match created.await {
        Ok(volume) => json(StatusCode::CREATED, &volume),
        Err(e) => e.into_response(),
    }
}

async fn inspect(State(d): State<AppState>, Path(name): Path<String>) -> Response {
    match d.inspect_volume(&name) {
        Ok(volume) => json(StatusCode::OK, &volume),
        Err(e) => e.into_response(),
    }
}

async fn remove(State(d): State<AppState>, Path(name): Path<String>, query: RawQuery) -> Response {
    let force = QueryParams::parse(query.0.as_deref()).bool("force", false);
    match d.remove_volume(&name, force).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Below API 1.42 a prune took every unused volume, named ones too; moby keeps that for
/// older clients by adding `all=true` to their filters.
async fn prune(
    State(d): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    query: RawQuery,
) -> Response {
    let pruned = async {
        let mut filters = QueryParams::parse(query.0.as_deref()).filters()?;
        if version.below(1, 42) && !filters.get("all").iter().any(|v| v == "true") {
            filters.add("all", "true");
        }
        d.prune_volumes(&filters).await
    };
    match pruned.await {
        Ok(report) => json(StatusCode::OK, &report),
        Err(e) => e.into_response(),
    }
}
