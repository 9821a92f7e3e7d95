//! English to German translation with a Marian model. Texts are split into
//! sentences and tokenized on the tokenizer pool (`MarianCodec`); the model
//! thread sees only each sentence's source ids and decodes the sentences of
//! every running request together, sentences joining and leaving between
//! steps (`generation::seq2seq_scheduler` over our own Marian passes); the
//! pool turns the output ids back into text and joins the sentences with the
//! original spacing and line breaks.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rust_tokenizers::tokenizer::{MarianTokenizer, Tokenizer, TruncationStrategy};
use tch::Device;

use super::{model_error, FAULT_INPUT};
use crate::api::health::ModelState;
use crate::configuration::TranslationSettings;
use crate::engine::tokenizer_pool::{PoolError, TokenizerPool};
use crate::engine::worker::LoadReport;
use crate::engine::{Answered, LoadError, PredictError, SubmitError, Task, TaskHandle, Worker};
use crate::generation::linear::fbgemm_available;
use crate::generation::marian::MarianModel;
use crate::generation::search::SearchOptions;
use crate::generation::seq2seq::Seq2SeqLm;
use crate::generation::seq2seq_scheduler::{Decoding, Seq2SeqScheduler};
use crate::metrics::Metrics;
use crate::model_source::{FileWanted, ModelLocation, CONFIG, WEIGHTS};
use crate::text::sentences::split_sentences;

pub const FILES: [FileWanted; 5] = [
    CONFIG,
    WEIGHTS,
    FileWanted::required(&["vocab.json"]),
    FileWanted::required(&["source.spm"]),
    FileWanted::optional(&["generation_config.json"]),
];

#[derive(Clone)]
pub struct TranslationModelConfig {
    pub location: ModelLocation,
    pub device: Device,
    pub settings: TranslationSettings,
    /// Testing only: the text FAULT_INPUT makes `predict` panic.
    pub fault_injection: bool,
    /// Where `init` publishes the tokenizer for the pool.
    pub codec: Arc<OnceLock<Arc<MarianCodec>>>,
}

/// What the model thread gets: the source ids of every sentence of one
/// request, in order.
pub use crate::generation::seq2seq_scheduler::Seq2SeqJob as TranslationJob;

/// The tokenizer both ways, shared by the pool's threads.
pub struct MarianCodec {
    tokenizer: MarianTokenizer,
    /// The longest source the model reads, in tokens (its position table).
    max_source_tokens: usize,
    fault_injection: bool,
}

/// A request's texts cut into sentences, with where each goes back.
pub struct EncodedTexts {
    pub job: TranslationJob,
    layout: Vec<Vec<(String, Option<usize>)>>,
}

impl MarianCodec {
    /// Splits texts into sentences and tokenizes them; a sentence longer than
    /// the model reads is refused (422), not cut.
    pub fn encode(&self, texts: &[String]) -> Result<EncodedTexts, PredictError> {
        let mut sentences = Vec::new();
        let mut layout = Vec::with_capacity(texts.len());
        for text in texts {
            let mut parts = Vec::new();
            for segment in split_sentences(text) {
                let slot = if segment.sentence.is_empty() {
                    None
                } else {
                    let ids = self
                        .tokenizer
                        .encode(
                            segment.sentence,
                            None,
                            usize::MAX,
                            &TruncationStrategy::DoNotTruncate,
                            0,
                        )
                        .token_ids;
                    if ids.len() > self.max_source_tokens {
                        return Err(PredictError::Invalid {
                            field: "text".into(),
                            message: format!(
                                "a sentence is {} tokens long; the model reads at most {} tokens per sentence: {:.60}…",
                                ids.len(),
                                self.max_source_tokens,
                                segment.sentence
                            ),
                        });
                    }
                    sentences.push(ids);
                    Some(sentences.len() - 1)
                };
                parts.push((segment.separator.to_string(), slot));
            }
            layout.push(parts);
        }
        let inject_fault = self.fault_injection && texts.iter().any(|text| text == FAULT_INPUT);
        Ok(EncodedTexts {
            job: TranslationJob {
                sentences,
                inject_fault,
            },
            layout,
        })
    }

    /// Each text's translation: its sentences' translations joined with the
    /// original separators, trimmed at the ends.
    pub fn decode(
        &self,
        layout: &[Vec<(String, Option<usize>)>],
        outputs: &[Vec<i64>],
    ) -> Vec<String> {
        layout
            .iter()
            .map(|parts| {
                let mut text = String::new();
                for (separator, slot) in parts {
                    if let Some(ids) = slot.and_then(|index| outputs.get(index)) {
                        text.push_str(self.tokenizer.decode(ids, true, false).trim());
                    }
                    text.push_str(separator);
                }
                text.trim().to_string()
            })
            .collect()
    }
}

