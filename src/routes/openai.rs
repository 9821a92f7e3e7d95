//! OpenAI-compatible routes: `POST /v1/completions` (one JSON answer, or
//! `data: {chunk}` events ending with `data: [DONE]`) and `GET /v1/models`.
//! They run on the same engine as `POST /complete`; every error, the
//! extractor's included, is in OpenAI's shape.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::web::{Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use actix_web_lab::sse;
use futures_util::stream::{self, SelectAll, Stream, StreamExt};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::api::openai::{
    Choice, ModelCard, ModelList, OpenAiCompletion, OpenAiCompletionRequest, OpenAiErrorResponse,
    OpenAiFinishReason, OpenAiUsage,
};
use crate::engine::{PredictError, SubmitError};
use crate::error::{ApiError, OpenAiError};
use crate::extract::OpenAiJson;
use crate::generation::request::{Finish, GenerationOutput};
use crate::generation::scheduler::GenerationEvent;
use crate::routes::generation::{dropped, finished, sse_response, started};
use crate::routes::timing::{insert_timing, request_timeout};
use crate::state::AppState;
use crate::validation;

static STARTED: OnceLock<u64> = OnceLock::new();

/// Unix seconds now.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Records when the server started (the `created` time of its model).
pub fn mark_started() {
    STARTED.get_or_init(unix_now);
}

/// Complete prompts, as OpenAI's completions API does.
#[utoipa::path(
    post,
    path = "/v1/completions",
    tag = "openai",
    request_body = OpenAiCompletionRequest,
    params(("x-timeout-ms" = Option<u64>, Header, description = "Deadline in milliseconds, as on POST /complete (a choice cut by it ends with finish_reason \"length\")", minimum = 1, maximum = 86400000)),
    responses(
        (status = 200, description = "The completion; with `stream: true`, Server-Sent Events `data: {chunk}` (OpenAiCompletion, one choice's new text each), then `data: [DONE]`; a failure mid-stream is one `data: {error}` event (OpenAiErrorResponse)",
            content(
                (OpenAiCompletion = "application/json"),
                (OpenAiCompletion = "text/event-stream"),
            ),
            headers(("x-queue-time" = String, description = "Milliseconds spent queued: the longest over the prompts (streamed: the first prompt's)"))),
        (status = 400, description = "Malformed JSON", body = OpenAiErrorResponse),
        (status = 401, description = "Missing or wrong API key", body = OpenAiErrorResponse),
        (status = 413, description = "Body too large", body = OpenAiErrorResponse),
        (status = 422, description = "Invalid or unsupported field (named in `param`)", body = OpenAiErrorResponse),
        (status = 429, description = "Queue full or rate limited", body = OpenAiErrorResponse),
        (status = 503, description = "Model not ready", body = OpenAiErrorResponse),
        (status = 408, description = "Deadline passed before generation started", body = OpenAiErrorResponse),
    )
)]
pub async fn completions(
    state: Data<AppState>,
    http: HttpRequest,
    OpenAiJson(request): OpenAiJson<OpenAiCompletionRequest>,
) -> Result<HttpResponse, OpenAiError> {
    let jobs = validation::openai_completion(&request, &state.settings.completion)?;
    let timeout = request_timeout(&http)?;
    let handle = state.completion()?;
    let choices_per_prompt = jobs
        .first()
        .map_or(1, |job| job.options.num_return_sequences);
    // The prompts, kept only when `echo` puts them before the choices' text.
    let echoed: Option<Vec<String>> = request
        .echo
        .unwrap_or(false)
        .then(|| jobs.iter().map(|job| job.prompt.clone()).collect());
    // Every prompt is queued before any is awaited; an error drops the
    // receivers queued so far, which cancels them.
    let mut receivers = Vec::with_capacity(jobs.len());
    for job in jobs {
        receivers.push(handle.generate(job, timeout).await.map_err(openai_names)?);
    }
    let streaming = request.stream.unwrap_or(false);
    // A stream answers once its first prompt has started (a later prompt may
    // wait for room in the batch; its failure comes as an error event).
    let awaited = if streaming { 1 } else { receivers.len() };
    let mut queue_time = Duration::ZERO;
    for events in receivers.iter_mut().take(awaited) {
        queue_time = queue_time.max(started(events).await?);
    }
    let header = Header {
        id: format!("cmpl-{}", uuid::Uuid::new_v4().simple()),
        created: unix_now(),
        model: state.settings.completion.model.source.clone(),
    };
    let layout = Layout {
        choices_per_prompt,
        echo: echoed,
    };
    if streaming {
        let include_usage = request
            .stream_options
            .as_ref()
            .is_some_and(|options| options.include_usage);
        let chunks = chunk_stream(receivers, header, layout, include_usage);
        return Ok(sse_response(chunks, &http, queue_time));
    }
    let mut choices = Vec::new();
    let mut usage = UsageSum::default();
    let mut inference_time = Duration::ZERO;
    for (prompt, mut events) in receivers.into_iter().enumerate() {
        let (output, time) = finished(&mut events).await?;
        inference_time = inference_time.max(time);
        usage.add(&output);
        choices.extend(layout.final_choices(prompt, output));
    }
    let mut response = HttpResponse::Ok();
    insert_timing(&mut response, queue_time, Some(inference_time));
    Ok(response.json(header.completion(choices, Some(usage.total()))))
}

