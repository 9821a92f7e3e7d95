//! POST /qa

use actix_web::web::{Data, Json};

use crate::api::error::ErrorResponse;
use crate::api::qa::{Answer, QaRequest, QaResponse};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::AppState;
use crate::validation;

/// Answer a question from a context or from the reference document.
#[utoipa::path(
    post,
    path = "/qa",
    tag = "question answering",
    request_body = QaRequest,
    responses(
        (status = 200, description = "Answers, best first", body = QaResponse),
        (status = 400, description = "Malformed JSON", body = ErrorResponse),
        (status = 413, description = "Body too large", body = ErrorResponse),
        (status = 422, description = "Invalid field", body = ErrorResponse),
        (status = 429, description = "Queue full", body = ErrorResponse),
        (status = 503, description = "Model not ready", body = ErrorResponse),
    )
)]
pub async fn answer(
    state: Data<AppState>,
    JsonBody(request): JsonBody<QaRequest>,
) -> Result<Json<QaResponse>, ApiError> {
    let job = validation::question_answering(&request, &state.settings.qa, &state.reference.text)?;
    let document = if request.context.is_some() {
        "request".to_string()
    } else {
        state.reference.name.clone()
    };
    let answers = state.qa()?.submit(job).await?;
    Ok(Json(QaResponse {
        model: state.settings.qa.model.source.clone(),
        document,
        answers: answers
            .into_iter()
            .map(|span| Answer {
                text: span.text,
                score: span.score,
                start: span.start,
                end: span.end,
            })
            .collect(),
    }))
}
