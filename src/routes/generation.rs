//! A queued generation's events as the completion routes (`/complete`,
//! `/v1/completions`) read them: its start, its end, and a stream of Server-
//! Sent Events with the queue time in a header.

use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, Responder};
use actix_web_lab::sse::{self, Sse};
use futures_util::Stream;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::engine::{PredictError, SubmitError};
use crate::generation::request::GenerationOutput;
use crate::generation::scheduler::GenerationEvent;
use crate::routes::timing::{milliseconds, QUEUE_TIME_HEADER};

/// How often an idle stream sends a comment, so proxies keep it open and a
/// client that left is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Waits for the generation to start; its time in the queue.
pub async fn started(
    events: &mut UnboundedReceiver<GenerationEvent>,
) -> Result<Duration, SubmitError> {
    match events.recv().await {
        Some(GenerationEvent::Started { queue_time, .. }) => Ok(queue_time),
        Some(GenerationEvent::Failed(error)) => Err(SubmitError::Predict(error)),
        _ => Err(dropped()),
    }
}

/// Waits for the generation to end: its output and inference time.
pub async fn finished(
    events: &mut UnboundedReceiver<GenerationEvent>,
) -> Result<(GenerationOutput, Duration), SubmitError> {
    loop {
        match events.recv().await {
            Some(GenerationEvent::Token { .. } | GenerationEvent::Started { .. }) => continue,
            Some(GenerationEvent::Done {
                output,
                inference_time,
            }) => return Ok((output, inference_time)),
            Some(GenerationEvent::Failed(error)) => return Err(SubmitError::Predict(error)),
            None => return Err(dropped()),
        }
    }
}

/// The scheduler dropped a request's events without a last word (it
/// panicked while admitting it and has recovered since): a server error.
pub fn dropped() -> SubmitError {
    SubmitError::Predict(PredictError::Failed(
        "the generation worker failed while serving this request".into(),
    ))
}

/// `events` as a Server-Sent Events response with keep-alive comments and
/// the `x-queue-time` header.
pub fn sse_response(
    events: impl Stream<Item = sse::Event> + 'static,
    http: &HttpRequest,
    queue_time: Duration,
) -> HttpResponse {
    let sse = Sse::from_infallible_stream(events).with_keep_alive(KEEP_ALIVE);
    let mut response = sse.respond_to(http).map_into_boxed_body();
    if let Ok(value) = HeaderValue::from_str(&milliseconds(queue_time)) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(QUEUE_TIME_HEADER), value);
    }
    response
}
