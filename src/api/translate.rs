//! POST /translate bodies.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One English text or a list of them.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged, expecting = "a string or a list of strings")]
pub enum TextInput {
    /// A single text.
    One(String),
    /// Several texts, translated together.
    Many(Vec<String>),
}

/// Translate English text to German.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({
    "text": ["The weather is nice today.", "Machine learning models learn from data. They need examples."]
})))]
pub struct TranslateRequest {
    /// A string or a list of strings. Long texts are split into sentences and joined back.
    pub text: TextInput,
}

/// German translations, one per input text, in the same order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(examples(json!({
    "model": "Helsinki-NLP/opus-mt-en-de",
    "translations": ["Das Wetter ist heute schön.", "Modelle des maschinellen Lernens lernen aus Daten. Sie brauchen Beispiele."]
})))]
pub struct TranslateResponse {
    /// The model that answered.
    pub model: String,
    /// One translation per input text.
    pub translations: Vec<String>,
}
