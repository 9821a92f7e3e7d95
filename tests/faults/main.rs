//! Recovery from a panic in each task's worker, by fault injection: the
//! requests involved get a 500 JSON error, the worker rebuilds its model
//! state and serves on, and it is counted. Each test starts its own server.

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::io::Read;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use helpers::{
    assert_error, long_stream, parse_sse, read_until, spawn_app, tiny_settings, TestApp,
};

/// The input that makes a worker panic when fault injection is on.
const FAULT: &str = "__panic__";

fn faulty_server(configure: impl FnOnce(&mut nlp_serve::configuration::Settings)) -> TestApp {
    let mut settings = tiny_settings();
    settings.runtime.fault_injection = true;
    configure(&mut settings);
    let app = spawn_app(settings);
    app.wait_ready();
    app
}

/// Polls /ready until 200; returns whether it was ever 503 meanwhile.
fn wait_until_ready_again(app: &TestApp) -> bool {
    let mut saw_not_ready = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match app.get("/ready").status().as_u16() {
            200 => return saw_not_ready,
            503 => saw_not_ready = true,
            other => panic!("/ready answered {other}"),
        }
        assert!(Instant::now() < deadline, "the model never came back");
        thread::sleep(Duration::from_millis(2));
    }
}

/// After one recovery of `task`: counted once, ready, and serving `good`.
fn assert_recovered(app: &TestApp, task: &str, path: &str, good: &Value) {
    let recoveries = format!("nlp_serve_worker_recoveries_total{{task=\"{task}\"}}");
    assert_eq!(app.metric(&recoveries), 1.0);
    assert_eq!(
        app.metric(&format!("nlp_serve_model_ready{{task=\"{task}\"}}")),
        1.0
    );
    let (status, body) = app.post(path, good);
    assert_eq!(status, 200, "{body}");
}

/// A poisoned request sent together with good ones to a batching worker: the
/// poisoned one gets 500, the model is reloaded with /ready at 503, then it
/// serves again.
fn a_batch_with_a_poisoned_request_recovers(
    task: &str,
    path: &'static str,
    poisoned: Value,
    good: [Value; 2],
) {
    let app = Arc::new(faulty_server(|s| {
        // Long enough for the three requests to share a batch.
        s.qa.model.max_batch_wait_ms = 50;
        s.translation.model.max_batch_wait_ms = 50;
    }));
    let handles: Vec<_> = std::iter::once(poisoned.clone())
        .chain(good.iter().cloned())
        .map(|body| {
            let app = app.clone();
            thread::spawn(move || (body.clone(), app.post(path, &body)))
        })
        .collect();
    let mut saw_not_ready = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !handles.iter().all(|handle| handle.is_finished()) {
        if app.get("/ready").status() == 503 {
            saw_not_ready = true;
        }
        assert!(Instant::now() < deadline, "a request hangs");
        thread::sleep(Duration::from_millis(2));
    }
    for handle in handles {
        let (body, (status, answer)) = handle.join().expect("thread");
        if body == poisoned {
            let message = assert_error(status, &answer, 500, "inference_error");
            assert!(message.contains("fault injection"), "{message}");
        } else {
            // In the poisoned batch (500) or a later one (200).
            assert!([200, 500].contains(&status), "{body}: {status} {answer}");
            if status == 500 {
                assert_error(status, &answer, 500, "inference_error");
            }
        }
    }
    saw_not_ready |= wait_until_ready_again(&app);
    assert!(saw_not_ready, "/ready never showed the model reloading");
    assert_recovered(&app, task, path, &good[0]);
}

#[test]
fn a_panicking_qa_model_fails_its_batch_reloads_and_serves_again() {
    a_batch_with_a_poisoned_request_recovers(
        "qa",
        "/qa",
        // With a context of its own: over a document, a question whose words
        // match no passage would read nothing and never reach the model.
        json!({"question": FAULT, "context": "Machines learn from data and examples."}),
        [
            json!({"question": "What is learning?"}),
            json!({"question": "What is data?"}),
        ],
    );
}

#[test]
fn a_panicking_translation_model_fails_its_batch_reloads_and_serves_again() {
    a_batch_with_a_poisoned_request_recovers(
        "translation",
        "/translate",
        json!({"text": ["Fine.", FAULT]}),
        [
            json!({"text": "Hello there."}),
            json!({"text": ["One.", "Two."]}),
        ],
    );
}

#[test]
fn a_panic_in_the_generation_loop_fails_the_running_batch_and_it_serves_again() {
    let app = faulty_server(|_| {});
    // A long generation is running when the poisoned prompt joins the batch.
    let mut running = long_stream(&app, "Keep going", 250);
    assert_eq!(running.status(), 200);
    let mut seen = read_until(&mut running, "event: token");

    // The panic happens while sampling, outside any forward pass.
    let (status, body) = app.post("/complete", &json!({"prompt": FAULT, "max_new_tokens": 4}));
    let message = assert_error(status, &body, 500, "inference_error");
    assert!(message.contains("fault injection"), "{message}");

    // The running stream was in the batch: it ends with an error event.
    running.read_to_string(&mut seen).expect("stream readable");
    let events = parse_sse(&seen);
    let last = events.last().expect("events");
    assert_eq!(last.name, "error", "{seen}");
    assert_eq!(last.data["type"], "inference_error", "{seen}");

    wait_until_ready_again(&app);
    assert_recovered(
        &app,
        "completion",
        "/complete",
        &json!({"prompt": "Again", "max_new_tokens": 8, "temperature": 0}),
    );
    // The batch was rebuilt empty: nothing is left running. (The gauge is
    // set at the end of the turn that answered, so it may lag a moment.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.metric("nlp_serve_active_sequences{task=\"completion\"}") != 0.0 {
        assert!(Instant::now() < deadline, "sequences are still running");
        thread::sleep(Duration::from_millis(10));
    }
}
