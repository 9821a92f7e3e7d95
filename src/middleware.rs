//! Per-request HTTP concerns: the request id echoed in `x-request-id`, and
//! request counts and durations by route and status.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::{Error, HttpMessage};
use tracing_actix_web::RequestId;

use crate::state::AppState;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

pub async fn observe(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let method = request.method().to_string();
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.to_string());
    let state = request.app_data::<Data<AppState>>().cloned();
    let mut response = next.call(request).await?;
    if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), id);
    }
    if let Some(state) = state {
        // Label by route pattern, never by raw path, to keep cardinality bounded.
        let route = response
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_string());
        state.metrics.http_request(
            &route,
            &method,
            response.status().as_u16(),
            started.elapsed(),
        );
    }
    Ok(response)
}
