//! GET /health (the process is up) and GET /ready (every enabled model is loaded).

use actix_web::web::Data;
use actix_web::HttpResponse;

use crate::api::health::{ModelState, StatusResponse};
use crate::engine::Task;
use crate::state::AppState;

fn models(state: &AppState) -> std::collections::BTreeMap<String, ModelState> {
    Task::ALL
        .iter()
        .map(|task| (task.name().to_string(), state.tasks.state(*task)))
        .collect()
}

/// Liveness: 200 while the process serves HTTP.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "The process is up", body = StatusResponse)))]
pub async fn health(state: Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(StatusResponse {
        status: "ok".into(),
        models: models(&state),
    })
}

/// Readiness: 200 only when every enabled model is loaded, else 503.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "Every enabled model is loaded", body = StatusResponse),
        (status = 503, description = "Some enabled model is not loaded", body = StatusResponse),
    ))]
pub async fn ready(state: Data<AppState>) -> HttpResponse {
    let models = models(&state);
    let ready = models
        .values()
        .all(|state| matches!(state, ModelState::Ready | ModelState::Disabled));
    let body = StatusResponse {
        status: if ready { "ready" } else { "not_ready" }.into(),
        models,
    };
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
