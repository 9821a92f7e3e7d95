//! The OpenAPI document, generated from the handlers and body types. It is
//! served at /api-docs/openapi.json and committed as api/openapi.json.

use utoipa::OpenApi;

use super::{complete, documents, error, health, qa, translate};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "nlp-serve",
        description = "Self-hosted language models as a web API: text completion, extractive question answering and English-to-German translation. Every error is a JSON body {\"error\", \"type\"} with a 4xx or 5xx status."
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
        error::ErrorResponse,
        health::StatusResponse,
        health::ModelState,
    )),
    tags(
        (name = "completion", description = "Text completion: playground and autocomplete"),
        (name = "question answering", description = "Extractive question answering"),
        (name = "documents", description = "The document store that question answering retrieves passages from"),
        (name = "translation", description = "English to German"),
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
