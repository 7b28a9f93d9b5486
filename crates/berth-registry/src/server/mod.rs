//! The registry server: an axum router serving the distribution API over [`Storage`].
//!
//! Every `/v2/` request goes through one dispatcher: [`Route::parse`] (the route table
//! shared with the client) → method check → authorisation ([`AuthMode`]) → handler.
//! `/token` is the token endpoint of the token auth mode. [`serve`] runs a router on a TCP
//! listener, with TLS when given a rustls configuration.

mod auth;
mod handlers;
mod proxy;
mod storage;
mod uploads;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

pub use auth::{Access, AuthMode, Grant, Htpasswd, HtpasswdError, TokenService, basic_credentials};
pub use proxy::ProxyConfig;
pub use storage::{GcReport, Storage, StorageError};

use crate::errors::{ApiError, ErrorCode};
use crate::routes::Route;

/// Everything the server needs to start.
#[derive(Debug, Default)]
pub struct ServerConfig {
    /// Storage root (blobs, repositories, uploads). Keep it apart from the engine's store.
    pub root: PathBuf,
    /// How requests are authenticated.
    pub auth: AuthMode,
    /// Largest blob accepted, in bytes; `None` for no limit.
    pub max_upload_size: Option<u64>,
    /// Whether clients reach the server over TLS (decides the scheme of derived realms).
    pub tls: bool,
    /// Run as a pull-through cache of this upstream (read-only).
    pub proxy: Option<ProxyConfig>,
}

/// Why a registry could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The storage root could not be prepared.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The upstream client of proxy mode could not be built.
    #[error("proxy upstream: {0}")]
    Proxy(#[from] crate::client::ClientError),
}

pub(crate) struct AppState {
    pub(crate) storage: Storage,
    pub(crate) auth: AuthMode,
    pub(crate) max_upload_size: Option<u64>,
    pub(crate) tls: bool,
    pub(crate) proxy: Option<proxy::Proxy>,
    pub(crate) uploads: Mutex<HashMap<String, uploads::Slot>>,
}

/// A registry over one storage root.
#[derive(Clone)]
pub struct Registry {
    state: Arc<AppState>,
}

impl Registry {
    /// Opens the storage and prepares the server state.
    pub fn open(config: ServerConfig) -> Result<Registry, OpenError> {
        let storage = Storage::open(&config.root)?;
        let proxy = config.proxy.as_ref().map(proxy::Proxy::new).transpose()?;
        Ok(Registry {
            state: Arc::new(AppState {
                storage,
                auth: config.auth,
                max_upload_size: config.max_upload_size,
                tls: config.tls,
                proxy,
                uploads: Mutex::default(),
            }),
        })
    }

    /// The storage, e.g. for garbage collection while the server is stopped.
    pub fn storage(&self) -> &Storage {
        &self.state.storage
    }

    /// The axum router: `/v2/…` and `/token`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/token", get(token_endpoint))
            .fallback(dispatch)
            .with_state(self.state.clone())
    }
}

/// The header every distribution response carries.
const API_VERSION: (&str, &str) = ("docker-distribution-api-version", "registry/2.0");

/// What a request needs to be allowed.
fn required_access(route: &Route, method: &Method) -> Vec<Access> {
    let Some(name) = route.name() else {
        return match route {
            Route::Catalog => vec![Access {
                kind: "registry".to_string(),
                name: "catalog".to_string(),
                actions: vec!["*".to_string()],
            }],
            _ => Vec::new(),
        };
    };
    let actions: &[&str] = match (route, method) {
        (_, &Method::GET | &Method::HEAD) if !matches!(route, Route::Upload { .. }) => &["pull"],
        (Route::Manifest { .. } | Route::Blob { .. }, &Method::DELETE) => &["delete"],
        _ => &["pull", "push"],
    };
    vec![Access::repository(name.as_str(), actions)]
}

/// The token endpoint URL clients are sent to when the service has none configured.
fn derived_realm(state: &AppState, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if state.tls { "https" } else { "http" };
    format!("{scheme}://{host}/token")
}

