//! Continuous batching for text generation.
//!
//! One thread owns the model and a `KvCache` holding every running sequence.
//! Each turn of its loop admits waiting requests (their prompts, already
//! tokenized, are prefilled together in one left-padded pass and join the
//! batch), runs one decoding step for all sequences, and retires the
//! sequences that finished, whose client left, or whose deadline passed. A
//! short autocomplete therefore starts at the next step instead of waiting
//! for a long generation to end, and leaves the batch as soon as it is done.
//! Events go back to the caller as they happen.
//!
//! A panic anywhere in a turn fails the requests it holds (500), rebuilds
//! the batch state and serves on; `/ready` is 503 meanwhile.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tch::{Kind, Tensor};
use tokio::sync::mpsc::UnboundedSender;

use super::detokenize::IncrementalDecoder;
use super::kv_cache::KvCache;
use super::model::CausalLm;
use super::request::{EncodedPrompt, Finish, GeneratedText, GenerationOptions, GenerationOutput};
use super::sampling::{fresh_seed, Sampler, SamplingParams};
use crate::engine::worker::{panic_message, ModelStatus, Timing};
use crate::engine::{PredictError, Task};
use crate::metrics::Metrics;
use crate::openmp::StepThreads;
use crate::text::stream::TextStream;

const TASK: Task = Task::Completion;

/// Most prompt tokens (padding included) prefilled in one pass.
const MAX_PREFILL_TOKENS: usize = 4096;

/// What a caller hears about its request, in this order: `Started` (or
/// `Failed`), any number of `Token`s, then `Done` (or `Failed`).
#[derive(Debug)]
pub enum GenerationEvent {
    Started {
        queue_time: Duration,
        prompt_tokens: usize,
    },
    /// New settled text of completion `index`.
    Token {
        index: usize,
        text: String,
    },
    Done {
        output: GenerationOutput,
        inference_time: Duration,
    },
    Failed(PredictError),
}

pub struct GenerationJob {
    pub prompt: EncodedPrompt,
    pub options: GenerationOptions,
    pub events: UnboundedSender<GenerationEvent>,
    pub timing: Timing,
}

/// How large the running batch may grow.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Sequences decoded together.
    pub max_sequences: usize,
    /// Sum over running sequences of prompt plus max_new_tokens.
    pub max_tokens: usize,
}

struct Request {
    events: UnboundedSender<GenerationEvent>,
    timing: Timing,
    started: Instant,
    prompt_tokens: usize,
    completions: Vec<Option<GeneratedText>>,
    unfinished: usize,
    completion_tokens: usize,
}

struct Row {
    request: u64,
    index: usize,
    /// Prompt and generated tokens (end-of-text excluded).
    history: Vec<i64>,
    prompt_len: usize,
    generated: usize,
    max_new_tokens: usize,
    min_new_tokens: usize,
    sampler: Sampler,
    detokenizer: IncrementalDecoder,
    stream: TextStream,
    released: String,
    finish: Option<Finish>,
    /// Testing only: sampling for this row panics.
    inject_fault: bool,
}

impl Row {
    fn reserved_tokens(&self) -> usize {
        self.prompt_len + self.max_new_tokens
    }
}

pub struct Scheduler<M: CausalLm> {
    model: M,
    cache: KvCache,
    rows: Vec<Row>,
    requests: HashMap<u64, Request>,
    next_request: u64,
    /// Taken from the queue but not yet admitted (the batch was full).
    pending: Option<GenerationJob>,
    limits: BatchLimits,
    metrics: Arc<Metrics>,
    /// libtorch's thread count for each step, by its rows.
    threads: Option<StepThreads>,
}

impl<M: CausalLm> Scheduler<M> {
    pub fn new(model: M, limits: BatchLimits, metrics: Arc<Metrics>) -> Scheduler<M> {
        Scheduler {
            cache: model.new_cache(),
            model,
            rows: Vec::new(),
            requests: HashMap::new(),
            next_request: 0,
            pending: None,
            limits,
            metrics,
            threads: None,
        }
    }

    /// Serves the queue until every sender is gone and all work is done.
    pub fn run(mut self, receiver: Receiver<GenerationJob>, status: &ModelStatus) {
        // Read on this, the model's, thread.
        self.threads = Some(StepThreads::new());
        tch::no_grad(|| loop {
            match catch_unwind(AssertUnwindSafe(|| self.turn(&receiver))) {
                Ok(true) => {}
                Ok(false) => return,
                Err(panic) => self.recover(panic_message(&panic), status),
            }
        })
    }

