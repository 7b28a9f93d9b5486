//! The registry client: hyper over rustls, auth as each registry asks, pull and push.
//!
//! The first request to a registry pings `/v2/` and remembers its challenge. Requests then
//! carry Basic credentials or a Bearer token fetched from the challenge's realm for the
//! scopes the operation needs (cached per scope set, refreshed on expiry and on a 401).
//! Docker Hub (`docker.io`) is reached at `registry-1.docker.io`. Registries on 127.0.0.0/8,
//! `localhost` and in `insecure_registries` are tried over HTTPS without certificate checks
//! and then over plain HTTP; all others need HTTPS with system roots plus
//! `<certs_dir>/<host>/ca.crt`.

mod auth;
mod credentials;
mod pull;
mod push;
mod transport;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_store::{Digest, Reference, StoreError};
use hyper::{Method, StatusCode};

pub use auth::{Challenge, parse_www_authenticate};
pub use credentials::{
    CredentialError, CredentialStore, Credentials, DOCKER_HUB_AUTH_KEY, registry_key,
};
pub use pull::{FetchedManifest, PullOptions, PullSession, PulledImage, ResolvedImage};
pub use push::PushOptions;
pub use transport::{WebClient, web_client};

use crate::errors::ErrorInfo;
use crate::manifest::ManifestError;
use crate::routes::{RepoName, RouteError};

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Registries (`host[:port]`) that may use plain HTTP or unverified TLS.
    pub insecure_registries: Vec<String>,
    /// Whether 127.0.0.0/8, `::1` and `localhost` count as insecure (Docker's rule).
    pub loopback_insecure: bool,
    /// Directory with `<host[:port]>/ca.crt` files of extra CAs per registry.
    pub certs_dir: Option<PathBuf>,
    /// Layers downloaded at once.
    pub max_concurrent_downloads: usize,
    /// Blobs uploaded at once.
    pub max_concurrent_uploads: usize,
    /// How often a dropped layer download is retried.
    pub download_retries: u32,
    /// Pause before the first retry (doubled each time).
    pub retry_delay: Duration,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// Mirrors of Docker Hub (`http[s]://host[:port]`), tried in order before it for pulls.
    pub registry_mirrors: Vec<String>,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            insecure_registries: Vec::new(),
            loopback_insecure: true,
            certs_dir: None,
            max_concurrent_downloads: 3,
            max_concurrent_uploads: 5,
            download_retries: 5,
            retry_delay: Duration::from_millis(500),
            user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")).to_string(),
            registry_mirrors: Vec::new(),
        }
    }
}

/// Per-layer progress of a pull or push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressEvent {
    /// Missing locally: will be downloaded (docker's "Pulling fs layer").
    Pending,
    /// Queued behind other layers.
    Waiting,
    /// Bytes received so far.
    Downloading {
        /// Bytes so far.
        current: u64,
        /// The layer's size.
        total: u64,
    },
    /// Download finished, digest and size being checked.
    Verifying,
    /// Stored in the content store.
    DownloadComplete,
    /// Already present (pull: in the content store; push: in the registry).
    AlreadyExists,
    /// The connection dropped; trying again.
    Retrying {
        /// 1-based retry number.
        attempt: u32,
        /// What went wrong.
        error: String,
    },
    /// Bytes sent so far.
    Uploading {
        /// Bytes so far.
        current: u64,
        /// The blob's size.
        total: u64,
    },
    /// Uploaded.
    Pushed,
    /// Mounted from another repository of the same registry.
    Mounted {
        /// The source repository.
        from: String,
    },
}

/// A progress report for one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The blob.
    pub digest: Digest,
    /// What happened.
    pub event: ProgressEvent,
}

