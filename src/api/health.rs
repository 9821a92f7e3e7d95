//! GET /health and GET /ready bodies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The state of one task's model.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ModelState {
    /// Not loaded yet.
    Loading,
    /// Loaded and serving.
    Ready,
    /// Loading failed; see the logs.
    Failed,
    /// Switched off in configuration.
    Disabled,
}

/// Process and model status.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatusResponse {
    /// "ok" (process up), "ready" or "not_ready".
    pub status: String,
    /// Each task's model state, by task name.
    pub models: BTreeMap<String, ModelState>,
}
