//! The serving engine seen from outside: batching does not change answers,
//! many concurrent clients are all answered, timing headers and deadlines.

use std::thread;

use serde_json::{json, Value};

use crate::helpers::{app, assert_error, read};

fn greedy(prompt: &str, tokens: u32) -> Value {
    json!({"prompt": prompt, "max_new_tokens": tokens, "temperature": 0})
}

const PROMPTS: [(&str, u32); 6] = [
    ("Short", 6),
    ("A somewhat longer prompt about machine learning models", 30),
    ("Data", 50),
    ("Neural networks learn representations of their inputs", 12),
    ("Once upon a time", 80),
    ("x", 3),
];

#[test]
fn greedy_output_is_the_same_alone_and_in_a_batch() {
    let alone: Vec<Value> = PROMPTS
        .iter()
        .map(|(prompt, tokens)| {
            let (status, body) = app().post("/complete", &greedy(prompt, *tokens));
            assert_eq!(status, 200, "{body}");
            body["completions"].clone()
        })
        .collect();
    for _round in 0..3 {
        let together: Vec<Value> = PROMPTS
            .iter()
            .map(|(prompt, tokens)| {
                let body = greedy(prompt, *tokens);
                thread::spawn(move || app().post("/complete", &body))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|handle| {
                let (status, body) = handle.join().expect("thread");
                assert_eq!(status, 200, "{body}");
                body["completions"].clone()
            })
            .collect();
        assert_eq!(together, alone);
    }
}

#[test]
fn sixty_four_concurrent_requests_are_all_answered() {
    let handles: Vec<_> = (0..64)
        .map(|i| {
            thread::spawn(move || {
                let (path, body) = match i % 3 {
                    0 => ("/complete", json!({"prompt": format!("Client {i}"), "max_new_tokens": 20, "temperature": 0.7, "seed": i})),
                    1 => ("/qa", json!({"question": "What is machine learning?"})),
                    _ => ("/translate", json!({"text": format!("Request number {i} is here.")})),
                };
                app().post(path, &body)
            })
        })
        .collect();
    let mut answered = 0;
    for handle in handles {
        let (status, body) = handle.join().expect("thread");
        match status {
            200 => {}
            429 => {
                assert_error(status, &body, 429, "queue_full");
            }
            other => panic!("status {other}: {body}"),
        }
        answered += 1;
    }
    assert_eq!(answered, 64);
}

#[test]
fn responses_carry_queue_and_inference_times() {
    let requests = [
        ("/complete", greedy("Timing", 4)),
        ("/qa", json!({"question": "What is learning?"})),
        ("/translate", json!({"text": "Time is short."})),
    ];
    for (path, body) in requests {
        let response = app()
            .client
            .post(app().url(path))
            .json(&body)
            .send()
            .expect("answered");
        for header in ["x-queue-time", "x-inference-time"] {
            let value: f64 = response.headers()[header]
                .to_str()
                .expect("ascii")
                .parse()
                .expect("milliseconds");
            assert!(value >= 0.0, "{path} {header} {value}");
        }
        assert_eq!(response.status(), 200);
    }
}

#[test]
fn a_deadline_stops_the_work_and_says_so() {
    let response = app()
        .client
        .post(app().url("/complete"))
        .header("x-timeout-ms", "15")
        .json(&json!({"prompt": "Long", "max_new_tokens": 250, "min_new_tokens": 250, "temperature": 0.8}))
        .send()
        .expect("answered");
    let (status, body) = read(response);
    match status {
        200 => {
            assert_eq!(
                body["completions"][0]["finish_reason"], "deadline",
                "{body}"
            );
            let generated = body["usage"]["completion_tokens"].as_u64().expect("count");
            assert!(generated < 250, "{body}");
        }
        408 => {
            assert_error(status, &body, 408, "deadline_exceeded");
        }
        other => panic!("status {other}: {body}"),
    }
}

#[test]
fn a_bad_deadline_header_is_rejected() {
    for value in ["soon", "0", "-5", "99999999999"] {
        let response = app()
            .client
            .post(app().url("/translate"))
            .header("x-timeout-ms", value)
            .json(&json!({"text": "Hello."}))
            .send()
            .expect("answered");
        let (status, body) = read(response);
        let message = assert_error(status, &body, 422, "validation_error");
        assert!(message.contains("x-timeout-ms"), "{message}");
    }
}
