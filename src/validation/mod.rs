//! Validation: turns request bodies into jobs the predictors accept, or says
//! which field is wrong. Runs before anything is queued. Limits that need the
//! tokenizer (prompt tokens, context length) are checked next, on the
//! tokenizer pool (`PromptEncoder`), also before anything is queued.

mod openai;

use std::sync::Arc;

use crate::api::complete::CompleteRequest;
use crate::api::qa::{DocumentScope, QaRequest};
use crate::api::translate::{TextInput, TranslateRequest};
use crate::configuration::{CompletionSettings, DocumentSettings, QaSettings, TranslationSettings};
use crate::generation::request::{GenerationOptions, GenerationRequest};
use crate::qa::{QaPlan, QaSource};

pub use openai::openai_completion;

/// Most stop sequences per request.
pub const MAX_STOP_SEQUENCES: usize = 4;
/// Longest stop sequence, in characters.
pub const MAX_STOP_CHARS: usize = 64;
/// Most answers per question.
pub const MAX_QA_TOP_K: u32 = 5;

/// A request field with a value the service does not accept.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    #[error("{field}: must not be empty")]
    Empty { field: &'static str },
    #[error("{field}: must be between {min} and {max}, got {got}")]
    OutOfRange {
        field: &'static str,
        min: f64,
        max: f64,
        got: f64,
    },
    #[error("{field}: is {got} characters long; the limit is {limit}")]
    TooLong {
        field: &'static str,
        got: usize,
        limit: usize,
    },
    #[error("{field}: has {got} entries; the limit is {limit}")]
    TooMany {
        field: &'static str,
        got: usize,
        limit: usize,
    },
    #[error("{field}: {message}")]
    Conflict {
        field: &'static str,
        message: &'static str,
    },
}

impl ValidationError {
    /// The same error reported under another field name.
    pub fn renamed(mut self, name: &'static str) -> ValidationError {
        match &mut self {
            ValidationError::Empty { field }
            | ValidationError::OutOfRange { field, .. }
            | ValidationError::TooLong { field, .. }
            | ValidationError::TooMany { field, .. }
            | ValidationError::Conflict { field, .. } => *field = name,
        }
        self
    }

    pub fn field(&self) -> &'static str {
        match self {
            ValidationError::Empty { field }
            | ValidationError::OutOfRange { field, .. }
            | ValidationError::TooLong { field, .. }
            | ValidationError::TooMany { field, .. }
            | ValidationError::Conflict { field, .. } => field,
        }
    }
}

fn in_range(field: &'static str, value: f64, min: f64, max: f64) -> Result<f64, ValidationError> {
    if value.is_finite() && value >= min && value <= max {
        Ok(value)
    } else {
        Err(ValidationError::OutOfRange {
            field,
            min,
            max,
            got: value,
        })
    }
}

fn not_blank(field: &'static str, text: &str) -> Result<(), ValidationError> {
    if text.trim().is_empty() {
        Err(ValidationError::Empty { field })
    } else {
        Ok(())
    }
}

fn at_most_chars(field: &'static str, text: &str, limit: usize) -> Result<(), ValidationError> {
    // Byte length bounds the character count from above: skip counting when it fits.
    if text.len() > limit {
        let got = text.chars().count();
        if got > limit {
            return Err(ValidationError::TooLong { field, got, limit });
        }
    }
    Ok(())
}

/// Largest accepted top_k (larger values filter nothing anyway).
pub const MAX_TOP_K: u32 = 1_000_000;

