//! /documents bodies: the store that /qa answers over.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::documents::DocumentInfo;

/// A document to store. Plain text or Markdown can also be sent as the body
/// itself (`Content-Type: text/plain` or `text/markdown`, title in `?title=`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({
    "title": "Support vector machines",
    "text": "Support vector machines were introduced by Corinna Cortes and Vladimir Vapnik in 1995."
})))]
pub struct NewDocument {
    /// A name for people; need not be unique.
    #[schema(min_length = 1)]
    pub title: String,
    /// The text; must not be blank. Paragraphs are separated by blank lines.
    #[schema(min_length = 1)]
    pub text: String,
}

/// A stored document, without its text.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(examples(json!({
    "id": "doc-3f2a9c0b1d4e5f60", "title": "Support vector machines",
    "chars": 86, "passages": 1, "created": 1795000000
})))]
pub struct DocumentSummary {
    /// Its id: `document` in /qa requests and answers.
    pub id: String,
    pub title: String,
    /// Length in Unicode code points.
    pub chars: usize,
    /// Passages it was cut into for retrieval.
    pub passages: usize,
    /// When it was stored, in seconds since the Unix epoch.
    pub created: u64,
}

impl From<DocumentInfo> for DocumentSummary {
    fn from(info: DocumentInfo) -> DocumentSummary {
        DocumentSummary {
            id: info.id,
            title: info.title,
            chars: info.chars,
            passages: info.passages,
            created: info.created,
        }
    }
}

/// Every stored document, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DocumentList {
    pub documents: Vec<DocumentSummary>,
}

/// A stored document with its text.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Document {
    #[serde(flatten)]
    pub summary: DocumentSummary,
    /// The whole text; answer and passage offsets index it in code points.
    pub text: String,
}
