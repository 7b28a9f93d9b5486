//! HTTP client for the Engine API: one hyper HTTP/1.1 connection per request over a unix
//! socket or TCP, a fixed `/v1.44` prefix (no ping negotiation, to keep start-up cheap), JSON
//! error decoding as the Go client does it, streaming bodies and hijacked (upgraded) streams.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{Context as _, Result, anyhow};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::autostart::Autostart;

/// The API version prefix every versioned request carries.
pub const API_PREFIX: &str = "/v1.44";
/// The socket used when no host is configured.
pub const DEFAULT_HOST: &str = "unix:///run/berth/berth.sock";

/// A request body: empty, fully buffered, or streamed (sent chunked).
pub type ReqBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// An error answer from the daemon (status ≥ 400), printed as the Go client prints it.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// The daemon's message (`message` of the JSON body, or the trimmed body text).
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Error response from daemon: {}", self.message)
    }
}

impl std::error::Error for ApiError {}

/// Whether an error is a daemon 404.
pub fn is_not_found(err: &anyhow::Error) -> bool {
    err.downcast_ref::<ApiError>()
        .is_some_and(|e| e.status == 404)
}

/// The daemon could not be reached at all.
#[derive(Debug, Clone)]
pub struct ConnectError {
    /// The host as configured (`unix:///run/berth/berth.sock`).
    pub host: String,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Cannot connect to the berth daemon at {}. Is the berth daemon running?",
            self.host
        )
    }
}

impl std::error::Error for ConnectError {}

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket path.
    Unix(PathBuf),
    /// `host:port` for plain TCP.
    Tcp(String),
}

impl Endpoint {
    /// Parses `unix:///path`, `tcp://host:port`, `http://host:port` or a bare `/path`.
    pub fn parse(host: &str) -> Result<Endpoint> {
        if let Some(path) = host.strip_prefix("unix://") {
            if path.is_empty() {
                return Ok(Endpoint::Unix(PathBuf::from("/run/berth/berth.sock")));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if host.starts_with('/') {
            return Ok(Endpoint::Unix(PathBuf::from(host)));
        }
        let rest = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
            .ok_or_else(|| anyhow!("unable to parse docker host `{host}`"))?;
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() {
            return Err(anyhow!("unable to parse docker host `{host}`"));
        }
        if rest
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            Ok(Endpoint::Tcp(rest.to_string()))
        } else {
            Ok(Endpoint::Tcp(format!("{rest}:2375")))
        }
    }
}

/// A connected byte stream to the daemon.
pub enum Conn {
    /// Unix socket.
    Unix(UnixStream),
    /// TCP socket.
    Tcp(TcpStream),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Unix(s) => Pin::new(s).poll_flush(cx),
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A hijacked connection: raw bytes both ways after `101 Switching Protocols`.
pub type Hijacked = TokioIo<hyper::upgrade::Upgraded>;

/// The Engine API client.
pub struct Client {
    endpoint: Endpoint,
    host: String,
    autostart: Option<Autostart>,
    /// Set once the daemon was started; concurrent requests wait on it, then redial.
    autostart_done: tokio::sync::Mutex<bool>,
}

impl Client {
    /// A client for `host` (`unix://…` or `tcp://…`); `autostart` starts `berthd` when the
    /// default socket does not answer.
    pub fn new(host: &str, autostart: Option<Autostart>) -> Result<Arc<Client>> {
        Ok(Arc::new(Client {
            endpoint: Endpoint::parse(host)?,
            host: host.to_string(),
            autostart,
            autostart_done: tokio::sync::Mutex::new(false),
        }))
    }

    async fn dial(&self) -> std::io::Result<Conn> {
        match &self.endpoint {
            Endpoint::Unix(path) => UnixStream::connect(path).await.map(Conn::Unix),
            Endpoint::Tcp(addr) => {
                let s = TcpStream::connect(addr.as_str()).await?;
                s.set_nodelay(true)?;
                Ok(Conn::Tcp(s))
            }
        }
    }

    async fn connect(&self) -> Result<Conn> {
        match self.dial().await {
            Ok(c) => Ok(c),
            Err(e) => {
                let absent = matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                );
                if absent
                    && let (Some(auto), Endpoint::Unix(path)) = (&self.autostart, &self.endpoint)
                {
                    let mut done = self.autostart_done.lock().await;
                    if !*done {
                        *done = true;
                        auto.start(path).await?;
                    }
                    drop(done);
                    if let Ok(c) = self.dial().await {
                        return Ok(c);
                    }
                }
                Err(anyhow::Error::new(ConnectError {
                    host: self.host.clone(),
                }))
            }
        }
    }

