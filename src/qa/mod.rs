//! Extractive question answering as the engine serves it: a request is
//! tokenized into windows on the tokenizer pool (`windows`), only their ids
//! are queued for the model thread (a `SpanEncoder` behind
//! `engine::batching`), and the start/end logits that come back are turned
//! into answers in the handler (`spans`), as transformers' pipeline does.

pub mod precision;
pub mod reader;
pub mod spans;
pub mod windows;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::api::health::ModelState;
use crate::encoder::WindowLogits;
use crate::engine::tokenizer_pool::{PoolError, TokenizerPool};
use crate::engine::{Answered, PredictError, SubmitError, TaskHandle};
use windows::{QaTokenizer, WindowsJob};

/// A validated question.
#[derive(Debug, Clone)]
pub struct QaJob {
    pub question: String,
    pub context: Arc<str>,
    pub top_k: usize,
}

/// A validated question and where to answer it from.
#[derive(Debug, Clone, PartialEq)]
pub struct QaPlan {
    pub question: String,
    pub source: QaSource,
    pub top_k: usize,
    /// Passages to read when retrieving.
    pub passages: usize,
}

/// Where a question is answered from.
#[derive(Debug, Clone, PartialEq)]
pub enum QaSource {
    /// A request context short enough to read whole.
    Whole(Arc<str>),
    /// A request context long enough to retrieve from.
    LongContext(Arc<str>),
    /// A stored document (the reference document by default).
    Document(String),
    /// Every stored document.
    All,
}

/// A span of the context; offsets in Unicode code points.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerSpan {
    pub text: String,
    pub score: f64,
    pub start: usize,
    pub end: usize,
}

/// The model thread's side: windows in, logits out.
pub type WindowsHandle = TaskHandle<WindowsJob, Vec<WindowLogits>>;

/// The caller's side of question answering: tokenizes on the pool, queues
/// ids for the model thread, selects spans. Cheap to clone.
#[derive(Clone)]
pub struct QaHandle {
    worker: WindowsHandle,
    /// Set by the worker once the model (and so its vocabulary) is loaded.
    tokenizer: Arc<OnceLock<Arc<QaTokenizer>>>,
    pool: TokenizerPool,
    max_answer_tokens: usize,
}

impl QaHandle {
    pub fn new(
        worker: WindowsHandle,
        tokenizer: Arc<OnceLock<Arc<QaTokenizer>>>,
        pool: TokenizerPool,
        max_answer_tokens: usize,
    ) -> QaHandle {
        QaHandle {
            worker,
            tokenizer,
            pool,
            max_answer_tokens,
        }
    }

    pub fn state(&self) -> ModelState {
        self.worker.state()
    }

    /// The best `job.top_k` answers. Past `timeout` (counted from now,
    /// tokenizing included) the request is dropped unanswered by the model.
    pub async fn answer(
        &self,
        job: QaJob,
        timeout: Option<Duration>,
    ) -> Result<Answered<Vec<AnswerSpan>>, SubmitError> {
        let arrived = Instant::now();
        let task = self.worker.task;
        // A model that is not ready answers 503 before any tokenizing.
        let tokenizer = match (self.worker.state(), self.tokenizer.get()) {
            (ModelState::Ready, Some(tokenizer)) => tokenizer.clone(),
            _ => return Err(SubmitError::NotReady(task)),
        };
        let (context, top_k) = (job.context.clone(), job.top_k);
        let encoded = self
            .pool
            .run(move || tokenizer.encode(&job))
            .await
            .map_err(|error| match error {
                PoolError::Full => SubmitError::QueueFull(task),
                PoolError::Failed(message) => SubmitError::Predict(PredictError::Failed(message)),
            })??;
        let left = timeout.map(|timeout| timeout.saturating_sub(arrived.elapsed()));
        let answered = self.worker.submit(encoded.job, left).await?;
        let answers = spans::select(
            &encoded.layout,
            &answered.output,
            &context,
            top_k,
            self.max_answer_tokens,
        );
        Ok(Answered {
            output: answers,
            queue_time: answered.queue_time,
            inference_time: answered.inference_time,
        })
    }
}