/// Receives progress reports; called from several tasks at once.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Everything that can go wrong talking to a registry. Messages name the URL, reference
/// or digest involved.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request could not be sent or the connection failed.
    #[error("{method} {url}: {source}")]
    Http {
        /// The method.
        method: Method,
        /// The URL.
        url: String,
        /// The transport error.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// Reading a response body failed.
    #[error("{url}: reading response: {source}")]
    Body {
        /// The URL.
        url: String,
        /// The error.
        #[source]
        source: hyper::Error,
    },
    /// The registry answered with spec error codes; shown like docker
    /// (`unauthorized: authentication required`).
    #[error("{}", render_errors(.errors))]
    Registry {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: StatusCode,
        /// The errors from the body.
        errors: Vec<ErrorInfo>,
    },
    /// The registry answered with a status the operation does not expect.
    #[error("{method} {url}: unexpected status {status}: {body}")]
    Status {
        /// The method.
        method: Method,
        /// The URL.
        url: String,
        /// The status.
        status: StatusCode,
        /// The start of the body.
        body: String,
    },
    /// A URL could not be built or parsed.
    #[error("invalid url {url}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The token endpoint refused or answered nonsense.
    #[error("token from {realm}: {reason}")]
    Token {
        /// The realm URL.
        realm: String,
        /// Why.
        reason: String,
    },
    /// A repository name is not valid on the wire.
    #[error("{0}")]
    Name(#[from] RouteError),
    /// A manifest is malformed or of an unsupported type.
    #[error("manifest {reference}: {source}")]
    Manifest {
        /// The reference or digest.
        reference: String,
        /// Why.
        #[source]
        source: ManifestError,
    },
    /// A manifest is over the 4 MiB limit.
    #[error("manifest {reference} is larger than {limit} bytes")]
    ManifestTooLarge {
        /// The reference.
        reference: String,
        /// The limit.
        limit: u64,
    },
    /// A manifest's content does not hash to the digest it was asked for.
    #[error("manifest {reference} has digest {actual}, expected {expected}")]
    ManifestDigest {
        /// The reference.
        reference: String,
        /// The digest asked for.
        expected: Digest,
        /// The content's digest.
        actual: Digest,
    },
    /// No manifest in the index is for the wanted platform.
    #[error("no matching manifest for {platform} in the manifest list entries of {reference}")]
    NoMatchingPlatform {
        /// The reference.
        reference: String,
        /// The wanted platform.
        platform: String,
    },
    /// A blob's download did not produce the expected content.
    #[error("blob {digest} from {url}: {reason}")]
    BlobInvalid {
        /// The blob.
        digest: Digest,
        /// Where it came from.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The content store failed (including digest or size mismatch on commit).
    #[error("blob {digest}: {source}")]
    Store {
        /// The blob.
        digest: String,
        /// The store error.
        #[source]
        source: StoreError,
    },
    /// Credentials could not be read.
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    /// TLS could not be set up for a registry.
    #[error("tls for {host}: {reason}")]
    Tls {
        /// The registry host.
        host: String,
        /// Why.
        reason: String,
    },
    /// Something the push needs is not in the content store.
    #[error("push {reference}: {digest} is not in the content store")]
    MissingContent {
        /// The reference being pushed.
        reference: String,
        /// The missing blob or manifest.
        digest: Digest,
    },
}

fn render_errors(errors: &[ErrorInfo]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ClientError {
    /// The first registry error code, if the registry sent one.
    pub fn registry_code(&self) -> Option<&str> {
        match self {
            ClientError::Registry { errors, .. } => errors.first().map(|e| e.code.as_str()),
            _ => None,
        }
    }

    fn store(digest: impl ToString, source: StoreError) -> ClientError {
        ClientError::Store {
            digest: digest.to_string(),
            source,
        }
    }
}

/// Result alias of the client.
pub type Result<T> = std::result::Result<T, ClientError>;

/// A registry client; cheap to clone, shares connections and tokens.
#[derive(Clone)]
pub struct Client {
    transport: Arc<transport::Transport>,
}

impl Client {
    /// A client with `options`, finding credentials in `credentials`.
    pub fn new(options: ClientOptions, credentials: CredentialStore) -> Result<Client> {
        Ok(Client {
            transport: Arc::new(transport::Transport::new(options, credentials)?),
        })
    }

    /// The options the client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.transport.options
    }

    /// Checks `credentials` against `registry` (a reference domain): Basic registries must
    /// accept them on `/v2/`, token registries must issue a token for them. On success the
    /// client uses them for that registry from now on.
    pub async fn login(&self, registry: &str, credentials: Credentials) -> Result<()> {
        self.transport.login(registry, credentials).await
    }

    /// The tags of the repository `reference` names, following pagination.
    pub async fn list_tags(&self, reference: &Reference) -> Result<Vec<String>> {
        self.transport.list_tags(reference).await
    }
}

/// The wire repository name of a reference.
pub(crate) fn repo_name(reference: &Reference) -> Result<RepoName> {
    Ok(RepoName::parse(reference.path())?)
}

/// The host that serves a reference domain (`docker.io` is `registry-1.docker.io`).
pub fn registry_host(domain: &str) -> &str {
    if domain == berth_store::reference::DEFAULT_DOMAIN {
        "registry-1.docker.io"
    } else {
        domain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_names_map_to_its_registry_host() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(registry_host(r.domain()), "registry-1.docker.io");
        assert_eq!(repo_name(&r).unwrap().as_str(), "library/busybox");
        let r = Reference::parse("localhost:5000/team/app:v1").unwrap();
        assert_eq!(registry_host(r.domain()), "localhost:5000");
        assert_eq!(repo_name(&r).unwrap().as_str(), "team/app");
    }

    #[test]
    fn registry_errors_render_like_docker() {
        let e = ClientError::Registry {
            url: "http://x/v2/".into(),
            status: StatusCode::UNAUTHORIZED,
            errors: vec![ErrorInfo {
                code: "UNAUTHORIZED".into(),
                message: "authentication required".into(),
                detail: None,
            }],
        };
        assert_eq!(e.to_string(), "unauthorized: authentication required");
        assert_eq!(e.registry_code(), Some("UNAUTHORIZED"));
    }
}
