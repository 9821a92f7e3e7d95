//! `JsonBody<T>`: a JSON request body read up to the configured size limit,
//! with errors that say what is wrong: 400 for broken JSON, 422 naming the
//! field for a well-formed body with a wrong value, 413 when too large. Any
//! content type is accepted, so `curl -d '{...}'` works without a header.

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, OpenAiError};

/// The largest body accepted, shared through app data.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

pub struct JsonBody<T>(pub T);

/// A request body of any content type, read up to the configured size
/// limit (413 beyond it).
pub struct RawBody(pub web::Bytes);

impl FromRequest for RawBody {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        // startup.rs always registers the configured limit; the fallback only
        // serves an App built without it.
        let limit = request
            .app_data::<BodyLimit>()
            .map_or(256 * 1024, |limit| limit.0);
        let declared = request
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if declared.is_some_and(|length| length > limit) {
                return Err(ApiError::PayloadTooLarge { limit });
            }
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|error| {
                    ApiError::MalformedJson(format!("could not read the body: {error}"))
                })?;
                if body.len() + chunk.len() > limit {
                    return Err(ApiError::PayloadTooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(RawBody(body.freeze()))
        })
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = RawBody::from_request(request, payload);
        Box::pin(async move { parse(&body.await?.0).map(JsonBody) })
    }
}

/// A JSON body for the OpenAI-compatible routes: as `JsonBody`, with its
/// errors in OpenAI's shape.
pub struct OpenAiJson<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for OpenAiJson<T> {
    type Error = OpenAiError;
    type Future = LocalBoxFuture<'static, Result<Self, OpenAiError>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = JsonBody::<T>::from_request(request, payload);
        Box::pin(async move {
            body.await
                .map(|JsonBody(value)| OpenAiJson(value))
                .map_err(OpenAiError)
        })
    }
}

/// Parses a JSON body; a wrong value is reported with its path in the body.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::MalformedJson(
            "the request body is empty; send a JSON object".into(),
        ));
    }
    // Syntax first (400), then shape (422): a truncated body is malformed
    // even when its first key is already wrong.
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|error| ApiError::MalformedJson(error.to_string()))?;
    let value = serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." {
            ApiError::Invalid(inner.to_string())
        } else {
            ApiError::Invalid(format!("{path}: {inner}"))
        }
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::complete::CompleteRequest;

    fn message(result: Result<CompleteRequest, ApiError>) -> (String, &'static str) {
        let error = result.expect_err("an error");
        let kind = match error {
            ApiError::MalformedJson(_) => "400",
            ApiError::Invalid(_) => "422",
            _ => "other",
        };
        (error.to_string(), kind)
    }

    #[test]
    fn syntax_errors_are_malformed_json() {
        assert_eq!(message(parse(b"{\"prompt\": ")).1, "400");
        assert_eq!(message(parse(b"not json")).1, "400");
        assert_eq!(message(parse(b"")).1, "400");
        assert_eq!(message(parse(br#"{"question": "#)).1, "400");
    }

    #[test]
    fn wrong_types_name_the_field() {
        let (text, kind) = message(parse(br#"{"prompt": "a", "max_new_tokens": "ten"}"#));
        assert_eq!(kind, "422");
        assert!(text.starts_with("max_new_tokens:"), "{text}");
        let (text, kind) = message(parse(br#"{"prompt": "a", "stop": ["x", 3]}"#));
        assert_eq!(kind, "422");
        assert!(text.starts_with("stop[1]:"), "{text}");
        let (text, kind) = message(parse(br#"{"max_new_tokens": 3}"#));
        assert_eq!(kind, "422");
        assert!(text.contains("missing field `prompt`"), "{text}");
        let (text, _) = message(parse(br#"{"prompt": "a", "max_tokens": 3}"#));
        assert!(text.contains("unknown field `max_tokens`"), "{text}");
        assert_eq!(message(parse(br#"[1, 2]"#)).1, "422");
    }
}
