//! `/containers/...` handlers.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use berth_api::models::{
    ContainerCreateBody, ContainerCreateResponse, ContainerUpdateBody, ContainerUpdateResponse,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::stream::{self, Hijacked};
use super::{ApiVersion, AppState, QueryParams, json, parse_body};
use crate::containers::summary::ListOptions;
use crate::containers::{
    CommitRequest, CreateRequest, ExtractRequest, LogsRequest, StatsRequest, WaitCondition,
};
use crate::error::{ServiceError, ServiceResult};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/containers/create", post(create))
        .route("/containers/json", get(list))
        .route("/containers/prune", post(prune))
        .route("/containers/{id}/json", get(inspect))
        .route("/containers/{id}/start", post(start))
        .route("/containers/{id}/stop", post(stop))
        .route("/containers/{id}/kill", post(kill))
        .route("/containers/{id}/restart", post(restart))
        .route("/containers/{id}/wait", post(wait))
        .route("/containers/{id}/rename", post(rename))
        .route("/containers/{id}/resize", post(resize))
        .route("/containers/{id}/attach", post(attach))
        .route("/containers/{id}/logs", get(logs))
        .route("/containers/{id}/export", get(export))
        .route("/containers/{id}/changes", get(changes))
        .route("/commit", post(commit))
        .route("/containers/{id}", delete(remove))
        // Operating on running containers: pause, top, stats, update, archive (cp).
        .route("/containers/{id}/pause", post(pause))
        .route("/containers/{id}/unpause", post(unpause))
        .route("/containers/{id}/top", get(top))
        .route("/containers/{id}/stats", get(stats))
        .route("/containers/{id}/update", post(update))
        .route(
            "/containers/{id}/archive",
            get(archive_get).head(archive_head).put(archive_put),
        )
}

type Query = RawQuery;

fn q(query: &Query) -> QueryParams {
    QueryParams::parse(query.0.as_deref())
}

async fn create(State(d): State<AppState>, query: Query, body: Bytes) -> Response {
    let run = async {
        let body: ContainerCreateBody = parse_body(&body)?;
        let params = q(&query);
        let endpoints = super::networks::endpoint_requests(body.networking_config.as_ref());
        let (config, host_config) = split_create_body(body);
        let req = CreateRequest {
            name: params.get("name").map(str::to_string),
            config,
            host_config,
            endpoints,
        };
        d.create_container(req).await
    };
    match run.await {
        Ok((id, warnings)) => json(
            StatusCode::CREATED,
            &ContainerCreateResponse { id, warnings },
        ),
        Err(e) => e.into_response(),
    }
}

/// The create body is `Config` with `HostConfig` and `NetworkingConfig` embedded.
fn split_create_body(
    body: ContainerCreateBody,
) -> (
    berth_api::models::ContainerConfig,
    berth_api::models::HostConfig,
) {
    let value = serde_json::to_value(&body).unwrap_or_default();
    let config = serde_json::from_value(value).unwrap_or_default();
    (config, body.host_config.unwrap_or_default())
}

async fn list(State(d): State<AppState>, query: Query) -> Response {
    let params = q(&query);
    let result = params.filters().and_then(|filters| {
        let opts = ListOptions {
            all: params.bool("all", false),
            limit: params.int("limit")?.unwrap_or(-1),
            size: params.bool("size", false),
            filters,
        };
        d.list_containers(&opts)
    });
    match result {
        Ok(list) => json(StatusCode::OK, &list),
        Err(e) => e.into_response(),
    }
}

async fn inspect(State(d): State<AppState>, Path(id): Path<String>, query: Query) -> Response {
    match d.inspect_container(&id, q(&query).bool("size", false)) {
        Ok(c) => json(StatusCode::OK, &c),
        Err(e) => e.into_response(),
    }
}

