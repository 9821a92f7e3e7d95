//! POST /complete: one JSON answer, or Server-Sent Events with `stream: true`.

use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse, Responder};
use actix_web_lab::sse::{self, Sse};
use futures_util::stream;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::api::complete::{
    CompleteRequest, CompleteResponse, Completion, FinishReason, StreamEvent, StreamToken, Usage,
};
use crate::api::error::ErrorResponse;
use crate::engine::{PredictError, SubmitError};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::generation::request::{Finish, GenerationOutput};
use crate::generation::scheduler::GenerationEvent;
use crate::routes::timing::{insert_timing, milliseconds, request_timeout, QUEUE_TIME_HEADER};
use crate::state::AppState;
use crate::validation;

/// How often an idle stream sends a comment, so proxies keep it open and a
/// client that left is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Continue a prompt.
#[utoipa::path(
    post,
    path = "/complete",
    tag = "completion",
    request_body = CompleteRequest,
    params(("x-timeout-ms" = Option<u64>, Header, description = "Deadline in milliseconds: past it, generation stops and returns what it has (finish_reason \"deadline\"), or 408 if it had not started", minimum = 1, maximum = 86400000)),
    responses(
        (status = 200, description = "Completions; with `stream: true`, Server-Sent Events: `token` events (StreamToken), then `done` (CompleteResponse) or `error` (ErrorResponse)",
            content(
                (CompleteResponse = "application/json"),
                (StreamEvent = "text/event-stream"),
            ),
            headers(("x-queue-time" = String, description = "Milliseconds spent queued"),
                    ("x-inference-time" = String, description = "Milliseconds from admission to the last token (not sent when streaming)"))),
        (status = 400, description = "Malformed JSON", body = ErrorResponse),
        (status = 413, description = "Body too large", body = ErrorResponse),
        (status = 422, description = "Invalid field", body = ErrorResponse),
        (status = 429, description = "Queue full", body = ErrorResponse),
        (status = 503, description = "Model not ready", body = ErrorResponse),
        (status = 408, description = "Deadline passed before generation started", body = ErrorResponse),
    )
)]
pub async fn complete(
    state: Data<AppState>,
    http: HttpRequest,
    JsonBody(request): JsonBody<CompleteRequest>,
) -> Result<HttpResponse, ApiError> {
    let job = validation::completion(&request, &state.settings.completion)?;
    let timeout = request_timeout(&http)?;
    let mut events = state.completion()?.generate(job, timeout).await?;
    let queue_time = match events.recv().await {
        Some(GenerationEvent::Started { queue_time, .. }) => queue_time,
        Some(GenerationEvent::Failed(error)) => return Err(SubmitError::Predict(error).into()),
        _ => return Err(dropped().into()),
    };
    let model = state.settings.completion.model.source.clone();
    let mut response = HttpResponse::Ok();
    if request.stream {
        let sse =
            Sse::from_infallible_stream(event_stream(events, model)).with_keep_alive(KEEP_ALIVE);
        let mut streamed = sse.respond_to(&http).map_into_boxed_body();
        if let Ok(value) = HeaderValue::from_str(&milliseconds(queue_time)) {
            streamed
                .headers_mut()
                .insert(HeaderName::from_static(QUEUE_TIME_HEADER), value);
        }
        return Ok(streamed);
    }
    loop {
        match events.recv().await {
            Some(GenerationEvent::Token { .. } | GenerationEvent::Started { .. }) => continue,
            Some(GenerationEvent::Done {
                output,
                inference_time,
            }) => {
                insert_timing(&mut response, queue_time, Some(inference_time));
                return Ok(response.json(to_response(model, output)));
            }
            Some(GenerationEvent::Failed(error)) => return Err(SubmitError::Predict(error).into()),
            None => return Err(dropped().into()),
        }
    }
}

/// Generation events as SSE events, ending after `done` or `error`. Dropping
/// the stream (the client left) drops the receiver, which cancels the work.
fn event_stream(
    events: UnboundedReceiver<GenerationEvent>,
    model: String,
) -> impl futures_util::Stream<Item = sse::Event> {
    stream::unfold(Some(events), move |events| {
        let model = model.clone();
        async move {
            let mut events = events?;
            loop {
                let event = match events.recv().await {
                    Some(GenerationEvent::Token { index, text }) => {
                        json_event("token", &StreamToken { index, text })
                    }
                    Some(GenerationEvent::Started { .. }) => continue,
                    Some(GenerationEvent::Done { output, .. }) => {
                        return Some((json_event("done", &to_response(model, output)), None));
                    }
                    Some(GenerationEvent::Failed(error)) => {
                        let error = ApiError::from(SubmitError::Predict(error));
                        return Some((json_event("error", &ErrorResponse::from(&error)), None));
                    }
                    None => {
                        let error = ApiError::from(dropped());
                        return Some((json_event("error", &ErrorResponse::from(&error)), None));
                    }
                };
                return Some((event, Some(events)));
            }
        }
    })
}

/// The scheduler dropped the request's events without a last word: it
/// panicked while admitting it (it has recovered since). A server error.
fn dropped() -> SubmitError {
    SubmitError::Predict(PredictError::Failed(
        "the generation worker failed while serving this request".into(),
    ))
}

fn json_event(name: &str, data: &impl serde::Serialize) -> sse::Event {
    let data = sse::Data::new_json(data).unwrap_or_else(|_| sse::Data::new("{}"));
    sse::Event::Data(data.event(name.to_string()))
}

fn to_response(model: String, output: GenerationOutput) -> CompleteResponse {
    CompleteResponse {
        model,
        completions: output
            .completions
            .into_iter()
            .map(|generated| Completion {
                text: generated.text,
                finish_reason: match generated.finish {
                    Finish::Length => FinishReason::Length,
                    Finish::Eos => FinishReason::Eos,
                    Finish::Stop => FinishReason::Stop,
                    Finish::Deadline => FinishReason::Deadline,
                },
            })
            .collect(),
        usage: Usage {
            prompt_tokens: output.prompt_tokens,
            completion_tokens: output.completion_tokens,
        },
    }
}
