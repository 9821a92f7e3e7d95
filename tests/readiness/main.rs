//! Readiness, disabled models, a model stuck loading, and a full queue.
//! Each test needs a server configured its own way, so they live in their
//! own test binary rather than beside the shared server of `tests/api`.

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::net::TcpListener;
use std::thread;
use std::time::Instant;

use serde_json::json;

use crate::helpers::{assert_error, read, spawn_app, tiny_settings};

#[test]
fn a_disabled_model_answers_503_and_does_not_block_readiness() {
    let mut settings = tiny_settings();
    settings.translation.model.enabled = false;
    settings.qa.model.enabled = false;
    let app = spawn_app(settings);
    app.wait_ready();
    let (status, body) = read(app.get("/ready"));
    assert_eq!(status, 200);
    assert_eq!(body["models"]["translation"], "disabled");
    let (status, body) = app.post("/translate", &json!({"text": "Hello."}));
    let message = assert_error(status, &body, 503, "model_not_ready");
    assert!(message.contains("disabled"), "{message}");
}

#[test]
fn a_model_still_loading_makes_ready_and_its_endpoint_503() {
    // A "hub" that accepts connections and never answers keeps the model loading.
    let silent_hub = TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", silent_hub.local_addr().expect("address"));
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent_hub.incoming().flatten() {
            held.push(stream);
        }
    });
    let cache = std::env::temp_dir().join(format!("nlp-serve-silent-{}", std::process::id()));
    let mut settings = tiny_settings();
    settings.hub.endpoint = Some(endpoint);
    settings.hub.cache_dir = Some(cache);
    settings.completion.model.source = "silent/gpt2".into();
    let app = spawn_app(settings);
    let (status, body) = read(app.get("/ready"));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["models"]["completion"], "loading");
    let (status, body) = app.post("/complete", &json!({"prompt": "Hi"}));
    assert_error(status, &body, 503, "model_not_ready");
    let (status, _) = read(app.get("/health"));
    assert_eq!(status, 200, "health does not depend on models");
}

#[test]
fn a_full_queue_answers_429_at_once() {
    let mut settings = tiny_settings();
    settings.completion.model.queue_size = 1;
    settings.completion.model.max_batch_size = 1;
    let app = std::sync::Arc::new(spawn_app(settings));
    app.wait_ready();
    let handles: Vec<_> = (0..24)
        .map(|_| {
            let app = app.clone();
            thread::spawn(move || {
                let sent = Instant::now();
                let response = app
                    .client
                    .post(app.url("/complete"))
                    .json(&json!({"prompt": "Load test", "max_new_tokens": 200,
                                  "min_new_tokens": 200, "temperature": 0}))
                    .send()
                    .expect("answered");
                let retry_after = response.headers().get("retry-after").cloned();
                let (status, body) = read(response);
                (status, body, retry_after, sent.elapsed())
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    let mut rejected = 0;
    for (status, body, retry_after, _) in &results {
        match status {
            200 => {}
            429 => {
                rejected += 1;
                assert_error(*status, body, 429, "queue_full");
                assert!(retry_after.is_some(), "429 carries Retry-After");
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert!(
        rejected > 0,
        "24 concurrent requests on a queue of 1 must shed some"
    );
    assert!(rejected < results.len(), "some requests must be served");
    // At once: every 429 came back sooner than any generation of 200 tokens
    // could finish.
    let latency = |wanted: u16| results.iter().filter(move |r| r.0 == wanted).map(|r| r.3);
    let slowest_rejection = latency(429).max().expect("some rejected");
    let fastest_answer = latency(200).min().expect("some served");
    assert!(
        slowest_rejection < fastest_answer,
        "a 429 took {slowest_rejection:?}, longer than a whole generation ({fastest_answer:?})"
    );
}
