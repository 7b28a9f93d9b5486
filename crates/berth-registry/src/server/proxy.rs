//! Pull-through cache mode: manifests and blobs missing locally are fetched from an
//! upstream registry with berth's own client (verified like any pull), stored, and served.
//!
//! Tags are asked upstream on every request so they follow the upstream, falling back to
//! the cached manifest when the upstream cannot be reached; digests are served from the
//! cache first since they cannot change. A proxy refuses pushes and deletes (UNSUPPORTED),
//! as distribution's proxy does.

use berth_store::{Digest, Reference};

use super::handlers::blocking;
use super::storage::Storage;
use crate::client::{Client, ClientError, ClientOptions, CredentialStore, Credentials};
use crate::errors::{ApiError, ErrorCode};
use crate::manifest::Descriptor;
use crate::routes::{ManifestRef, RepoName};

/// Where a pull-through cache gets its content.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The upstream registry, e.g. `https://registry-1.docker.io` or `http://127.0.0.1:5000`.
    pub remote_url: String,
    /// Credentials for the upstream.
    pub credentials: Option<Credentials>,
}

/// The upstream side of a pull-through cache.
pub(crate) struct Proxy {
    client: Client,
    domain: String,
}

/// The reference domain an upstream URL stands for (Docker Hub's hosts are `docker.io`).
fn upstream_domain(remote_url: &str) -> (String, bool) {
    let (plain, rest) = match remote_url.split_once("://") {
        Some((scheme, rest)) => (scheme == "http", rest),
        None => (false, remote_url),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let domain = match authority {
        "registry-1.docker.io" | "index.docker.io" => "docker.io",
        a => a,
    };
    (domain.to_string(), plain)
}

/// Maps an upstream failure to what our clients see: the upstream's own code when it sent
/// one, UNAVAILABLE otherwise.
fn upstream_error(e: ClientError) -> ApiError {
    if let ClientError::Registry { errors, .. } = &e
        && let Some(first) = errors.first()
        && let Some(code) = ErrorCode::parse(&first.code)
    {
        return ApiError::new(code)
            .message(first.message.clone())
            .detail(e.to_string());
    }
    ApiError::new(ErrorCode::Unavailable).detail(format!("upstream: {e}"))
}

impl Proxy {
    /// A proxy for `config`'s upstream.
    pub(crate) fn new(config: &ProxyConfig) -> Result<Proxy, ClientError> {
        let (domain, plain) = upstream_domain(&config.remote_url);
        let mut options = ClientOptions::default();
        if plain {
            options.insecure_registries.push(domain.clone());
        }
        let mut credentials = CredentialStore::empty();
        if let Some(c) = &config.credentials {
            credentials.insert(&domain, c.clone());
        }
        Ok(Proxy {
            client: Client::new(options, credentials)?,
            domain,
        })
    }

    fn reference(&self, name: &RepoName, target: &ManifestRef) -> Result<Reference, ApiError> {
        let sep = match target {
            ManifestRef::Tag(_) => ':',
            ManifestRef::Digest(_) => '@',
        };
        Reference::parse(&format!("{}/{name}{sep}{target}", self.domain))
            .map_err(|e| ApiError::new(ErrorCode::NameInvalid).detail(e.to_string()))
    }

    /// Fetches a manifest upstream and records it (and its tag) in `name`.
    pub(crate) async fn fetch_manifest(
        &self,
        storage: &Storage,
        name: &RepoName,
        target: &ManifestRef,
    ) -> Result<(), ApiError> {
        let reference = self.reference(name, target)?;
        let fetched = self
            .client
            .fetch_manifest(&reference)
            .await
            .map_err(upstream_error)?;
        let st = storage.clone();
        let n = name.clone();
        let tag = match target {
            ManifestRef::Tag(t) => Some(t.clone()),
            ManifestRef::Digest(_) => None,
        };
        blocking(move || {
            st.content().put_bytes(&fetched.bytes)?;
            st.put_manifest(
                &n,
                &fetched.digest,
                &fetched.media_type,
                tag.as_deref(),
                None,
            )
        })
        .await
    }

    /// Fetches a blob upstream into the store and links it into `name`; `false` when the
    /// upstream does not have it.
    pub(crate) async fn fetch_blob(
        &self,
        storage: &Storage,
        name: &RepoName,
        digest: &Digest,
    ) -> Result<bool, ApiError> {
        let reference = self.reference(name, &ManifestRef::Digest(digest.clone()))?;
        let Some(size) = self
            .client
            .blob_size(&reference, digest)
            .await
            .map_err(upstream_error)?
        else {
            return Ok(false);
        };
        let blob = Descriptor {
            media_type: String::new(),
            digest: digest.clone(),
            size,
            urls: Vec::new(),
            platform: None,
            artifact_type: None,
            annotations: None,
        };
        self.client
            .pull_blob(&reference, &blob, storage.content(), None)
            .await
            .map_err(upstream_error)?;
        let st = storage.clone();
        let (n, d) = (name.clone(), digest.clone());
        blocking(move || st.link_blob(&n, &d)).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_map_to_domains() {
        assert_eq!(
            upstream_domain("https://registry-1.docker.io"),
            ("docker.io".to_string(), false)
        );
        assert_eq!(
            upstream_domain("http://127.0.0.1:5000/"),
            ("127.0.0.1:5000".to_string(), true)
        );
        assert_eq!(upstream_domain("ghcr.io"), ("ghcr.io".to_string(), false));
    }
}