    fn host_header(&self) -> &str {
        match &self.endpoint {
            Endpoint::Unix(_) => "api.moby.localhost",
            Endpoint::Tcp(addr) => addr,
        }
    }

    /// Builds a request for a versioned API path (`/containers/json?all=1`).
    pub fn request(&self, method: Method, path: &str) -> hyper::http::request::Builder {
        let uri = if path.starts_with("/_ping") {
            path.to_string()
        } else {
            format!("{API_PREFIX}{path}")
        };
        Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, self.host_header())
            .header(
                header::USER_AGENT,
                concat!("Berth-Client/", env!("CARGO_PKG_VERSION"), " (linux)"),
            )
    }

    /// Sends a request on a fresh connection and returns the response once its headers
    /// arrive, without checking the status.
    pub async fn send_raw(&self, req: Request<ReqBody>) -> Result<Response<Incoming>> {
        let io = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .context("http handshake with the daemon")?;
        tokio::spawn(async move {
            // The connection ends when the response body is dropped or the peer closes;
            // either way there is nothing left to report.
            let _ = conn.with_upgrades().await;
        });
        let (method, path) = (req.method().clone(), req.uri().to_string());
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| anyhow!("error during connect: {method} {path}: {e}"))?;
        Ok(resp)
    }

    /// Sends a request and turns a status ≥ 400 into an [`ApiError`].
    pub async fn send(&self, req: Request<ReqBody>) -> Result<Response<Incoming>> {
        let resp = self.send_raw(req).await?;
        if resp.status().as_u16() >= 400 {
            return Err(error_from_response(resp).await);
        }
        Ok(resp)
    }

    /// Whether the daemon is reached over a unix socket, so it runs on this host.
    pub fn is_local(&self) -> bool {
        matches!(self.endpoint, Endpoint::Unix(_))
    }

    /// `method path` with an empty body; returns the successful response.
    pub async fn call(&self, method: Method, path: &str) -> Result<Response<Incoming>> {
        let req = self.request(method, path).body(empty())?;
        self.send(req).await
    }

    /// `method path` with an empty body; returns the body bytes.
    pub async fn call_bytes(&self, method: Method, path: &str) -> Result<Bytes> {
        let resp = self.call(method, path).await?;
        read_body(resp).await
    }

    /// `GET path`, decoding the JSON body.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let body = self.call_bytes(Method::GET, path).await?;
        serde_json::from_slice(&body).with_context(|| format!("decoding the reply to GET {path}"))
    }

    /// `POST path` with a JSON body, returning the response body bytes.
    pub async fn post_json<B: Serialize>(&self, path: &str, body: &B) -> Result<Bytes> {
        let data = serde_json::to_vec(body)?;
        let req = self
            .request(Method::POST, path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(full(data))?;
        read_body(self.send(req).await?).await
    }

    /// Sends `req` with `Connection: Upgrade` / `Upgrade: tcp` and returns the raw stream
    /// after `101 Switching Protocols`.
    pub async fn hijack(
        &self,
        method: Method,
        path: &str,
        json: Option<Vec<u8>>,
    ) -> Result<Hijacked> {
        let mut builder = self
            .request(method, path)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "tcp");
        let body = match json {
            Some(data) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                full(data)
            }
            None => {
                builder = builder.header(header::CONTENT_TYPE, "text/plain");
                empty()
            }
        };
        let resp = self.send_raw(builder.body(body)?).await?;
        let status = resp.status();
        if status.as_u16() >= 400 {
            return Err(error_from_response(resp).await);
        }
        if status != StatusCode::SWITCHING_PROTOCOLS {
            return Err(anyhow!(
                "unable to upgrade to tcp, received {}",
                status.as_u16()
            ));
        }
        let upgraded = hyper::upgrade::on(resp)
            .await
            .context("upgrading the connection")?;
        Ok(TokioIo::new(upgraded))
    }

    /// Waits for the daemon to answer `GET /_ping`.
    pub async fn ping(&self) -> Result<()> {
        let io = self.dial().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = self.request(Method::GET, "/_ping").body(empty())?;
        let resp = sender.send_request(req).await?;
        if resp.status().is_success() || resp.status().as_u16() == 500 {
            Ok(())
        } else {
            Err(anyhow!("ping answered {}", resp.status()))
        }
    }
}

/// An empty request body.
pub fn empty() -> ReqBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A buffered request body.
pub fn full(data: impl Into<Bytes>) -> ReqBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A request body streamed from a reader (sent with chunked transfer encoding).
pub fn streamed<R: AsyncRead + Send + 'static>(reader: R) -> ReqBody {
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, 64 * 1024)
        .map(|chunk| chunk.map(Frame::data));
    BodyExt::boxed_unsync(StreamBody::new(stream))
}

