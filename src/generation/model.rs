//! What the generation engine needs from a model. The scheduler is generic
//! over `CausalLm`, and validation over `PromptEncoder`: a new decoder-only
//! architecture is a new type implementing them, not a change here.

use tch::Tensor;

use super::kv_cache::{KvCache, Prefilled};
use super::request::{EncodedPrompt, GenerationRequest};
use crate::engine::PredictError;

/// A decoder-only language model with a key/value cache (`CompletionModel`
/// over GPT-2, GPT-Neo or GPT-J).
/// Runs on the model thread only, so it needs to be neither `Send` nor
/// `Sync` once loaded.
pub trait CausalLm {
    /// An empty cache shaped for this model.
    fn new_cache(&self) -> KvCache;
    /// Runs several prompts together (left-padded): next-token logits
    /// ([rows, vocab]) and each layer's keys and values.
    fn prefill(&self, prompts: &[&[i64]]) -> Prefilled;
    /// Feeds one token to every row of `cache`, each at its own position;
    /// returns next-token logits, [rows, vocab].
    fn step(&self, tokens: &[i64], positions: &[i64], cache: &mut KvCache) -> Tensor;
    /// The token that ends a text.
    fn eos_id(&self) -> i64;
    /// The text of `ids` (no special tokens, no clean-up), such that the
    /// text of a sequence is the text of its pieces joined.
    fn decode(&self, ids: &[i64]) -> String;
}

/// Turns a request's prompt into ids and checks every limit that needs them
/// (prompt length, context). Runs on the tokenizer pool, shared by its
/// threads.
pub trait PromptEncoder: Send + Sync {
    fn encode(&self, request: &GenerationRequest) -> Result<EncodedPrompt, PredictError>;
}
