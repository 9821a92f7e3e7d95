//! /documents: the store that /qa answers over. Store calls are SQLite and
//! run on actix's blocking threads, never on the executor or a model thread.

use actix_web::http::header::{CONTENT_TYPE, LOCATION};
use actix_web::web::{self, Data, Json, Path};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::api::documents::{Document, DocumentList, DocumentSummary, NewDocument};
use crate::api::error::ErrorResponse;
use crate::documents::{DocumentStore, StoreError};
use crate::error::ApiError;
use crate::extract::{parse, RawBody};
use crate::state::AppState;

/// Runs a store call on a blocking thread.
async fn on_store<T: Send + 'static>(
    state: &AppState,
    call: impl FnOnce(&DocumentStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.documents.clone();
    web::block(move || call(&store))
        .await
        .map_err(|error| {
            ApiError::StoreUnavailable(format!("the store call did not run: {error}"))
        })?
        .map_err(ApiError::from)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    title: Option<String>,
}

/// Store a document: JSON `{title, text}`, or plain text / Markdown as the
/// body (`Content-Type: text/plain` or `text/markdown`) with `?title=`
/// (default: its first Markdown heading, else its first line).
#[utoipa::path(
    post,
    path = "/documents",
    tag = "documents",
    request_body(content(
        (NewDocument = "application/json"),
        // Any text is a document: declared without a type, so no body is
        // "of the wrong type" (a JSON object sent as Markdown is Markdown).
        (serde_json::Value = "text/plain"),
        (serde_json::Value = "text/markdown"),
    )),
    params(("title" = Option<String>, Query, description = "Title of a text/plain or text/markdown upload")),
    responses(
        (status = 201, description = "Stored; `Location` is its URL", body = DocumentSummary),
        (status = 400, description = "Malformed JSON or text that is not UTF-8", body = ErrorResponse),
        (status = 413, description = "Larger than [documents] max_document_bytes", body = ErrorResponse),
        (status = 422, description = "Blank title or text, or the store is full", body = ErrorResponse),
        (status = 503, description = "The store is locked or read-only", body = ErrorResponse),
    )
)]
pub async fn add(
    state: Data<AppState>,
    http: HttpRequest,
    RawBody(body): RawBody,
) -> Result<HttpResponse, ApiError> {
    let document = new_document(&http, &body)?;
    let limits = &state.settings.documents;
    if document.text.len() > limits.max_document_bytes {
        return Err(ApiError::PayloadTooLarge {
            limit: limits.max_document_bytes,
        });
    }
    if document.title.trim().is_empty() || document.text.trim().is_empty() {
        return Err(ApiError::Invalid(
            "title and text must not be blank".to_string(),
        ));
    }
    let title_chars = document.title.chars().count();
    if title_chars > limits.max_title_chars {
        return Err(ApiError::Invalid(format!(
            "title: is {title_chars} characters long; the limit is {}",
            limits.max_title_chars
        )));
    }
    let (info, size) = on_store(&state, move |store| {
        let info = store.add(document.title.trim(), &document.text)?;
        Ok((info, store.size().ok()))
    })
    .await?;
    state.metrics.store_size(size);
    Ok(HttpResponse::Created()
        .insert_header((LOCATION, format!("/documents/{}", info.id)))
        .json(DocumentSummary::from(info)))
}

/// The document a POST body describes, by its content type.
fn new_document(http: &HttpRequest, body: &[u8]) -> Result<NewDocument, ApiError> {
    // Unknown query parameters are refused whatever the body.
    let query = web::Query::<UploadQuery>::from_query(http.query_string())
        .map_err(|error| ApiError::Invalid(format!("query: {error}")))?;
    let content_type = http
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    if !content_type.starts_with("text/") {
        return parse(body);
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::MalformedJson("the text is not valid UTF-8".to_string()))?
        .to_string();
    let title = query
        .into_inner()
        .title
        .unwrap_or_else(|| default_title(&text));
    Ok(NewDocument { title, text })
}

/// The first Markdown heading, else the first non-blank line, shortened.
fn default_title(text: &str) -> String {
    let heading = text
        .lines()
        .find_map(|line| line.strip_prefix("# ").map(str::trim));
    let line = heading.or_else(|| text.lines().map(str::trim).find(|line| !line.is_empty()));
    let title: String = line.unwrap_or("untitled").chars().take(80).collect();
    title
}

/// Every stored document (without texts), oldest first.
#[utoipa::path(
    get,
    path = "/documents",
    tag = "documents",
    responses(
        (status = 200, description = "Stored documents", body = DocumentList),
        (status = 503, description = "The store is unavailable", body = ErrorResponse),
    )
)]
pub async fn list(state: Data<AppState>) -> Result<Json<DocumentList>, ApiError> {
    let documents = on_store(&state, |store| store.list()).await?;
    Ok(Json(DocumentList {
        documents: documents.into_iter().map(DocumentSummary::from).collect(),
    }))
}

/// A stored document with its text.
#[utoipa::path(
    get,
    path = "/documents/{id}",
    tag = "documents",
    params(("id" = String, Path, description = "Document id")),
    responses(
        (status = 200, description = "The document", body = Document),
        (status = 404, description = "No such document", body = ErrorResponse),
        (status = 503, description = "The store is unavailable", body = ErrorResponse),
    )
)]
pub async fn get(state: Data<AppState>, id: Path<String>) -> Result<Json<Document>, ApiError> {
    let id = id.into_inner();
    let (info, text) = on_store(&state, move |store| store.get(&id)).await?;
    Ok(Json(Document {
        summary: info.into(),
        text,
    }))
}

/// Delete a stored document and its passages (the reference document stays).
#[utoipa::path(
    delete,
    path = "/documents/{id}",
    tag = "documents",
    params(("id" = String, Path, description = "Document id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such document", body = ErrorResponse),
        (status = 422, description = "The reference document cannot be deleted", body = ErrorResponse),
        (status = 503, description = "The store is unavailable", body = ErrorResponse),
    )
)]
pub async fn delete(state: Data<AppState>, id: Path<String>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    if id == state.reference.name {
        return Err(ApiError::Invalid(format!(
            "{id} is the reference document, answered from when /qa gets no context; it cannot be deleted"
        )));
    }
    let size = on_store(&state, move |store| {
        store.delete(&id)?;
        Ok(store.size().ok())
    })
    .await?;
    state.metrics.store_size(size);
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::default_title;

    #[test]
    fn an_upload_is_titled_by_its_heading_or_first_line() {
        assert_eq!(default_title("\n# Trees\n\nText."), "Trees");
        assert_eq!(default_title("\n  First line  \nSecond"), "First line");
        assert_eq!(default_title(""), "untitled");
        assert_eq!(default_title(&"x".repeat(100)).len(), 80);
    }
}
