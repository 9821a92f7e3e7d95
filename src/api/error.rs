//! The error body every failed request gets.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What went wrong, for people (`error`) and programs (`type`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(examples(json!({
    "error": "temperature: must be between 0 and 5, got 7",
    "type": "validation_error"
})))]
pub struct ErrorResponse {
    /// A human-readable message; names the offending field where there is one.
    pub error: String,
    /// A stable machine-readable class: malformed_json, validation_error, payload_too_large,
    /// not_found, method_not_allowed, queue_full, model_not_ready, inference_error, deadline_exceeded,
    /// unauthorized, rate_limited, document_not_found, store_full, store_unavailable, store_error,
    /// model_not_found.
    #[serde(rename = "type")]
    pub kind: String,
}
