//! Connections, TLS policy, ping, authentication and redirects: everything between an
//! operation's "send this request to that registry with these scopes" and the wire.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::sync::Mutex as AsyncMutex;

use super::auth::{Challenge, TokenCache, TokenResponse, parse_www_authenticate};
use super::credentials::{CredentialStore, Credentials};
use super::{ClientError, ClientOptions, Result, registry_host, repo_name};
use crate::errors::{ErrorBody, ErrorCode, ErrorInfo};
use crate::routes::{Route, parse_next_link, with_query};
use berth_store::Reference;

/// Request bodies: replayable closures build one per attempt.
pub(crate) type ReqBody = UnsyncBoxBody<Bytes, io::Error>;
/// Builds a fresh request body for each attempt (first try, auth retry).
pub(crate) type BodyFn<'a> = &'a (dyn Fn() -> io::Result<ReqBody> + Send + Sync);
type Http = HyperClient<HttpsConnector<HttpConnector>, ReqBody>;

/// Error bodies are read up to this size.
const MAX_ERROR_BODY: usize = 64 << 10;
/// Redirects followed for one GET/HEAD.
const MAX_REDIRECTS: usize = 5;

/// An empty request body.
pub(crate) fn empty() -> io::Result<ReqBody> {
    Ok(Empty::new().map_err(|never| match never {}).boxed_unsync())
}

/// A request body of fixed bytes.
pub(crate) fn full(bytes: Bytes) -> ReqBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[derive(Debug, Clone)]
enum Scheme {
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl Scheme {
    fn from_challenges(challenges: &[Challenge]) -> Option<Scheme> {
        let bearer = challenges.iter().find(|c| c.scheme == "bearer");
        if let Some(c) = bearer
            && let Some(realm) = c.param("realm")
        {
            return Some(Scheme::Bearer {
                realm: realm.to_string(),
                service: c.param("service").map(str::to_string),
            });
        }
        challenges
            .iter()
            .any(|c| c.scheme == "basic")
            .then_some(Scheme::Basic)
    }
}

/// One registry as the client knows it.
pub(crate) struct Host {
    /// `scheme://authority` of the registry's API.
    pub(crate) base: String,
    http: Http,
    credentials: Option<Credentials>,
    scheme: Mutex<Scheme>,
    tokens: Mutex<TokenCache>,
}

/// Shared connection and auth state of a [`super::Client`].
pub(crate) struct Transport {
    pub(crate) options: ClientOptions,
    credentials: CredentialStore,
    hosts: AsyncMutex<HashMap<String, Arc<Host>>>,
    roots: Arc<RootCertStore>,
    /// For URLs off the registry (token realms, blob redirects to a CDN).
    default_http: Http,
}

/// The system's root certificates (webpki's if it has none), loaded once per process:
/// reading and parsing /etc/ssl/certs costs milliseconds every pull would pay.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            Arc::new(roots)
        })
        .clone()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn http_client(tls: rustls::ClientConfig) -> Http {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    HyperClient::builder(TokioExecutor::new()).build(connector)
}

/// An HTTP client for web URLs that are not registries (the sources of `ADD` and `import`):
/// plain http, or https verified against the system's roots.
pub type WebClient = HyperClient<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A [`WebClient`].
pub fn web_client() -> Result<WebClient> {
    let tls = verifying_tls((*system_roots()).clone(), "web")?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(HyperClient::builder(TokioExecutor::new()).build(connector))
}

fn verifying_tls(roots: RootCertStore, host: &str) -> Result<rustls::ClientConfig> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls {
            host: host.to_string(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Accepts any certificate: only for registries the user declared insecure (and loopback).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn insecure_tls(host: &str) -> Result<rustls::ClientConfig> {
    let p = provider();
    Ok(rustls::ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls {
            host: host.to_string(),
            reason: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(p)))
        .with_no_client_auth())
}

/// The `host[:port]` part of a URL.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

/// Resolves a `Location` against the registry base URL.
pub(crate) fn resolve_location(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        format!("{base}/{location}")
    }
}