/// Loads the Marian model and its tokenizer (published to `config.codec`
/// for the pool) and settles how it decodes.
fn load(config: &TranslationModelConfig, max_wait: Duration) -> Result<Decoding, LoadError> {
    super::delay_load_for_fault_injection(config.fault_injection);
    let files = &config.location.resolve(&FILES)?;
    let settings = &config.settings;
    if settings.precision.needs_fbgemm() && !fbgemm_available() {
        return Err(model_error(
            &files.source,
            format!(
                "precision {} needs fbgemm (x86-64 with AVX2); use fp32",
                settings.precision.name()
            ),
        ));
    }
    super::warn_if_bf16_is_slow("translation", settings.precision, config.device);
    let model = MarianModel::load(
        files.require("config.json")?,
        files.get("generation_config.json"),
        files.require("rust_model.ot")?,
        settings.precision,
        config.device,
    )
    .map_err(|error| model_error(&files.source, error))?;
    let tokenizer = MarianTokenizer::from_files(
        files.require("vocab.json")?,
        files.require("source.spm")?,
        false,
    )
    .map_err(|error| model_error(&files.source, error))?;
    let max_positions = model.max_positions() as usize;
    let _ = config.codec.set(Arc::new(MarianCodec {
        tokenizer,
        max_source_tokens: max_positions,
        fault_injection: config.fault_injection,
    }));
    let defaults = model.generation();
    let options = SearchOptions {
        num_beams: settings.num_beams.max(1) as usize,
        // The start token takes a position too.
        max_new_tokens: (settings.max_output_tokens.max(1) as usize).min(max_positions - 1),
        min_new_tokens: settings.min_output_tokens.max(0) as usize,
        length_penalty: settings.length_penalty.unwrap_or(defaults.length_penalty),
        early_stopping: settings.early_stopping.unwrap_or(defaults.early_stopping),
    };
    Ok(Decoding {
        model: Box::new(model),
        options,
        max_sentences: settings.sentence_batch_size.max(1),
        max_wait,
    })
}

/// Loads the translation model on its own thread and starts its
/// continuous-batching loop (`generation::seq2seq_scheduler`).
pub fn spawn(
    config: TranslationModelConfig,
    queue_size: usize,
    max_wait: Duration,
    pool: TokenizerPool,
    metrics: Arc<Metrics>,
) -> std::io::Result<(TranslationHandle, LoadReport)> {
    let codec = config.codec.clone();
    let scheduler_metrics = metrics.clone();
    let reload_config = config.clone();
    let (worker, report) = Worker::spawn(
        Task::Translation,
        queue_size,
        metrics,
        move || load(&config, max_wait),
        move |decoding, receiver, status| {
            Seq2SeqScheduler::new(Task::Translation, decoding, scheduler_metrics).run(
                receiver,
                &status,
                || load(&reload_config, max_wait),
            )
        },
    )?;
    Ok((TranslationHandle::new(worker, codec, pool), report))
}

/// The caller's side of translation: tokenizes on the pool, queues ids for
/// the model thread, detokenizes on the pool. Cheap to clone.
#[derive(Clone)]
pub struct TranslationHandle {
    pub worker: TaskHandle<TranslationJob, Vec<Vec<i64>>>,
    codec: Arc<OnceLock<Arc<MarianCodec>>>,
    pool: TokenizerPool,
}

impl TranslationHandle {
    pub fn new(
        worker: TaskHandle<TranslationJob, Vec<Vec<i64>>>,
        codec: Arc<OnceLock<Arc<MarianCodec>>>,
        pool: TokenizerPool,
    ) -> TranslationHandle {
        TranslationHandle {
            worker,
            codec,
            pool,
        }
    }

    /// Translates `texts`, one translation per text.
    pub async fn translate(
        &self,
        texts: Vec<String>,
        timeout: Option<Duration>,
    ) -> Result<Answered<Vec<String>>, SubmitError> {
        let arrived = Instant::now();
        let task = self.worker.task;
        // A model that is not ready answers 503 before any tokenizing.
        let codec = match (self.worker.state(), self.codec.get()) {
            (ModelState::Ready, Some(codec)) => codec.clone(),
            _ => return Err(SubmitError::NotReady(task)),
        };
        let encoder = codec.clone();
        let encoded = self
            .pool
            .run(move || encoder.encode(&texts))
            .await
            .map_err(|error| pool_error(task, error))??;
        let EncodedTexts { job, layout } = encoded;
        // The deadline counts from arrival, tokenizing included.
        let left = timeout.map(|timeout| timeout.saturating_sub(arrived.elapsed()));
        let answered = self.worker.submit(job, left).await?;
        let outputs = answered.output;
        let translations = self
            .pool
            .run(move || codec.decode(&layout, &outputs))
            .await
            .map_err(|error| pool_error(task, error))?;
        Ok(Answered {
            output: translations,
            queue_time: answered.queue_time,
            inference_time: answered.inference_time,
        })
    }
}

fn pool_error(task: Task, error: PoolError) -> SubmitError {
    match error {
        PoolError::Full => SubmitError::QueueFull(task),
        PoolError::Failed(message) => SubmitError::Predict(PredictError::Failed(message)),
    }
}
