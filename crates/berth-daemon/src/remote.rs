//! Fetching `import` sources given as URLs.
//!
//! Plain `http://` only for now: HTTPS needs the TLS client the registry client will bring.

use std::io::Read;

use futures_util::TryStreamExt;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::error::{ServiceError, ServiceResult};

/// Starts a GET of `url` and returns its body as a blocking reader (use it from a blocking
/// task). Redirects are not followed; a non-2xx status is an error naming the URL.
pub async fn fetch(url: &str) -> ServiceResult<Box<dyn Read + Send>> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| ServiceError::invalid(format!("invalid import URL {url}: {e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(ServiceError::invalid(format!(
                "cannot import from {url}: https sources are not supported yet, download the file and import it from stdin"
            )));
        }
        _ => {
            return Err(ServiceError::invalid(format!(
                "invalid import URL {url}: use http://"
            )));
        }
    }
    let client =
        Client::builder(TokioExecutor::new()).build_http::<http_body_util::Empty<bytes::Bytes>>();
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
