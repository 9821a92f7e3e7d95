//! A predictor on its own thread, reached through a bounded queue.
//!
//! `TaskHandle::submit` enqueues a request with a oneshot reply channel and
//! fails at once when the queue is full. The worker thread takes up to
//! `max_batch_size` waiting requests, skips those whose caller is gone, and
//! hands the rest to the predictor in one call. A panic inside the model is
//! caught and answered as an error, so no caller ever waits forever.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{LoadError, PredictError, Predictor, Task};
use crate::api::health::ModelState;
use crate::metrics::Metrics;

type Reply<O> = oneshot::Sender<Result<O, PredictError>>;

struct Job<R, O> {
    request: R,
    reply: Reply<O>,
    enqueued: Instant,
}

/// Why a submitted request got no answer from the model.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the {0} model is not loaded yet")]
    NotReady(Task),
    #[error("the {0} queue is full")]
    QueueFull(Task),
    #[error("the {0} worker stopped")]
    WorkerGone(Task),
    #[error(transparent)]
    Predict(#[from] PredictError),
}

const LOADING: u8 = 0;
const READY: u8 = 1;
const FAILED: u8 = 2;

/// The caller's side of a worker: cheap to clone, shared by HTTP workers.
pub struct TaskHandle<R, O> {
    task: Task,
    sender: SyncSender<Job<R, O>>,
    state: Arc<AtomicU8>,
    metrics: Arc<Metrics>,
}

impl<R, O> Clone for TaskHandle<R, O> {
    fn clone(&self) -> Self {
        Self {
            task: self.task,
            sender: self.sender.clone(),
            state: self.state.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// How a worker's queue is shaped.
#[derive(Debug, Clone, Copy)]
pub struct QueueShape {
    pub queue_size: usize,
    pub max_batch_size: usize,
}

impl<R: Send + 'static, O: Send + 'static> TaskHandle<R, O> {
    /// Starts the worker thread, which loads the model with `P::init`. The
    /// returned receiver reports the load result and time.
    pub fn spawn<P>(
        task: Task,
        config: P::Config,
        shape: QueueShape,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Self, oneshot::Receiver<Result<Duration, LoadError>>)>
    where
        P: Predictor<Request = R, Output = O> + 'static,
    {
        let (sender, receiver) = mpsc::sync_channel(shape.queue_size);
        let (loaded_tx, loaded_rx) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(LOADING));
        let handle = TaskHandle {
            task,
            sender,
            state: state.clone(),
            metrics: metrics.clone(),
        };
        thread::Builder::new()
            .name(format!("predictor-{task}"))
            .spawn(move || {
                let started = Instant::now();
                let loaded = catch_unwind(AssertUnwindSafe(|| P::init(config)))
                    .unwrap_or_else(|panic| Err(LoadError::Io(panic_message(&panic))));
                match loaded {
                    Ok(predictor) => {
                        let elapsed = started.elapsed();
                        metrics.model_loaded(task, elapsed);
                        state.store(READY, Ordering::SeqCst);
                        let _ = loaded_tx.send(Ok(elapsed));
                        let predictor: Box<
                            dyn Predictor<Config = P::Config, Request = R, Output = O>,
                        > = Box::new(predictor);
                        serve(task, predictor, receiver, shape, &metrics);
                    }
                    Err(error) => {
                        state.store(FAILED, Ordering::SeqCst);
                        let _ = loaded_tx.send(Err(error));
                    }
                }
            })?;
        Ok((handle, loaded_rx))
    }

    pub fn state(&self) -> ModelState {
        match self.state.load(Ordering::SeqCst) {
            READY => ModelState::Ready,
            FAILED => ModelState::Failed,
            _ => ModelState::Loading,
        }
    }

    /// Queues `request` and waits for its answer.
    pub async fn submit(&self, request: R) -> Result<O, SubmitError> {
        if self.state() != ModelState::Ready {
            return Err(SubmitError::NotReady(self.task));
        }
        let started = Instant::now();
        let (reply, answer) = oneshot::channel();
        let job = Job {
            request,
            reply,
            enqueued: started,
        };
        match self.sender.try_send(job) {
            Ok(()) => self.metrics.queue_depth(self.task).inc(),
            Err(TrySendError::Full(_)) => return Err(SubmitError::QueueFull(self.task)),
            Err(TrySendError::Disconnected(_)) => return Err(SubmitError::WorkerGone(self.task)),
        }
        let result = answer
            .await
            .map_err(|_| SubmitError::WorkerGone(self.task))?;
        self.metrics
            .request_duration(self.task)
            .observe(started.elapsed().as_secs_f64());
        Ok(result?)
    }
}

fn serve<R: Send + 'static, O: Send + 'static, C: Send + 'static>(
    task: Task,
    mut predictor: Box<dyn Predictor<Config = C, Request = R, Output = O>>,
    receiver: Receiver<Job<R, O>>,
    shape: QueueShape,
    metrics: &Metrics,
) {
    while let Ok(first) = receiver.recv() {
        let mut jobs = vec![first];
        while jobs.len() < shape.max_batch_size {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        metrics.queue_depth(task).sub(jobs.len() as i64);
        // A caller that went away (client disconnected) costs no compute.
        jobs.retain(|job| !job.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let batch_started = Instant::now();
        let mut replies = Vec::with_capacity(jobs.len());
        let mut requests = Vec::with_capacity(jobs.len());
        for job in jobs {
            metrics
                .queue_duration(task)
                .observe(batch_started.duration_since(job.enqueued).as_secs_f64());
            replies.push(job.reply);
            requests.push(job.request);
        }
        let batch_size = requests.len();
        metrics.batch_size(task).observe(batch_size as f64);
        let results = catch_unwind(AssertUnwindSafe(|| predictor.predict(requests)));
        metrics
            .inference_duration(task)
            .observe(batch_started.elapsed().as_secs_f64());
        match results {
            Ok(results) if results.len() == batch_size => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Ok(results) => {
                let message = format!(
                    "{task} predictor returned {} results for {batch_size} requests",
                    results.len()
                );
                tracing::error!("{message}");
                for reply in replies {
                    let _ = reply.send(Err(PredictError::Failed(message.clone())));
                }
            }
            Err(panic) => {
                let message = panic_message(&panic);
                tracing::error!(task = %task, "predictor panicked: {message}");
                for reply in replies {
                    let _ = reply.send(Err(PredictError::Failed(message.clone())));
                }
            }
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "the model panicked".to_string())
}
