//! Text completion with a GPT-2 family model. Every request carries its own
//! generation options (rust-bert `GenerateOptions`), so nothing is reloaded.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rust_bert::gpt2::GPT2Generator;
use rust_bert::pipelines::common::{ModelType, TokenizerOption};
use rust_bert::pipelines::generation_utils::{GenerateConfig, GenerateOptions, LanguageGenerator};
use tch::{Device, Kind, Tensor};

use super::{local, model_error, read_json, torch_weights};
use crate::engine::{LoadError, PredictError, Predictor, Task};
use crate::metrics::Metrics;
use crate::model_source::{FileWanted, ModelLocation, CONFIG, WEIGHTS};
use crate::text::{sentences::trim_to_sentence_end, stop::truncate_at_stop};

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
    pub max_prompt_tokens: usize,
    pub metrics: Arc<Metrics>,
}

/// A validated completion request.
#[derive(Debug, Clone)]
pub struct CompletionJob {
    pub prompt: String,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Length,
    Eos,
    Stop,
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

pub struct CompletionPredictor {
    generator: GPT2Generator,
    tokenizer: TokenizerOption,
    eos_id: i64,
    context_length: usize,
    max_prompt_tokens: usize,
    device: Device,
    metrics: Arc<Metrics>,
}

impl Predictor for CompletionPredictor {
    type Config = CompletionConfig;
    type Request = CompletionJob;
    type Output = CompletionOutput;

    fn init(config: CompletionConfig) -> Result<Self, LoadError> {
        let files = &config.location.resolve(&FILES)?;
        let model_config = read_json(files.require("config.json")?)?;
        let context_length = model_config["n_positions"]
            .as_u64()
            .or_else(|| model_config["n_ctx"].as_u64())
            .unwrap_or(1024) as usize;
        let eos_id = model_config["eos_token_id"].as_i64().unwrap_or(50256);
        let vocab = files.require("vocab.json")?;
        let merges = files.require("merges.txt")?;
        let generate_config = GenerateConfig {
            model_type: ModelType::GPT2,
            model_resource: torch_weights(files.require("rust_model.ot")?),
            config_resource: local(files.require("config.json")?),
            vocab_resource: local(vocab),
            merges_resource: Some(local(merges)),
            min_length: 0,
            max_length: None,
            do_sample: false,
            early_stopping: false,
            num_beams: 1,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            length_penalty: 1.0,
            no_repeat_ngram_size: 0,
            num_return_sequences: 1,
            num_beam_groups: None,
            diversity_penalty: None,
            device: config.device,
            kind: None,
        };
        let generator =
            GPT2Generator::new(generate_config).map_err(|e| model_error(&files.source, e))?;
        let tokenizer = TokenizerOption::from_file(
            ModelType::GPT2,
            &vocab.to_string_lossy(),
            Some(&merges.to_string_lossy()),
            false,
            None,
            None,
        )
        .map_err(|e| model_error(&files.source, e))?;
        Ok(CompletionPredictor {
            generator,
            tokenizer,
            eos_id,
            context_length,
            max_prompt_tokens: config.max_prompt_tokens,
            device: config.device,
            metrics: config.metrics,
        })
    }

