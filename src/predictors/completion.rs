//! Text completion with a GPT-2 family model: the request and answer types,
//! the prompt encoder that the tokenizer pool runs, and the loaded model
//! (tokenizer plus `Gpt2Decoder`). The decoding loop that serves many
//! requests at once is `generation::scheduler`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rust_bert::pipelines::common::{ModelType, TokenizerOption};
use tch::Device;

use super::{model_error, read_json, FAULT_INPUT};
use crate::engine::{LoadError, PredictError};
use crate::generation::gpt2::Gpt2Decoder;
use crate::generation::linear::{fbgemm_available, Precision};
use crate::model_source::{FileWanted, ModelLocation, CONFIG, WEIGHTS};

/// The files a GPT-2 model needs.
pub const FILES: [FileWanted; 4] = [
    CONFIG,
    WEIGHTS,
    FileWanted::required(&["vocab.json"]),
    FileWanted::required(&["merges.txt"]),
];

pub struct CompletionConfig {
    pub location: ModelLocation,
    pub device: Device,
    pub precision: Precision,
    pub max_prompt_tokens: usize,
    /// Testing only: the prompt FAULT_INPUT makes the generation loop panic
    /// (while sampling, outside any forward pass).
    pub fault_injection: bool,
}

/// How to generate: everything of a validated request but its prompt.
#[derive(Debug, Clone)]
pub struct GenerationOptions {
    pub max_new_tokens: usize,
    /// The end-of-text token is banned until this many tokens exist.
    pub min_new_tokens: usize,
    /// 0 means greedy decoding.
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: u32,
    pub repetition_penalty: f64,
    pub num_return_sequences: usize,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub stop_at_sentence_end: bool,
}

/// A validated completion request, before tokenization.
#[derive(Debug, Clone)]
pub struct CompletionJob {
    pub prompt: String,
    pub options: GenerationOptions,
}

/// A prompt as the model sees it.
#[derive(Debug, Clone)]
pub struct EncodedPrompt {
    pub ids: Vec<i64>,
    /// Testing only: the generation loop panics on this request.
    pub inject_fault: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Length,
    Eos,
    Stop,
    /// The request's deadline passed first.
    Deadline,
}

#[derive(Debug, Clone)]
pub struct GeneratedText {
    pub text: String,
    pub finish: Finish,
}

#[derive(Debug, Clone)]
pub struct CompletionOutput {
    pub completions: Vec<GeneratedText>,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

/// Turns prompts into token ids and checks every limit that needs them. It
/// runs on the tokenizer pool, so a prompt over a limit is refused before it
/// takes a queue slot, and no model thread ever tokenizes.
pub struct PromptEncoder {
    tokenizer: Arc<TokenizerOption>,
    max_prompt_tokens: usize,
    context_length: usize,
    fault_injection: bool,
}

impl PromptEncoder {
    /// The prompt's token ids, checked against the prompt limit and the
    /// model's context.
    pub fn encode(&self, job: &CompletionJob) -> Result<EncodedPrompt, PredictError> {
        let ids = self
            .tokenizer
            .convert_tokens_to_ids(&self.tokenizer.tokenize(&job.prompt));
        self.check_lengths(ids.len(), job.options.max_new_tokens)?;
        Ok(EncodedPrompt {
            ids,
            inject_fault: self.fault_injection && job.prompt == FAULT_INPUT,
        })
    }

    fn check_lengths(
        &self,
        prompt_tokens: usize,
        max_new_tokens: usize,
    ) -> Result<(), PredictError> {
        let context_length = self.context_length;
        if prompt_tokens == 0 {
            // GPT-2's tokenizer drops a prompt of only spaces.
            return Err(PredictError::Invalid {
                field: "prompt".into(),
                message: "contains no tokens (only whitespace?)".into(),
            });
        }
        if prompt_tokens > self.max_prompt_tokens {
            return Err(PredictError::Invalid {
                field: "prompt".into(),
                message: format!(
                    "is {prompt_tokens} tokens long; the limit is {} tokens",
                    self.max_prompt_tokens
                ),
            });
        }
        if prompt_tokens + max_new_tokens > context_length {
            return Err(PredictError::Invalid {
                field: "max_new_tokens".into(),
                message: format!(
                    "the prompt ({prompt_tokens} tokens) plus max_new_tokens ({max_new_tokens}) exceed the model's context of {context_length} tokens"
                ),
            });
        }
        Ok(())
    }
}

/// A GPT-2 model ready to decode: network, and the tokenizer both ways.
pub struct CompletionModel {
    pub decoder: Gpt2Decoder,
    tokenizer: Arc<TokenizerOption>,
    pub eos_id: i64,
    /// Shared with the tokenizer pool.
    pub encoder: Arc<PromptEncoder>,
}

impl CompletionModel {
    pub fn load(config: CompletionConfig) -> Result<CompletionModel, LoadError> {
        let files = &config.location.resolve(&FILES)?;
        let config_path = files.require("config.json")?;
        let model_config = read_json(config_path)?;
        let eos_id = model_config["eos_token_id"].as_i64().unwrap_or(50256);
        if config.precision != Precision::Fp32 && config.device != Device::Cpu {
            return Err(model_error(
                &files.source,
                format!(
                    "precision {} runs on the CPU only (libtorch's fbgemm kernels); use fp32 on {:?}",
                    config.precision.name(),
                    config.device
                ),
            ));
        }
        if config.precision != Precision::Fp32 && !fbgemm_available() {
            return Err(model_error(
                &files.source,
                format!(
                    "precision {} needs libtorch's fbgemm kernels (x86-64 with AVX2); use fp32",
                    config.precision.name()
                ),
            ));
        }
        let decoder = Gpt2Decoder::load(
            config_path,
            files.require("rust_model.ot")?,
            config.precision,
            config.device,
        )
        .map_err(|error| model_error(&files.source, error))?;
        let vocab = files.require("vocab.json")?;
        let merges = files.require("merges.txt")?;
        let tokenizer = Arc::new(
            TokenizerOption::from_file(
                ModelType::GPT2,
                &vocab.to_string_lossy(),
                Some(&merges.to_string_lossy()),
                false,
                None,
                None,
            )
            .map_err(|error| model_error(&files.source, error))?,
        );
        let encoder = Arc::new(PromptEncoder {
            tokenizer: tokenizer.clone(),
            max_prompt_tokens: config.max_prompt_tokens,
            context_length: decoder.shape().context_length,
            fault_injection: config.fault_injection,
        });
        Ok(CompletionModel {
            decoder,
            tokenizer,
            eos_id,
            encoder,
        })
    }

    /// The text of `ids`, without special tokens and without clean-up, so the
    /// text of a sequence is the text of its pieces joined.
    pub fn decode(&self, ids: &[i64]) -> String {
        self.tokenizer.decode(ids, true, false)
    }
}

/// A seed for a request that gave none.
pub fn fresh_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0)
}
