//! HTTP handlers, one module per endpoint: validate, submit to the task's
//! queue, shape the response. `configure` registers them all.

pub mod complete;
pub mod fallback;
pub mod health;
pub mod metrics;
pub mod qa;
pub mod translate;

use actix_web::web;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::api::openapi::ApiDoc;

/// Registers every route; unknown paths and methods get JSON 404/405.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/complete")
                .route(web::post().to(complete::complete))
                .default_service(web::to(fallback::method_not_allowed)),
        )
        .service(
            web::resource("/qa")
                .route(web::post().to(qa::answer))
                .default_service(web::to(fallback::method_not_allowed)),
        )
        .service(
            web::resource("/translate")
                .route(web::post().to(translate::translate))
                .default_service(web::to(fallback::method_not_allowed)),
        )
        .service(
            web::resource("/health")
                .route(web::get().to(health::health))
                .default_service(web::to(fallback::method_not_allowed)),
        )
        .service(
            web::resource("/ready")
                .route(web::get().to(health::ready))
                .default_service(web::to(fallback::method_not_allowed)),
        )
        .service(
            web::resource("/metrics")
                .route(web::get().to(metrics::metrics))
                .default_service(web::to(fallback::method_not_allowed)),
        )
        .service(SwaggerUi::new("/docs/{_:.*}").url("/api-docs/openapi.json", ApiDoc::openapi()))
        .default_service(web::to(fallback::not_found));
}
