//! Continuous batching for sequence-to-sequence models (translation), at
//! sentence granularity.
//!
//! One thread owns the model and a `Search` holding every sentence being
//! decoded. Each turn of its loop takes waiting requests from the queue,
//! admits their sentences while the batch has room (they are encoded
//! together and join the running search between two steps), runs one
//! decoding step for every sentence, and hands each finished sentence to
//! its request, which is answered when its last sentence is done. A short
//! request therefore starts at the next step instead of waiting for a long
//! one to end. Requests whose client left, or whose deadline passed, leave
//! the batch at the next step.
//!
//! A panic anywhere in a turn fails the requests it holds (500), and the
//! model is loaded again with `/ready` at 503 meanwhile.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::search::{Search, SearchOptions};
use super::seq2seq::Seq2SeqLm;
use crate::engine::batching::{reload_until_loaded, Answered, BatchJob, Reply};
use crate::engine::worker::{panic_message, ModelStatus, Timing};
use crate::engine::{LoadError, PredictError, Task};
use crate::metrics::Metrics;
use crate::openmp::StepThreads;

/// One request: the source ids of each of its sentences, in order.
#[derive(Debug, Clone)]
pub struct Seq2SeqJob {
    pub sentences: Vec<Vec<i64>>,
    /// Testing only: the turn that admits this request panics.
    pub inject_fault: bool,
}

/// Each sentence's generated ids, in the request's order.
pub type Seq2SeqOutput = Vec<Vec<i64>>;

/// A model ready to decode, and how.
pub struct Decoding {
    pub model: Box<dyn Seq2SeqLm>,
    pub options: SearchOptions,
    /// Sentences decoded together, at most.
    pub max_sentences: usize,
    /// Once idle, how long the first request waits for others to share its
    /// first encoder pass.
    pub max_wait: Duration,
}

/// A sentence of a request: (request, index among its sentences).
type SentenceKey = (u64, usize);

struct Request {
    reply: Reply<Seq2SeqOutput>,
    timing: Timing,
    queue_time: Duration,
    started: Instant,
    sentences: Vec<Vec<i64>>,
    outputs: Vec<Vec<i64>>,
    /// Sentences moved into the search so far (they go in order).
    admitted: usize,
    unfinished: usize,
    inject_fault: bool,
}

pub struct Seq2SeqScheduler {
    task: Task,
    decoding: Decoding,
    search: Search<SentenceKey>,
    requests: HashMap<u64, Request>,
    /// Started requests with sentences not yet in the search (the batch
    /// was full), taken in turn: one sentence each while there is room, so
    /// a short request does not wait behind a long one's many sentences.
    waiting: VecDeque<u64>,
    next_request: u64,
    metrics: Arc<Metrics>,
    /// libtorch's thread count for each step, by its rows.
    threads: Option<StepThreads>,
}

impl Seq2SeqScheduler {
    pub fn new(task: Task, decoding: Decoding, metrics: Arc<Metrics>) -> Seq2SeqScheduler {
        Seq2SeqScheduler {
            task,
            search: Search::new(decoding.options),
            decoding,
            requests: HashMap::new(),
            waiting: VecDeque::new(),
            next_request: 0,
            metrics,
            threads: None,
        }
    }

    /// Serves the queue until every sender is gone and all work is done;
    /// `reload` loads the model again after a panic.
    pub fn run(
        mut self,
        receiver: Receiver<BatchJob<Seq2SeqJob, Seq2SeqOutput>>,
        status: &ModelStatus,
        reload: impl Fn() -> Result<Decoding, LoadError>,
    ) {
        // Read on this, the model's, thread.
        self.threads = Some(StepThreads::new());
        tch::no_grad(|| loop {
            match catch_unwind(AssertUnwindSafe(|| self.turn(&receiver))) {
                Ok(true) => {}
                Ok(false) => return,
                Err(panic) => {
                    let message = panic_message(&panic);
                    tracing::error!(task = %self.task, "the {} worker panicked: {message}; reloading the model", self.task);
                    self.metrics.recovered(self.task);
                    self.fail_all(&message);
                    self.decoding = reload_until_loaded(self.task, &reload, status);
                }
            }
        })
    }

    fn idle(&self) -> bool {
        self.search.is_empty() && self.waiting.is_empty()
    }

    /// Whether to take another request from the queue: at most as many
    /// requests are started as sentences decode at once; the rest wait in
    /// the bounded queue (and beyond it get 429).
    fn has_room(&self) -> bool {
        self.requests.len() < self.decoding.max_sentences
    }

