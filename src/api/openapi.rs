//! The OpenAPI document, generated from the handlers and body types. It is
//! served at /api-docs/openapi.json and committed as api/openapi.json.

use utoipa::OpenApi;

use super::{complete, documents, error, health, openai, qa, translate};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "nlp-serve",
        description = "Self-hosted language models as a web API: text completion, extractive question answering and English-to-German translation. Every error is a JSON body {\"error\", \"type\"} with a 4xx or 5xx status; under /v1 (the OpenAI-compatible routes) it is OpenAI's {\"error\": {\"message\", \"type\", \"param\", \"code\"}}."
    ),
    paths(
        crate::routes::complete::complete,
        crate::routes::qa::answer,
        crate::routes::qa::reference_document,
        crate::routes::documents::add,
        crate::routes::documents::list,
        crate::routes::documents::get,
        crate::routes::documents::delete,
        crate::routes::translate::translate,
        crate::routes::openai::completions,
        crate::routes::openai::models,
        crate::routes::openai::model,
        crate::routes::health::health,
        crate::routes::health::ready,
        crate::routes::metrics::metrics,
    ),
    components(schemas(
        complete::CompleteRequest,
        complete::StreamToken,
        complete::StreamEvent,
        complete::StreamEventName,
        complete::CompleteResponse,
        complete::Completion,
        complete::FinishReason,
        complete::Usage,
        qa::QaRequest,
        qa::QaResponse,
        qa::Answer,
        qa::ReferenceDocumentResponse,
        qa::DocumentScope,
        qa::PassageRead,
        documents::NewDocument,
        documents::DocumentSummary,
        documents::DocumentList,
        documents::Document,
        translate::TranslateRequest,
        translate::TranslateResponse,
        translate::TextInput,
        openai::OpenAiCompletionRequest,
        openai::Prompt,
        openai::StopSequences,
        openai::StreamOptions,
        openai::OpenAiCompletion,
        openai::Choice,
        openai::OpenAiFinishReason,
        openai::OpenAiUsage,
        openai::ModelCard,
        openai::ModelList,
        openai::OpenAiErrorResponse,
        openai::OpenAiErrorDetail,
        error::ErrorResponse,
        health::StatusResponse,
        health::ModelState,
    )),
    tags(
        (name = "completion", description = "Text completion: playground and autocomplete"),
        (name = "question answering", description = "Extractive question answering"),
        (name = "documents", description = "The document store that question answering retrieves passages from"),
        (name = "translation", description = "English to German"),
        (name = "openai", description = "OpenAI-compatible completions and models, for OpenAI's clients (errors in OpenAI's shape)"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

/// The document as pretty JSON, as committed in api/openapi.json.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
        + "\n"
}