fn no_content(result: ServiceResult<()>) -> Response {
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn start(State(d): State<AppState>, Path(id): Path<String>) -> Response {
    no_content(d.start_container(&id).await)
}

async fn stop(State(d): State<AppState>, Path(id): Path<String>, query: Query) -> Response {
    let p = q(&query);
    let result = async {
        let t = p.int("t")?.or(p.int("timeout")?);
        d.stop_container(&id, t, p.get("signal")).await
    };
    no_content(result.await)
}

async fn kill(State(d): State<AppState>, Path(id): Path<String>, query: Query) -> Response {
    no_content(d.kill_container(&id, q(&query).get("signal")).await)
}

async fn restart(State(d): State<AppState>, Path(id): Path<String>, query: Query) -> Response {
    let p = q(&query);
    let result = async { d.restart_container(&id, p.int("t")?).await };
    no_content(result.await)
}

async fn pause(State(d): State<AppState>, Path(id): Path<String>) -> Response {
    no_content(d.pause_container(&id).await)
}

async fn unpause(State(d): State<AppState>, Path(id): Path<String>) -> Response {
    no_content(d.unpause_container(&id).await)
}

async fn top(State(d): State<AppState>, Path(id): Path<String>, query: Query) -> Response {
    let p = q(&query);
    match d.top_container(&id, p.get("ps_args").unwrap_or("")).await {
        Ok(top) => json(StatusCode::OK, &top),
        Err(e) => e.into_response(),
    }
}

/// One JSON document per sample, each flushed as it is taken.
async fn stats(State(d): State<AppState>, Path(id): Path<String>, query: Query) -> Response {
    let p = q(&query);
    let request = StatsRequest {
        stream: p.bool("stream", true),
        one_shot: p.bool("one-shot", false),
    };
    if request.stream && request.one_shot {
        return ServiceError::invalid("cannot have stream=true and one-shot=true").into_response();
    }
    let mut samples = match d.container_stats(&id, request) {
        Ok(rx) => rx,
        Err(e) => return e.into_response(),
    };
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        while let Some(sample) = samples.recv().await {
            if tx.send(stream::json_line(&sample)).await.is_err() {
                break;
            }
        }
    });
    stream::channel_response(rx, "application/json")
}

async fn update(State(d): State<AppState>, Path(id): Path<String>, body: Bytes) -> Response {
    let result = async {
        let body: ContainerUpdateBody = parse_body(&body)?;
        d.update_container(&id, body).await
    };
    match result.await {
        Ok(warnings) => json(
            StatusCode::OK,
            &ContainerUpdateResponse {
                warnings: Some(warnings),
            },
        ),
        Err(e) => e.into_response(),
    }
}

fn archive_path(p: &QueryParams) -> ServiceResult<String> {
    p.get("path")
        .filter(|path| !path.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ServiceError::invalid("path is required"))
}

fn with_path_stat(
    mut response: Response,
    stat: &berth_api::archive::ContainerPathStat,
) -> Response {
    if let Ok(value) = axum::http::HeaderValue::from_str(&stat.to_header()) {
        response
            .headers_mut()
            .insert(berth_api::archive::PATH_STAT_HEADER, value);
    }
    response
}

async fn archive_head(State(d): State<AppState>, Path(id): Path<String>, query: Query) -> Response {
    let result = async {
        let path = archive_path(&q(&query))?;
        d.stat_container_path(&id, &path).await
    };
    match result.await {
        Ok(stat) => with_path_stat(StatusCode::OK.into_response(), &stat),
        Err(e) => e.into_response(),
    }
}

/// The tar stream, with the path's stat in a header (sent before the first byte).
async fn archive_get(State(d): State<AppState>, Path(id): Path<String>, query: Query) -> Response {
    let path = match archive_path(&q(&query)) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let (tx, rx) = mpsc::channel(16);
    let out = Box::new(stream::ChannelWriter(tx));
    match d.archive_container_path(&id, &path, out).await {
        Ok(stat) => with_path_stat(stream::channel_response(rx, "application/x-tar"), &stat),
        Err(e) => e.into_response(),
    }
}

