//! `/containers/{id}/exec` and `/exec/...` handlers.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_api::models::{ExecConfig, ExecStartConfig};
use tokio::sync::{mpsc, oneshot};

use super::stream;
use super::{AppState, QueryParams, json, parse_body};
use crate::exec::ExecStart;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/containers/{id}/exec", post(create))
        .route("/exec/{id}/start", post(start))
        .route("/exec/{id}/resize", post(resize))
        .route("/exec/{id}/json", get(inspect))
}

async fn create(State(d): State<AppState>, Path(id): Path<String>, body: Bytes) -> Response {
    let result = parse_body::<ExecConfig>(&body).and_then(|config| d.create_exec(&id, config));
    match result {
        // bollard's IdResponse serialises as `id`; docker sends `Id`.
        Ok(exec_id) => json(StatusCode::CREATED, &serde_json::json!({ "Id": exec_id })),
        Err(e) => e.into_response(),
    }
}

/// Detached: a plain 200 once the process runs. Attached: the stream is hijacked only after
/// the process started, so a start error is still an ordinary JSON error response.
async fn start(State(d): State<AppState>, Path(id): Path<String>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => return super::error_response(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let config: ExecStartConfig = match parse_body(&bytes) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let detach = config.detach.unwrap_or(false);
    let (tty, detach_keys) = match d.check_exec_startable(&id) {
        Ok(exec) => (exec.tty(), exec.detach_keys()),
        Err(e) => return e.into_response(),
    };
    if detach {
        return match d.start_exec(&id, true).await {
            Ok(_) => StatusCode::OK.into_response(),
            Err(e) => e.into_response(),
        };
    }
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let console_size = config.console_size.filter(|s| s.len() == 2 && s[0] > 0);
    let req = Request::from_parts(parts, axum::body::Body::empty());
    // Like moby, the stream is hijacked before the process starts: a start failure (command
    // not found) is written into the stream, and the exec's exit code tells the CLI the rest.
    stream::hijack(req, content_type, move |mut conn| async move {
        let stream = match d.start_exec(&id, false).await {
            Ok(ExecStart::Attached(stream)) => stream,
            Ok(ExecStart::Detached) => return,
            Err(e) => {
                let text = format!("OCI runtime exec failed: {}: unknown\r\n", e.message);
                let bytes = if tty {
                    text.into_bytes()
                } else {
                    berth_api::stdcopy::encode(
                        berth_api::stdcopy::StdStream::Stdout,
                        text.as_bytes(),
                    )
                };
                let _ = tokio::io::AsyncWriteExt::write_all(&mut conn, &bytes).await;
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut conn).await;
                return;
            }
        };
        if let Some(size) = console_size {
            let _ = d.resize_exec(&id, size[0] as u16, size[1] as u16).await;
        }
        let (mut output, input) = stream.into_split();
        let (frames_tx, frames) = mpsc::channel(16);
        let (drained_tx, drained) = oneshot::channel::<()>();
        let daemon = d.clone();
        let exec_id = id.clone();
        tokio::spawn(async move {
            // A client that went away (or detached) does not end the process: keep
            // draining until the shim reports the exit code.
            let mut client_gone = false;
            while let Ok(Some(frame)) = output.next_frame().await {
                if !client_gone && frames_tx.send(frame).await.is_err() {
                    client_gone = true;
                }
            }
            // Recorded before the frame channel closes, so before the client sees the end.
            daemon.finish_exec(&exec_id, output.exit_code());
            let _ = drained_tx.send(());
        });
        let detach = detach_keys.map(stream::DetachKeys::new);
        if let stream::PumpEnd::Detached(stdin) =
            stream::pump(conn, tty, frames, input, detach).await
        {
            d.exec_detached(&id);
            // Closing the stdin half now would type an end-of-file into the terminal of a
            // process that should go on as if the client were still there.
            let _ = drained.await;
            drop(stdin);
        }
    })
}

async fn resize(State(d): State<AppState>, Path(id): Path<String>, query: RawQuery) -> Response {
    let p = QueryParams::parse(query.0.as_deref());
    let result = async {
        let h = p.int("h")?.unwrap_or(0).clamp(0, u16::MAX as i64) as u16;
        let w = p.int("w")?.unwrap_or(0).clamp(0, u16::MAX as i64) as u16;
        d.resize_exec(&id, h, w).await
    };
    match result.await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn inspect(State(d): State<AppState>, Path(id): Path<String>) -> Response {
    match d.inspect_exec(&id) {
        Ok(r) => json(StatusCode::OK, &r),
        Err(e) => e.into_response(),
    }
}
