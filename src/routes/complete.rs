//! POST /complete: one JSON answer, or Server-Sent Events with `stream: true`.

use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use actix_web_lab::sse;
use futures_util::stream;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::api::complete::{
    CompleteRequest, CompleteResponse, Completion, FinishReason, StreamEvent, StreamToken, Usage,
};
use crate::api::error::ErrorResponse;
use crate::engine::SubmitError;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::generation::request::{Finish, GenerationOutput};
use crate::generation::scheduler::GenerationEvent;
use crate::routes::generation::{dropped, finished, sse_response, started};
use crate::routes::timing::{insert_timing, request_timeout};
use crate::state::AppState;
use crate::validation;

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
    let queue_time = started(&mut events).await?;
    let model = state.settings.completion.model.source.clone();
    if request.stream {
        return Ok(sse_response(event_stream(events, model), &http, queue_time));
    }
    let (output, inference_time) = finished(&mut events).await?;
    let mut response = HttpResponse::Ok();
    insert_timing(&mut response, queue_time, Some(inference_time));
    Ok(response.json(to_response(model, output)))
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
