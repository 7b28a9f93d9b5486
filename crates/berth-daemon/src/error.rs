//! Service-level errors: library failures classified into the handful of kinds the API maps
//! to status codes. Classification happens here, once; the HTTP layer only maps kinds.

/// What kind of failure an operation hit; decides the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 404: the container, image or exec does not exist.
    NotFound,
    /// 409: a name in use, a running container, an image in use.
    Conflict,
    /// 400: bad parameters from the client.
    InvalidArgument,
    /// 304: the operation had nothing to do (start a running container).
    NotModified,
    /// 401: a registry refused the credentials.
    Unauthorized,
    /// 500: anything else.
    Internal,
}

/// An error a service returns: a kind and a message for the client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ServiceError {
    /// The classification.
    pub kind: ErrorKind,
    /// What the client is told.
    pub message: String,
}

/// Result of a service call.
pub type ServiceResult<T> = Result<T, ServiceError>;

impl ServiceError {
    /// A 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        ServiceError {
            kind: ErrorKind::NotFound,
            message: message.into(),
        }
    }
    /// A 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        ServiceError {
            kind: ErrorKind::Conflict,
            message: message.into(),
        }
    }
    /// A 400.
    pub fn invalid(message: impl Into<String>) -> Self {
        ServiceError {
            kind: ErrorKind::InvalidArgument,
            message: message.into(),
        }
    }
    /// A 304.
    pub fn not_modified() -> Self {
        ServiceError {
            kind: ErrorKind::NotModified,
            message: String::new(),
        }
    }
    /// A 500.
    pub fn internal(message: impl Into<String>) -> Self {
        ServiceError {
            kind: ErrorKind::Internal,
            message: message.into(),
        }
    }
    /// The 404 for a container reference, with moby's wording.
    pub fn no_such_container(reference: &str) -> Self {
        Self::not_found(format!("No such container: {reference}"))
    }
}

impl From<berth_store::StoreError> for ServiceError {
    fn from(e: berth_store::StoreError) -> Self {
        use berth_store::StoreError as E;
        match &e {
            E::ImageNotFound(reference) => Self::not_found(format!("No such image: {reference}")),
            E::InvalidReference(_) => Self::invalid(e.to_string()),
            _ => Self::internal(e.to_string()),
        }
    }
}

impl From<berth_runtime::RuntimeError> for ServiceError {
    fn from(e: berth_runtime::RuntimeError) -> Self {
        Self::internal(e.to_string())
    }
}

impl From<tokio::task::JoinError> for ServiceError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::internal(format!("background task failed: {e}"))
    }
}

impl From<std::io::Error> for ServiceError {
    fn from(e: std::io::Error) -> Self {
        Self::internal(e.to_string())
    }
}
