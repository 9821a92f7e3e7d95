//! Text completion with a causal LM that uses GPT-2's tokenizer (GPT-2,
//! GPT-Neo, GPT-J; `generation::decoder` picks the forward passes by
//! model_type): its files, its prompt encoder (run by the tokenizer pool)
//! and the loaded model (tokenizer plus decoder). The generation engine that serves it is
//! `generation`; it knows this model only through its traits.

use std::sync::Arc;

use rust_bert::pipelines::common::{ModelType, TokenizerOption};
use tch::{Device, Tensor};

use super::{model_error, read_json, FAULT_INPUT};
use crate::engine::tokenizer_pool::TokenizerPool;
use crate::engine::{LoadError, LoadReport, PredictError};
use crate::generation::decoder::{self as decoders, Decoder};
use crate::generation::kv_cache::{KvCache, Prefilled};
use crate::generation::linear::{fbgemm_available, Precision};
use crate::generation::model::{CausalLm, PromptEncoder};
use crate::generation::request::{EncodedPrompt, GenerationRequest};
use crate::generation::scheduler::BatchLimits;
use crate::generation::{self, GenerationHandle};
use crate::metrics::Metrics;
use crate::model_source::{FileWanted, ModelLocation, CONFIG, WEIGHTS};

/// The weights, in the order they are looked for: those every task reads
/// (`WEIGHTS`), then torch.save's `pytorch_model.bin`, which is all some
/// hub repositories have on `main` (EleutherAI/gpt-j-6b).
pub const CAUSAL_WEIGHTS: FileWanted = FileWanted::required(&CAUSAL_WEIGHT_NAMES);
const CAUSAL_WEIGHT_NAMES: [&str; 4] = [
    WEIGHTS.names[0],
    WEIGHTS.names[1],
    WEIGHTS.names[2],
    "pytorch_model.bin",
];

/// The files a completion model needs (GPT-2's tokenizer files included).
pub const FILES: [FileWanted; 4] = [
    CONFIG,
    CAUSAL_WEIGHTS,
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

/// Turns prompts into token ids and checks every limit that needs them. It
/// runs on the tokenizer pool, so a prompt over a limit is refused before it
/// takes a queue slot, and no model thread ever tokenizes.
pub struct Gpt2PromptEncoder {
    tokenizer: Arc<TokenizerOption>,
    max_prompt_tokens: usize,
    context_length: usize,
    fault_injection: bool,
}

impl PromptEncoder for Gpt2PromptEncoder {
    /// The prompt's token ids, checked against the prompt limit and the
    /// model's context.
    fn encode(&self, request: &GenerationRequest) -> Result<EncodedPrompt, PredictError> {
        let ids = self
            .tokenizer
            .convert_tokens_to_ids(&self.tokenizer.tokenize(&request.prompt));
        self.check_lengths(ids.len(), request.options.max_new_tokens)?;
        Ok(EncodedPrompt {
            ids,
            inject_fault: self.fault_injection && request.prompt == FAULT_INPUT,
        })
    }
}

impl Gpt2PromptEncoder {
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

/// A causal LM ready to decode: network, and the tokenizer both ways.
pub struct CompletionModel {
    decoder: Decoder,
    tokenizer: Arc<TokenizerOption>,
    /// Ids the tokenizer knows; logits beyond (GPT-J 6B's vocab_size is
    /// 50400 for 50257 tokens) are dropped so no sampler can pick them.
    tokenizer_vocab: i64,
    eos_id: i64,
    /// Shared with the tokenizer pool.
    encoder: Arc<Gpt2PromptEncoder>,
}

/// Loads the completion model on its own thread and starts the generation
/// engine over it.
pub fn spawn(
    config: CompletionConfig,
    queue_size: usize,
    limits: BatchLimits,
    pool: TokenizerPool,
    metrics: Arc<Metrics>,
) -> std::io::Result<(GenerationHandle, LoadReport)> {
    generation::spawn(
        move || {
            let model = CompletionModel::load(config)?;
            let encoder: Arc<dyn PromptEncoder> = model.encoder.clone();
            Ok((model, encoder))
        },
        queue_size,
        limits,
        pool,
        metrics,
    )
}

impl CausalLm for CompletionModel {
    fn new_cache(&self) -> KvCache {
        self.decoder.new_cache()
    }

    fn prefill(&self, prompts: &[&[i64]]) -> Prefilled {
        let mut prefilled = self.decoder.prefill(prompts);
        prefilled.logits = self.known_tokens(prefilled.logits);
        prefilled
    }

    fn step(&self, tokens: &[i64], positions: &[i64], cache: &mut KvCache) -> Tensor {
        self.known_tokens(self.decoder.step(tokens, positions, cache))
    }

    fn eos_id(&self) -> i64 {
        self.eos_id
    }

    fn decode(&self, ids: &[i64]) -> String {
        self.tokenizer.decode(ids, true, false)
    }
}

impl CompletionModel {
    /// `logits` ([rows, vocab]) over the ids the tokenizer knows only.
    fn known_tokens(&self, logits: Tensor) -> Tensor {
        if logits.size()[1] > self.tokenizer_vocab {
            logits.narrow(1, 0, self.tokenizer_vocab)
        } else {
            logits
        }
    }

    pub fn load(config: CompletionConfig) -> Result<CompletionModel, LoadError> {
        let files = &config.location.resolve(&FILES)?;
        let config_path = files.require("config.json")?;
        let model_config = read_json(config_path)?;
        let eos_id = model_config["eos_token_id"].as_i64().unwrap_or(50256);
        let model_type = decoders::model_type(&model_config)
            .map_err(|error| model_error(&files.source, error))?;
        if config.precision.needs_fbgemm() && config.device != Device::Cpu {
            return Err(model_error(
                &files.source,
                format!(
                    "precision {} runs on the CPU only (libtorch's fbgemm kernels); use fp32 on {:?}",
                    config.precision.name(),
                    config.device
                ),
            ));
        }
        if config.precision.needs_fbgemm() && !fbgemm_available() {
            return Err(model_error(
                &files.source,
                format!(
                    "precision {} needs libtorch's fbgemm kernels (x86-64 with AVX2); use fp32",
                    config.precision.name()
                ),
            ));
        }
        super::warn_if_bf16_is_slow("completion", config.precision, config.device);
        let decoder = Decoder::load(
            model_type,
            config_path,
            files.require(CAUSAL_WEIGHTS.names[0])?,
            config.precision,
            config.device,
        )
        .map_err(|error| model_error(&files.source, error))?;
        let vocab = files.require("vocab.json")?;
        let merges = files.require("merges.txt")?;
        let tokenizer_vocab = read_json(vocab)?
            .as_object()
            .map_or(0, |entries| entries.len() as i64);
        if tokenizer_vocab == 0 {
            return Err(model_error(
                &files.source,
                format!("{} holds no tokens", vocab.display()),
            ));
        }
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
        let encoder = Arc::new(Gpt2PromptEncoder {
            tokenizer: tokenizer.clone(),
            max_prompt_tokens: config.max_prompt_tokens,
            context_length: decoder.shape().context_length,
            fault_injection: config.fault_injection,
        });
        Ok(CompletionModel {
            decoder,
            tokenizer,
            tokenizer_vocab,
            eos_id,
            encoder,
        })
    }
}