/// The models `POST /v1/completions` serves.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "openai",
    responses(
        (status = 200, description = "The completion model (none when completion is disabled)", body = ModelList),
        (status = 401, description = "Missing or wrong API key", body = OpenAiErrorResponse),
    )
)]
pub async fn models(state: Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(ModelList {
        object: "list".into(),
        data: served_model(&state).into_iter().collect(),
    })
}

/// One served model, by id.
#[utoipa::path(
    get,
    path = "/v1/models/{model}",
    tag = "openai",
    params(("model" = String, Path, description = "A model id from GET /v1/models", min_length = 1, max_length = 1024)),
    responses(
        (status = 200, description = "The model", body = ModelCard),
        (status = 404, description = "This server does not serve that model", body = OpenAiErrorResponse),
    )
)]
pub async fn model(state: Data<AppState>, id: Path<String>) -> Result<HttpResponse, OpenAiError> {
    // The id may hold slashes ("org/name"); the route's tail is all of it.
    let id = id.into_inner();
    match served_model(&state).filter(|card| card.id == id) {
        Some(card) => Ok(HttpResponse::Ok().json(card)),
        None => Err(OpenAiError(ApiError::ModelNotFound(id))),
    }
}

fn served_model(state: &AppState) -> Option<ModelCard> {
    state.tasks.completion.as_ref()?;
    Some(ModelCard {
        id: state.settings.completion.model.source.clone(),
        object: "model".into(),
        created: *STARTED.get_or_init(unix_now),
        owned_by: "nlp-serve".into(),
    })
}

/// What every completion object and chunk of one request shares.
struct Header {
    id: String,
    created: u64,
    model: String,
}

impl Header {
    fn completion(&self, choices: Vec<Choice>, usage: Option<OpenAiUsage>) -> OpenAiCompletion {
        OpenAiCompletion {
            id: self.id.clone(),
            object: "text_completion".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        }
    }
}

/// Where each prompt's choices go in the answer.
struct Layout {
    choices_per_prompt: usize,
    /// The prompts, when `echo` puts each before its choices' text.
    echo: Option<Vec<String>>,
}

impl Layout {
    /// OpenAI's numbering: prompt number × n + choice number.
    fn index(&self, prompt: usize, completion: usize) -> usize {
        prompt * self.choices_per_prompt + completion
    }

    fn final_choices(&self, prompt: usize, output: GenerationOutput) -> Vec<Choice> {
        let echoed = self
            .echo
            .as_ref()
            .map_or("", |prompts| prompts[prompt].as_str());
        output
            .completions
            .into_iter()
            .enumerate()
            .map(|(completion, generated)| Choice {
                text: format!("{echoed}{}", generated.text),
                index: self.index(prompt, completion),
                logprobs: None,
                finish_reason: Some(finish_reason(generated.finish)),
            })
            .collect()
    }
}

fn finish_reason(finish: Finish) -> OpenAiFinishReason {
    match finish {
        Finish::Eos | Finish::Stop => OpenAiFinishReason::Stop,
        // A deadline cut the text short, as a token limit does.
        Finish::Length | Finish::Deadline => OpenAiFinishReason::Length,
    }
}

#[derive(Default)]
struct UsageSum {
    prompt_tokens: usize,
    completion_tokens: usize,
}

impl UsageSum {
    fn add(&mut self, output: &GenerationOutput) {
        self.prompt_tokens += output.prompt_tokens;
        self.completion_tokens += output.completion_tokens;
    }

    fn total(&self) -> OpenAiUsage {
        OpenAiUsage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            total_tokens: self.prompt_tokens + self.completion_tokens,
        }
    }
}

