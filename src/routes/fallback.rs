//! JSON answers for unknown routes and wrong methods (in OpenAI's error
//! shape under `/v1`).

use actix_web::{HttpRequest, HttpResponse};

use crate::error::ApiError;

pub async fn not_found(request: HttpRequest) -> HttpResponse {
    ApiError::NotFound {
        method: request.method().to_string(),
        path: request.path().to_string(),
    }
    .response_for(request.path())
}

pub async fn method_not_allowed(request: HttpRequest, allow: &'static str) -> HttpResponse {
    ApiError::MethodNotAllowed {
        method: request.method().to_string(),
        path: request.path().to_string(),
        allow,
    }
    .response_for(request.path())
}
