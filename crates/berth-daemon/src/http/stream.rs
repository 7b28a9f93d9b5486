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

/// Watches a client's input for its detach key sequence, across reads (moby's escape proxy
/// matches only keys that arrive one read at a time; a client that sends the sequence in
/// one write detaches too). Bytes that may begin the sequence are held back until the next
/// byte decides, so the keys of a detach never reach the process.
#[derive(Debug)]
pub(crate) struct DetachKeys {
    keys: Vec<u8>,
    /// How many bytes of `keys` the input ends with, held back.
    matched: usize,
}

impl DetachKeys {
    /// Watches for `keys` (not empty).
    pub(crate) fn new(keys: Vec<u8>) -> DetachKeys {
        debug_assert!(!keys.is_empty());
        DetachKeys { keys, matched: 0 }
    }

    /// Filters one read of client input: appends to `out` what is to be forwarded, and
    /// returns true when the sequence completed (what followed it in `input` is dropped).
    pub(crate) fn scan(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        input.iter().any(|&b| self.feed(b, out))
    }

    fn feed(&mut self, b: u8, out: &mut Vec<u8>) -> bool {
        loop {
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.matched = 0;
                    return true;
                }
                return false;
            }
            if self.matched == 0 {
                out.push(b);
                return false;
            }
            // Not the sequence after all: the first held byte goes out, and the rest of
            // the held ones are matched again from the start (they may begin it).
            let held = self.keys[1..self.matched].to_vec();
            out.push(self.keys[0]);
            self.matched = 0;
            for h in held {
                // Shorter than the sequence, so it cannot complete it.
                self.feed(h, out);
            }
        }
    }

    /// The bytes held back, given up: the input ended without completing the sequence.
    pub(crate) fn take_held(&mut self) -> Vec<u8> {
        let held = self.keys[..self.matched].to_vec();
        self.matched = 0;
        held
    }
}

/// How [`pump`] ended.
#[derive(Debug)]
pub(crate) enum PumpEnd<W> {
    /// The output ended (the process is gone, or the client stopped reading).
    Finished,
    /// The client typed its detach keys: its connection is closed, and the process's stdin
    /// writer is handed back as it was, neither shut down nor dropped, so that the caller
    /// decides when (or whether) the process sees the end of its input.
    Detached(W),
}

/// Bridges a hijacked connection to a process's stdio: frames from `frames` go to the client
/// (raw with a TTY, stdcopy-framed without), client bytes go to `stdin`, and the client's
/// half-close becomes the process's stdin EOF. Returns once `frames` ends, after the
/// connection is shut down, so whatever the frame producer records before ending (an exec's
/// exit code) is visible before the client sees the stream close. With `detach`, the client
/// input is watched for those keys: once they arrive the connection is closed at once and
/// the stream ends as [`PumpEnd::Detached`], the process left running.
pub(crate) async fn pump<W>(
    conn: Hijacked,
    tty: bool,
    mut frames: mpsc::Receiver<(u8, Bytes)>,
    mut stdin: W,
    detach: Option<DetachKeys>,
) -> PumpEnd<W>
where
    W: tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    use berth_api::stdcopy::{self, StdStream};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (mut conn_read, mut conn_write) = tokio::io::split(conn);
    let mut stdin_task = tokio::spawn(async move {
        let mut detach = detach;
        let mut buf = vec![0u8; 32 * 1024];
        let mut forward = Vec::with_capacity(buf.len());
        loop {
            let n = match conn_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            forward.clear();
            let detached = match detach.as_mut() {
                Some(keys) => keys.scan(&buf[..n], &mut forward),
                None => {
                    forward.extend_from_slice(&buf[..n]);
                    false
                }
            };
            if stdin.write_all(&forward).await.is_err() {
                break;
            }
            if detached {
                return Some(stdin);
            }
        }
        if let Some(held) = detach.as_mut().map(DetachKeys::take_held)
            && !held.is_empty()
        {
            let _ = stdin.write_all(&held).await;
        }
        let _ = stdin.shutdown().await;
        None
    });
    let mut input_open = true;
    let end = loop {
        let frame = tokio::select! {
            frame = frames.recv() => frame,
            joined = &mut stdin_task, if input_open => {
                input_open = false;
                match joined {
                    Ok(Some(stdin)) => break PumpEnd::Detached(stdin),
                    _ => continue,
                }
            }
        };
        let Some((stream_id, payload)) = frame else {
            break PumpEnd::Finished;
        };
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
            break PumpEnd::Finished;
        }
    };
    let _ = conn_write.shutdown().await;
    stdin_task.abort();
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(keys: &[u8], reads: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut d = DetachKeys::new(keys.to_vec());
        let mut out = Vec::new();
        for r in reads {
            if d.scan(r, &mut out) {
                return (out, true);
            }
        }
        out.extend(d.take_held());
        (out, false)
    }

    #[test]
    fn detach_keys_are_found_within_and_across_reads() {
        let keys = [0x10, 0x11];
        assert_eq!(scan_all(&keys, &[b"ab\x10\x11cd"]), (b"ab".to_vec(), true));
        assert_eq!(
            scan_all(&keys, &[b"ab\x10", b"\x11cd"]),
            (b"ab".to_vec(), true)
        );
        assert_eq!(scan_all(&keys, &[b"\x10", b"\x11"]), (Vec::new(), true));
        assert_eq!(
            scan_all(&keys, &[b"a\x10b\x11"]),
            (b"a\x10b\x11".to_vec(), false)
        );
        assert_eq!(scan_all(&keys, &[b"\x10\x10\x11"]), (vec![0x10], true));
        // A held prefix is given up at the end of the input.
        assert_eq!(scan_all(&keys, &[b"x\x10"]), (b"x\x10".to_vec(), false));
    }

    #[test]
    fn detach_keys_with_repeated_bytes_match_after_a_false_start() {
        // "aab" inside "aaab": the first 'a' is forwarded, the rest detaches.
        assert_eq!(scan_all(b"aab", &[b"aaab"]), (b"a".to_vec(), true));
        assert_eq!(
            scan_all(b"aab", &[b"a", b"a", b"a", b"b"]),
            (b"a".to_vec(), true)
        );
        assert_eq!(scan_all(b"aab", &[b"aacaab!"]), (b"aac".to_vec(), true));
        assert_eq!(scan_all(b"q", &[b"xyq"]), (b"xy".to_vec(), true));
    }
}