fn is_loopback(domain: &str) -> bool {
    let host = if let Some(rest) = domain.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        domain.rsplit_once(':').map_or(domain, |(h, _)| h)
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Reads at most `limit` bytes of a body.
pub(crate) async fn read_body(url: &str, resp: Response<Incoming>, limit: usize) -> Result<Bytes> {
    match Limited::new(resp.into_body(), limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => match e.downcast::<hyper::Error>() {
            Ok(source) => Err(ClientError::Body {
                url: url.to_string(),
                source: *source,
            }),
            Err(_) => Err(ClientError::Url {
                url: url.to_string(),
                reason: format!("response body larger than {limit} bytes"),
            }),
        },
    }
}

/// Turns an unexpected response into the most useful error: the registry's own error
/// codes, Docker's wording for bare 401/403, or the status and the start of the body.
pub(crate) async fn error_from(
    method: &Method,
    url: &str,
    resp: Response<Incoming>,
) -> ClientError {
    let status = resp.status();
    let body = read_body(url, resp, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let mut errors = serde_json::from_slice::<ErrorBody>(&body)
        .map(|b| b.errors)
        .unwrap_or_default();
    if errors.is_empty() {
        // Docker Hub's token endpoint says {"details": "..."}.
        let details = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("details")
                    .and_then(|d| d.as_str())
                    .map(str::to_string)
            });
        let code = match status {
            StatusCode::UNAUTHORIZED => Some(ErrorCode::Unauthorized),
            StatusCode::FORBIDDEN => Some(ErrorCode::Denied),
            StatusCode::TOO_MANY_REQUESTS => Some(ErrorCode::TooManyRequests),
            _ => None,
        };
        if let Some(code) = code {
            errors.push(ErrorInfo {
                code: code.as_str().to_string(),
                message: details.unwrap_or_else(|| code.message().to_string()),
                detail: None,
            });
        }
    }
    if errors.is_empty() {
        ClientError::Status {
            method: method.clone(),
            url: url.to_string(),
            status,
            body: String::from_utf8_lossy(&body[..body.len().min(200)])
                .trim()
                .to_string(),
        }
    } else {
        ClientError::Registry {
            url: url.to_string(),
            status,
            errors,
        }
    }
}

impl Transport {
    pub(crate) fn new(options: ClientOptions, credentials: CredentialStore) -> Result<Transport> {
        let roots = system_roots();
        let default_http = http_client(verifying_tls((*roots).clone(), "default")?);
        Ok(Transport {
            options,
            credentials,
            hosts: AsyncMutex::default(),
            roots,
            default_http,
        })
    }

    /// The connected Docker Hub mirror at `url` (`http[s]://host[:port]`, no path, as
    /// dockerd requires), pinging it on first use. It gets Docker Hub's credentials, as
    /// with dockerd.
    pub(crate) async fn mirror(&self, url: &str) -> Result<Arc<Host>> {
        let base = url.trim_end_matches('/').to_string();
        let bad = |reason: &str| ClientError::Url {
            url: url.to_string(),
            reason: format!("registry mirror: {reason}"),
        };
        let authority = match base.split_once("://") {
            Some(("http" | "https", a)) => a.to_string(),
            _ => return Err(bad("must start with http:// or https://")),
        };
        if authority.is_empty() || authority.contains(['/', '?', '#']) {
            return Err(bad("must be scheme://host[:port] without a path"));
        }
        let key = format!("mirror {base}");
        let mut hosts = self.hosts.lock().await;
        if let Some(h) = hosts.get(&key) {
            return Ok(h.clone());
        }
        let store = self.credentials.clone();
        let credentials =
            tokio::task::spawn_blocking(move || store.get(berth_store::reference::DEFAULT_DOMAIN))
                .await
                .expect("credential lookup does not panic")?;
        let http = self.http_for(&authority)?;
        let scheme = self.ping(&http, &base).await?;
        tracing::debug!(mirror = base, ?scheme, "registry mirror pinged");
        let host = Arc::new(Host {
            base,
            http,
            credentials,
            scheme: Mutex::new(scheme),
            tokens: Mutex::default(),
        });
        hosts.insert(key, host.clone());
        Ok(host)
    }

    fn is_insecure(&self, domain: &str) -> bool {
        (self.options.loopback_insecure && is_loopback(domain))
            || self.options.insecure_registries.iter().any(|r| r == domain)
    }