/// A token-limit error found while tokenizing, named as OpenAI names the
/// field (`max_tokens`, not the native `max_new_tokens`).
fn openai_names(error: SubmitError) -> SubmitError {
    match error {
        SubmitError::Predict(PredictError::Invalid { field, message })
            if field == "max_new_tokens" =>
        {
            SubmitError::Predict(PredictError::Invalid {
                field: "max_tokens".into(),
                message: message.replace("max_new_tokens", "max_tokens"),
            })
        }
        other => other,
    }
}

type PromptEvents = Pin<Box<dyn Stream<Item = (usize, GenerationEvent)>>>;

/// The events of every prompt, tagged with the prompt's number.
fn merged(receivers: Vec<UnboundedReceiver<GenerationEvent>>) -> SelectAll<PromptEvents> {
    stream::select_all(receivers.into_iter().enumerate().map(|(prompt, events)| {
        let events = stream::unfold(events, |mut events| async move {
            events.recv().await.map(|event| (event, events))
        });
        Box::pin(events.map(move |event| (prompt, event))) as PromptEvents
    }))
}

/// The SSE chunks of a streamed completion. Dropping the stream (the client
/// left) drops every prompt's receiver, which cancels their generation.
fn chunk_stream(
    receivers: Vec<UnboundedReceiver<GenerationEvent>>,
    header: Header,
    layout: Layout,
    include_usage: bool,
) -> impl Stream<Item = sse::Event> {
    let prompts = receivers.len();
    let mut pending = VecDeque::new();
    if let Some(echoed) = &layout.echo {
        for (prompt, text) in echoed.iter().enumerate() {
            for completion in 0..layout.choices_per_prompt {
                let index = layout.index(prompt, completion);
                pending.push_back(chunk(&header, index, text.clone(), None));
            }
        }
    }
    let streamer = Streamer {
        events: Some(merged(receivers)),
        unfinished: prompts,
        usage: UsageSum::default(),
        header,
        layout,
        include_usage,
        pending,
    };
    stream::unfold(streamer, |mut streamer| async move {
        let event = streamer.next().await?;
        Some((event, streamer))
    })
}

struct Streamer {
    /// None once the stream has ended (after `[DONE]` or an error).
    events: Option<SelectAll<PromptEvents>>,
    unfinished: usize,
    usage: UsageSum,
    header: Header,
    layout: Layout,
    include_usage: bool,
    /// Events ready to send, in order.
    pending: VecDeque<sse::Event>,
}

impl Streamer {
    async fn next(&mut self) -> Option<sse::Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let events = self.events.as_mut()?;
            if self.unfinished == 0 {
                self.finish();
                continue;
            }
            match events.next().await {
                Some((prompt, GenerationEvent::Token { index, text })) => {
                    let index = self.layout.index(prompt, index);
                    self.pending
                        .push_back(chunk(&self.header, index, text, None));
                }
                Some((_, GenerationEvent::Started { .. })) => {}
                Some((prompt, GenerationEvent::Done { output, .. })) => {
                    self.unfinished -= 1;
                    self.usage.add(&output);
                    for (completion, generated) in output.completions.iter().enumerate() {
                        let index = self.layout.index(prompt, completion);
                        let reason = finish_reason(generated.finish);
                        self.pending.push_back(chunk(
                            &self.header,
                            index,
                            String::new(),
                            Some(reason),
                        ));
                    }
                }
                Some((_, GenerationEvent::Failed(error))) => {
                    self.fail(ApiError::from(SubmitError::Predict(error)));
                }
                None => self.fail(ApiError::from(dropped())),
            }
        }
    }

    /// Every prompt is done: the usage chunk if asked for, then `[DONE]`.
    fn finish(&mut self) {
        if self.include_usage {
            let usage = self.header.completion(Vec::new(), Some(self.usage.total()));
            self.pending.push_back(data_event(&usage));
        }
        self.pending
            .push_back(sse::Event::Data(sse::Data::new("[DONE]")));
        self.events = None;
    }

    /// One error event ends the stream (the other prompts are cancelled).
    fn fail(&mut self, error: ApiError) {
        let body = OpenAiErrorResponse::from(&error);
        self.pending.push_back(data_event(&body));
        self.events = None;
    }
}

fn chunk(
    header: &Header,
    index: usize,
    text: String,
    finish_reason: Option<OpenAiFinishReason>,
) -> sse::Event {
    data_event(&header.completion(
        vec![Choice {
            text,
            index,
            logprobs: None,
            finish_reason,
        }],
        None,
    ))
}

fn data_event(data: &impl serde::Serialize) -> sse::Event {
    let data = sse::Data::new_json(data).unwrap_or_else(|_| sse::Data::new("{}"));
    sse::Event::Data(data)
}