pub fn completion(
    request: &CompleteRequest,
    settings: &CompletionSettings,
) -> Result<GenerationRequest, ValidationError> {
    if request.prompt.is_empty() {
        return Err(ValidationError::Empty { field: "prompt" });
    }
    let max_new_tokens = match request.max_new_tokens {
        None => settings.default_max_new_tokens,
        Some(value) => in_range(
            "max_new_tokens",
            value as f64,
            1.0,
            settings.max_new_tokens as f64,
        )? as usize,
    };
    let min_new_tokens = match request.min_new_tokens {
        None => 0,
        Some(value) => {
            in_range("min_new_tokens", value as f64, 0.0, max_new_tokens as f64)? as usize
        }
    };
    let temperature = in_range("temperature", request.temperature.unwrap_or(1.0), 0.0, 5.0)?;
    let top_p = request.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ValidationError::OutOfRange {
            field: "top_p",
            min: 0.0,
            max: 1.0,
            got: top_p,
        });
    }
    let top_k = in_range(
        "top_k",
        request.top_k.unwrap_or(50) as f64,
        0.0,
        MAX_TOP_K as f64,
    )? as u32;
    if let Some(seed) = request.seed.filter(|&seed| seed > i64::MAX as u64) {
        return Err(ValidationError::OutOfRange {
            field: "seed",
            min: 0.0,
            max: i64::MAX as f64,
            got: seed as f64,
        });
    }
    let repetition_penalty = in_range(
        "repetition_penalty",
        request.repetition_penalty.unwrap_or(1.0),
        1.0,
        10.0,
    )?;
    let num_return_sequences = match request.num_return_sequences {
        None => 1,
        Some(value) => in_range(
            "num_return_sequences",
            value as f64,
            1.0,
            settings.max_return_sequences as f64,
        )? as usize,
    };
    if num_return_sequences > 1 && temperature == 0.0 {
        return Err(ValidationError::Conflict {
            field: "num_return_sequences",
            message: "more than one sequence needs sampling (temperature > 0); greedy decoding gives one answer",
        });
    }
    let stop = request.stop.clone().unwrap_or_default();
    if stop.len() > MAX_STOP_SEQUENCES {
        return Err(ValidationError::TooMany {
            field: "stop",
            got: stop.len(),
            limit: MAX_STOP_SEQUENCES,
        });
    }
    for sequence in &stop {
        if sequence.is_empty() {
            return Err(ValidationError::Empty { field: "stop" });
        }
        at_most_chars("stop", sequence, MAX_STOP_CHARS)?;
    }
    Ok(GenerationRequest {
        prompt: request.prompt.clone(),
        options: GenerationOptions {
            max_new_tokens,
            min_new_tokens,
            temperature,
            top_p,
            top_k,
            repetition_penalty,
            num_return_sequences,
            seed: request.seed,
            stop,
            stop_at_sentence_end: request.stop_at_sentence_end,
        },
    })
}

pub fn question_answering(
    request: &QaRequest,
    settings: &QaSettings,
    documents: &DocumentSettings,
    reference_id: &str,
) -> Result<QaPlan, ValidationError> {
    not_blank("question", &request.question)?;
    at_most_chars("question", &request.question, settings.max_question_chars)?;
    let given = [
        request.context.is_some(),
        request.document.is_some(),
        request.documents.is_some(),
    ];
    if given.iter().filter(|given| **given).count() > 1 {
        return Err(ValidationError::Conflict {
            field: "context",
            message: "give at most one of context, document and documents",
        });
    }
    let source = match (&request.context, &request.document, request.documents) {
        (Some(context), _, _) => {
            not_blank("context", context)?;
            at_most_chars("context", context, settings.max_context_chars)?;
            if context.chars().count() <= settings.read_whole_context_chars {
                QaSource::Whole(Arc::from(context.as_str()))
            } else {
                QaSource::LongContext(Arc::from(context.as_str()))
            }
        }
        (None, Some(document), _) => {
            not_blank("document", document)?;
            QaSource::Document(document.clone())
        }
        (None, None, Some(DocumentScope::All)) => QaSource::All,
        (None, None, None) => QaSource::Document(reference_id.to_string()),
    };
    let top_k = in_range(
        "top_k",
        request.top_k.unwrap_or(1) as f64,
        1.0,
        MAX_QA_TOP_K as f64,
    )? as usize;
    let passages = in_range(
        "passages",
        request
            .passages
            .map_or(documents.passages as f64, f64::from),
        1.0,
        documents.max_passages as f64,
    )? as usize;
    Ok(QaPlan {
        question: request.question.clone(),
        source,
        top_k,
        passages,
    })
}

