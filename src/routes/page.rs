//! The playground page at `/` and its two assets, compiled into the binary
//! from `web/` (no build step, no outside requests).

use actix_web::http::header::{CacheControl, CacheDirective, ContentType};
use actix_web::mime;
use actix_web::HttpResponse;

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const APP_CSS: &str = include_str!("../../web/app.css");

fn asset(content_type: mime::Mime, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType(content_type))
        // Revalidate: a new binary serves new assets at once.
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        .body(body)
}

pub async fn index() -> HttpResponse {
    asset(mime::TEXT_HTML_UTF_8, INDEX_HTML)
}

pub async fn script() -> HttpResponse {
    asset(mime::APPLICATION_JAVASCRIPT_UTF_8, APP_JS)
}

pub async fn stylesheet() -> HttpResponse {
    asset(mime::TEXT_CSS_UTF_8, APP_CSS)
}
