//! Oracle tests: question answering. The server loads the DistilBERT and
//! BERT QA checkpoints transformers saved (model.safetensors, config.json as
//! transformers writes it) and must answer as transformers'
//! `question-answering` pipeline did with `top_k=3`: the same texts and
//! character offsets in the same order, scores within 1e-4. The cases include
//! accents and CJK, and a context of several windows.

use nlp_serve::generation::linear::{fbgemm_available, Precision};
use serde_json::{json, Value};

use crate::fixtures;
use crate::helpers::{spawn_app, tiny_settings, TestApp};

fn qa_app(checkpoint: &str, precision: Precision) -> TestApp {
    let mut settings = tiny_settings();
    settings.qa.precision = precision.into();
    settings.completion.model.enabled = false;
    settings.translation.model.enabled = false;
    settings.qa.model.source = fixtures::checkpoint(checkpoint);
    let app = spawn_app(settings);
    app.wait_ready();
    app
}

#[test]
fn distilbert_answers_are_the_pipelines_at_fp32() {
    assert_pipeline_answers("distilbert");
}

#[test]
fn bert_answers_are_the_pipelines_at_fp32() {
    assert_pipeline_answers("bert");
}

fn assert_pipeline_answers(checkpoint: &str) {
    // Before the server: a missing fixture fails at once, by name.
    let cases = fixtures::model(checkpoint)["qa"]
        .as_array()
        .expect("qa cases");
    assert!(!cases.is_empty());
    let app = qa_app(checkpoint, Precision::Fp32);
    for case in cases {
        let (status, body) = app.post(
            "/qa",
            &json!({"question": case["question"], "context": case["context"], "top_k": 3}),
        );
        assert_eq!(status, 200, "{body}");
        let ours = body["answers"].as_array().expect("answers");
        let theirs = case["answers"].as_array().expect("expected answers");
        assert_eq!(
            spans(ours),
            spans(theirs),
            "question {}: ours {body}",
            case["question"]
        );
        for (our, their) in ours.iter().zip(theirs) {
            let (a, b) = (score(our), score(their));
            assert!(
                (a - b).abs() < 1e-4,
                "question {}: score {a} vs {b}",
                case["question"]
            );
        }
    }
}

/// fp16 weights move the tiny model's logits by about 1e-3 of their spread
/// (precision-report): its best answers stay transformers'. int8 and bf16
/// (bf16 activations too) move them more; they must still load and answer
/// with spans of the context.
#[test]
fn reduced_precisions_serve_the_checkpoint() {
    for precision in Precision::REDUCED {
        if precision.needs_fbgemm() && !fbgemm_available() {
            eprintln!("skipped {precision:?}: no fbgemm kernels on this CPU");
            continue;
        }
        let app = qa_app("distilbert", precision);
        // The largest relative difference from transformers' fp32 score of
        // the same top span: fp32 itself gives it to about 1e-6, so a
        // precision that fell back to fp32 fails here.
        let mut score_drift = 0f64;
        for case in fixtures::model("distilbert")["qa"]
            .as_array()
            .expect("qa cases")
        {
            let (status, body) = app.post(
                "/qa",
                &json!({"question": case["question"], "context": case["context"], "top_k": 3}),
            );
            assert_eq!(status, 200, "{body}");
            let ours = spans(body["answers"].as_array().expect("answers"));
            assert_eq!(ours.len(), 3, "{body}");
            let context = case["context"].as_str().expect("context");
            for (text, start, end) in &ours {
                let slice: String = context
                    .chars()
                    .skip(*start as usize)
                    .take((end - start) as usize)
                    .collect();
                assert_eq!(&slice, text);
            }
            let theirs = case["answers"].as_array().expect("expected answers");
            if precision == Precision::Fp16 {
                assert_eq!(
                    ours[0],
                    spans(theirs)[0],
                    "fp16, question {}",
                    case["question"]
                );
            }
            if ours[0] == spans(theirs)[0] {
                let (top, their_top) = (score(&body["answers"][0]), score(&theirs[0]));
                score_drift = score_drift.max((top - their_top).abs() / their_top);
            }
        }
        eprintln!("{precision:?}: relative score drift {score_drift}");
        assert!(
            score_drift > 1e-4,
            "{precision:?} answers with fp32's scores (relative drift {score_drift})"
        );
    }
}

/// (text, start, end) of each answer, in order.
fn spans(answers: &[Value]) -> Vec<(String, u64, u64)> {
    answers
        .iter()
        .map(|answer| {
            (
                answer["text"].as_str().expect("text").to_string(),
                answer["start"].as_u64().expect("start"),
                answer["end"].as_u64().expect("end"),
            )
        })
        .collect()
}

fn score(answer: &Value) -> f64 {
    answer["score"].as_f64().expect("score")
}
