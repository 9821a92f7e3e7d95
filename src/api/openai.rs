//! Bodies of the OpenAI-compatible routes (`POST /v1/completions`,
//! `GET /v1/models`), shaped as OpenAI's legacy completions API so its
//! clients work unchanged.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A completion request as OpenAI's API takes it. `model` and `user` are
/// accepted and not used: this server answers with the model it serves.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({
    "model": "distilgpt2",
    "prompt": "Machine learning is",
    "max_tokens": 24,
    "temperature": 0.8,
    "top_p": 0.9,
    "seed": 42,
    "stop": "\n\n"
})))]
pub struct OpenAiCompletionRequest {
    /// Any name; the response reports the model this server serves.
    pub model: Option<String>,
    /// The text to continue, or a list of texts (each gets `n` choices, in order).
    pub prompt: Prompt,
    /// Tokens to generate at most per choice. Default 16, as OpenAI's (or the
    /// server's `max_new_tokens` where that is lower).
    #[schema(minimum = 1)]
    pub max_tokens: Option<u32>,
    /// Sampling temperature, 0 to 5 (OpenAI allows 0 to 2); 0 is greedy. Default 1.
    #[schema(minimum = 0.0, maximum = 5.0)]
    pub temperature: Option<f64>,
    /// Nucleus sampling, in (0, 1]. Default 1. (No top-k filter is applied here.)
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub top_p: Option<f64>,
    /// Choices per prompt (more than one needs temperature > 0). Default 1.
    #[schema(minimum = 1)]
    pub n: Option<u32>,
    /// Must equal `n` when given (each choice is sampled once).
    pub best_of: Option<u32>,
    /// Up to 4 strings; a choice ends before the first one it contains.
    pub stop: Option<StopSequences>,
    /// Random seed: the same seed and inputs give the same text.
    #[schema(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub seed: Option<u64>,
    /// Stream `data: {chunk}` Server-Sent Events, ending with `data: [DONE]`.
    pub stream: Option<bool>,
    /// With `include_usage`, the last chunk before `[DONE]` carries the token counts
    /// (only with `stream: true`).
    pub stream_options: Option<StreamOptions>,
    /// Return the prompt followed by the completion.
    pub echo: Option<bool>,
    /// Not available here: must be null (log probabilities are not computed).
    pub logprobs: Option<u32>,
    /// Not available here: must be null.
    pub suffix: Option<String>,
    /// Not available here: must be 0 when given.
    pub presence_penalty: Option<f64>,
    /// Not available here: must be 0 when given.
    pub frequency_penalty: Option<f64>,
    /// Not available here: must be empty when given.
    #[schema(value_type = Option<Object>)]
    pub logit_bias: Option<serde_json::Map<String, serde_json::Value>>,
    /// Accepted and not used.
    pub user: Option<String>,
}

/// One prompt or several.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged, expecting = "a string or a list of strings")]
pub enum Prompt {
    One(String),
    Many(Vec<String>),
}

impl Prompt {
    pub fn texts(&self) -> Vec<&str> {
        match self {
            Prompt::One(text) => vec![text.as_str()],
            Prompt::Many(texts) => texts.iter().map(String::as_str).collect(),
        }
    }
}

/// One stop sequence or several.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged, expecting = "a string or a list of strings")]
pub enum StopSequences {
    One(String),
    Many(Vec<String>),
}

impl StopSequences {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StopSequences::One(text) => vec![text],
            StopSequences::Many(texts) => texts,
        }
    }
}

/// Options of a streamed completion.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` (and no choices) before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
}

/// Why a choice ended: `stop` (end-of-text token or a stop sequence) or
/// `length` (`max_tokens`, or the request's deadline).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OpenAiFinishReason {
    Stop,
    Length,
}

/// One generated choice.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Choice {
    pub text: String,
    /// Position among all choices: prompt number × n + choice number.
    pub index: usize,
    /// Always null: log probabilities are not computed.
    #[schema(value_type = Option<Object>)]
    pub logprobs: Option<serde_json::Value>,
    /// Null in stream chunks until the choice's last chunk.
    pub finish_reason: Option<OpenAiFinishReason>,
}

/// Token counts over every choice of the request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OpenAiUsage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

/// A completion (`object: "text_completion"`); streamed chunks have the same
/// shape, with the new text of one choice each and `usage` null.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(examples(json!({
    "id": "cmpl-6f1c2f3a0b9d4e5f8a7b6c5d4e3f2a1b",
    "object": "text_completion",
    "created": 1764672000,
    "model": "distilgpt2",
    "choices": [{"text": " a field of computer science.", "index": 0, "logprobs": null, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 4, "completion_tokens": 24, "total_tokens": 28}
})))]
pub struct OpenAiCompletion {
    pub id: String,
    /// Always `text_completion`.
    pub object: String,
    /// Unix time in seconds.
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: Option<OpenAiUsage>,
}

/// A model this server serves.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(examples(json!({"id": "distilgpt2", "object": "model", "created": 1764672000, "owned_by": "nlp-serve"})))]
pub struct ModelCard {
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Unix time in seconds when the server started.
    pub created: u64,
    pub owned_by: String,
}

/// The models `POST /v1/completions` serves (the completion model).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<ModelCard>,
}

/// OpenAI's error body, used by every `/v1` route.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(examples(json!({"error": {
    "message": "max_tokens: must be between 1 and 256, got 4096",
    "type": "invalid_request_error",
    "param": "max_tokens",
    "code": "validation_error"
}})))]
pub struct OpenAiErrorResponse {
    pub error: OpenAiErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OpenAiErrorDetail {
    /// A human-readable message.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `rate_limit_error` or `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
    /// The service's stable error type (as `type` in its other routes' errors).
    pub code: String,
}
