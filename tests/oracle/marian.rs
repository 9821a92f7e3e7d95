//! Oracle tests: Marian. The server serves the tiny Marian checkpoint that
//! transformers saved (model.safetensors without the sinusoidal position
//! tables, generation_config.json with bad words and forced end token) and
//! must translate exactly as transformers' `generate` did, greedy and with
//! four beams, one sentence at a time, all together (three decoding slots,
//! so that sentences join the running batch at other positions as others
//! finish), and in requests sent a few milliseconds apart. `marian_eos` is the
//! same model with the end token made likely, so that sentences end at
//! different lengths and beam search's finished hypotheses, length penalty
//! and stopping rule decide the answers.

use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::fixtures;
use crate::helpers::{spawn_app, tiny_settings, TestApp};

/// transformers generated 24 new tokens at most (the end token included).
const MAX_NEW_TOKENS: i64 = 24;

const MODELS: [&str; 2] = ["marian", "marian_eos"];

fn server(model: &str, num_beams: i64) -> TestApp {
    let mut settings = tiny_settings();
    settings.completion.model.enabled = false;
    settings.qa.model.enabled = false;
    settings.translation.model.source = fixtures::checkpoint(model);
    settings.translation.num_beams = num_beams;
    settings.translation.max_output_tokens = MAX_NEW_TOKENS;
    // Three sentences decode at once: sent together, the others join the
    // running batch as sentences finish, each at its own position.
    settings.translation.sentence_batch_size = 3;
    let app = spawn_app(settings);
    app.wait_ready();
    app
}

/// One server per model and search, started once: [model][greedy, beam].
fn servers(model: usize, beams: bool) -> &'static TestApp {
    static APPS: [[OnceLock<TestApp>; 2]; 2] = [
        [OnceLock::new(), OnceLock::new()],
        [OnceLock::new(), OnceLock::new()],
    ];
    APPS[model][usize::from(beams)].get_or_init(|| server(MODELS[model], if beams { 4 } else { 1 }))
}

fn cases(model: usize) -> &'static Vec<Value> {
    fixtures::model(MODELS[model])["translations"]
        .as_array()
        .expect("translations")
}

fn translate(app: &TestApp, text: Value) -> Vec<String> {
    let (status, body) = app.post("/translate", &json!({ "text": text }));
    assert_eq!(status, 200, "{body}");
    body["translations"]
        .as_array()
        .expect("translations")
        .iter()
        .map(|text| text.as_str().expect("a string").to_string())
        .collect()
}

fn expected(model: usize, search: &str) -> Vec<String> {
    cases(model)
        .iter()
        .map(|case| case[search]["text"].as_str().expect("text").to_string())
        .collect()
}

fn sources(model: usize) -> Vec<String> {
    cases(model)
        .iter()
        .map(|case| case["source"].as_str().expect("source").to_string())
        .collect()
}

fn one_at_a_time(beams: bool) {
    let search = if beams { "beam4" } else { "greedy" };
    for (model, name) in MODELS.iter().enumerate() {
        for (source, expected) in sources(model).iter().zip(expected(model, search)) {
            assert_eq!(
                translate(servers(model, beams), json!(source)),
                [expected],
                "{name} {search}: {source}"
            );
        }
    }
}

fn together(beams: bool) {
    let search = if beams { "beam4" } else { "greedy" };
    for (model, name) in MODELS.iter().enumerate() {
        assert_eq!(
            translate(servers(model, beams), json!(sources(model))),
            expected(model, search),
            "{name} {search}"
        );
    }
}

/// Every source in its own request, sent a few milliseconds apart: requests
/// that overlap join a batch already decoding.
fn staggered(beams: bool) {
    let search = if beams { "beam4" } else { "greedy" };
    for (model, name) in MODELS.iter().enumerate() {
        let app = servers(model, beams);
        let answers: Vec<Vec<String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = sources(model)
                .into_iter()
                .enumerate()
                .map(|(index, source)| {
                    scope.spawn(move || {
                        std::thread::sleep(std::time::Duration::from_millis(3 * index as u64));
                        translate(app, json!(source))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().expect("request"))
                .collect()
        });
        let answers: Vec<String> = answers.into_iter().flatten().collect();
        assert_eq!(answers, expected(model, search), "{name} {search}");
    }
}

#[test]
fn greedy_translations_equal_transformers_joining_a_running_batch() {
    staggered(false);
}

#[test]
fn beam_search_equals_transformers_joining_a_running_batch() {
    staggered(true);
}

#[test]
fn greedy_translations_equal_transformers_one_at_a_time() {
    one_at_a_time(false);
}

#[test]
fn greedy_translations_equal_transformers_together() {
    together(false);
}

#[test]
fn beam_search_equals_transformers_one_at_a_time() {
    one_at_a_time(true);
}

#[test]
fn beam_search_equals_transformers_together() {
    together(true);
}

#[test]
fn the_fixtures_exercise_what_the_tests_claim() {
    // Guards the tests against fixtures where beams or lengths never matter.
    let all: Vec<&Value> = (0..MODELS.len())
        .flat_map(|model| cases(model).iter())
        .collect();
    assert!(all
        .iter()
        .any(|case| case["greedy"]["ids"] != case["beam4"]["ids"]));
    let lengths: std::collections::BTreeSet<usize> = all
        .iter()
        .flat_map(|case| [&case["greedy"]["ids"], &case["beam4"]["ids"]])
        .map(|ids| ids.as_array().map_or(0, Vec::len))
        .collect();
    assert!(
        lengths.len() >= 3,
        "translations of several lengths: {lengths:?}"
    );
}
