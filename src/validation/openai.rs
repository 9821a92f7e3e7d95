//! `POST /v1/completions` bodies as generation requests: OpenAI's names and
//! defaults mapped onto the native completion's validation, so both routes
//! accept exactly the same values, with errors naming OpenAI's fields.

use super::{completion, ValidationError};
use crate::api::complete::CompleteRequest;
use crate::api::openai::OpenAiCompletionRequest;
use crate::configuration::CompletionSettings;
use crate::generation::request::GenerationRequest;

/// Most prompts in one request (each takes a queue slot).
pub const MAX_PROMPTS: usize = 16;
/// OpenAI's default `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u32 = 16;

/// One generation request per prompt, in the prompts' order.
pub fn openai_completion(
    request: &OpenAiCompletionRequest,
    settings: &CompletionSettings,
) -> Result<Vec<GenerationRequest>, ValidationError> {
    unsupported(request)?;
    let prompts = request.prompt.texts();
    if prompts.is_empty() {
        return Err(ValidationError::Empty { field: "prompt" });
    }
    if prompts.len() > MAX_PROMPTS {
        return Err(ValidationError::TooMany {
            field: "prompt",
            got: prompts.len(),
            limit: MAX_PROMPTS,
        });
    }
    let default_max_tokens = DEFAULT_MAX_TOKENS.min(settings.max_new_tokens as u32);
    prompts
        .into_iter()
        .map(|prompt| {
            let native = CompleteRequest {
                prompt: prompt.to_string(),
                max_new_tokens: Some(request.max_tokens.unwrap_or(default_max_tokens)),
                min_new_tokens: None,
                temperature: request.temperature,
                top_p: request.top_p,
                // OpenAI's sampling has no top-k filter.
                top_k: Some(0),
                repetition_penalty: None,
                num_return_sequences: request.n,
                seed: request.seed,
                stop: request.stop.clone().map(|stop| stop.into_vec()),
                stop_at_sentence_end: false,
                stream: request.stream.unwrap_or(false),
            };
            completion(&native, settings).map_err(|error| match error.field() {
                "max_new_tokens" => error.renamed("max_tokens"),
                "num_return_sequences" => error.renamed("n"),
                _ => error,
            })
        })
        .collect()
}