    /// One turn of the loop; false once the queue is closed and idle.
    fn turn(&mut self, receiver: &Receiver<GenerationJob>) -> bool {
        if self.rows.is_empty() && self.pending.is_none() {
            match receiver.recv() {
                Ok(job) => {
                    self.metrics.queue_depth(TASK).dec();
                    self.pending = Some(job);
                }
                Err(_) => return false,
            }
        }
        self.admit(receiver);
        self.retire();
        if !self.rows.is_empty() {
            self.step();
            self.retire();
        }
        self.metrics
            .active_sequences(TASK)
            .set(self.rows.len() as i64);
        true
    }

    /// A panic may have left the batch half updated: every request held
    /// gets a 500 and the batch starts over empty. Requests being admitted
    /// when it happened were dropped with their event senders, which their
    /// handlers also answer with a 500. The weights are read-only, so they
    /// need no reload.
    fn recover(&mut self, message: String, status: &ModelStatus) {
        status.reloading();
        self.metrics.recovered(TASK);
        tracing::error!(task = %TASK, "generation loop panicked: {message}; rebuilding its state");
        if let Some(job) = self.pending.take() {
            fail(&job.events, message.clone());
        }
        self.fail_all(message);
        self.metrics.active_sequences(TASK).set(0);
        status.rebuilt();
    }

    fn reserved_tokens(&self) -> usize {
        self.rows.iter().map(Row::reserved_tokens).sum()
    }

    /// Starts waiting requests while the batch has room; their prompts are
    /// prefilled together.
    fn admit(&mut self, receiver: &Receiver<GenerationJob>) {
        let mut group: Vec<GenerationJob> = Vec::new();
        let (mut sequences, mut reserved) = (self.rows.len(), self.reserved_tokens());
        let mut longest = 0;
        loop {
            let job = match self.pending.take() {
                Some(job) => job,
                None => match receiver.try_recv() {
                    Ok(job) => {
                        self.metrics.queue_depth(TASK).dec();
                        job
                    }
                    Err(_) => break,
                },
            };
            if job.events.is_closed() {
                self.metrics.abandoned(TASK, "disconnected").inc();
                continue;
            }
            if job.timing.expired(Instant::now()) {
                self.metrics.abandoned(TASK, "deadline").inc();
                let _ = job
                    .events
                    .send(GenerationEvent::Failed(PredictError::DeadlineExceeded));
                continue;
            }
            let prompt_len = job.prompt.ids.len();
            let copies = job.options.num_return_sequences;
            let needed = copies * (prompt_len + job.options.max_new_tokens);
            let padded = (group.len() + 1) * longest.max(prompt_len);
            let full = sequences + copies > self.limits.max_sequences
                || reserved + needed > self.limits.max_tokens
                || padded > MAX_PREFILL_TOKENS;
            if full && (sequences > 0 || !group.is_empty()) {
                self.pending = Some(job);
                break;
            }
            sequences += copies;
            reserved += needed;
            longest = longest.max(prompt_len);
            group.push(job);
        }
        if !group.is_empty() {
            self.start(group);
        }
    }

