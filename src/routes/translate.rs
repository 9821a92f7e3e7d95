//! POST /translate

use actix_web::web::{Data, Json};

use crate::api::error::ErrorResponse;
use crate::api::translate::{TranslateRequest, TranslateResponse};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::AppState;
use crate::validation;

/// Translate English text to German.
#[utoipa::path(
    post,
    path = "/translate",
    tag = "translation",
    request_body = TranslateRequest,
    responses(
        (status = 200, description = "One translation per input, same order", body = TranslateResponse),
        (status = 400, description = "Malformed JSON", body = ErrorResponse),
        (status = 413, description = "Body too large", body = ErrorResponse),
        (status = 422, description = "Invalid field", body = ErrorResponse),
        (status = 429, description = "Queue full", body = ErrorResponse),
        (status = 503, description = "Model not ready", body = ErrorResponse),
    )
)]
pub async fn translate(
    state: Data<AppState>,
    JsonBody(request): JsonBody<TranslateRequest>,
) -> Result<Json<TranslateResponse>, ApiError> {
    let job = validation::translation(&request, &state.settings.translation)?;
    let translations = state.translation()?.submit(job).await?;
    Ok(Json(TranslateResponse {
        model: state.settings.translation.model.source.clone(),
        translations,
    }))
}
