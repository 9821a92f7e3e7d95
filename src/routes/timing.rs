//! Request deadlines (`x-timeout-ms`) and the timing headers of responses
//! (`x-queue-time`, `x-inference-time`, in milliseconds).

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponseBuilder};

use crate::error::ApiError;

pub const TIMEOUT_HEADER: &str = "x-timeout-ms";
pub const QUEUE_TIME_HEADER: &str = "x-queue-time";
pub const INFERENCE_TIME_HEADER: &str = "x-inference-time";

/// Longest accepted deadline: a day.
const MAX_TIMEOUT_MS: u64 = 86_400_000;

/// The request's deadline, if it set one: a positive whole number of
/// milliseconds from now.
pub fn request_timeout(request: &HttpRequest) -> Result<Option<Duration>, ApiError> {
    let Some(value) = request.headers().get(TIMEOUT_HEADER) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .filter(|&ms| (1..=MAX_TIMEOUT_MS).contains(&ms))
        .map(|ms| Some(Duration::from_millis(ms)))
        .ok_or_else(|| {
            ApiError::Invalid(format!(
                "{TIMEOUT_HEADER}: must be a whole number of milliseconds from 1 to {MAX_TIMEOUT_MS}"
            ))
        })
}

pub fn milliseconds(duration: Duration) -> String {
    format!("{:.3}", duration.as_secs_f64() * 1000.0)
}

/// Adds `x-queue-time` and, when known, `x-inference-time`.
pub fn insert_timing(
    response: &mut HttpResponseBuilder,
    queue_time: Duration,
    inference_time: Option<Duration>,
) {
    response.insert_header((QUEUE_TIME_HEADER, milliseconds(queue_time)));
    if let Some(inference_time) = inference_time {
        response.insert_header((INFERENCE_TIME_HEADER, milliseconds(inference_time)));
    }
}