async fn dispatch(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut resp = match route_request(state, method, uri, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    resp.headers_mut()
        .insert(API_VERSION.0, HeaderValue::from_static(API_VERSION.1));
    resp
}

async fn route_request(
    state: Arc<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !uri.path().starts_with("/v2") {
        return Ok(StatusCode::NOT_FOUND.into_response());
    }
    let route = Route::parse(uri.path())?;
    if !route.methods().contains(&method) {
        return Err(
            ApiError::new(ErrorCode::Unsupported).detail(format!("{method} {}", uri.path()))
        );
    }
    if state.proxy.is_some() && !(method == Method::GET || method == Method::HEAD) {
        return Err(ApiError::new(ErrorCode::Unsupported)
            .detail("this registry is a read-only pull-through cache"));
    }
    let required = required_access(&route, &method);
    let grant = if matches!(state.auth, AuthMode::None) {
        Grant::All
    } else {
        let realm = derived_realm(&state, &headers);
        let st = state.clone();
        let hdrs = headers.clone();
        // bcrypt is deliberately slow: keep it off the async workers.
        tokio::task::spawn_blocking(move || st.auth.authorize(&hdrs, &required, &realm))
            .await
            .map_err(ApiError::internal)??
    };
    let query = uri.query().unwrap_or("");
    handlers::handle(state, route, method, query, headers, body, grant).await
}

#[derive(Serialize)]
struct TokenResponse {
    token: String,
    access_token: String,
    expires_in: u64,
}

async fn token_endpoint(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let AuthMode::Token(_) = &state.auth else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let query = uri.query().unwrap_or("").to_string();
    let st = state.clone();
    let result = tokio::task::spawn_blocking(move || {
        let AuthMode::Token(svc) = &st.auth else {
            return Err(ApiError::new(ErrorCode::Unsupported));
        };
        let mut requested = Vec::new();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "scope" => requested.extend(v.split(' ').filter_map(Access::parse_scope)),
                "service" if v != svc.service.as_str() => {
                    return Err(
                        ApiError::new(ErrorCode::Denied).detail(format!("unknown service {v:?}"))
                    );
                }
                _ => {}
            }
        }
        let user = match (basic_credentials(&headers), &svc.users) {
            (Some((u, p)), Some(users)) => {
                if !users.verify(&u, &p) {
                    return Err(ApiError::new(ErrorCode::Unauthorized)
                        .message("incorrect username or password"));
                }
                Some(u)
            }
            (Some((u, _)), None) => Some(u),
            (None, _) => None,
        };
        let granted = svc.grant(user.as_deref(), requested);
        let token = svc.issue(user.as_deref().unwrap_or(""), granted);
        Ok(TokenResponse {
            access_token: token.clone(),
            token,
            expires_in: svc.ttl.as_secs(),
        })
    })
    .await
    .map_err(ApiError::internal);
    match result {
        Ok(Ok(t)) => axum::Json(t).into_response(),
        Ok(Err(e)) | Err(e) => e.into_response(),
    }
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("read {what} {path}: {reason}")]
    Pem {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the certificate/key pair.
    #[error("tls configuration from {cert}: {source}")]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
}

/// Builds a rustls server configuration from PEM certificate chain and key files.
pub fn load_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pem_err = |what, path: &Path, e: rustls::pki_types::pem::Error| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_err("certificate", cert, e))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err("private key", key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key_der))
        .map_err(|source| TlsError::Config {
            cert: cert.to_path_buf(),
            source,
        })?;
    Ok(Arc::new(config))
}

/// Accepted TLS connections; handshakes run in their own tasks so a slow client cannot
/// hold up the others.
struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept loop only ends with the process; wait for shutdown instead.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Serves `router` on `listener` until `shutdown` completes; over TLS when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Some(tls) = tls else {
        return axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await;
    };
    let local = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(tls);
    let (tx, rx) = mpsc::channel(64);
    let accept_loop = tokio::spawn(async move {
        loop {
            let (tcp, addr) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("registry accept on {local}: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(stream) => {
                        let _ = tx.send((stream, addr)).await;
                    }
                    Err(e) => tracing::debug!("tls handshake with {addr}: {e}"),
                }
            });
        }
    });
    let result = axum::serve(TlsListener { rx, local }, router)
        .with_graceful_shutdown(shutdown)
        .await;
    accept_loop.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{ManifestRef, RepoName};

    #[test]
    fn required_access_by_route_and_method() {
        let name = RepoName::parse("a/b").unwrap();
        let manifest = Route::Manifest {
            name: name.clone(),
            reference: ManifestRef::Tag("t".into()),
        };
        let scope = |r: &Route, m: Method| -> Vec<String> {
            required_access(r, &m).iter().map(Access::scope).collect()
        };
        assert_eq!(scope(&manifest, Method::GET), ["repository:a/b:pull"]);
        assert_eq!(scope(&manifest, Method::PUT), ["repository:a/b:pull,push"]);
        assert_eq!(scope(&manifest, Method::DELETE), ["repository:a/b:delete"]);
        let upload = Route::Upload {
            name,
            id: "x".into(),
        };
        assert_eq!(scope(&upload, Method::GET), ["repository:a/b:pull,push"]);
        assert_eq!(scope(&Route::Catalog, Method::GET), ["registry:catalog:*"]);
        assert!(scope(&Route::Base, Method::GET).is_empty());
    }
}
