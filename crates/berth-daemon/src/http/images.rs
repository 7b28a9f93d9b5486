//! `/images/...` handlers. Image names contain slashes and colons, so everything under
//! `/images/` that is not a fixed route goes through one wildcard and is split here.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use berth_api::images::ImageSummaryLegacy;
use berth_api::progress::JsonMessage;
use tokio::sync::mpsc;

use super::stream::{self, ChannelWriter};
use super::{ApiVersion, AppState, QueryParams, json};
use crate::error::ServiceError;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/images/json", get(list))
        .route("/images/create", post(create))
        .route("/images/load", post(load))
        .route("/images/get", get(save))
        .route("/images/prune", post(prune))
        .route("/images/{*rest}", any(by_name))
}

fn q(query: &RawQuery) -> QueryParams {
    QueryParams::parse(query.0.as_deref())
}

async fn list(
    State(d): State<AppState>,
    axum::Extension(version): axum::Extension<ApiVersion>,
    query: RawQuery,
) -> Response {
    let p = q(&query);
    let result = p
        .filters()
        .and_then(|f| d.list_images(p.bool("all", false), &f));
    match result {
        Ok(images) => {
            let legacy = version.below(1, 44);
            let body: Vec<ImageSummaryLegacy> = images
                .into_iter()
                .map(|summary| ImageSummaryLegacy {
                    virtual_size: legacy.then_some(summary.size),
                    summary,
                })
                .collect();
            json(StatusCode::OK, &body)
        }
        Err(e) => e.into_response(),
    }
}

/// `fromSrc` imports a tar; `fromImage` pulls, which needs the registry client.
async fn create(
    State(d): State<AppState>,
    query: RawQuery,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Response {
    let p = q(&query);
    let auth = registry_auth(&headers);
    if let Some(src) = p.get("fromSrc") {
        let source = if src == "-" {
            stream::body_reader(body)
        } else {
            match crate::remote::fetch(src).await {
                Ok(reader) => reader,
                Err(e) => return e.into_response(),
            }
        };
        let repo = p
            .get("repo")
            .map(|r| match p.get("tag").filter(|t| !t.is_empty()) {
                Some(tag) => format!("{r}:{tag}"),
                None => r.to_string(),
            });
        let changes = p.all("changes");
        let message = p
            .get("message")
            .filter(|m| !m.is_empty())
            .map(str::to_string);
        return match d
            .import_image(source, repo.as_deref(), &changes, message)
            .await
        {
            Ok(id) => json(StatusCode::OK, &JsonMessage::status(id)),
            Err(e) => e.into_response(),
        };
    }
    let Some(image) = p
        .get("fromImage")
        .filter(|i| !i.is_empty())
        .map(str::to_string)
    else {
        return ServiceError::invalid("fromImage or fromSrc is required").into_response();
    };
    // moby: `pull -a` may send the name with a trailing ':'.
    let image = image.strip_suffix(':').unwrap_or(&image).to_string();
    let tag = p.get("tag").filter(|t| !t.is_empty()).map(str::to_string);
    let platform = p.get("platform").map(str::to_string);
    // A bare repository name with no tag means every tag (the API's `pull -a`).
    let all_tags = tag.is_none()
        && berth_store::Reference::parse_named(&image)
            .is_ok_and(|r| r.tag().is_none() && r.digest().is_none());
    progress_stream(move |sink| async move {
        if all_tags {
            d.pull_all_tags(&image, platform.as_deref(), auth, sink)
                .await
        } else {
            d.pull_image(&image, tag.as_deref(), platform.as_deref(), auth, sink)
                .await
        }
    })
}

/// Runs a registry operation, streaming its progress messages and ending with an
/// `errorDetail` message if it fails once streaming started.
pub(super) fn progress_stream<F, Fut>(run: F) -> Response
where
    F: FnOnce(crate::registry::ProgressSink) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = crate::error::ServiceResult<()>> + Send + 'static,
{
    let (sink, mut messages) = mpsc::unbounded_channel::<JsonMessage>();
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let error_sink = sink.clone();
        let work = tokio::spawn(run(sink));
        // A client that goes away cancels the operation, as with moby.
        let cancel = work.abort_handle();
        let forward = async {
            loop {
                tokio::select! {
                    message = messages.recv() => match message {
                        Some(m) => {
                            if tx.send(stream::json_line(&m)).await.is_err() {
                                cancel.abort();
                                return;
                            }
                        }
                        None => return,
                    },
                    () = tx.closed() => {
                        cancel.abort();
                        return;
                    }
                }
            }
        };
        let finished = async {
            let outcome = work.await;
            let message = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.message),
                Err(e) => Some(format!("task failed: {e}")),
            };
            if let Some(m) = message {
                let _ = error_sink.send(JsonMessage::error(m));
            }
            drop(error_sink);
        };
        tokio::join!(forward, finished);
    });
    stream::channel_response(rx, "application/json")
}