    fn predict(
        &mut self,
        batch: Vec<CompletionJob>,
    ) -> Vec<Result<CompletionOutput, PredictError>> {
        batch.iter().map(|job| self.complete(job)).collect()
    }
}

impl CompletionPredictor {
    fn complete(&self, job: &CompletionJob) -> Result<CompletionOutput, PredictError> {
        let prompt_ids = self
            .tokenizer
            .convert_tokens_to_ids(&self.tokenizer.tokenize(&job.prompt));
        self.check_lengths(prompt_ids.len(), job.max_new_tokens)?;
        let seed = job.seed.unwrap_or_else(fresh_seed);
        // The generator samples from libtorch's global generator; this thread
        // is the only one that samples, so a seed makes the output repeatable.
        tch::manual_seed(seed as i64);
        let sampling = job.temperature > 0.0;
        let options = GenerateOptions {
            // rust-bert counts min_length over prompt and output together.
            min_length: Some((prompt_ids.len() + job.min_new_tokens) as i64),
            max_new_tokens: Some(job.max_new_tokens as i64),
            early_stopping: Some(false),
            num_return_sequences: Some(job.num_return_sequences as i64),
            num_beams: Some(1),
            do_sample: Some(sampling),
            temperature: Some(if sampling { job.temperature } else { 1.0 }),
            top_k: Some(job.top_k as i64),
            top_p: Some(job.top_p),
            repetition_penalty: Some(job.repetition_penalty),
            ..Default::default()
        };
        let input = Tensor::from_slice(&prompt_ids)
            .view((1, -1))
            .to_device(self.device);
        let attention_mask = input.ones_like().to_kind(Kind::Int64);
        let sequences = tch::no_grad(|| {
            self.generator
                .generate_from_ids_and_past(input, Some(attention_mask), Some(options))
        })
        .map_err(|error| PredictError::Failed(error.to_string()))?;

        let mut completion_tokens = 0;
        let completions = sequences
            .iter()
            .map(|sequence| {
                let new_tokens = sequence.indices.get(prompt_ids.len()..).unwrap_or(&[]);
                let (kept, finish) = match new_tokens.iter().position(|&id| id == self.eos_id) {
                    Some(eos) => {
                        completion_tokens += eos + 1;
                        (&new_tokens[..eos], Finish::Eos)
                    }
                    None => {
                        completion_tokens += new_tokens.len();
                        (new_tokens, Finish::Length)
                    }
                };
                let text = self.tokenizer.decode(kept, true, false);
                finish_text(text, finish, job)
            })
            .collect();
        self.metrics
            .generated_tokens(Task::Completion)
            .inc_by(completion_tokens as u64);
        Ok(CompletionOutput {
            completions,
            prompt_tokens: prompt_ids.len(),
            completion_tokens,
        })
    }

    fn check_lengths(
        &self,
        prompt_tokens: usize,
        max_new_tokens: usize,
    ) -> Result<(), PredictError> {
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
        if prompt_tokens + max_new_tokens > self.context_length {
            return Err(PredictError::Invalid {
                field: "max_new_tokens".into(),
                message: format!(
                    "the prompt ({prompt_tokens} tokens) plus max_new_tokens ({max_new_tokens}) exceed the model's context of {} tokens",
                    self.context_length
                ),
            });
        }
        Ok(())
    }
}

/// Applies stop sequences, then sentence-end trimming, to decoded text.
fn finish_text(text: String, finish: Finish, job: &CompletionJob) -> GeneratedText {
    let (kept, stopped) = truncate_at_stop(&text, &job.stop);
    let finish = if stopped { Finish::Stop } else { finish };
    let kept = if job.stop_at_sentence_end {
        trim_to_sentence_end(kept).unwrap_or(kept)
    } else {
        kept
    };
    GeneratedText {
        text: kept.to_string(),
        finish,
    }
}

fn fresh_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(stop: &[&str], stop_at_sentence_end: bool) -> CompletionJob {
        CompletionJob {
            prompt: "p".into(),
            max_new_tokens: 8,
            min_new_tokens: 0,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            repetition_penalty: 1.0,
            num_return_sequences: 1,
            seed: None,
            stop: stop.iter().map(|s| s.to_string()).collect(),
            stop_at_sentence_end,
        }
    }

    #[test]
    fn stop_sequence_wins_over_length() {
        let done = finish_text(
            "one two. three".into(),
            Finish::Length,
            &job(&["two"], false),
        );
        assert_eq!(done.text, "one ");
        assert_eq!(done.finish, Finish::Stop);
    }

    #[test]
    fn sentence_trimming_keeps_finish_reason() {
        let done = finish_text(" It works. It do".into(), Finish::Length, &job(&[], true));
        assert_eq!(done.text, " It works.");
        assert_eq!(done.finish, Finish::Length);
        let untouched = finish_text(" no end".into(), Finish::Eos, &job(&[], true));
        assert_eq!(untouched.text, " no end");
        assert_eq!(untouched.finish, Finish::Eos);
    }
}