async fn archive_put(
    State(d): State<AppState>,
    Path(id): Path<String>,
    query: Query,
    req: Request,
) -> Response {
    let p = q(&query);
    let result = async {
        let path = archive_path(&p)?;
        let request = ExtractRequest {
            no_overwrite_dir_non_dir: p.bool("noOverwriteDirNonDir", false),
            copy_uid_gid: p.bool("copyUIDGID", false),
        };
        let body = stream::body_reader(req.into_body());
        d.extract_to_container(&id, &path, request, body).await
    };
    match result.await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn rename(State(d): State<AppState>, Path(id): Path<String>, query: Query) -> Response {
    let p = q(&query);
    let Some(name) = p.get("name").filter(|n| !n.is_empty()) else {
        return ServiceError::invalid("name is required").into_response();
    };
    no_content(d.rename_container(&id, name).await)
}

async fn resize(State(d): State<AppState>, Path(id): Path<String>, query: Query) -> Response {
    let p = q(&query);
    let result = async {
        let h = p.int("h")?.unwrap_or(0).clamp(0, u16::MAX as i64) as u16;
        let w = p.int("w")?.unwrap_or(0).clamp(0, u16::MAX as i64) as u16;
        d.resize_container(&id, h, w).await
    };
    match result.await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn remove(State(d): State<AppState>, Path(id): Path<String>, query: Query) -> Response {
    let p = q(&query);
    no_content(
        d.remove_container(&id, p.bool("force", false), p.bool("v", false))
            .await,
    )
}

async fn prune(State(d): State<AppState>, query: Query) -> Response {
    let result = async { d.prune_containers(&q(&query).filters()?).await };
    match result.await {
        Ok(r) => json(StatusCode::OK, &r),
        Err(e) => e.into_response(),
    }
}

/// Sends the 200 headers at once and the status body when the condition holds: the CLI
/// blocks on the headers before it sends `start`.
async fn wait(State(d): State<AppState>, Path(id): Path<String>, query: Query) -> Response {
    let p = q(&query);
    let waiting = WaitCondition::parse(p.get("condition").unwrap_or(""))
        .and_then(|condition| d.wait_container(&id, condition));
    let waiting = match waiting {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let code = waiting.await;
        let body = serde_json::json!({"StatusCode": code, "Error": null});
        let _ = tx.send(stream::json_line(&body)).await;
    });
    stream::channel_response(rx, "application/json")
}

async fn logs(
    State(d): State<AppState>,
    Path(id): Path<String>,
    axum::Extension(version): axum::Extension<ApiVersion>,
    query: Query,
) -> Response {
    let p = q(&query);
    let req = match logs_request(&p) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match d.container_logs(&id, req) {
        Ok((tty, rx)) => stream::channel_response(rx, stream_content_type(tty, version)),
        Err(e) => e.into_response(),
    }
}

fn logs_request(p: &QueryParams) -> ServiceResult<LogsRequest> {
    let time = |key: &str| -> ServiceResult<Option<chrono::DateTime<chrono::Utc>>> {
        match p.get(key).filter(|v| !v.is_empty() && *v != "0") {
            None => Ok(None),
            Some(v) => {
                let secs: f64 = v
                    .parse()
                    .map_err(|_| ServiceError::invalid(format!("invalid {key}: {v}")))?;
                let nanos = (secs.fract() * 1e9) as u32;
                Ok(chrono::DateTime::from_timestamp(secs.trunc() as i64, nanos))
            }
        }
    };
    let tail = match p.get("tail") {
        None | Some("") | Some("all") => None,
        Some(n) => {
            let n: i64 = n
                .parse()
                .map_err(|_| ServiceError::invalid(format!("invalid tail: {n}")))?;
            (n >= 0).then_some(n as usize)
        }
    };
    Ok(LogsRequest {
        follow: p.bool("follow", false),
        stdout: p.bool("stdout", false),
        stderr: p.bool("stderr", false),
        since: time("since")?,
        until: time("until")?,
        timestamps: p.bool("timestamps", false),
        tail,
    })
}

fn stream_content_type(tty: bool, version: ApiVersion) -> &'static str {
    if tty || version.below(1, 42) {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    }
}

async fn export(State(d): State<AppState>, Path(id): Path<String>) -> Response {
    if let Err(e) = d.containers.get(&id) {
        return e.into_response();
    }
    let (tx, rx) = mpsc::channel(16);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = d.export_container(&id, stream::ChannelWriter(tx)) {
            tracing::warn!(container = %id, "export failed: {e}");
        }
    });
    stream::channel_response(rx, "application/x-tar")
}

async fn changes(State(d): State<AppState>, Path(id): Path<String>) -> Response {
    match d.container_changes(&id).await {
        Ok(changes) => json(StatusCode::OK, &changes),
        Err(e) => e.into_response(),
    }
}

/// `POST /commit`: the body, when not empty, is a container config to start from.
async fn commit(State(d): State<AppState>, query: Query, body: Bytes) -> Response {
    let p = q(&query);
    let run = async {
        let config: Option<berth_api::models::ContainerConfig> = parse_body(&body)?;
        let text = |key: &str| p.get(key).unwrap_or_default().to_string();
        let request = CommitRequest {
            container: text("container"),
            repo: text("repo"),
            tag: text("tag"),
            author: text("author"),
            comment: text("comment"),
            pause: p.bool("pause", true),
            changes: p.all("changes"),
            config,
        };
        d.commit_container(request).await
    };
    match run.await {
        Ok(id) => json(StatusCode::CREATED, &serde_json::json!({ "Id": id })),
        Err(e) => e.into_response(),
    }
}

