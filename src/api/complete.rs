//! POST /complete bodies.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Continue a prompt. Sampling options apply to this request only.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({
    "prompt": "Machine learning is",
    "max_new_tokens": 24,
    "temperature": 0.8,
    "top_p": 0.9,
    "seed": 42,
    "stop": ["\n\n"],
    "stop_at_sentence_end": true
})))]
pub struct CompleteRequest {
    /// The text to continue; must not be empty.
    #[schema(min_length = 1)]
    pub prompt: String,
    /// How many tokens to generate at most (default and cap set by the server).
    #[schema(minimum = 1)]
    pub max_new_tokens: Option<u32>,
    /// Generate at least this many tokens before the end-of-text token may end the text
    /// (default 0; at most `max_new_tokens`). Benchmarks use it for fixed-length output.
    pub min_new_tokens: Option<u32>,
    /// Sampling temperature, 0 to 5; 0 means greedy (deterministic) decoding. Default 1.
    #[schema(minimum = 0.0, maximum = 5.0)]
    pub temperature: Option<f64>,
    /// Nucleus sampling: keep the smallest set of tokens whose probabilities add up to this, in (0, 1]. Default 1.
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub top_p: Option<f64>,
    /// Sample only from the k most likely tokens; 0 disables the filter. Default 50.
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub top_k: Option<u32>,
    /// Penalty for repeating tokens, 1 to 10; 1 means none. Default 1.
    #[schema(minimum = 1.0, maximum = 10.0)]
    pub repetition_penalty: Option<f64>,
    /// How many completions to return (more than one needs temperature > 0). Default 1.
    #[schema(minimum = 1)]
    pub num_return_sequences: Option<u32>,
    /// Random seed: the same seed and inputs give the same text.
    #[schema(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub seed: Option<u64>,
    /// Up to 4 strings; each completion ends before the first one it contains.
    pub stop: Option<Vec<String>>,
    /// Trim each completion to its last complete sentence.
    #[serde(default)]
    pub stop_at_sentence_end: bool,
    /// Answer with Server-Sent Events instead of one JSON body: a `token` event
    /// (`StreamToken`) whenever text is settled, then one `done` event holding the
    /// whole `CompleteResponse` (or an `error` event holding an `ErrorResponse`).
    #[serde(default)]
    pub stream: bool,
}

/// Data of a `token` event of a streamed completion.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(examples(json!({"index": 0, "text": " learning"})))]
pub struct StreamToken {
    /// Which completion the text belongs to (0 unless `num_return_sequences` > 1).
    pub index: usize,
    /// New text; the texts of one index add up to that completion's final text.
    pub text: String,
}

/// Why a completion ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// `max_new_tokens` were generated.
    Length,
    /// The model produced its end-of-text token.
    Eos,
    /// A stop sequence was found.
    Stop,
    /// The request's deadline (`x-timeout-ms`) passed; the text is what was ready.
    Deadline,
}

/// One generated continuation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Completion {
    /// The generated text, without the prompt.
    pub text: String,
    /// Why generation ended.
    pub finish_reason: FinishReason,
}

/// Token counts of a request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated, over all completions (before stop trimming).
    pub completion_tokens: usize,
}

/// The completions of a prompt.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(examples(json!({
    "model": "distilgpt2",
    "completions": [{"text": " a field of computer science.", "finish_reason": "length"}],
    "usage": {"prompt_tokens": 4, "completion_tokens": 24}
})))]
pub struct CompleteResponse {
    /// The model that answered.
    pub model: String,
    /// One entry per returned sequence.
    pub completions: Vec<Completion>,
    /// Token counts.
    pub usage: Usage,
}

/// The name of a streamed completion's event.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StreamEventName {
    Token,
    Done,
    Error,
}

/// One Server-Sent Event of a streamed completion.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StreamEvent {
    /// `token` (several), then one `done` or `error`.
    pub event: StreamEventName,
    /// JSON: a `StreamToken` for `token`, the whole `CompleteResponse` for
    /// `done`, an `ErrorResponse` for `error`.
    pub data: String,
}