/// The `X-Registry-Auth` header, if it carries credentials.
fn registry_auth(headers: &axum::http::HeaderMap) -> Option<berth_api::auth::AuthConfig> {
    headers
        .get("X-Registry-Auth")
        .and_then(|v| v.to_str().ok())
        .and_then(berth_api::auth::AuthConfig::from_header)
}

async fn load(State(d): State<AppState>, body: Body) -> Response {
    match d.load_images(stream::body_reader(body)).await {
        Ok(lines) => {
            let mut out = Vec::new();
            for line in lines {
                out.extend_from_slice(&stream::json_line(&JsonMessage::stream(format!(
                    "{line}\n"
                ))));
            }
            Response::builder()
                .status(StatusCode::OK)
                .header(axum::http::header::CONTENT_TYPE, "application/json")
                .body(Body::from(out))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Err(e) => e.into_response(),
    }
}

async fn save(State(d): State<AppState>, query: RawQuery) -> Response {
    save_names(d, q(&query).all("names"))
}

fn save_names(d: AppState, names: Vec<String>) -> Response {
    if names.is_empty() {
        return ServiceError::invalid("no images named").into_response();
    }
    if let Err(e) = d.check_images_exist(&names) {
        return e.into_response();
    }
    let (tx, rx) = mpsc::channel(16);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = d.save_images(&names, ChannelWriter(tx)) {
            tracing::warn!("save failed: {e}");
        }
    });
    stream::channel_response(rx, "application/x-tar")
}

async fn prune(State(d): State<AppState>, query: RawQuery) -> Response {
    let result = async { d.prune_images(&q(&query).filters()?).await };
    match result.await {
        Ok(r) => json(StatusCode::OK, &r),
        Err(e) => e.into_response(),
    }
}

/// `/images/{name}/json|history|tag|get|push`, and `DELETE /images/{name}`.
async fn by_name(
    State(d): State<AppState>,
    method: Method,
    headers: axum::http::HeaderMap,
    Path(rest): Path<String>,
    query: RawQuery,
) -> Response {
    let p = q(&query);
    let (name, action) = match rest.rsplit_once('/') {
        Some((name, action @ ("json" | "history" | "tag" | "get" | "push"))) => {
            (name.to_string(), action)
        }
        _ => (rest.clone(), ""),
    };
    match (method, action) {
        (Method::GET, "json") => match d.inspect_image(&name) {
            Ok(i) => json(StatusCode::OK, &i),
            Err(e) => e.into_response(),
        },
        (Method::GET, "history") => match d.image_history(&name) {
            Ok(h) => json(StatusCode::OK, &h),
            Err(e) => e.into_response(),
        },
        (Method::POST, "tag") => {
            let repo = p.get("repo").unwrap_or_default();
            match d
                .tag_image(&name, repo, p.get("tag").unwrap_or_default())
                .await
            {
                Ok(()) => StatusCode::CREATED.into_response(),
                Err(e) => e.into_response(),
            }
        }
        (Method::GET, "get") => save_names(d, vec![name]),
        (Method::POST, "push") => {
            let tag = p.get("tag").map(str::to_string);
            let auth = registry_auth(&headers);
            progress_stream(move |sink| async move {
                d.push_image(&name, tag.as_deref(), auth, sink).await
            })
        }
        (Method::DELETE, "") => match d.remove_image(&name, p.bool("force", false)).await {
            Ok(items) => json(StatusCode::OK, &items),
            Err(e) => e.into_response(),
        },
        _ => super::error_response(StatusCode::NOT_FOUND, "page not found"),
    }
}
