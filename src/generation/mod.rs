//! Text generation as a service: an incremental GPT-2 decoder with a
//! key/value cache (`gpt2`, `kv_cache`), weights at a chosen precision
//! (`linear`), per-sequence sampling (`sampling`), and the continuous
//! batching loop that runs many requests through one model (`scheduler`).

pub mod gpt2;
pub mod kv_cache;
pub mod linear;
pub mod sampling;
pub mod scheduler;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::engine::{LoadReport, SubmitError, Task, Timing, Worker};
use crate::metrics::Metrics;
use crate::predictors::completion::{CompletionConfig, CompletionJob, CompletionModel};
use scheduler::{BatchLimits, GenerationEvent, GenerationJob, Scheduler};

/// The caller's side of the generation worker.
pub type GenerationHandle = Worker<GenerationJob>;

/// Loads the completion model on a new thread and starts its scheduler.
pub fn spawn(
    config: CompletionConfig,
    queue_size: usize,
    limits: BatchLimits,
    metrics: Arc<Metrics>,
) -> std::io::Result<(GenerationHandle, LoadReport)> {
    let scheduler_metrics = metrics.clone();
    Worker::spawn(
        Task::Completion,
        queue_size,
        metrics,
        move || CompletionModel::load(config),
        // A panic inside a decoding step fails the running requests and resets
        // the cache; the weights are read-only, so no reload is needed.
        move |model, receiver, _status| {
            Scheduler::new(model, limits, scheduler_metrics).run(receiver)
        },
    )
}

impl Worker<GenerationJob> {
    /// Queues a generation; its events arrive on the returned receiver.
    /// Dropping the receiver cancels the generation at the next step.
    pub fn generate(
        &self,
        job: CompletionJob,
        timeout: Option<Duration>,
    ) -> Result<UnboundedReceiver<GenerationEvent>, SubmitError> {
        let (events, receiver) = unbounded_channel();
        self.enqueue(GenerationJob {
            job,
            events,
            timing: Timing::new(timeout),
        })?;
        Ok(receiver)
    }
}
