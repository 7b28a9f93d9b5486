//! The distribution spec's error codes, each registered once with its HTTP status and
//! default message, and the `{"errors":[{"code","message","detail"}]}` body both sides use.

use std::fmt;

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::routes::RouteError;

macro_rules! error_codes {
    ($($variant:ident = $code:literal, $status:literal, $message:literal;)*) => {
        /// An error code of the distribution spec.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(
                #[doc = $message]
                $variant,
            )*
        }

        impl ErrorCode {
            /// Every code, in the order the spec lists them.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The wire name, e.g. `BLOB_UNKNOWN`.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The HTTP status the server answers with.
            pub fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::from_u16($status).expect("valid status"),)*
                }
            }

            /// The default message (distribution's wording).
            pub fn message(self) -> &'static str {
                match self { $(ErrorCode::$variant => $message,)* }
            }

            /// Looks a wire name up.
            pub fn parse(s: &str) -> Option<ErrorCode> {
                match s { $($code => Some(ErrorCode::$variant),)* _ => None }
            }
        }
    };
}

error_codes! {
    BlobUnknown = "BLOB_UNKNOWN", 404, "blob unknown to registry";
    BlobUploadInvalid = "BLOB_UPLOAD_INVALID", 400, "blob upload invalid";
    BlobUploadUnknown = "BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry";
    DigestInvalid = "DIGEST_INVALID", 400, "provided digest did not match uploaded content";
    ManifestBlobUnknown = "MANIFEST_BLOB_UNKNOWN", 400, "blob unknown to registry";
    ManifestInvalid = "MANIFEST_INVALID", 400, "manifest invalid";
    ManifestUnknown = "MANIFEST_UNKNOWN", 404, "manifest unknown";
    ManifestUnverified = "MANIFEST_UNVERIFIED", 400, "manifest failed signature verification";
    NameInvalid = "NAME_INVALID", 400, "invalid repository name";
    NameUnknown = "NAME_UNKNOWN", 404, "repository name not known to registry";
    SizeInvalid = "SIZE_INVALID", 400, "provided length did not match content length";
    TagInvalid = "TAG_INVALID", 400, "manifest tag did not match URI";
    RangeInvalid = "RANGE_INVALID", 416, "invalid content range";
    PaginationNumberInvalid = "PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested";
    Unauthorized = "UNAUTHORIZED", 401, "authentication required";
    Denied = "DENIED", 403, "requested access to the resource is denied";
    Unsupported = "UNSUPPORTED", 405, "the operation is unsupported";
    TooManyRequests = "TOOMANYREQUESTS", 429, "too many requests";
    Unavailable = "UNAVAILABLE", 503, "service unavailable";
    Unknown = "UNKNOWN", 500, "unknown error";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of an error body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// The wire code, e.g. `MANIFEST_UNKNOWN` (kept as a string: registries add their own).
    pub code: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// Extra structured information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

impl fmt::Display for ErrorInfo {
    /// Docker's rendering: the code lower-cased with spaces, then the message, e.g.
    /// `unauthorized: authentication required`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.code.to_lowercase().replace('_', " ");
        if self.message.is_empty() {
            f.write_str(&code)
        } else {
            write!(f, "{code}: {}", self.message)
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The errors, usually one.
    #[serde(default)]
    pub errors: Vec<ErrorInfo>,
}

/// An error the server answers with: a code, a message, optional detail, extra headers.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The spec's code.
    pub code: ErrorCode,
    /// The message (the code's default unless overridden).
    pub message: String,
    /// Optional detail value.
    pub detail: Option<serde_json::Value>,
    /// The HTTP status (the code's own unless overridden, e.g. 413 for oversized bodies).
    pub status: StatusCode,
    /// Extra response headers (e.g. `WWW-Authenticate`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with the code's default message and status.
    pub fn new(code: ErrorCode) -> ApiError {
        ApiError {
            code,
            message: code.message().to_string(),
            detail: None,
            status: code.status(),
            headers: Vec::new(),
        }
    }

    /// Replaces the message.
    pub fn message(mut self, message: impl Into<String>) -> ApiError {
        self.message = message.into();
        self
    }

    /// Sets the detail to a string.
    pub fn detail(mut self, detail: impl Into<String>) -> ApiError {
        self.detail = Some(serde_json::Value::String(detail.into()));
        self
    }

    /// Overrides the HTTP status.
    pub fn status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    /// Adds a response header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> ApiError {
        self.headers.push((name, value));
        self
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            errors: vec![ErrorInfo {
                code: self.code.as_str().to_string(),
                message: self.message.clone(),
                detail: self.detail.clone(),
            }],
        }
    }

    /// An internal failure: logged, answered as `UNKNOWN` with the message as detail.
    pub fn internal(what: impl fmt::Display) -> ApiError {
        tracing::error!("registry internal error: {what}");
        ApiError::new(ErrorCode::Unknown).detail(what.to_string())
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.body().errors[0], f)
    }
}

impl std::error::Error for ApiError {}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> ApiError {
        let (code, detail) = match &e {
            RouteError::NotFound(p) => {
                return ApiError::new(ErrorCode::NameUnknown)
                    .message("not found")
                    .detail(p.clone());
            }
            RouteError::NameInvalid(n) => (ErrorCode::NameInvalid, n),
            RouteError::DigestInvalid(d) => (ErrorCode::DigestInvalid, d),
            RouteError::TagInvalid(t) => (ErrorCode::TagInvalid, t),
        };
        ApiError::new(code).detail(detail.clone())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).expect("error body serialises");
        let mut resp = (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        for (k, v) in self.headers {
            resp.headers_mut().append(k, v);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_has_an_error_status() {
        for &code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
        assert_eq!(ErrorCode::ALL.len(), 20);
        assert_eq!(ErrorCode::BlobUnknown.status(), StatusCode::NOT_FOUND);
        assert_eq!(ErrorCode::Unauthorized.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(ErrorCode::RangeInvalid.status().as_u16(), 416);
        assert_eq!(ErrorCode::parse("NOPE"), None);
    }

    #[test]
    fn body_shape_and_docker_rendering() {
        let e = ApiError::new(ErrorCode::ManifestUnknown).detail("latest");
        let json = serde_json::to_value(e.body()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":"latest"}]})
        );
        let no_detail = serde_json::to_value(ApiError::new(ErrorCode::Denied).body()).unwrap();
        assert!(no_detail["errors"][0].get("detail").is_none());
        assert_eq!(
            ApiError::new(ErrorCode::Unauthorized).to_string(),
            "unauthorized: authentication required"
        );
        let parsed: ErrorBody =
            serde_json::from_str(r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry","detail":{"name":"x"}}]}"#)
                .unwrap();
        assert_eq!(
            parsed.errors[0].to_string(),
            "name unknown: repository name not known to registry"
        );
    }

    #[test]
    fn route_errors_map_to_codes() {
        let e: ApiError = RouteError::NameInvalid("A".into()).into();
        assert_eq!(e.code, ErrorCode::NameInvalid);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e: ApiError = RouteError::NotFound("/x".into()).into();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn response_carries_status_headers_and_json() {
        let resp = ApiError::new(ErrorCode::Unauthorized)
            .header(
                axum::http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"x\""),
            )
            .into_response();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()["www-authenticate"], "Basic realm=\"x\"");
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body.errors[0].code, "UNAUTHORIZED");
    }
}
