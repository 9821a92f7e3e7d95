//! GET /metrics in the Prometheus text format.

use actix_web::web::Data;
use actix_web::HttpResponse;

use crate::state::AppState;

/// Prometheus exposition of the service's metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(state: Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
