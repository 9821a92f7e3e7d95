//! A model on its own thread, reached through a bounded queue.
//!
//! `Worker::spawn` starts a thread that loads the model and then runs a serve
//! loop over the queue's receiving end; `Worker::enqueue` fails at once when
//! the queue is full. What a job is and how the loop batches jobs is up to
//! the caller: `engine::batching` for one-shot predictors, and
//! `generation::scheduler` and `generation::seq2seq_scheduler` for
//! token-by-token generation.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{LoadError, PredictError, Task};
use crate::api::health::ModelState;
use crate::metrics::Metrics;

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

/// libtorch intra-op threads for model threads; 0 keeps libtorch's default.
static TORCH_THREADS: AtomicI32 = AtomicI32::new(0);

/// Sets the intra-op thread count every worker started later applies to
/// itself (the setting is per thread under OpenMP).
pub fn set_torch_threads(threads: i32) {
    TORCH_THREADS.store(threads, Ordering::SeqCst);
    if threads > 0 {
        tch::set_num_threads(threads);
    }
}

/// When a request was queued and when its answer stops being useful.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub enqueued: Instant,
    pub deadline: Option<Instant>,
}

impl Timing {
    pub fn new(timeout: Option<Duration>) -> Timing {
        let enqueued = Instant::now();
        Timing {
            enqueued,
            deadline: timeout.map(|timeout| enqueued + timeout),
        }
    }

    /// Queued now, with a deadline fixed earlier (when the request arrived,
    /// before it was tokenized).
    pub fn queued_now(deadline: Option<Instant>) -> Timing {
        Timing {
            enqueued: Instant::now(),
            deadline,
        }
    }

    pub fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|deadline| now >= deadline)
    }
}

/// The worker's side of the model state that `/ready` reports.
pub struct ModelStatus {
    task: Task,
    state: Arc<AtomicU8>,
    metrics: Arc<Metrics>,
}

impl ModelStatus {
    /// The model is being loaded again: `/ready` answers 503 meanwhile.
    pub fn reloading(&self) {
        self.state.store(LOADING, Ordering::SeqCst);
        self.metrics.model_unready(self.task);
    }

    pub fn ready(&self, elapsed: Duration) {
        self.metrics.model_loaded(self.task, elapsed);
        self.state.store(READY, Ordering::SeqCst);
    }

    /// The worker rebuilt its state after a panic without loading the model
    /// again: ready, with the load time of the last load kept.
    pub fn rebuilt(&self) {
        self.metrics.model_serving(self.task);
        self.state.store(READY, Ordering::SeqCst);
    }
}

/// The caller's side of a worker: cheap to clone, shared by HTTP workers.
pub struct Worker<J> {
    pub task: Task,
    sender: SyncSender<J>,
    state: Arc<AtomicU8>,
    pub metrics: Arc<Metrics>,
}

impl<J> Clone for Worker<J> {
    fn clone(&self) -> Self {
        Self {
            task: self.task,
            sender: self.sender.clone(),
            state: self.state.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The load result and time, reported once by a starting worker.
pub type LoadReport = oneshot::Receiver<Result<Duration, LoadError>>;

impl<J: Send + 'static> Worker<J> {
    /// Starts the worker thread: `load` runs on it, then `serve` gets the
    /// loaded model and the queue until every sender is gone.
    pub fn spawn<M, L, S>(
        task: Task,
        queue_size: usize,
        metrics: Arc<Metrics>,
        load: L,
        serve: S,
    ) -> std::io::Result<(Self, LoadReport)>
    where
        L: FnOnce() -> Result<M, LoadError> + Send + 'static,
        S: FnOnce(M, Receiver<J>, ModelStatus) + Send + 'static,
    {
        let (sender, receiver) = mpsc::sync_channel(queue_size);
        metrics.queue_capacity(task).set(queue_size as i64);
        let (loaded_tx, loaded_rx) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(LOADING));
        let worker = Worker {
            task,
            sender,
            state: state.clone(),
            metrics: metrics.clone(),
        };
        thread::Builder::new()
            .name(format!("predictor-{task}"))
            .spawn(move || {
                let threads = TORCH_THREADS.load(Ordering::SeqCst);
                if threads > 0 {
                    tch::set_num_threads(threads);
                }
                let started = Instant::now();
                let loaded = catch_unwind(AssertUnwindSafe(load))
                    .unwrap_or_else(|panic| Err(LoadError::Io(panic_message(&panic))));
                match loaded {
                    Ok(model) => {
                        let elapsed = started.elapsed();
                        metrics.model_loaded(task, elapsed);
                        state.store(READY, Ordering::SeqCst);
                        let _ = loaded_tx.send(Ok(elapsed));
                        let status = ModelStatus {
                            task,
                            state,
                            metrics,
                        };
                        serve(model, receiver, status);
                    }
                    Err(error) => {
                        state.store(FAILED, Ordering::SeqCst);
                        let _ = loaded_tx.send(Err(error));
                    }
                }
            })?;
        Ok((worker, loaded_rx))
    }

    pub fn state(&self) -> ModelState {
        match self.state.load(Ordering::SeqCst) {
            READY => ModelState::Ready,
            FAILED => ModelState::Failed,
            _ => ModelState::Loading,
        }
    }

    /// Queues a job, or says at once why it cannot be queued.
    pub fn enqueue(&self, job: J) -> Result<(), SubmitError> {
        if self.state() != ModelState::Ready {
            return Err(SubmitError::NotReady(self.task));
        }
        match self.sender.try_send(job) {
            Ok(()) => {
                self.metrics.queue_depth(self.task).inc();
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(SubmitError::QueueFull(self.task)),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::WorkerGone(self.task)),
        }
    }
}

/// The first line of a panic's message (libtorch errors append a backtrace).
pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "the model panicked".to_string());
    match message.lines().next() {
        Some(first) => first.to_string(),
        None => message,
    }
}
