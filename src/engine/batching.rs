//! Dynamic batching for one-shot predictors (question answering): the
//! worker takes the first waiting request, gathers more for up to
//! `max_wait` or until `max_batch_size`, drops those whose caller left or
//! whose deadline passed, and answers the rest with one `predict` call. A
//! panic anywhere in a turn is caught: the batch gets 500s, and the model
//! is loaded again with `/ready` at 503 meanwhile. Translation's queue
//! carries the same jobs to a continuous-batching loop instead
//! (`generation::seq2seq_scheduler`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::worker::{panic_message, LoadReport, ModelStatus, Timing, Worker};
use super::{LoadError, PredictError, Predictor, SubmitError, Task};
use crate::metrics::Metrics;

/// An answer and where its time went.
#[derive(Debug)]
pub struct Answered<O> {
    pub output: O,
    pub queue_time: Duration,
    pub inference_time: Duration,
}

pub(crate) type Reply<O> = oneshot::Sender<Result<Answered<O>, PredictError>>;

pub struct BatchJob<R, O> {
    pub(crate) request: R,
    pub(crate) reply: Reply<O>,
    pub(crate) timing: Timing,
}

/// The caller's side of a batching worker.
pub type TaskHandle<R, O> = Worker<BatchJob<R, O>>;

/// How a worker forms batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchShape {
    pub max_batch_size: usize,
    pub max_wait: Duration,
}

impl<R: Send + 'static, O: Send + 'static> Worker<BatchJob<R, O>> {
    /// Loads `P` on a new thread and serves its queue in batches.
    pub fn spawn_predictor<P>(
        task: Task,
        config: P::Config,
        queue_size: usize,
        shape: BatchShape,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Self, LoadReport)>
    where
        P: Predictor<Request = R, Output = O> + 'static,
    {
        let serve_metrics = metrics.clone();
        let reload_config = config.clone();
        Worker::spawn(
            task,
            queue_size,
            metrics,
            move || P::init(config),
            move |predictor: P, receiver, status| {
                let reload = move || -> Result<Model<P::Config, R, O>, LoadError> {
                    Ok(Box::new(P::init(reload_config.clone())?))
                };
                serve(
                    task,
                    Box::new(predictor),
                    reload,
                    receiver,
                    shape,
                    &serve_metrics,
                    &status,
                )
            },
        )
    }

    /// Queues `request` and waits for its answer; past `timeout` the request
    /// is dropped unanswered by the model.
    pub async fn submit(
        &self,
        request: R,
        timeout: Option<Duration>,
    ) -> Result<Answered<O>, SubmitError> {
        let (reply, answer) = oneshot::channel();
        let timing = Timing::new(timeout);
        self.enqueue(BatchJob {
            request,
            reply,
            timing,
        })?;
        // The worker drops a reply unanswered only when it panicked
        // outside the model: a server error, not a stopped worker.
        let result = answer.await.map_err(|_| {
            SubmitError::Predict(PredictError::Failed(
                "the worker failed while serving this request".into(),
            ))
        })?;
        self.metrics
            .request_duration(self.task)
            .observe(timing.enqueued.elapsed().as_secs_f64());
        Ok(result?)
    }
}

/// Takes the next batch: blocks for the first job, then gathers more.
fn next_batch<J>(receiver: &Receiver<J>, shape: BatchShape) -> Option<Vec<J>> {
    let first = receiver.recv().ok()?;
    let until = Instant::now() + shape.max_wait;
    let mut jobs = vec![first];
    while jobs.len() < shape.max_batch_size {
        match receiver.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match receiver.recv_timeout(left) {
                    Ok(job) => jobs.push(job),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        }
    }
    Some(jobs)
}

type Model<C, R, O> = Box<dyn Predictor<Config = C, Request = R, Output = O>>;

/// How long to wait before loading a model again after a failed reload.
const RELOAD_RETRY: Duration = Duration::from_secs(1);