/// Hijacks the connection and bridges it to the container's stdio through the shim.
async fn attach(
    State(d): State<AppState>,
    Path(id): Path<String>,
    axum::Extension(version): axum::Extension<ApiVersion>,
    query: Query,
    req: Request,
) -> Response {
    let p = q(&query);
    let (stdin, stdout, stderr) = (
        p.bool("stdin", false),
        p.bool("stdout", false),
        p.bool("stderr", false),
    );
    let replay_logs = p.bool("logs", false);
    let stream_live = p.bool("stream", false);
    let detach_keys = match crate::exec::detach_sequence(p.get("detachKeys")) {
        Ok(keys) => keys,
        Err(keys) => {
            return ServiceError::invalid(format!("Invalid detach keys ({keys}) provided"))
                .into_response();
        }
    };
    let (tty, pending) = match d
        .attach_container(&id, stdin && stream_live, stdout, stderr)
        .await
    {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let replay = if replay_logs {
        let logs = LogsRequest {
            stdout,
            stderr,
            ..Default::default()
        };
        match d.container_logs(&id, logs) {
            Ok((_, rx)) => Some(rx),
            Err(e) => return e.into_response(),
        }
    } else {
        None
    };
    // Like moby, the keys are watched for only on a terminal.
    let detach = (tty && stdin && stream_live).then(|| stream::DetachKeys::new(detach_keys));
    stream::hijack(
        req,
        stream_content_type(tty, version),
        move |conn| async move {
            let live = stream_live.then_some(pending);
            if bridge(conn, tty, replay, live, detach).await {
                d.attach_detached(&id);
            }
        },
    )
}

/// How long the first frame waits after the 101 headers: docker-py reads the headers
/// through a buffered reader and loses frames that arrive in the same read.
const FIRST_FRAME_GAP: Duration = Duration::from_millis(20);

/// Returns true when the client detached with its keys.
async fn bridge(
    mut conn: Hijacked,
    tty: bool,
    replay: Option<mpsc::Receiver<Bytes>>,
    live: Option<
        tokio::sync::oneshot::Receiver<ServiceResult<berth_runtime::client::AttachStream>>,
    >,
    detach: Option<stream::DetachKeys>,
) -> bool {
    tokio::time::sleep(FIRST_FRAME_GAP).await;
    if let Some(mut rx) = replay {
        while let Some(chunk) = rx.recv().await {
            if conn.write_all(&chunk).await.is_err() {
                return false;
            }
        }
    }
    let Some(live) = live else {
        let _ = conn.shutdown().await;
        return false;
    };
    let attached = match live.await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            tracing::debug!("attach ended before start: {e}");
            let _ = conn.shutdown().await;
            return false;
        }
        Err(_) => {
            let _ = conn.shutdown().await;
            return false;
        }
    };
    let (mut from_shim, to_shim) = attached.into_split();
    let (frames_tx, frames) = mpsc::channel(16);
    let reader = tokio::spawn(async move {
        while let Ok(Some(frame)) = from_shim.next_frame().await {
            if frames_tx.send(frame).await.is_err() {
                break;
            }
        }
    });
    let end = stream::pump(conn, tty, frames, to_shim, detach).await;
    // Ended by the client: the shim connection goes now, not at the container's next output.
    reader.abort();
    // Dropping the stdin half of a detached terminal is harmless: the shim keeps a
    // terminal's input open when an attached client goes.
    matches!(end, stream::PumpEnd::Detached(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_splits_into_config_and_host_config() {
        let body: ContainerCreateBody = serde_json::from_str(
            r#"{"Image":"busybox","Cmd":["echo","hi"],"Tty":true,"HostConfig":{"AutoRemove":true,"NetworkMode":"default"},"NetworkingConfig":{"EndpointsConfig":{"default":{}}}}"#,
        )
        .unwrap();
        let (config, host) = split_create_body(body);
        assert_eq!(config.image.as_deref(), Some("busybox"));
        assert_eq!(config.cmd, Some(vec!["echo".to_string(), "hi".to_string()]));
        assert_eq!(config.tty, Some(true));
        assert_eq!(host.auto_remove, Some(true));
    }

    #[test]
    fn logs_query_parses_times_and_tail() {
        let p = QueryParams::parse(Some("stdout=1&since=1700000000.5&tail=10&follow=true"));
        let r = logs_request(&p).unwrap();
        assert!(r.stdout && !r.stderr && r.follow);
        assert_eq!(r.tail, Some(10));
        assert_eq!(r.since.unwrap().timestamp(), 1_700_000_000);
        assert_eq!(
            logs_request(&QueryParams::parse(Some("tail=all")))
                .unwrap()
                .tail,
            None
        );
    }
}
