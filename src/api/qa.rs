//! POST /qa bodies.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Ask a question about a context, or about the server's reference document.
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
    /// The text to answer from. When absent, the server's reference document is used.
    pub context: Option<String>,
    /// How many answers to return, 1 to 5. Default 1.
    #[schema(minimum = 1, maximum = 5)]
    pub top_k: Option<u32>,
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
}

/// Answers, best first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(examples(json!({
    "model": "distilbert-base-cased-distilled-squad",
    "document": "machine-learning.md",
    "answers": [{"text": "Corinna Cortes and Vladimir Vapnik", "score": 0.93, "start": 2181, "end": 2215}]
})))]
pub struct QaResponse {
    /// The model that answered.
    pub model: String,
    /// The context used: "request" when the request sent one, else the reference document's file name.
    pub document: String,
    /// Up to `top_k` answers, best first.
    pub answers: Vec<Answer>,
}

/// The built-in document of `POST /qa`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReferenceDocumentResponse {
    /// File name, as in `QaResponse.document`.
    pub name: String,
    /// The whole text.
    pub text: String,
}
