//! JSON answers for unknown routes and wrong methods.

use actix_web::{HttpRequest, HttpResponse};

use crate::error::ApiError;

pub async fn not_found(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound {
        method: request.method().to_string(),
        path: request.path().to_string(),
    })
}

pub async fn method_not_allowed(
    request: HttpRequest,
    allow: &'static str,
) -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed {
        method: request.method().to_string(),
        path: request.path().to_string(),
        allow,
    })
}
