use serde_json::{json, Value};

use crate::helpers::app;
use nlp_serve::text::sentences::trim_to_sentence_end;

fn complete(body: Value) -> Value {
    let (status, response) = app().post("/complete", &body);
    assert_eq!(status, 200, "{response}");
    response
}

fn first_text(response: &Value) -> String {
    response["completions"][0]["text"]
        .as_str()
        .expect("text")
        .to_string()
}

#[test]
fn completes_a_prompt_with_usage_and_finish_reason() {
    let response =
        complete(json!({"prompt": "Machine learning is", "max_new_tokens": 5, "temperature": 0}));
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
        first_text(&complete(body.clone())),
        first_text(&complete(body))
    );
}

#[test]
fn same_seed_same_text_and_different_seeds_differ() {
    let body = |seed: u64| {
        json!({"prompt": "Once upon a time", "max_new_tokens": 16, "temperature": 1.0,
               "top_p": 0.95, "top_k": 0, "seed": seed})
    };
    let first = first_text(&complete(body(7)));
    assert_eq!(first, first_text(&complete(body(7))));
    let others: Vec<String> = (8..11)
        .map(|seed| first_text(&complete(body(seed))))
        .collect();
    assert!(
        others.iter().any(|text| text != &first),
        "seeds 7..11 all gave {first:?}"
    );
}

#[test]
fn several_sequences_are_returned_when_sampling() {
    let response = complete(
        json!({"prompt": "Hello", "max_new_tokens": 6, "temperature": 0.9,
                                    "num_return_sequences": 3, "seed": 1}),
    );
    assert_eq!(response["completions"].as_array().expect("list").len(), 3);
}

#[test]
fn output_ends_before_the_first_stop_sequence() {
    let base = json!({"prompt": "Deep learning", "max_new_tokens": 24, "temperature": 0});
    let full = first_text(&complete(base.clone()));
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
    let response = complete(body);
    assert_eq!(first_text(&response), expected);
    assert_eq!(response["completions"][0]["finish_reason"], "stop");
}

#[test]
fn stop_at_sentence_end_trims_to_the_last_complete_sentence() {
    // The tiny model samples nearly uniformly over GPT-2's vocabulary, where
    // sentence ends are rare: draw enough text (8 x 4 x 160 tokens) that some
    // sample surely holds one followed by more text.
    let mut trimmed_cases = 0;
    for seed in 0..8u64 {
        let body = json!({"prompt": "The report said", "max_new_tokens": 160, "temperature": 2.0,
                          "top_k": 0, "seed": seed, "num_return_sequences": 4});
        let untrimmed = complete(body.clone());
        let mut with_flag = body.clone();
        with_flag["stop_at_sentence_end"] = json!(true);
        let trimmed = complete(with_flag);
        for index in 0..4 {
            let full = untrimmed["completions"][index]["text"]
                .as_str()
                .expect("text");
            let cut = trimmed["completions"][index]["text"]
                .as_str()
                .expect("text");
            match trim_to_sentence_end(full) {
                Some(expected) => {
                    assert_eq!(cut, expected);
                    if cut.len() < full.trim_end().len() {
                        trimmed_cases += 1;
                    }
                }
                None => assert_eq!(cut, full),
            }
        }
    }
    assert!(
        trimmed_cases > 0,
        "no sample ended mid-sentence after a sentence end"
    );
}

#[test]
fn min_new_tokens_gives_fixed_length_output() {
    let response = complete(
        json!({"prompt": "Fixed", "max_new_tokens": 9, "min_new_tokens": 9, "temperature": 0}),
    );
    assert_eq!(response["usage"]["completion_tokens"], 9);
    assert_eq!(response["completions"][0]["finish_reason"], "length");
}