    /// One turn of the loop; false once the queue is closed and idle.
    fn turn(&mut self, receiver: &Receiver<BatchJob<Seq2SeqJob, Seq2SeqOutput>>) -> bool {
        if self.idle() {
            // Nothing running: wait for a request, then briefly for others.
            let Ok(job) = receiver.recv() else {
                return false;
            };
            self.take(job);
            let until = Instant::now() + self.decoding.max_wait;
            while self.has_room() {
                let left = until.saturating_duration_since(Instant::now());
                match receiver.recv_timeout(left) {
                    Ok(job) => self.take(job),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
        } else {
            // Running: take what is queued while there is room for it.
            while self.has_room() {
                match receiver.try_recv() {
                    Ok(job) => self.take(job),
                    Err(_) => break,
                }
            }
        }
        self.drop_abandoned();
        if let Some(threads) = &mut self.threads {
            // Newcomers' sources are encoded together: all threads.
            if !self.waiting.is_empty() {
                threads.for_rows(usize::MAX);
            }
        }
        self.admit();
        if let Some(threads) = &mut self.threads {
            threads.for_rows(self.search.len() * self.decoding.options.num_beams.max(1));
        }
        if !self.search.is_empty() {
            self.metrics
                .batch_size(self.task)
                .observe(self.search.len() as f64);
            let finished = self.search.step(self.decoding.model.as_ref());
            for ((request, index), tokens) in finished {
                self.finish_sentence(request, index, tokens);
            }
        }
        self.metrics
            .active_sequences(self.task)
            .set(self.search.len() as i64);
        true
    }

    /// Starts a request taken from the queue: its sentences wait for room.
    fn take(&mut self, job: BatchJob<Seq2SeqJob, Seq2SeqOutput>) {
        self.metrics.queue_depth(self.task).dec();
        let BatchJob {
            request,
            reply,
            timing,
        } = job;
        if reply.is_closed() {
            self.metrics.abandoned(self.task, "disconnected").inc();
            return;
        }
        let now = Instant::now();
        if timing.expired(now) {
            self.metrics.abandoned(self.task, "deadline").inc();
            let _ = reply.send(Err(PredictError::DeadlineExceeded));
            return;
        }
        let queue_time = now.duration_since(timing.enqueued);
        self.metrics
            .queue_duration(self.task)
            .observe(queue_time.as_secs_f64());
        let id = self.next_request;
        self.next_request += 1;
        let count = request.sentences.len();
        if count > 0 {
            self.waiting.push_back(id);
        }
        self.requests.insert(
            id,
            Request {
                reply,
                timing,
                queue_time,
                started: now,
                outputs: vec![Vec::new(); count],
                sentences: request.sentences,
                admitted: 0,
                unfinished: count,
                inject_fault: request.inject_fault,
            },
        );
        if count == 0 {
            self.answer(id);
        }
    }

    /// Removes the requests whose client left or whose deadline passed,
    /// with their sentences, running or waiting.
    fn drop_abandoned(&mut self) {
        let now = Instant::now();
        let gone: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, request)| request.reply.is_closed() || request.timing.expired(now))
            .map(|(&id, _)| id)
            .collect();
        if gone.is_empty() {
            return;
        }
        for id in &gone {
            if let Some(request) = self.requests.remove(id) {
                if request.reply.is_closed() {
                    self.metrics.abandoned(self.task, "disconnected").inc();
                } else {
                    self.metrics.abandoned(self.task, "deadline").inc();
                    let _ = request.reply.send(Err(PredictError::DeadlineExceeded));
                }
            }
        }
        let requests = &self.requests;
        self.search.retain(|(id, _)| requests.contains_key(id));
        self.waiting.retain(|id| requests.contains_key(id));
    }

    /// Moves waiting sentences into the search while it has room, one per
    /// waiting request in turn; they are encoded together.
    fn admit(&mut self) {
        let mut room = self
            .decoding
            .max_sentences
            .saturating_sub(self.search.len());
        let mut keys: Vec<SentenceKey> = Vec::new();
        while room > 0 {
            let Some(id) = self.waiting.pop_front() else {
                break;
            };
            let Some(request) = self.requests.get_mut(&id) else {
                continue;
            };
            if request.inject_fault {
                panic!("fault injection: a text to translate asked for a panic");
            }
            if request.admitted < request.sentences.len() {
                keys.push((id, request.admitted));
                request.admitted += 1;
                room -= 1;
            }
            if request.admitted < request.sentences.len() {
                self.waiting.push_back(id);
            }
        }
        let requests = &self.requests;
        let sources: Vec<(SentenceKey, &[i64])> = keys
            .iter()
            .filter_map(|&(id, index)| {
                let ids = requests.get(&id)?.sentences.get(index)?;
                Some(((id, index), ids.as_slice()))
            })
            .collect();
        self.search.admit(self.decoding.model.as_ref(), sources);
    }

    fn finish_sentence(&mut self, id: u64, index: usize, tokens: Vec<i64>) {
        let Some(request) = self.requests.get_mut(&id) else {
            return;
        };
        if let Some(slot) = request.outputs.get_mut(index) {
            *slot = tokens;
            request.unfinished = request.unfinished.saturating_sub(1);
        }
        if request.unfinished == 0 {
            self.answer(id);
        }
    }

    fn answer(&mut self, id: u64) {
        let Some(request) = self.requests.remove(&id) else {
            return;
        };
        let inference_time = request.started.elapsed();
        self.metrics
            .inference_duration(self.task)
            .observe(inference_time.as_secs_f64());
        let _ = request.reply.send(Ok(Answered {
            output: request.outputs,
            queue_time: request.queue_time,
            inference_time,
        }));
    }

    /// Every request held gets a 500; the search starts over empty.
    fn fail_all(&mut self, message: &str) {
        for (_, request) in self.requests.drain() {
            let _ = request
                .reply
                .send(Err(PredictError::Failed(message.to_string())));
        }
        self.waiting.clear();
        self.search = Search::new(self.decoding.options);
        self.metrics.active_sequences(self.task).set(0);
    }
}
