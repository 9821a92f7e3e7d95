//! `stream: true`: Server-Sent Events that add up to the final answer.

use serde_json::{json, Value};

use crate::helpers::{app, SseEvent};

/// Checks the event order and that each index's token texts add up to
/// its final text; returns the `done` data.
fn assert_adds_up(events: &[SseEvent]) -> Value {
    let (last, tokens) = events.split_last().expect("some events");
    assert_eq!(last.name, "done", "the stream ends with done: {last:?}");
    assert!(
        tokens.iter().all(|event| event.name == "token"),
        "{tokens:?}"
    );
    let completions = last.data["completions"].as_array().expect("completions");
    for (index, completion) in completions.iter().enumerate() {
        let streamed: String = tokens
            .iter()
            .filter(|event| event.data["index"] == index)
            .map(|event| event.data["text"].as_str().expect("text"))
            .collect();
        assert_eq!(
            streamed,
            completion["text"].as_str().expect("text"),
            "index {index}"
        );
    }
    last.data.clone()
}

#[test]
fn streamed_tokens_add_up_to_the_final_text() {
    let body = json!({"prompt": "Streaming works", "max_new_tokens": 40,
                      "temperature": 0.9, "seed": 11, "stream": true});
    let (events, headers) = app().stream(&body);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(headers.contains_key("x-queue-time"));
    assert!(events.len() > 5, "one event per token: {events:?}");
    let done = assert_adds_up(&events);
    assert!(done["usage"]["prompt_tokens"].as_u64().expect("count") > 0);
}

#[test]
fn streaming_respects_stops_sentences_and_several_sequences() {
    for seed in 0..4 {
        let (events, _) = app().stream(&json!({
            "prompt": "The report says", "max_new_tokens": 60, "temperature": 1.0,
            "seed": seed, "stream": true, "num_return_sequences": 2,
            "stop": ["e", "."], "stop_at_sentence_end": seed % 2 == 0
        }));
        let done = assert_adds_up(&events);
        for completion in done["completions"].as_array().expect("list") {
            let text = completion["text"].as_str().expect("text");
            assert!(!text.contains('e') && !text.contains('.'), "{text:?}");
        }
    }
    for seed in 0..4 {
        let (events, _) = app().stream(&json!({
            "prompt": "One sentence. Then", "max_new_tokens": 80, "temperature": 1.0,
            "seed": seed, "stream": true, "stop_at_sentence_end": true
        }));
        assert_adds_up(&events);
    }
}

#[test]
fn a_failing_stream_request_is_a_plain_json_error() {
    let (status, body) = app().post(
        "/complete",
        &json!({"prompt": "x", "stream": true, "temperature": 9}),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["type"], "validation_error");
}
