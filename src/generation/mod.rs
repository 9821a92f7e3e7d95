//! Text generation as a service: the model interface (`model`: `CausalLm`,
//! `PromptEncoder`), requests and answers (`request`), the continuous
//! batching loop that runs many requests through one model (`scheduler`),
//! its batched key/value cache (`kv_cache`), per-sequence sampling
//! (`sampling`) and incremental detokenization (`detokenize`). The
//! decoder-only forward passes, GPT-2 (`gpt2`), GPT-Neo (`gpt_neo`) and
//! GPT-J (`gptj`), share `layers`, run their weights at a chosen precision
//! (`linear`) and are picked by model_type in `decoder`. Encoder-decoder models implement `Seq2SeqLm`
//! (`seq2seq`), decoded by greedy or beam search (`search`); Marian
//! (`marian`) is the first.

pub mod bans;
pub mod candidates;
pub mod checkpoint;
pub mod decoder;
pub mod detokenize;
pub mod gpt2;
pub mod gpt_neo;
pub mod gptj;
pub mod kv_cache;
pub mod layers;
pub mod linear;
pub mod marian;
pub mod model;
pub mod precision_check;
pub mod request;
pub mod sampling;
pub mod scheduler;
pub mod search;
pub mod seq2seq;
pub mod seq2seq_scheduler;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::api::health::ModelState;
use crate::engine::tokenizer_pool::{PoolError, TokenizerPool};
use crate::engine::LoadError;
use crate::engine::{LoadReport, PredictError, SubmitError, Task, Timing, Worker};
use crate::metrics::Metrics;
use model::{CausalLm, PromptEncoder};
use request::GenerationRequest;
use scheduler::{BatchLimits, GenerationEvent, GenerationJob, Scheduler};

/// The caller's side of the generation worker: tokenizes on the pool, then
/// queues ids for the model thread. Cheap to clone.
#[derive(Clone)]
pub struct GenerationHandle {
    worker: Worker<GenerationJob>,
    /// Set by the worker once the model (and so its tokenizer) is loaded.
    encoder: Arc<OnceLock<Arc<dyn PromptEncoder>>>,
    pool: TokenizerPool,
}

/// Loads a model with `load` on a new thread and starts a scheduler over it.
pub fn spawn<M: CausalLm + 'static>(
    load: impl FnOnce() -> Result<(M, Arc<dyn PromptEncoder>), LoadError> + Send + 'static,
    queue_size: usize,
    limits: BatchLimits,
    pool: TokenizerPool,
    metrics: Arc<Metrics>,
) -> std::io::Result<(GenerationHandle, LoadReport)> {
    let scheduler_metrics = metrics.clone();
    let encoder = Arc::new(OnceLock::new());
    let published = encoder.clone();
    let (worker, report) = Worker::spawn(
        Task::Completion,
        queue_size,
        metrics,
        move || {
            let (model, encoder) = load()?;
            let _ = published.set(encoder);
            Ok(model)
        },
        move |model, receiver, status| {
            Scheduler::new(model, limits, scheduler_metrics).run(receiver, &status)
        },
    )?;
    Ok((
        GenerationHandle {
            worker,
            encoder,
            pool,
        },
        report,
    ))
}

impl GenerationHandle {
    pub fn state(&self) -> ModelState {
        self.worker.state()
    }

    /// Tokenizes the prompt (checking every token limit) and queues the
    /// generation; its events arrive on the returned receiver. Dropping the
    /// receiver cancels the generation at the next step.
    pub async fn generate(
        &self,
        request: GenerationRequest,
        timeout: Option<Duration>,
    ) -> Result<UnboundedReceiver<GenerationEvent>, SubmitError> {
        let arrived = Instant::now();
        let task = self.worker.task;
        // A model that is not ready answers 503 before any tokenizing.
        let encoder = match (self.worker.state(), self.encoder.get()) {
            (ModelState::Ready, Some(encoder)) => encoder.clone(),
            _ => return Err(SubmitError::NotReady(task)),
        };
        let (prompt, options) = self
            .pool
            .run(move || {
                encoder
                    .encode(&request)
                    .map(|prompt| (prompt, request.options))
            })
            .await
            .map_err(|error| match error {
                PoolError::Full => SubmitError::QueueFull(task),
                PoolError::Failed(message) => SubmitError::Predict(PredictError::Failed(message)),
            })??;
        let (events, receiver) = unbounded_channel();
        self.worker.enqueue(GenerationJob {
            prompt,
            options,
            events,
            timing: Timing::queued_now(timeout.map(|timeout| arrived + timeout)),
        })?;
        Ok(receiver)
    }
}