    /// The client for `domain`: verifying TLS (with `certs.d` CAs), or the insecure one.
    fn http_for(&self, domain: &str) -> Result<Http> {
        if self.is_insecure(domain) {
            return Ok(http_client(insecure_tls(domain)?));
        }
        let mut roots = (*self.roots).clone();
        if let Some(dir) = &self.options.certs_dir {
            let ca = dir.join(domain).join("ca.crt");
            if ca.is_file() {
                use rustls::pki_types::pem::PemObject;
                let certs = CertificateDer::pem_file_iter(&ca)
                    .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| ClientError::Tls {
                        host: domain.to_string(),
                        reason: format!("{}: {e}", ca.display()),
                    })?;
                roots.add_parsable_certificates(certs);
            }
        }
        Ok(http_client(verifying_tls(roots, domain)?))
    }

    /// Pings `/v2/` over `base` and reads the auth scheme it asks for.
    async fn ping(&self, http: &Http, base: &str) -> Result<Scheme> {
        let url = format!("{base}/v2/");
        let req = self.build(
            Method::GET,
            &url,
            &[],
            None,
            empty().map_err(|e| url_err(&url, e))?,
        )?;
        let resp = http
            .request(req)
            .await
            .map_err(|source| ClientError::Http {
                method: Method::GET,
                url: url.clone(),
                source,
            })?;
        match resp.status() {
            s if s.is_success() => Ok(Scheme::Anonymous),
            StatusCode::UNAUTHORIZED => {
                let challenges = challenges_of(&resp);
                Ok(Scheme::from_challenges(&challenges).unwrap_or(Scheme::Anonymous))
            }
            _ => Err(error_from(&Method::GET, &url, resp).await),
        }
    }

    async fn connect(&self, domain: &str, credentials: Option<Credentials>) -> Result<Host> {
        let authority = registry_host(domain);
        let http = self.http_for(domain)?;
        let https = format!("https://{authority}");
        let (base, scheme) = match self.ping(&http, &https).await {
            Ok(s) => (https, s),
            Err(ClientError::Http { .. }) if self.is_insecure(domain) => {
                let plain = format!("http://{authority}");
                let s = self.ping(&http, &plain).await?;
                (plain, s)
            }
            Err(e) => return Err(e),
        };
        tracing::debug!(registry = domain, base, ?scheme, "registry pinged");
        Ok(Host {
            base,
            http,
            credentials,
            scheme: Mutex::new(scheme),
            tokens: Mutex::default(),
        })
    }

    /// The connected registry for a reference domain, pinging it on first use.
    pub(crate) async fn host(&self, domain: &str) -> Result<Arc<Host>> {
        let mut hosts = self.hosts.lock().await;
        if let Some(h) = hosts.get(domain) {
            return Ok(h.clone());
        }
        let store = self.credentials.clone();
        let d = domain.to_string();
        let credentials = tokio::task::spawn_blocking(move || store.get(&d))
            .await
            .expect("credential lookup does not panic")?;
        let host = Arc::new(self.connect(domain, credentials).await?);
        hosts.insert(domain.to_string(), host.clone());
        Ok(host)
    }

    pub(crate) async fn login(&self, domain: &str, credentials: Credentials) -> Result<()> {
        let host = self.connect(domain, Some(credentials)).await?;
        let scheme = host.scheme.lock().expect("scheme lock").clone();
        match scheme {
            Scheme::Anonymous => {}
            Scheme::Basic => {
                let url = format!("{}/v2/", host.base);
                let resp = self
                    .request(&host, &[], Method::GET, &url, &[], &empty)
                    .await?;
                if !resp.status().is_success() {
                    return Err(error_from(&Method::GET, &url, resp).await);
                }
            }
            Scheme::Bearer { realm, service } => {
                self.fetch_token(&host, &realm, service.as_deref(), &[])
                    .await?;
            }
        }
        self.hosts
            .lock()
            .await
            .insert(domain.to_string(), Arc::new(host));
        Ok(())
    }

    fn build(
        &self,
        method: Method,
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
        authorization: Option<&str>,
        body: ReqBody,
    ) -> Result<Request<ReqBody>> {
        let mut req = Request::builder()
            .method(method)
            .uri(url)
            .header(header::USER_AGENT, &self.options.user_agent);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if let Some(a) = authorization {
            req = req.header(header::AUTHORIZATION, a);
        }
        req.body(body).map_err(|e| ClientError::Url {
            url: url.to_string(),
            reason: e.to_string(),
        })
    }

    /// The `Authorization` value for `scopes`, fetching a token if needed.
    async fn authorization(&self, host: &Host, scopes: &[String]) -> Result<Option<String>> {
        let scheme = host.scheme.lock().expect("scheme lock").clone();
        match scheme {
            Scheme::Anonymous => Ok(None),
            Scheme::Basic => Ok(host.credentials.as_ref().map(|c| {
                format!(
                    "Basic {}",
                    STANDARD.encode(format!("{}:{}", c.username, c.password))
                )
            })),
            Scheme::Bearer { realm, service } => {
                let key = TokenCache::key(scopes);
                if let Some(t) = host.tokens.lock().expect("token lock").get(&key) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let (token, ttl) = self
                    .fetch_token(host, &realm, service.as_deref(), scopes)
                    .await?;
                host.tokens
                    .lock()
                    .expect("token lock")
                    .put(key, token.clone(), ttl);
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    async fn fetch_token(
        &self,
        host: &Host,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<(String, std::time::Duration)> {
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = service {
            query.push(("service", s));
        }
        let http = if authority(realm) == authority(&host.base) {
            &host.http
        } else {
            &self.default_http
        };
        let creds = host.credentials.as_ref();
        let (method, url, body, headers) = match creds.and_then(|c| c.identity_token.as_deref()) {
            Some(refresh) => {
                // OAuth2 refresh-token grant, as docker does with identity tokens.
                let joined = scopes.join(" ");
                let mut form = form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", refresh)
                    .append_pair("client_id", "berth")
                    .append_pair("access_type", "offline");
                if let Some(s) = service {
                    form.append_pair("service", s);
                }
                if !joined.is_empty() {
                    form.append_pair("scope", &joined);
                }
                let ct = HeaderValue::from_static("application/x-www-form-urlencoded");
                (
                    Method::POST,
                    realm.to_string(),
                    full(Bytes::from(form.finish())),
                    vec![(header::CONTENT_TYPE, ct)],
                )
            }
            None => {
                for s in scopes {
                    query.push(("scope", s));
                }
                if let Some(c) = creds {
                    query.push(("account", &c.username));
                }
                (
                    Method::GET,
                    with_query(realm, &query),
                    empty().map_err(|e| url_err(realm, e))?,
                    Vec::new(),
                )
            }
        };
        let basic = creds.filter(|c| c.identity_token.is_none()).map(|c| {
            format!(
                "Basic {}",
                STANDARD.encode(format!("{}:{}", c.username, c.password))
            )
        });
        let req = self.build(method.clone(), &url, &headers, basic.as_deref(), body)?;
        let resp = http
            .request(req)
            .await
            .map_err(|source| ClientError::Http {
                method: method.clone(),
                url: url.clone(),
                source,
            })?;
        if !resp.status().is_success() {
            return Err(error_from(&method, &url, resp).await);
        }
        let body = read_body(&url, resp, MAX_ERROR_BODY).await?;
        serde_json::from_slice::<TokenResponse>(&body)
            .ok()
            .and_then(TokenResponse::into_token)
            .ok_or_else(|| ClientError::Token {
                realm: realm.to_string(),
                reason: "answer has no token".to_string(),
            })
    }

    /// Sends a request to `host` with auth for `scopes`; on a 401 follows the new
    /// challenge once. GET and HEAD follow redirects (without credentials off-host).
    pub(crate) async fn request(
        &self,
        host: &Host,
        scopes: &[String],
        method: Method,
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: BodyFn<'_>,
    ) -> Result<Response<Incoming>> {
        let mut scopes = scopes.to_vec();
        let mut retried = false;
        loop {
            let authorization = self.authorization(host, &scopes).await?;
            let resp = self
                .send_following(host, method.clone(), url, headers, authorization, body)
                .await?;
            if resp.status() != StatusCode::UNAUTHORIZED || retried {
                return Ok(resp);
            }
            retried = true;
            let challenges = challenges_of(&resp);
            let Some(scheme) = Scheme::from_challenges(&challenges) else {
                return Ok(resp);
            };
            match &scheme {
                Scheme::Bearer { .. } => {
                    host.tokens
                        .lock()
                        .expect("token lock")
                        .remove(&TokenCache::key(&scopes));
                    if let Some(extra) = challenges
                        .iter()
                        .find(|c| c.scheme == "bearer")
                        .and_then(|c| c.param("scope"))
                    {
                        scopes.extend(extra.split(' ').map(str::to_string));
                    }
                }
                Scheme::Basic if host.credentials.is_none() => return Ok(resp),
                _ => {}
            }
            *host.scheme.lock().expect("scheme lock") = scheme;
        }
    }

    async fn send_following(
        &self,
        host: &Host,
        method: Method,
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
        mut authorization: Option<String>,
        body: BodyFn<'_>,
    ) -> Result<Response<Incoming>> {
        let mut url = url.to_string();
        let follows = method == Method::GET || method == Method::HEAD;
        for _ in 0..=MAX_REDIRECTS {
            let on_host = authority(&url) == authority(&host.base);
            if !on_host {
                authorization = None;
            }
            let http = if on_host {
                &host.http
            } else {
                &self.default_http
            };
            let req = self.build(
                method.clone(),
                &url,
                headers,
                authorization.as_deref(),
                body().map_err(|e| url_err(&url, e))?,
            )?;
            let resp = http
                .request(req)
                .await
                .map_err(|source| ClientError::Http {
                    method: method.clone(),
                    url: url.clone(),
                    source,
                })?;
            if follows
                && resp.status().is_redirection()
                && let Some(loc) = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|l| l.to_str().ok())
            {
                let base = url.split_once("://").map_or(host.base.clone(), |(s, r)| {
                    format!("{s}://{}", r.split('/').next().unwrap_or(r))
                });
                url = resolve_location(&base, loc);
                continue;
            }
            return Ok(resp);
        }
        Err(ClientError::Url {
            url,
            reason: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    pub(crate) async fn list_tags(&self, reference: &Reference) -> Result<Vec<String>> {
        let name = repo_name(reference)?;
        let host = self.host(reference.domain()).await?;
        let scopes = [format!("repository:{name}:pull")];
        let mut url = format!("{}{}", host.base, Route::Tags { name }.path());
        let mut tags = Vec::new();
        loop {
            let resp = self
                .request(&host, &scopes, Method::GET, &url, &[], &empty)
                .await?;
            if !resp.status().is_success() {
                return Err(error_from(&Method::GET, &url, resp).await);
            }
            let next = resp
                .headers()
                .get(header::LINK)
                .and_then(|l| l.to_str().ok())
                .and_then(parse_next_link);
            let body = read_body(&url, resp, 16 << 20).await?;
            #[derive(serde::Deserialize)]
            struct TagList {
                #[serde(default)]
                tags: Option<Vec<String>>,
            }
            let page: TagList = serde_json::from_slice(&body).map_err(|e| ClientError::Url {
                url: url.clone(),
                reason: format!("bad tag list: {e}"),
            })?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(n) => url = resolve_location(&host.base, &n),
                None => return Ok(tags),
            }
        }
    }
}

fn challenges_of(resp: &Response<Incoming>) -> Vec<Challenge> {
    resp.headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_www_authenticate)
        .collect()
}

fn url_err(url: &str, e: io::Error) -> ClientError {
    ClientError::Url {
        url: url.to_string(),
        reason: format!("request body: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_loopback() {
        assert_eq!(authority("https://a.b:5000/v2/x?y"), "a.b:5000");
        assert_eq!(authority("http://h?q"), "h");
        assert_eq!(resolve_location("http://h:1", "/v2/x"), "http://h:1/v2/x");
        assert_eq!(
            resolve_location("http://h:1", "https://cdn/x"),
            "https://cdn/x"
        );
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("127.8.9.1"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("example.com:5000"));
        assert!(!is_loopback("10.0.0.1"));
    }

    #[tokio::test]
    async fn mirrors_must_be_scheme_host_and_port() {
        let t = Transport::new(ClientOptions::default(), CredentialStore::empty()).unwrap();
        for bad in [
            "127.0.0.1:5000",
            "ftp://127.0.0.1:5000",
            "http://127.0.0.1:5000/v2",
            "https://",
            "http://h?q",
        ] {
            let err = t.mirror(bad).await.err().expect(bad);
            assert!(err.to_string().contains("registry mirror"), "{bad}: {err}");
        }
    }
}