pub fn translation(
    request: &TranslateRequest,
    settings: &TranslationSettings,
) -> Result<Vec<String>, ValidationError> {
    let texts = match &request.text {
        TextInput::One(text) => vec![text.clone()],
        TextInput::Many(texts) => texts.clone(),
    };
    if texts.is_empty() {
        return Err(ValidationError::Empty { field: "text" });
    }
    if texts.len() > settings.max_texts {
        return Err(ValidationError::TooMany {
            field: "text",
            got: texts.len(),
            limit: settings.max_texts,
        });
    }
    for text in &texts {
        at_most_chars("text", text, settings.max_text_chars)?;
    }
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::Settings;

    fn request(body: serde_json::Value) -> CompleteRequest {
        serde_json::from_value(body).expect("valid body")
    }

    #[test]
    fn completion_defaults_come_from_settings() {
        let settings = Settings::defaults().expect("defaults");
        let job = completion(
            &request(serde_json::json!({"prompt": "Hi"})),
            &settings.completion,
        )
        .expect("valid");
        assert_eq!(
            job.options.max_new_tokens,
            settings.completion.default_max_new_tokens
        );
        assert_eq!(job.options.num_return_sequences, 1);
        assert_eq!(job.options.temperature, 1.0);
    }

    #[test]
    fn completion_rejects_out_of_range_values_by_field() {
        let settings = Settings::defaults().expect("defaults");
        let cases = [
            (serde_json::json!({"prompt": ""}), "prompt"),
            (
                serde_json::json!({"prompt": "a", "temperature": 7.0}),
                "temperature",
            ),
            (serde_json::json!({"prompt": "a", "top_p": 0.0}), "top_p"),
            (
                serde_json::json!({"prompt": "a", "max_new_tokens": 0}),
                "max_new_tokens",
            ),
            (
                serde_json::json!({"prompt": "a", "max_new_tokens": 100000}),
                "max_new_tokens",
            ),
            (
                serde_json::json!({"prompt": "a", "repetition_penalty": 0.5}),
                "repetition_penalty",
            ),
            (
                serde_json::json!({"prompt": "a", "num_return_sequences": 2, "temperature": 0}),
                "num_return_sequences",
            ),
            (
                serde_json::json!({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}),
                "stop",
            ),
            (serde_json::json!({"prompt": "a", "stop": [""]}), "stop"),
        ];
        for (body, field) in cases {
            let error = completion(&request(body.clone()), &settings.completion)
                .expect_err(&format!("{body} is invalid"));
            assert_eq!(error.field(), field, "{body}");
        }
    }

    #[test]
    fn qa_uses_the_reference_document_without_context() {
        let settings = Settings::defaults().expect("defaults");
        let body: QaRequest =
            serde_json::from_value(serde_json::json!({"question": "What?"})).expect("body");
        let plan = question_answering(&body, &settings.qa, &settings.documents, "reference.md")
            .expect("valid");
        assert_eq!(plan.source, QaSource::Document("reference.md".into()));
        assert_eq!(plan.passages, settings.documents.passages);
        let cases = [
            (
                serde_json::json!({"question": "What?", "top_k": 6}),
                "top_k",
            ),
            (
                serde_json::json!({"question": "What?", "passages": 0}),
                "passages",
            ),
            (
                serde_json::json!({"question": "What?", "passages": 11}),
                "passages",
            ),
            (
                serde_json::json!({"question": "What?", "context": "x", "document": "d"}),
                "context",
            ),
            (
                serde_json::json!({"question": "What?", "document": "d", "documents": "all"}),
                "context",
            ),
            (
                serde_json::json!({"question": "What?", "document": " "}),
                "document",
            ),
        ];
        for (body, field) in cases {
            let body: QaRequest = serde_json::from_value(body.clone()).expect("body");
            let error = question_answering(&body, &settings.qa, &settings.documents, "r")
                .expect_err("invalid");
            assert_eq!(error.field(), field);
        }
    }

    #[test]
    fn qa_reads_a_short_context_whole_and_retrieves_from_a_long_one() {
        let settings = Settings::defaults().expect("defaults");
        let limit = settings.qa.read_whole_context_chars;
        for (length, whole) in [(limit, true), (limit + 1, false)] {
            let body: QaRequest = serde_json::from_value(
                serde_json::json!({"question": "What?", "context": "é".repeat(length)}),
            )
            .expect("body");
            let plan =
                question_answering(&body, &settings.qa, &settings.documents, "r").expect("valid");
            assert_eq!(matches!(plan.source, QaSource::Whole(_)), whole, "{length}");
        }
        let body: QaRequest =
            serde_json::from_value(serde_json::json!({"question": "What?", "documents": "all"}))
                .expect("body");
        let plan =
            question_answering(&body, &settings.qa, &settings.documents, "r").expect("valid");
        assert_eq!(plan.source, QaSource::All);
    }

    #[test]
    fn translation_accepts_one_or_many_texts() {
        let settings = Settings::defaults().expect("defaults");
        let one: TranslateRequest =
            serde_json::from_value(serde_json::json!({"text": "Hi."})).expect("body");
        assert_eq!(
            translation(&one, &settings.translation).expect("valid"),
            ["Hi."]
        );
        let none: TranslateRequest =
            serde_json::from_value(serde_json::json!({"text": []})).expect("body");
        assert_eq!(
            translation(&none, &settings.translation)
                .unwrap_err()
                .field(),
            "text"
        );
    }
}