    /// Prefills a group of requests in one pass and adds their sequences to
    /// the batch.
    fn start(&mut self, group: Vec<GenerationJob>) {
        let now = Instant::now();
        for job in &group {
            let queue_time = now.duration_since(job.timing.enqueued);
            self.metrics
                .queue_duration(TASK)
                .observe(queue_time.as_secs_f64());
            let _ = job.events.send(GenerationEvent::Started {
                queue_time,
                prompt_tokens: job.prompt.ids.len(),
            });
        }
        let copies: Vec<usize> = group
            .iter()
            .map(|job| job.options.num_return_sequences)
            .collect();
        if let Some(threads) = &mut self.threads {
            threads.for_rows(group.iter().map(|job| job.prompt.ids.len()).sum());
        }
        let prefilled = catch_unwind(AssertUnwindSafe(|| {
            let prompts: Vec<&[i64]> = group.iter().map(|job| job.prompt.ids.as_slice()).collect();
            let prefilled = self.model.prefill(&prompts).repeat_rows(&copies);
            logits_rows(&prefilled.logits).map(|logits| (logits, prefilled))
        }));
        let (mut logits, prefilled) = match prefilled {
            Ok(Ok(done)) => done,
            Ok(Err(message)) => return fail_group(&group, message),
            Err(panic) => return fail_group(&group, panic_message(&panic)),
        };
        let mut row_logits = logits.rows();
        for job in group {
            let id = self.next_request;
            self.next_request += 1;
            let (prompt, request) = (job.prompt, job.options);
            let copies = request.num_return_sequences;
            self.requests.insert(
                id,
                Request {
                    events: job.events,
                    timing: job.timing,
                    started: now,
                    prompt_tokens: prompt.ids.len(),
                    completions: vec![None; copies],
                    unfinished: copies,
                    completion_tokens: 0,
                },
            );
            let seed = request.seed.unwrap_or_else(fresh_seed);
            let params = SamplingParams {
                temperature: request.temperature,
                top_k: request.top_k as usize,
                top_p: request.top_p,
                repetition_penalty: request.repetition_penalty,
            };
            for index in 0..copies {
                let mut row = Row {
                    request: id,
                    index,
                    history: prompt.ids.clone(),
                    prompt_len: prompt.ids.len(),
                    generated: 0,
                    max_new_tokens: request.max_new_tokens,
                    min_new_tokens: request.min_new_tokens,
                    sampler: Sampler::new(params.clone(), seed.wrapping_add(index as u64)),
                    detokenizer: IncrementalDecoder::new(),
                    stream: TextStream::new(request.stop.clone(), request.stop_at_sentence_end),
                    released: String::new(),
                    finish: None,
                    inject_fault: prompt.inject_fault,
                };
                if let Some(logits) = row_logits.next() {
                    self.advance(&mut row, logits);
                }
                self.rows.push(row);
            }
        }
        self.cache.join(&prefilled);
    }

    /// Runs one decoding step for every running sequence.
    fn step(&mut self) {
        if let Some(threads) = &mut self.threads {
            threads.for_rows(self.rows.len());
        }
        let tokens: Vec<i64> = self.rows.iter().map(last_token).collect();
        let positions: Vec<i64> = self
            .rows
            .iter()
            .map(|row| row.history.len() as i64 - 1)
            .collect();
        self.metrics
            .batch_size(TASK)
            .observe(self.rows.len() as f64);
        let stepped = catch_unwind(AssertUnwindSafe(|| {
            logits_rows(&self.model.step(&tokens, &positions, &mut self.cache))
        }));
        let mut logits = match stepped {
            Ok(Ok(logits)) => logits,
            Ok(Err(message)) => return self.fail_all(message),
            Err(panic) => return self.fail_all(panic_message(&panic)),
        };
        let mut rows = std::mem::take(&mut self.rows);
        for (row, row_logits) in rows.iter_mut().zip(logits.rows()) {
            if row.finish.is_none() {
                self.advance(row, row_logits);
            }
        }
        self.rows = rows;
    }

    /// Samples the next token of `row` and tells its client the new text.
    fn advance(&mut self, row: &mut Row, logits: &mut [f32]) {
        if row.inject_fault {
            panic!("fault injection: the prompt asked for a panic while sampling");
        }
        let banned = (row.generated < row.min_new_tokens).then_some(self.model.eos_id());
        let token = row.sampler.next_token(logits, &row.history, banned);
        row.generated += 1;
        self.metrics.generated_tokens(TASK).inc();
        if let Some(request) = self.requests.get_mut(&row.request) {
            request.completion_tokens += 1;
        }
        if token == self.model.eos_id() {
            row.finish = Some(Finish::Eos);
            return;
        }
        row.history.push(token);
        let model = &self.model;
        let new_text = row
            .detokenizer
            .next(&row.history[row.prompt_len..], |ids| model.decode(ids));
        let update = row.stream.push(&new_text);
        self.send_text(row, update.delta);
        if update.stopped {
            row.finish = Some(Finish::Stop);
        } else if row.generated >= row.max_new_tokens {
            row.finish = Some(Finish::Length);
        }
    }

