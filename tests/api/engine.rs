//! The serving engine seen from outside: batching does not change answers,
//! many concurrent clients are all answered, timing headers and deadlines.

use std::thread;
use std::time::Instant;

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
    // About 21 requests per task against queues of 64: every one must be
    // served, none shed, and each answer must be that task's answer.
    let handles: Vec<_> = (0..64)
        .map(|i| {
            thread::spawn(move || {
                let (path, body) = match i % 3 {
                    0 => ("/complete", json!({"prompt": format!("Client {i}"), "max_new_tokens": 20, "min_new_tokens": 20, "temperature": 0.7, "seed": i})),
                    1 => ("/qa", json!({"question": "What is machine learning?"})),
                    _ => ("/translate", json!({"text": format!("Request number {i} is here.")})),
                };
                (path, app().post(path, &body))
            })
        })
        .collect();
    for handle in handles {
        let (path, (status, body)) = handle.join().expect("thread");
        assert_eq!(status, 200, "{path}: {body}");
        match path {
            "/complete" => {
                assert_eq!(body["usage"]["completion_tokens"], 20, "{body}");
                assert_eq!(body["completions"].as_array().map(Vec::len), Some(1));
            }
            "/qa" => assert!(body["answers"].is_array(), "{body}"),
            _ => assert_eq!(body["translations"].as_array().map(Vec::len), Some(1)),
        }
    }
}

/// A header's milliseconds.
fn milliseconds(response: &reqwest::blocking::Response, header: &str) -> f64 {
    response.headers()[header]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("milliseconds")
}

#[test]
fn responses_carry_queue_and_inference_times() {
    let requests = [
        (
            "/complete",
            json!({"prompt": "Timing", "max_new_tokens": 64, "min_new_tokens": 64, "temperature": 0}),
        ),
        ("/qa", json!({"question": "What is learning?"})),
        ("/translate", json!({"text": "Time is short."})),
    ];
    for (path, body) in requests {
        let sent = Instant::now();
        let response = app()
            .client
            .post(app().url(path))
            .json(&body)
            .send()
            .expect("answered");
        let elapsed = sent.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(response.status(), 200);
        let queue = milliseconds(&response, "x-queue-time");
        let inference = milliseconds(&response, "x-inference-time");
        // Both are parts of what the client waited (to the header's 0.001 ms
        // rounding), and the model did work.
        assert!(queue >= 0.0, "{path} queue {queue}");
        assert!(inference > 0.0, "{path} inference {inference}");
        assert!(
            queue + inference <= elapsed + 0.002,
            "{path}: queue {queue} ms + inference {inference} ms > the {elapsed} ms the client waited"
        );
        if path == "/complete" {
            // 64 decoding steps take well over a millisecond: the unit is
            // milliseconds, not seconds.
            assert!(inference > 1.0, "{path} inference {inference}");
        }
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
