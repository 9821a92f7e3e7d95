use serde_json::json;

use crate::helpers::{app, first_text};

#[test]
fn completes_a_prompt_with_usage_and_finish_reason() {
    let response = app()
        .complete(&json!({"prompt": "Machine learning is", "max_new_tokens": 5, "temperature": 0}));
    assert_eq!(response["model"], "models/tiny/gpt2");
    let completions = response["completions"].as_array().expect("list");
    assert_eq!(completions.len(), 1);
    let reason = completions[0]["finish_reason"].as_str().expect("reason");
    assert!(["length", "eos", "stop"].contains(&reason));
    assert_eq!(response["usage"]["prompt_tokens"], 3);
    let generated = response["usage"]["completion_tokens"]
        .as_u64()
        .expect("count");
    assert!((1..=5).contains(&generated));
    if reason == "length" {
        assert_eq!(generated, 5);
    }
}

#[test]
fn greedy_decoding_is_deterministic() {
    let body = json!({"prompt": "The weather today", "max_new_tokens": 12, "temperature": 0});
    assert_eq!(
        first_text(&app().complete(&body.clone())),
        first_text(&app().complete(&body))
    );
}

#[test]
fn several_sequences_are_returned_when_sampling() {
    let response = app().complete(&json!({"prompt": "Hello", "max_new_tokens": 8,
        "min_new_tokens": 8, "temperature": 1.0, "top_k": 0, "num_return_sequences": 3, "seed": 1}));
    let completions = response["completions"].as_array().expect("list");
    assert_eq!(completions.len(), 3, "{response}");
    for completion in completions {
        assert_eq!(completion["finish_reason"], "length", "{response}");
    }
    // Every sequence counts: three times eight tokens.
    assert_eq!(response["usage"]["completion_tokens"], 24, "{response}");
    // Each sequence samples with its own generator: eight tokens drawn from
    // the whole vocabulary do not repeat another sequence's.
    let texts: std::collections::HashSet<&str> = completions
        .iter()
        .map(|completion| completion["text"].as_str().expect("text"))
        .collect();
    assert_eq!(texts.len(), 3, "{response}");
}

#[test]
fn output_ends_before_the_first_stop_sequence() {
    let base = json!({"prompt": "Deep learning", "max_new_tokens": 24, "temperature": 0});
    let full = first_text(&app().complete(&base.clone()));
    let chars: Vec<char> = full.chars().collect();
    assert!(
        chars.len() > 8,
        "greedy output too short to pick a stop from: {full:?}"
    );
    // A stop taken from the middle of the greedy output must cut it there.
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let expected = &full[..full.find(&stop).expect("stop occurs")];
    let mut body = base.clone();
    body["stop"] = json!(["never-appears-xyz", stop]);
    let response = app().complete(&body);
    assert_eq!(first_text(&response), expected);
    assert_eq!(response["completions"][0]["finish_reason"], "stop");
}

#[test]
fn min_new_tokens_gives_fixed_length_output() {
    let response = app().complete(
        &json!({"prompt": "Fixed", "max_new_tokens": 9, "min_new_tokens": 9, "temperature": 0}),
    );
    assert_eq!(response["usage"]["completion_tokens"], 9);
    assert_eq!(response["completions"][0]["finish_reason"], "length");
}
