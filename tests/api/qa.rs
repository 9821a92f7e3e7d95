use serde_json::{json, Value};

use crate::helpers::{app, assert_error};

/// `context[start..end]` in Unicode code points, as the API documents it.
fn slice(context: &str, start: u64, end: u64) -> String {
    context
        .chars()
        .skip(start as usize)
        .take((end - start) as usize)
        .collect()
}

fn assert_offsets_match(context: &str, answers: &Value) {
    for answer in answers.as_array().expect("answers") {
        let start = answer["start"].as_u64().expect("start");
        let end = answer["end"].as_u64().expect("end");
        assert!(start < end, "{answer}");
        assert_eq!(
            answer["text"].as_str().expect("text"),
            slice(context, start, end)
        );
        let score = answer["score"].as_f64().expect("score");
        assert!(score > 0.0 && score.is_finite(), "{answer}");
    }
}

#[test]
fn answers_from_a_given_context_with_exact_offsets() {
    let context =
        "Grüße! The transformer architecture was introduced in 2017 by researchers at Google. \
                   It replaced recurrence with attention.";
    let (status, body) = app().post(
        "/qa",
        &json!({"question": "When was the transformer introduced?",
                                                    "context": context, "top_k": 3}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["document"], "request");
    let answers = body["answers"].as_array().expect("answers");
    assert!(!answers.is_empty() && answers.len() <= 3, "{body}");
    assert_offsets_match(context, &body["answers"]);
    let scores: Vec<f64> = answers
        .iter()
        .map(|a| a["score"].as_f64().expect("score"))
        .collect();
    assert!(
        scores.windows(2).all(|pair| pair[0] >= pair[1]),
        "best first: {scores:?}"
    );
}

#[test]
fn answers_from_the_reference_document_by_default() {
    let document =
        std::fs::read_to_string("resources/documents/machine-learning.md").expect("document");
    let (status, body) = app().post(
        "/qa",
        &json!({"question": "Who introduced support vector machines?"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["document"], "machine-learning.md");
    assert_eq!(body["answers"].as_array().expect("answers").len(), 1);
    assert_offsets_match(&document, &body["answers"]);
}

#[test]
fn top_k_bounds_the_number_of_answers() {
    let context = "Alice wrote the code. Bob reviewed it. Carol shipped it on Monday.";
    for top_k in 1..=5 {
        let (status, body) = app().post(
            "/qa",
            &json!({"question": "Who shipped it?", "context": context, "top_k": top_k}),
        );
        assert_eq!(status, 200, "{body}");
        let count = body["answers"].as_array().expect("answers").len();
        assert!(count >= 1 && count <= top_k, "top_k {top_k} gave {count}");
        assert_offsets_match(context, &body["answers"]);
    }
}

#[test]
fn a_question_over_the_token_limit_is_422() {
    // 70 words, 70 tokens: within the 1,000-character limit, over the
    // 64-token one that windows are cut for.
    let question = "why ".repeat(70);
    let (status, body) = app().post(
        "/qa",
        &json!({"question": question, "context": "It rained."}),
    );
    let message = assert_error(status, &body, 422, "validation_error");
    assert_eq!(
        message, "question: is 70 tokens long; the limit is 64 tokens",
        "{body}"
    );
}

#[test]
fn a_context_without_tokens_is_422() {
    // Control characters are not blank, but BERT's tokenizer drops them.
    let (status, body) = app().post("/qa", &json!({"question": "Why?", "context": "\u{7}\u{7}"}));
    let message = assert_error(status, &body, 422, "validation_error");
    assert_eq!(message, "context: contains no tokens", "{body}");
}
