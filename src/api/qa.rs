//! POST /qa bodies.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Ask a question about a context, a stored document, every stored document,
/// or (with none of these) the server's reference document. Over documents
/// and long contexts, BM25 picks the passages that are read.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({
    "question": "Who introduced support vector machines?",
    "top_k": 2
})))]
pub struct QaRequest {
    /// The question; must not be empty.
    #[schema(min_length = 1)]
    pub question: String,
    /// The text to answer from, read whole up to `[qa] read_whole_context_chars`
    /// (6000) characters, retrieved from like a document beyond.
    pub context: Option<String>,
    /// The id of a stored document to answer from (see `GET /documents`).
    pub document: Option<String>,
    /// `"all"`: search every stored document.
    pub documents: Option<DocumentScope>,
    /// How many retrieved passages to read, 1 to `[documents] max_passages`
    /// (10). Default `[documents] passages` (3).
    #[schema(minimum = 1)]
    pub passages: Option<u32>,
    /// How many answers to return, 1 to 5. Default 1.
    #[schema(minimum = 1, maximum = 5)]
    pub top_k: Option<u32>,
}

/// Which stored documents a question searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DocumentScope {
    All,
}

/// A span of the context that answers the question.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Answer {
    /// The answer text: exactly the context's characters from `start` to `end`.
    pub text: String,
    /// The model's probability of this span (start × end, as transformers'
    /// pipeline scores it); an answer found again in an overlapping window
    /// of a long context adds that window's score, so it can exceed 1.
    pub score: f64,
    /// Offset of the first character of the answer in the context, in Unicode code points.
    pub start: usize,
    /// Offset just past the last character of the answer, in Unicode code points.
    pub end: usize,
    /// Where `start` and `end` point: a stored document's id, or "request"
    /// for the request's context.
    pub document: String,
}

/// A passage the reader read, located like an answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PassageRead {
    /// A stored document's id, or "request".
    pub document: String,
    /// First character, in Unicode code points.
    pub start: usize,
    /// Just past the last character, in Unicode code points.
    pub end: usize,
    /// Its BM25 score for the question (higher matches better); null for a
    /// context read whole.
    pub score: Option<f64>,
}

/// Answers, best first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(examples(json!({
    "model": "distilbert-base-cased-distilled-squad",
    "document": "machine-learning.md",
    "answers": [{"text": "Corinna Cortes and Vladimir Vapnik", "score": 0.93, "start": 2181,
                 "end": 2215, "document": "machine-learning.md"}],
    "passages": [{"document": "machine-learning.md", "start": 1805, "end": 2304, "score": 11.2}]
})))]
pub struct QaResponse {
    /// The model that answered.
    pub model: String,
    /// What was searched: "request" when the request sent a context, "all"
    /// for every stored document, else a document id (the reference
    /// document's is its file name).
    pub document: String,
    /// Up to `top_k` answers, best first.
    pub answers: Vec<Answer>,
    /// What the reader read, best match first.
    pub passages: Vec<PassageRead>,
}

/// The built-in document of `POST /qa`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReferenceDocumentResponse {
    /// File name, as in `QaResponse.document`.
    pub name: String,
    /// The whole text.
    pub text: String,
}