/// Reads a whole response body.
pub async fn read_body(resp: Response<Incoming>) -> Result<Bytes> {
    Ok(resp
        .into_body()
        .collect()
        .await
        .context("reading the daemon's reply")?
        .to_bytes())
}

/// Builds the error for a failed response the way the Go client does (`checkResponseErr`).
pub async fn error_from_response(resp: Response<Incoming>) -> anyhow::Error {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/json");
    let body = match read_body(resp).await {
        Ok(b) => b,
        Err(e) => return e,
    };
    anyhow::Error::new(decode_error(status, is_json, &body))
}

/// Decodes an error body: JSON `{"message"}` when the content type says so, else the text.
pub fn decode_error(status: StatusCode, is_json: bool, body: &[u8]) -> ApiError {
    let reason = status.canonical_reason().unwrap_or("");
    let message = if body.is_empty() {
        format!(
            "request returned {} {reason}; check if the server supports the requested API version",
            status.as_u16()
        )
    } else if is_json {
        match serde_json::from_slice::<berth_api::errors::ErrorResponse>(body) {
            Ok(e) if !e.message.trim().is_empty() => e.message.trim().to_string(),
            _ => format!(
                "API returned a {} ({reason}) but provided no error-message",
                status.as_u16()
            ),
        }
    } else {
        String::from_utf8_lossy(body).trim().to_string()
    };
    ApiError {
        status: status.as_u16(),
        message,
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay as they are).
pub fn enc(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes a path segment, keeping `/` and `:` (image names carry both).
pub fn enc_path(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/' | b':' | b'@')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Builds a query string from pairs, skipping nothing; returns `""` or `?a=b&c=d`.
pub fn query(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    format!("?{}", parts.join("&"))
}

/// Incremental decoder for a stream of concatenated JSON values (events, progress).
#[derive(Default)]
pub struct JsonStream {
    buf: Vec<u8>,
}

impl JsonStream {
    /// Appends bytes and returns every complete value now buffered.
    pub fn feed<T: DeserializeOwned>(&mut self, data: &[u8]) -> Result<Vec<T>> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut consumed = 0;
        {
            let mut iter = serde_json::Deserializer::from_slice(&self.buf).into_iter::<T>();
            loop {
                match iter.next() {
                    Some(Ok(v)) => {
                        out.push(v);
                        consumed = iter.byte_offset();
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(e)) => return Err(anyhow!("decoding the daemon's stream: {e}")),
                    None => {
                        consumed = iter.byte_offset();
                        break;
                    }
                }
            }
        }
        self.buf.drain(..consumed);
        Ok(out)
    }
}

/// Streams a response body frame by frame into `f`.
pub async fn for_each_chunk(
    resp: Response<Incoming>,
    mut f: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the daemon's stream")?;
        if let Some(data) = frame.data_ref() {
            f(data)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_like_docker_host() {
        assert_eq!(
            Endpoint::parse("unix:///run/berth/berth.sock").unwrap(),
            Endpoint::Unix("/run/berth/berth.sock".into())
        );
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:2375").unwrap(),
            Endpoint::Tcp("127.0.0.1:2375".into())
        );
        assert_eq!(
            Endpoint::parse("tcp://example").unwrap(),
            Endpoint::Tcp("example:2375".into())
        );
        assert!(Endpoint::parse("ssh://x").is_err());
    }

    #[test]
    fn errors_decode_like_the_go_client() {
        let e = decode_error(
            StatusCode::NOT_FOUND,
            true,
            br#"{"message":"No such container: x"}"#,
        );
        assert_eq!(
            e.to_string(),
            "Error response from daemon: No such container: x"
        );
        let e = decode_error(StatusCode::CONFLICT, false, b" plain text\n");
        assert_eq!(e.message, "plain text");
        let e = decode_error(StatusCode::BAD_REQUEST, true, b"{}");
        assert_eq!(
            e.message,
            "API returned a 400 (Bad Request) but provided no error-message"
        );
    }

    #[test]
    fn json_stream_splits_concatenated_values() {
        let mut s = JsonStream::default();
        let v: Vec<serde_json::Value> = s.feed(br#"{"a":1}{"b""#).unwrap();
        assert_eq!(v.len(), 1);
        let v: Vec<serde_json::Value> = s.feed(b":2}\n{\"c\":3}\n").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1]["c"], 3);
    }

    #[test]
    fn query_encoding() {
        assert_eq!(query(&[]), "");
        assert_eq!(
            query(&[
                ("filters", r#"{"a":{"b=c":true}}"#.into()),
                ("all", "1".into())
            ]),
            "?filters=%7B%22a%22%3A%7B%22b%3Dc%22%3Atrue%7D%7D&all=1"
        );
    }
}
