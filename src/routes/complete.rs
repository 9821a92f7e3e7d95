//! POST /complete

use actix_web::web::{Data, Json};

use crate::api::complete::{CompleteRequest, CompleteResponse, Completion, FinishReason, Usage};
use crate::api::error::ErrorResponse;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::predictors::completion::Finish;
use crate::state::AppState;
use crate::validation;

/// Continue a prompt.
#[utoipa::path(
    post,
    path = "/complete",
    tag = "completion",
    request_body = CompleteRequest,
    responses(
        (status = 200, description = "Completions", body = CompleteResponse),
        (status = 400, description = "Malformed JSON", body = ErrorResponse),
        (status = 413, description = "Body too large", body = ErrorResponse),
        (status = 422, description = "Invalid field", body = ErrorResponse),
        (status = 429, description = "Queue full", body = ErrorResponse),
        (status = 503, description = "Model not ready", body = ErrorResponse),
    )
)]
pub async fn complete(
    state: Data<AppState>,
    JsonBody(request): JsonBody<CompleteRequest>,
) -> Result<Json<CompleteResponse>, ApiError> {
    let job = validation::completion(&request, &state.settings.completion)?;
    let output = state.completion()?.submit(job).await?;
    Ok(Json(CompleteResponse {
        model: state.settings.completion.model.source.clone(),
        completions: output
            .completions
            .into_iter()
            .map(|generated| Completion {
                text: generated.text,
                finish_reason: match generated.finish {
                    Finish::Length => FinishReason::Length,
                    Finish::Eos => FinishReason::Eos,
                    Finish::Stop => FinishReason::Stop,
                },
            })
            .collect(),
        usage: Usage {
            prompt_tokens: output.prompt_tokens,
            completion_tokens: output.completion_tokens,
        },
    }))
}
