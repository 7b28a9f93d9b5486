//! A scripted in-process Engine API server on a temporary unix socket, used by unit tests to
//! check the request sequences and stream handling of the client end to end.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio::sync::watch;

use super::Ctx;
use crate::client::Client;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// What the fake answers and what it saw.
pub struct Script {
    /// `METHOD /path?query` of every request, in arrival order.
    pub log: Mutex<Vec<String>>,
    /// Request headers by request line, for the ones a test cares about.
    pub headers: Mutex<HashMap<String, String>>,
    /// Answer the first create with 404 No such image.
    pub create_404_once: Mutex<bool>,
    /// Bytes written on the attach stream after start.
    pub attach_output: Vec<u8>,
    /// The wait status code.
    pub exit_code: i64,
    /// Scripted replies: `(method, path suffix, status, JSON body)`, checked first.
    pub replies: Mutex<Vec<(String, String, u16, String)>>,
    /// Request bodies of the scripted replies, by request line.
    pub bodies: Mutex<HashMap<String, String>>,
    started: watch::Sender<bool>,
}

impl Script {
    /// A script with the given attach output and exit code.
    pub fn new(attach_output: Vec<u8>, exit_code: i64) -> Arc<Script> {
        Arc::new(Script {
            log: Mutex::new(Vec::new()),
            headers: Mutex::new(HashMap::new()),
            create_404_once: Mutex::new(false),
            attach_output,
            exit_code,
            replies: Mutex::new(Vec::new()),
            bodies: Mutex::new(HashMap::new()),
            started: watch::channel(false).0,
        })
    }

    /// Answers `method` requests whose path ends with `suffix` with `status` and `body`.
    pub fn reply(&self, method: &str, suffix: &str, status: u16, body: &str) {
        if let Ok(mut r) = self.replies.lock() {
            r.push((method.into(), suffix.into(), status, body.into()));
        }
    }

    /// The body of the scripted request with this request line.
    pub fn body(&self, line: &str) -> Option<String> {
        self.bodies.lock().ok()?.get(line).cloned()
    }

    /// The request lines seen so far.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

fn full(status: StatusCode, ct: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("Content-Type", ct)
        .body(Full::new(body.into()).boxed_unsync())
        .unwrap_or_default()
}

async fn handle(
    mut req: Request<Incoming>,
    script: Arc<Script>,
) -> Result<Response<Body>, Infallible> {
    let line = format!("{} {}", req.method(), req.uri());
    if let Some(auth) = req
        .headers()
        .get("X-Registry-Auth")
        .and_then(|v| v.to_str().ok())
        && let Ok(mut h) = script.headers.lock()
    {
        h.insert(line.clone(), auth.to_string());
    }
    if let Some(dir) = req
        .headers()
        .get("X-Berth-Context-Dir")
        .and_then(|v| v.to_str().ok())
        && let Ok(mut h) = script.headers.lock()
    {
        h.insert(format!("{line} X-Berth-Context-Dir"), dir.to_string());
    }
    if let Ok(mut l) = script.log.lock() {
        l.push(line.clone());
    }
    let path = req.uri().path().to_string();
    let scripted = script.replies.lock().ok().and_then(|r| {
        r.iter()
            .find(|(m, suffix, _, _)| m == req.method().as_str() && path.ends_with(suffix.as_str()))
            .map(|(_, _, status, body)| (*status, body.clone()))
    });
    if let Some((status, body)) = scripted {
        let data = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if let Ok(mut b) = script.bodies.lock() {
            b.insert(line, String::from_utf8_lossy(&data).into_owned());
        }
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Ok(full(status, "application/json", body));
    }
    let resp = if path.ends_with("/containers/create") {
        let first_404 = script
            .create_404_once
            .lock()
            .map(|mut f| std::mem::replace(&mut *f, false))
            .unwrap_or(false);
        if first_404 {
            full(
                StatusCode::NOT_FOUND,
                "application/json",
                r#"{"message":"No such image: busybox:latest"}"#,
            )
        } else {
            full(
                StatusCode::CREATED,
                "application/json",
                r#"{"Id":"abc123","Warnings":["low memory"]}"#,
            )
        }
    } else if path.ends_with("/images/create") {
        full(
            StatusCode::OK,
            "application/json",
            "{\"status\":\"Pulling from library/busybox\",\"id\":\"latest\"}\n{\"status\":\"Status: Downloaded newer image for busybox:latest\"}\n",
        )
    } else if path.ends_with("/attach") {
        let on_upgrade = hyper::upgrade::on(&mut req);
        let mut started = script.started.subscribe();
        let output = script.attach_output.clone();
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let mut io = TokioIo::new(upgraded);
            let _ = started.wait_for(|s| *s).await;
            let _ = io.write_all(&output).await;
            let _ = io.shutdown().await;
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("Connection", "Upgrade")
            .header("Upgrade", "tcp")
            .body(http_body_util::Empty::new().boxed_unsync())
            .unwrap_or_default()
    } else if path.ends_with("/wait") {
        let mut started = script.started.subscribe();
        let code = script.exit_code;
        let body = futures_util::stream::once(async move {
            let _ = started.wait_for(|s| *s).await;
            Ok::<_, Infallible>(Frame::data(Bytes::from(format!(
                "{{\"StatusCode\":{code},\"Error\":null}}\n"
            ))))
        });
        Response::builder()
            .status(StatusCode::OK)
            .header("Content-Type", "application/json")
            .body(StreamBody::new(body).boxed_unsync())
            .unwrap_or_default()
    } else if path.ends_with("/containers/json") {
        full(StatusCode::OK, "application/json", "[]")
    } else if path.ends_with("/start") {
        script.started.send_replace(true);
        full(StatusCode::NO_CONTENT, "text/plain", "")
    } else {
        full(
            StatusCode::NOT_FOUND,
            "application/json",
            r#"{"message":"page not found"}"#,
        )
    };
    Ok(resp)
}

/// A running fake daemon; dropped with the test's runtime.
pub struct FakeDaemon {
    _dir: tempfile::TempDir,
    /// The socket path.
    pub socket: PathBuf,
}

impl FakeDaemon {
    /// Binds a socket in a fresh temporary directory and serves `script` on it.
    pub fn start(script: Arc<Script>) -> FakeDaemon {
        let dir = tempfile::tempdir().expect("temporary directory for the fake daemon");
        let socket = dir.path().join("fake.sock");
        let listener = UnixListener::bind(&socket).expect("binding the fake daemon socket");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let script = script.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, script.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        FakeDaemon { _dir: dir, socket }
    }

    /// A command context pointing at this daemon, with an empty docker config directory.
    pub fn ctx(&self, config: &std::path::Path) -> Ctx {
        let client = Client::new(&format!("unix://{}", self.socket.display()), None)
            .expect("client for the fake daemon");
        Ctx {
            client,
            docker_config: config.to_path_buf(),
            debug: false,
        }
    }
}

/// Parses `args` as a `berth` command line and runs it against a fake daemon following
/// `script`.
pub async fn run_cli(script: &Arc<Script>, args: &[&str]) -> anyhow::Result<()> {
    use clap::Parser;
    let fake = FakeDaemon::start(script.clone());
    let cfg = tempfile::tempdir().expect("temp config dir");
    let ctx = fake.ctx(cfg.path());
    let cli = crate::Cli::try_parse_from(args).expect("test command line parses");
    super::dispatch(&ctx, cli.command.expect("a subcommand")).await
}
