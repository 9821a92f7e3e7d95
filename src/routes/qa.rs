//! POST /qa

use std::time::Instant;

use actix_web::web::{self, Data, Json};
use actix_web::{HttpRequest, HttpResponse};

use crate::api::error::ErrorResponse;
use crate::api::qa::{Answer, PassageRead, QaRequest, QaResponse, ReferenceDocumentResponse};
use crate::documents::{DocumentStore, Hit, Scope};
use crate::engine::Answered;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::qa::reader::{self, FoundAnswer};
use crate::qa::{QaJob, QaPlan, QaSource};
use crate::routes::timing::{insert_timing, request_timeout};
use crate::state::AppState;
use crate::validation;

/// Answer a question from a context, a stored document, every stored document
/// or the reference document. Over documents and contexts longer than
/// `[qa] read_whole_context_chars`, BM25 picks the passages the model reads.
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
        (status = 404, description = "No stored document with that id", body = ErrorResponse),
        (status = 422, description = "Invalid field", body = ErrorResponse),
        (status = 429, description = "Queue full", body = ErrorResponse),
        (status = 503, description = "Model not ready, or the document store unavailable", body = ErrorResponse),
        (status = 408, description = "Deadline passed", body = ErrorResponse),
    )
)]
pub async fn answer(
    state: Data<AppState>,
    http: HttpRequest,
    JsonBody(request): JsonBody<QaRequest>,
) -> Result<HttpResponse, ApiError> {
    let plan = validation::question_answering(
        &request,
        &state.settings.qa,
        &state.settings.documents,
        &state.reference.name,
    )?;
    let timeout = request_timeout(&http)?;
    let qa = state.qa()?;
    let (searched, answered, passages) = match &plan.source {
        QaSource::Whole(context) => {
            let job = QaJob {
                question: plan.question.clone(),
                context: context.clone(),
                top_k: plan.top_k,
            };
            let read = PassageRead {
                document: REQUEST.to_string(),
                start: 0,
                end: context.chars().count(),
                score: None,
            };
            let answered = qa.answer(job, timeout).await?;
            let answers = answered.output.into_iter().map(|span| FoundAnswer {
                document: REQUEST.to_string(),
                span,
            });
            let answered = Answered {
                output: answers.collect(),
                queue_time: answered.queue_time,
                inference_time: answered.inference_time,
            };
            (REQUEST.to_string(), answered, vec![read])
        }
        source => {
            let started = Instant::now();
            let hits = retrieve(&state, &plan, source.clone()).await?;
            state.metrics.retrieval(started.elapsed(), hits.len());
            let answered = reader::read(qa, &plan.question, &hits, plan.top_k, timeout).await?;
            let passages = hits
                .into_iter()
                .map(|hit| PassageRead {
                    document: hit.document,
                    start: hit.start,
                    end: hit.end,
                    score: Some(hit.score),
                })
                .collect();
            let searched = match source {
                QaSource::Document(id) => id.clone(),
                QaSource::All => "all".to_string(),
                _ => REQUEST.to_string(),
            };
            (searched, answered, passages)
        }
    };
    let mut response = HttpResponse::Ok();
    insert_timing(
        &mut response,
        answered.queue_time,
        Some(answered.inference_time),
    );
    Ok(response.json(QaResponse {
        model: state.settings.qa.model.source.clone(),
        document: searched,
        answers: answered
            .output
            .into_iter()
            .map(|found| Answer {
                text: found.span.text,
                score: found.span.score,
                start: found.span.start,
                end: found.span.end,
                document: found.document,
            })
            .collect(),
        passages,
    }))
}

/// Where answers in a request's own context point.
const REQUEST: &str = "request";

/// The passages to read for `plan`, best first (on a blocking thread: SQLite).
async fn retrieve(state: &AppState, plan: &QaPlan, source: QaSource) -> Result<Vec<Hit>, ApiError> {
    let store = state.documents.clone();
    let passage_chars = state.settings.documents.passage_chars;
    let (question, limit) = (plan.question.clone(), plan.passages);
    web::block(move || match source {
        QaSource::Document(id) => store.search(&question, Scope::One(&id), limit),
        QaSource::All => store.search(&question, Scope::All, limit),
        QaSource::LongContext(context) | QaSource::Whole(context) => {
            // Indexed in memory for this question only, like a stored document.
            let scratch = DocumentStore::in_memory(passage_chars)?;
            scratch.ensure(REQUEST, REQUEST, &context)?;
            scratch.search(&question, Scope::All, limit)
        }
    })
    .await
    .map_err(|error| ApiError::StoreUnavailable(format!("retrieval did not run: {error}")))?
    .map_err(ApiError::from)
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
