//! HTTP handlers, one module per endpoint: validate, submit to the task's
//! queue, shape the response. `configure` registers them all.

pub mod complete;
pub mod documents;
pub mod fallback;
pub mod generation;
pub mod health;
pub mod metrics;
pub mod openai;
pub mod page;
pub mod qa;
pub mod timing;
pub mod translate;

use actix_web::{web, Resource, Route};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::api::openapi::ApiDoc;
use crate::extract::BodyLimit;

/// Registers every route; unknown paths and methods get JSON 404/405.
/// `document_body_limit` is the body limit of `POST /documents` (documents
/// are larger than other requests).
pub fn configure(config: &mut web::ServiceConfig, document_body_limit: usize) {
    openai::mark_started();
    config
        .service(resource(
            "/complete",
            "POST",
            web::post().to(complete::complete),
        ))
        .service(resource("/qa", "POST", web::post().to(qa::answer)))
        .service(resource(
            "/qa/document",
            "GET",
            web::get().to(qa::reference_document),
        ))
        .service(
            web::resource("/documents")
                .app_data(BodyLimit(document_body_limit))
                .route(web::get().to(documents::list))
                .route(web::post().to(documents::add))
                .default_service(web::to(|request: actix_web::HttpRequest| {
                    fallback::method_not_allowed(request, "GET, POST")
                })),
        )
        .service(
            web::resource("/documents/{id}")
                .route(web::get().to(documents::get))
                .route(web::delete().to(documents::delete))
                .default_service(web::to(|request: actix_web::HttpRequest| {
                    fallback::method_not_allowed(request, "GET, DELETE")
                })),
        )
        .service(resource(
            "/translate",
            "POST",
            web::post().to(translate::translate),
        ))
        .service(resource(
            "/v1/completions",
            "POST",
            web::post().to(openai::completions),
        ))
        .service(resource("/v1/models", "GET", web::get().to(openai::models)))
        .service(resource(
            "/v1/models/{model:.+}",
            "GET",
            web::get().to(openai::model),
        ))
        .service(resource("/health", "GET", web::get().to(health::health)))
        .service(resource("/ready", "GET", web::get().to(health::ready)))
        .service(resource("/metrics", "GET", web::get().to(metrics::metrics)))
        .service(resource("/", "GET", web::get().to(page::index)))
        .service(resource(
            "/static/app.js",
            "GET",
            web::get().to(page::script),
        ))
        .service(resource(
            "/static/app.css",
            "GET",
            web::get().to(page::stylesheet),
        ))
        .service(SwaggerUi::new("/docs/{_:.*}").url("/api-docs/openapi.json", ApiDoc::openapi()))
        .default_service(web::to(fallback::not_found));
}

/// A path served by one route (`allow` is its method); other methods on it
/// get 405 with an `Allow` header.
fn resource(path: &str, allow: &'static str, route: Route) -> Resource {
    web::resource(path).route(route).default_service(web::to(
        move |request: actix_web::HttpRequest| fallback::method_not_allowed(request, allow),
    ))
}
