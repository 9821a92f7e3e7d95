//! HTTP handlers, one module per endpoint: validate, submit to the task's
//! queue, shape the response. `configure` registers them all.

pub mod complete;
pub mod fallback;
pub mod health;
pub mod metrics;
pub mod page;
pub mod qa;
pub mod timing;
pub mod translate;

use actix_web::{web, Resource, Route};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::api::openapi::ApiDoc;

/// Registers every route; unknown paths and methods get JSON 404/405.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(resource("/complete", web::post().to(complete::complete)))
        .service(resource("/qa", web::post().to(qa::answer)))
        .service(resource(
            "/qa/document",
            web::get().to(qa::reference_document),
        ))
        .service(resource("/translate", web::post().to(translate::translate)))
        .service(resource("/health", web::get().to(health::health)))
        .service(resource("/ready", web::get().to(health::ready)))
        .service(resource("/metrics", web::get().to(metrics::metrics)))
        .service(resource("/", web::get().to(page::index)))
        .service(resource("/static/app.js", web::get().to(page::script)))
        .service(resource("/static/app.css", web::get().to(page::stylesheet)))
        .service(SwaggerUi::new("/docs/{_:.*}").url("/api-docs/openapi.json", ApiDoc::openapi()))
        .default_service(web::to(fallback::not_found));
}

/// A path served by one route; other methods on it get 405.
fn resource(path: &str, route: Route) -> Resource {
    web::resource(path)
        .route(route)
        .default_service(web::to(fallback::method_not_allowed))
}