/// Options of OpenAI's API this server cannot honour: refused, not ignored.
fn unsupported(request: &OpenAiCompletionRequest) -> Result<(), ValidationError> {
    let refuse = |field, message| Err(ValidationError::Conflict { field, message });
    if request.logprobs.is_some() {
        return refuse(
            "logprobs",
            "log probabilities are not available from this server; leave it out",
        );
    }
    if request.suffix.is_some() {
        return refuse("suffix", "insertion after a suffix is not supported");
    }
    if request
        .presence_penalty
        .is_some_and(|penalty| penalty != 0.0)
    {
        return refuse(
            "presence_penalty",
            "is not supported; POST /complete has repetition_penalty",
        );
    }
    if request
        .frequency_penalty
        .is_some_and(|penalty| penalty != 0.0)
    {
        return refuse(
            "frequency_penalty",
            "is not supported; POST /complete has repetition_penalty",
        );
    }
    if request
        .logit_bias
        .as_ref()
        .is_some_and(|bias| !bias.is_empty())
    {
        return refuse("logit_bias", "is not supported");
    }
    if request.stream_options.is_some() && request.stream != Some(true) {
        return refuse("stream_options", "is only allowed with stream: true");
    }
    if request
        .best_of
        .is_some_and(|best_of| best_of != request.n.unwrap_or(1))
    {
        return refuse(
            "best_of",
            "must equal n: each choice is sampled once and returned",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::parse;

    fn settings() -> CompletionSettings {
        crate::configuration::Settings::defaults()
            .expect("defaults")
            .completion
    }

    fn validate(body: &str) -> Result<Vec<GenerationRequest>, ValidationError> {
        let request: OpenAiCompletionRequest = parse(body.as_bytes()).expect("parses");
        openai_completion(&request, &settings())
    }

    #[test]
    fn openai_defaults_apply() {
        let jobs = validate(r#"{"model": "x", "prompt": "Hello"}"#).expect("valid");
        assert_eq!(jobs.len(), 1);
        let options = &jobs[0].options;
        assert_eq!(options.max_new_tokens, DEFAULT_MAX_TOKENS as usize);
        assert_eq!(options.top_k, 0, "no top-k filter");
        assert_eq!(options.temperature, 1.0);
        assert_eq!(options.num_return_sequences, 1);
    }

    #[test]
    fn prompts_and_stops_take_both_forms() {
        let jobs = validate(r#"{"prompt": ["a", "b", "c"], "stop": "\n", "n": 2}"#).expect("valid");
        let prompts: Vec<_> = jobs.iter().map(|job| job.prompt.as_str()).collect();
        assert_eq!(prompts, ["a", "b", "c"]);
        assert!(jobs.iter().all(|job| job.options.stop == ["\n"]));
        assert!(jobs.iter().all(|job| job.options.num_return_sequences == 2));
        let jobs = validate(r#"{"prompt": "a", "stop": ["x", "y"]}"#).expect("valid");
        assert_eq!(jobs[0].options.stop, ["x", "y"]);
    }

    #[test]
    fn errors_name_openai_fields() {
        let error = validate(r#"{"prompt": "a", "max_tokens": 100000}"#).expect_err("too many");
        assert_eq!(error.field(), "max_tokens");
        let error = validate(r#"{"prompt": "a", "n": 2, "temperature": 0}"#).expect_err("greedy");
        assert_eq!(error.field(), "n");
        let error = validate(r#"{"prompt": []}"#).expect_err("no prompt");
        assert_eq!(error.field(), "prompt");
        let many = format!(r#"{{"prompt": {:?}}}"#, vec!["a"; MAX_PROMPTS + 1]);
        assert_eq!(validate(&many).expect_err("too many").field(), "prompt");
    }

    #[test]
    fn options_it_cannot_honour_are_refused() {
        for (body, field) in [
            (r#"{"prompt": "a", "logprobs": 1}"#, "logprobs"),
            (r#"{"prompt": "a", "suffix": "z"}"#, "suffix"),
            (
                r#"{"prompt": "a", "presence_penalty": 0.5}"#,
                "presence_penalty",
            ),
            (
                r#"{"prompt": "a", "frequency_penalty": 1}"#,
                "frequency_penalty",
            ),
            (
                r#"{"prompt": "a", "logit_bias": {"50256": -100}}"#,
                "logit_bias",
            ),
            (r#"{"prompt": "a", "best_of": 3}"#, "best_of"),
            (
                r#"{"prompt": "a", "stream_options": {"include_usage": true}}"#,
                "stream_options",
            ),
        ] {
            assert_eq!(validate(body).expect_err(body).field(), field, "{body}");
        }
        for body in [
            r#"{"prompt": "a", "presence_penalty": 0, "frequency_penalty": 0.0, "logit_bias": {}}"#,
            r#"{"prompt": "a", "best_of": 2, "n": 2}"#,
            r#"{"prompt": "a", "user": "u-1", "echo": true, "stream": true, "stream_options": {"include_usage": true}}"#,
            r#"{"prompt": "a", "stream": null, "echo": null, "n": null, "stop": null}"#,
        ] {
            assert!(validate(body).is_ok(), "{body}");
        }
    }

    #[test]
    fn token_id_prompts_are_a_clear_error() {
        let error =
            parse::<OpenAiCompletionRequest>(br#"{"prompt": [1, 2]}"#).expect_err("refused");
        assert!(
            error.to_string().contains("a string or a list of strings"),
            "{error}"
        );
    }
}