fn serve<R: Send + 'static, O: Send + 'static, C: Clone + Send + 'static>(
    task: Task,
    mut predictor: Model<C, R, O>,
    reload: impl Fn() -> Result<Model<C, R, O>, LoadError>,
    receiver: Receiver<BatchJob<R, O>>,
    shape: BatchShape,
    metrics: &Metrics,
    status: &ModelStatus,
) {
    while let Some(jobs) = next_batch(&receiver, shape) {
        metrics.queue_depth(task).sub(jobs.len() as i64);
        // A panic outside `predict` drops the batch's reply senders while
        // unwinding; their callers answer 500 for that.
        let served = catch_unwind(AssertUnwindSafe(|| {
            serve_batch(task, &mut *predictor, jobs, metrics)
        }))
        .unwrap_or_else(|panic| Err(panic_message(&panic)));
        if let Err(message) = served {
            tracing::error!(task = %task, "the {task} worker panicked: {message}; reloading the model");
            metrics.recovered(task);
            predictor = reload_until_loaded(task, &reload, status);
        }
    }
}

/// Answers one batch. Err(message) when the model panicked: the batch has
/// its errors, and the model must be loaded again.
fn serve_batch<R: Send + 'static, O: Send + 'static, C: Clone + Send + 'static>(
    task: Task,
    predictor: &mut dyn Predictor<Config = C, Request = R, Output = O>,
    mut jobs: Vec<BatchJob<R, O>>,
    metrics: &Metrics,
) -> Result<(), String> {
    let now = Instant::now();
    jobs.retain(|job| {
        if job.reply.is_closed() {
            // A caller that went away (client disconnected) costs no compute.
            metrics.abandoned(task, "disconnected").inc();
            return false;
        }
        true
    });
    let (expired, jobs): (Vec<_>, Vec<_>) =
        jobs.into_iter().partition(|job| job.timing.expired(now));
    for job in expired {
        metrics.abandoned(task, "deadline").inc();
        let _ = job.reply.send(Err(PredictError::DeadlineExceeded));
    }
    if jobs.is_empty() {
        return Ok(());
    }
    let batch_started = Instant::now();
    let mut waiting: Vec<(Reply<O>, Duration)> = Vec::with_capacity(jobs.len());
    let mut requests = Vec::with_capacity(jobs.len());
    for job in jobs {
        let queued = batch_started.duration_since(job.timing.enqueued);
        metrics.queue_duration(task).observe(queued.as_secs_f64());
        waiting.push((job.reply, queued));
        requests.push(job.request);
    }
    let batch_size = requests.len();
    metrics.batch_size(task).observe(batch_size as f64);
    let results = catch_unwind(AssertUnwindSafe(|| predictor.predict(requests)));
    let inference_time = batch_started.elapsed();
    metrics
        .inference_duration(task)
        .observe(inference_time.as_secs_f64());
    let results = match results {
        Ok(results) if results.len() == batch_size => results,
        Ok(results) => {
            let message = format!(
                "{task} predictor returned {} results for {batch_size} requests",
                results.len()
            );
            tracing::error!("{message}");
            failures(&message, batch_size)
        }
        Err(panic) => {
            let message = panic_message(&panic);
            // Answer first: nobody waits for the reload.
            for (reply, _) in waiting {
                let _ = reply.send(Err(PredictError::Failed(message.clone())));
            }
            return Err(message);
        }
    };
    for ((reply, queue_time), result) in waiting.into_iter().zip(results) {
        let _ = reply.send(result.map(|output| Answered {
            output,
            queue_time,
            inference_time,
        }));
    }
    Ok(())
}

/// A panic may leave a model's state broken: load it again, with `/ready`
/// at 503 meanwhile. Requests keep queueing (and get 429 when it is full).
pub(crate) fn reload_until_loaded<M>(
    task: Task,
    reload: &impl Fn() -> Result<M, LoadError>,
    status: &ModelStatus,
) -> M {
    status.reloading();
    loop {
        let started = Instant::now();
        match catch_unwind(AssertUnwindSafe(reload)) {
            Ok(Ok(model)) => {
                tracing::info!(task = %task, seconds = started.elapsed().as_secs_f64(), "model reloaded");
                status.ready(started.elapsed());
                return model;
            }
            Ok(Err(error)) => tracing::error!(task = %task, "reloading the model failed: {error}"),
            Err(panic) => {
                tracing::error!(task = %task, "reloading the model panicked: {}", panic_message(&panic))
            }
        }
        std::thread::sleep(RELOAD_RETRY);
    }
}

fn failures<O>(message: &str, count: usize) -> Vec<Result<O, PredictError>> {
    (0..count)
        .map(|_| Err(PredictError::Failed(message.to_string())))
        .collect()
}