    fn send_text(&self, row: &mut Row, delta: String) {
        if delta.is_empty() {
            return;
        }
        row.released.push_str(&delta);
        if let Some(request) = self.requests.get(&row.request) {
            let _ = request.events.send(GenerationEvent::Token {
                index: row.index,
                text: delta,
            });
        }
    }

    /// Removes finished sequences, those whose client left and those past
    /// their deadline; answers requests whose sequences are all done.
    fn retire(&mut self) {
        let now = Instant::now();
        let mut gone = Vec::new();
        for (&id, request) in &self.requests {
            if request.events.is_closed() {
                gone.push(id);
            } else if request.timing.expired(now) {
                for row in self.rows.iter_mut().filter(|row| row.request == id) {
                    row.finish.get_or_insert(Finish::Deadline);
                }
            }
        }
        for id in gone {
            self.metrics.abandoned(TASK, "disconnected").inc();
            self.requests.remove(&id);
        }
        let mut keep = Vec::with_capacity(self.rows.len());
        let mut rows = std::mem::take(&mut self.rows);
        let mut kept_rows = Vec::with_capacity(rows.len());
        for (position, mut row) in rows.drain(..).enumerate() {
            if !self.requests.contains_key(&row.request) {
                continue;
            }
            match row.finish {
                None => {
                    keep.push(position);
                    kept_rows.push(row);
                }
                Some(finish) => self.finish_row(&mut row, finish),
            }
        }
        self.rows = kept_rows;
        self.cache.retain_rows(&keep);
    }

    fn finish_row(&mut self, row: &mut Row, finish: Finish) {
        if finish == Finish::Deadline {
            self.metrics.abandoned(TASK, "deadline").inc();
        }
        if finish != Finish::Stop {
            let model = &self.model;
            let tail = row
                .detokenizer
                .flush(&row.history[row.prompt_len..], |ids| model.decode(ids));
            let rest = row.stream.finish(&tail);
            self.send_text(row, rest);
        }
        let Some(request) = self.requests.get_mut(&row.request) else {
            return;
        };
        request.completions[row.index] = Some(GeneratedText {
            text: std::mem::take(&mut row.released),
            finish,
        });
        request.unfinished -= 1;
        if request.unfinished > 0 {
            return;
        }
        if let Some(request) = self.requests.remove(&row.request) {
            let inference_time = request.started.elapsed();
            self.metrics
                .inference_duration(TASK)
                .observe(inference_time.as_secs_f64());
            self.metrics
                .request_duration(TASK)
                .observe(request.timing.enqueued.elapsed().as_secs_f64());
            let output = GenerationOutput {
                completions: request.completions.into_iter().flatten().collect(),
                prompt_tokens: request.prompt_tokens,
                completion_tokens: request.completion_tokens,
            };
            let _ = request.events.send(GenerationEvent::Done {
                output,
                inference_time,
            });
        }
    }

    /// The model failed mid-batch: every running request gets the error and
    /// the batch starts over empty.
    fn fail_all(&mut self, message: String) {
        tracing::error!(task = %TASK, "generation step failed: {message}");
        for (_, request) in self.requests.drain() {
            fail(&request.events, message.clone());
        }
        self.rows.clear();
        self.cache = self.model.new_cache();
    }
}

fn fail(events: &UnboundedSender<GenerationEvent>, message: String) {
    let _ = events.send(GenerationEvent::Failed(PredictError::Failed(message)));
}

fn fail_group(group: &[GenerationJob], message: String) {
    tracing::error!(task = %TASK, "prefill failed: {message}");
    for job in group {
        fail(&job.events, message.clone());
    }
}

fn last_token(row: &Row) -> i64 {
    row.history.last().copied().unwrap_or(0)
}

/// [rows, vocab] logits copied once to the CPU; `rows()` hands out each row.
struct Logits {
    values: Vec<f32>,
    width: usize,
}

impl Logits {
    fn rows(&mut self) -> std::slice::ChunksMut<'_, f32> {
        self.values.chunks_mut(self.width)
    }
}

fn logits_rows(logits: &Tensor) -> Result<Logits, String> {
    let width = logits.size().last().copied().unwrap_or(1).max(1) as usize;
    let flat = logits
        .to_kind(Kind::Float)
        .to_device(tch::Device::Cpu)
        .contiguous()
        .view([-1]);
    let values = Vec::<f32>::try_from(&flat).map_err(|error| error.to_string())?;
    Ok(Logits { values, width })
}
