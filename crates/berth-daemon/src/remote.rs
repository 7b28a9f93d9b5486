//! Fetching sources given as URLs (`import`, `ADD`): http, or https verified against the
//! system's roots (the registry client's TLS stack).

use std::io::Read;

use futures_util::TryStreamExt;
use http_body_util::BodyExt;

use crate::error::{ServiceError, ServiceResult};

/// Starts a GET of `url` and returns its body as a blocking reader (use it from a blocking
/// task). Redirects are not followed; a non-2xx status is an error naming the URL.
pub async fn fetch(url: &str) -> ServiceResult<Box<dyn Read + Send>> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| ServiceError::invalid(format!("invalid URL {url}: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(ServiceError::invalid(format!(
            "invalid URL {url}: use http:// or https://"
        )));
    }
    let client = berth_registry::client::web_client()
        .map_err(|e| ServiceError::internal(format!("cannot fetch {url}: {e}")))?;
    let response = client
        .get(uri)
        .await
        .map_err(|e| ServiceError::invalid(format!("cannot fetch {url}: {e}")))?;
    if !response.status().is_success() {
        return Err(ServiceError::invalid(format!(
            "cannot fetch {url}: server answered {}",
            response.status()
        )));
    }
    let stream = response
        .into_body()
        .into_data_stream()
        .map_err(std::io::Error::other);
    let reader = tokio_util::io::StreamReader::new(stream);
    Ok(Box::new(tokio_util::io::SyncIoBridge::new(reader)))
}
