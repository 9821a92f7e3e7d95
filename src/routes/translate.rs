//! POST /translate

use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};

use crate::api::error::ErrorResponse;
use crate::api::translate::{TranslateRequest, TranslateResponse};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::routes::timing::{insert_timing, request_timeout};
use crate::state::AppState;
use crate::validation;

/// Translate English text to German.
#[utoipa::path(
    post,
    path = "/translate",
    tag = "translation",
    request_body = TranslateRequest,
    params(("x-timeout-ms" = Option<u64>, Header, description = "Deadline in milliseconds; past it the request is dropped with 408", minimum = 1, maximum = 86400000)),
    responses(
        (status = 200, description = "One translation per input, same order", body = TranslateResponse,
            headers(("x-queue-time" = String, description = "Milliseconds spent queued"),
                    ("x-inference-time" = String, description = "Milliseconds of the batch that answered"))),
        (status = 400, description = "Malformed JSON", body = ErrorResponse),
        (status = 413, description = "Body too large", body = ErrorResponse),
        (status = 422, description = "Invalid field", body = ErrorResponse),
        (status = 429, description = "Queue full", body = ErrorResponse),
        (status = 503, description = "Model not ready", body = ErrorResponse),
        (status = 408, description = "Deadline passed", body = ErrorResponse),
    )
)]
pub async fn translate(
    state: Data<AppState>,
    http: HttpRequest,
    JsonBody(request): JsonBody<TranslateRequest>,
) -> Result<HttpResponse, ApiError> {
    let texts = validation::translation(&request, &state.settings.translation)?;
    let timeout = request_timeout(&http)?;
    let answered = state.translation()?.translate(texts, timeout).await?;
    let mut response = HttpResponse::Ok();
    insert_timing(
        &mut response,
        answered.queue_time,
        Some(answered.inference_time),
    );
    Ok(response.json(TranslateResponse {
        model: state.settings.translation.model.source.clone(),
        translations: answered.output,
    }))
}
