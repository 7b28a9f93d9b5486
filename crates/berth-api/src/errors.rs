//! The error body every failed API call returns.

use serde::{Deserialize, Serialize};

/// `{"message": "..."}`, sent with `Content-Type: application/json` exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// Human-readable error text; clients match on phrases such as `No such image`.
    pub message: String,
}
