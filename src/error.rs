//! `ApiError`: every way a request can fail, mapped to an HTTP status and the
//! JSON error body in this one place.

use actix_web::http::header::{HeaderValue, ALLOW, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, HttpResponseBuilder, ResponseError};

use crate::api::error::ErrorResponse;
use crate::api::openai::{OpenAiErrorDetail, OpenAiErrorResponse};
use crate::documents::StoreError;
use crate::engine::{PredictError, SubmitError, Task};
use crate::validation::ValidationError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    Invalid(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("no route for {method} {path}; see /docs/ for the API")]
    NotFound { method: String, path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed {
        method: String,
        path: String,
        allow: &'static str,
    },
    #[error("the {task} model is busy: its queue is full, retry shortly")]
    QueueFull { task: Task },
    #[error("the {task} model is not ready: {reason}")]
    NotReady { task: Task, reason: &'static str },
    #[error("{0}")]
    Inference(String),
    #[error("the request's deadline (x-timeout-ms) passed before the model could answer")]
    DeadlineExceeded,
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("too many requests from this client; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("no document with id {0:?}; GET /documents lists them")]
    DocumentNotFound(String),
    #[error("the store holds its limit of {0} documents; delete one first")]
    StoreFull(usize),
    /// Locked by another process, read-only, disk full.
    #[error("{0}")]
    StoreUnavailable(String),
    #[error("{0}")]
    Store(String),
    #[error("the model {0:?} is not served here; GET /v1/models lists the one that is")]
    ModelNotFound(String),
}

impl ApiError {
    fn kind(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::Invalid(_) => "validation_error",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::NotFound { .. } => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::QueueFull { .. } => "queue_full",
            ApiError::NotReady { .. } => "model_not_ready",
            ApiError::Inference(_) => "inference_error",
            ApiError::DeadlineExceeded => "deadline_exceeded",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::DocumentNotFound(_) => "document_not_found",
            ApiError::StoreFull(_) => "store_full",
            ApiError::StoreUnavailable(_) => "store_unavailable",
            ApiError::Store(_) => "store_error",
            ApiError::ModelNotFound(_) => "model_not_found",
        }
    }

    pub fn disabled(task: Task) -> ApiError {
        ApiError::NotReady {
            task,
            reason: "it is disabled in this server's configuration",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotReady { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Inference(_) => StatusCode::INTERNAL_SERVER_ERROR,
            // A 4xx: the client chose the deadline; the server did not fail.
            ApiError::DeadlineExceeded => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::DocumentNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::StoreFull(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::ModelNotFound(_) => StatusCode::NOT_FOUND,
        }
    }

    fn error_response(&self) -> HttpResponse {
        self.response_builder().json(ErrorResponse::from(self))
    }
}

impl ApiError {
    /// The status and headers (Retry-After, WWW-Authenticate, Allow) of
    /// this error's response, whatever the body's shape.
    fn response_builder(&self) -> HttpResponseBuilder {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::QueueFull { .. }
            | ApiError::NotReady { .. }
            | ApiError::StoreUnavailable(_) => {
                response.insert_header((RETRY_AFTER, HeaderValue::from_static("1")));
            }
            ApiError::RateLimited { retry_after_secs } => {
                response.insert_header((RETRY_AFTER, retry_after_secs.to_string()));
            }
            ApiError::Unauthorized(_) => {
                response.insert_header((WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                response.insert_header((ALLOW, HeaderValue::from_static(allow)));
            }
            _ => {}
        }
        response
    }

    /// The request field at fault, named at the start of validation messages
    /// ("max_tokens: must be ...").
    fn param(&self) -> Option<String> {
        let ApiError::Invalid(message) = self else {
            return None;
        };
        let (field, _) = message.split_once(": ")?;
        let plain = |c: char| c.is_ascii_alphanumeric() || "_.[]".contains(c);
        (!field.is_empty() && field.chars().all(plain)).then(|| field.to_string())
    }

    /// This error as its response under the given path: OpenAI's error shape
    /// under `/v1`, the service's own elsewhere.
    pub fn response_for(&self, path: &str) -> HttpResponse {
        if is_openai_path(path) {
            self.openai_response()
        } else {
            self.error_response()
        }
    }

    /// This error in OpenAI's shape, with the same status and headers. A
    /// passed deadline tells OpenAI's clients not to retry (they retry 408).
    pub fn openai_response(&self) -> HttpResponse {
        let mut response = self.response_builder();
        if matches!(self, ApiError::DeadlineExceeded) {
            response.insert_header(("x-should-retry", "false"));
        }
        response.json(OpenAiErrorResponse::from(self))
    }
}

impl From<&ApiError> for OpenAiErrorResponse {
    fn from(error: &ApiError) -> Self {
        let kind = match error.status_code() {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            status if status.is_server_error() => "server_error",
            _ => "invalid_request_error",
        };
        OpenAiErrorResponse {
            error: OpenAiErrorDetail {
                message: error.to_string(),
                kind: kind.to_string(),
                param: error.param(),
                code: error.kind().to_string(),
            },
        }
    }
}

/// The routes that answer as OpenAI's API does.
pub fn is_openai_path(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// An `ApiError` answered in OpenAI's error shape: what the `/v1` handlers
/// and extractors return.
#[derive(Debug)]
pub struct OpenAiError(pub ApiError);

impl std::fmt::Display for OpenAiError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(formatter)
    }
}

impl ResponseError for OpenAiError {
    fn status_code(&self) -> StatusCode {
        self.0.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        self.0.openai_response()
    }
}

impl<T: Into<ApiError>> From<T> for OpenAiError {
    fn from(error: T) -> Self {
        OpenAiError(error.into())
    }
}

impl From<&ApiError> for ErrorResponse {
    fn from(error: &ApiError) -> Self {
        ErrorResponse {
            error: error.to_string(),
            kind: error.kind().to_string(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(id) => ApiError::DocumentNotFound(id),
            StoreError::Full(limit) => ApiError::StoreFull(limit),
            StoreError::Unavailable(detail) => {
                tracing::warn!("document store unavailable: {detail}");
                ApiError::StoreUnavailable(format!(
                    "the document store is unavailable ({detail}); retry shortly"
                ))
            }
            StoreError::Internal(detail) => {
                tracing::error!("document store error: {detail}");
                ApiError::Store(format!("document store error: {detail}"))
            }
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        ApiError::Invalid(error.to_string())
    }
}

impl From<SubmitError> for ApiError {
    fn from(error: SubmitError) -> Self {
        match error {
            SubmitError::NotReady(task) => ApiError::NotReady {
                task,
                reason: "it is still loading",
            },
            SubmitError::QueueFull(task) => ApiError::QueueFull { task },
            SubmitError::WorkerGone(task) => ApiError::NotReady {
                task,
                reason: "its worker has stopped",
            },
            SubmitError::Predict(PredictError::Invalid { field, message }) => {
                ApiError::Invalid(format!("{field}: {message}"))
            }
            SubmitError::Predict(PredictError::DeadlineExceeded) => ApiError::DeadlineExceeded,
            SubmitError::Predict(PredictError::Failed(message)) => {
                tracing::error!("inference failed: {message}");
                ApiError::Inference(format!("the model failed on this request: {message}"))
            }
        }
    }
}
