//! Streaming plumbing: chunked responses fed from channels, request bodies read as blocking
//! readers, blocking writers feeding responses, and the hijacked attach connection.

use std::convert::Infallible;
use std::future::Future;
use std::io::{Read, Write};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::TryStreamExt;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

/// A response whose body is whatever arrives on `rx`, each chunk flushed as it comes.
pub(crate) fn channel_response(rx: mpsc::Receiver<Bytes>, content_type: &str) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A blocking `Write` that sends what is written to a response channel.
pub(crate) struct ChannelWriter(pub mpsc::Sender<Bytes>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The request body as a blocking reader, for the store's tar code (use it only inside
/// `spawn_blocking`).
pub(crate) fn body_reader(body: Body) -> Box<dyn Read + Send> {
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let reader = tokio_util::io::StreamReader::new(stream);
    Box::new(tokio_util::io::SyncIoBridge::new(reader))
}

/// The upgraded connection of a hijacked request.
pub(crate) type Hijacked = TokioIo<hyper::upgrade::Upgraded>;

/// Answers `101 UPGRADED` and runs `serve` on the raw connection once hyper hands it over.
/// Callers validate everything first: after this, errors can no longer reach the client
/// as HTTP responses.
pub(crate) fn hijack<F, Fut>(mut req: Request, content_type: &'static str, serve: F) -> Response
where
    F: FnOnce(Hijacked) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => serve(TokioIo::new(upgraded)).await,
            Err(e) => tracing::debug!("hijack upgrade failed: {e}"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Serialises one JSON message followed by a newline, as the Go clients' decoders like.
pub(crate) fn json_line<T: serde::Serialize>(value: &T) -> Bytes {
    let mut v = serde_json::to_vec(value).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// Bridges a hijacked connection to a process's stdio: frames from `frames` go to the client
/// (raw with a TTY, stdcopy-framed without), client bytes go to `stdin`, and the client's
/// half-close becomes the process's stdin EOF. Returns once `frames` ends, after the
/// connection is shut down, so whatever the frame producer records before ending (an exec's
/// exit code) is visible before the client sees the stream close.
pub(crate) async fn pump(
    conn: Hijacked,
    tty: bool,
    mut frames: mpsc::Receiver<(u8, Bytes)>,
    mut stdin: impl tokio::io::AsyncWrite + Send + Unpin + 'static,
) {
    use berth_api::stdcopy::{self, StdStream};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (mut conn_read, mut conn_write) = tokio::io::split(conn);
    let stdin_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match conn_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stdin.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = stdin.shutdown().await;
    });
    while let Some((stream_id, payload)) = frames.recv().await {
        let chunk = if tty {
            payload.to_vec()
        } else {
            let which = if stream_id == 2 {
                StdStream::Stderr
            } else {
                StdStream::Stdout
            };
            stdcopy::encode(which, &payload)
        };
        if conn_write.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let _ = conn_write.shutdown().await;
    stdin_task.abort();
}
