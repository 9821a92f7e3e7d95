//! POST /qa

use actix_web::web::{Data, Json};
use actix_web::{HttpRequest, HttpResponse};

use crate::api::error::ErrorResponse;
use crate::api::qa::{Answer, QaRequest, QaResponse, ReferenceDocumentResponse};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::routes::timing::{insert_timing, request_timeout};
use crate::state::AppState;
use crate::validation;

/// Answer a question from a context or from the reference document.
#[utoipa::path(
    post,
    path = "/qa",
    tag = "question answering",
    request_body = QaRequest,
    params(("x-timeout-ms" = Option<u64>, Header, description = "Deadline in milliseconds; past it the request is dropped with 408", minimum = 1, maximum = 86400000)),
    responses(
        (status = 200, description = "Answers, best first", body = QaResponse,
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
pub async fn answer(
    state: Data<AppState>,
    http: HttpRequest,
    JsonBody(request): JsonBody<QaRequest>,
) -> Result<HttpResponse, ApiError> {
    let job = validation::question_answering(&request, &state.settings.qa, &state.reference.text)?;
    let document = if request.context.is_some() {
        "request".to_string()
    } else {
        state.reference.name.clone()
    };
    let timeout = request_timeout(&http)?;
    let answered = state.qa()?.answer(job, timeout).await?;
    let mut response = HttpResponse::Ok();
    insert_timing(
        &mut response,
        answered.queue_time,
        Some(answered.inference_time),
    );
    Ok(response.json(QaResponse {
        model: state.settings.qa.model.source.clone(),
        document,
        answers: answered
            .output
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

/// The reference document that questions without a context are answered from.
#[utoipa::path(
    get,
    path = "/qa/document",
    tag = "question answering",
    responses((status = 200, description = "The reference document; answer offsets index its text in code points", body = ReferenceDocumentResponse))
)]
pub async fn reference_document(state: Data<AppState>) -> Json<ReferenceDocumentResponse> {
    Json(ReferenceDocumentResponse {
        name: state.reference.name.clone(),
        text: state.reference.text.to_string(),
    })
}
