//! Engine behaviour that needs a server of its own: a client that leaves
//! frees its compute slot, and overload is shed with immediate 429s.

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use helpers::{assert_error, read, read_until, spawn_app, tiny_settings, TestApp};

/// The value of one metric series, 0 when absent.
fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app.get("/metrics").text().expect("metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_client_that_disconnects_stops_its_generation() {
    let mut settings = tiny_settings();
    // One compute slot: the test shows it is handed back.
    settings.completion.model.max_batch_size = 1;
    let app = spawn_app(settings);
    app.wait_ready();
    const TOKENS: u64 = 240;
    let body = json!({"prompt": "Leave early", "max_new_tokens": TOKENS, "min_new_tokens": TOKENS,
                      "temperature": 0.8, "stream": true})
    .to_string();
    let address = app.address.trim_start_matches("http://").to_string();
    let mut socket = TcpStream::connect(&address).expect("connects");
    write!(
        socket,
        "POST /complete HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("request sent");
    read_until(&mut socket, "event: token");
    drop(socket);

    let series = "nlp_serve_abandoned_requests_total{reason=\"disconnected\",task=\"completion\"}";
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&app, series) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the disconnect was never noticed"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let generated = metric(
        &app,
        "nlp_serve_generated_tokens_total{task=\"completion\"}",
    );
    assert!(
        generated < TOKENS as f64,
        "generation went on after the client left: {generated} tokens"
    );
    assert_eq!(
        metric(&app, "nlp_serve_active_sequences{task=\"completion\"}"),
        0.0
    );
    // The slot is free: the next request is served.
    let (status, answer) = app.post(
        "/complete",
        &json!({"prompt": "Next", "max_new_tokens": 4, "temperature": 0}),
    );
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn overload_is_shed_at_once_with_429() {
    let mut settings = tiny_settings();
    settings.completion.model.queue_size = 2;
    settings.completion.model.max_batch_size = 2;
    let app = Arc::new(spawn_app(settings));
    app.wait_ready();
    let handles: Vec<_> = (0..32)
        .map(|i| {
            let app = app.clone();
            thread::spawn(move || {
                let started = Instant::now();
                let response = app
                    .client
                    .post(app.url("/complete"))
                    .json(
                        &json!({"prompt": format!("Overload {i}"), "max_new_tokens": 200,
                                  "min_new_tokens": 200, "temperature": 0.8}),
                    )
                    .send()
                    .expect("answered");
                let retry_after = response.headers().contains_key("retry-after");
                let (status, body) = read(response);
                (status, body, retry_after, started.elapsed())
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    let served: Vec<Duration> = results.iter().filter(|r| r.0 == 200).map(|r| r.3).collect();
    let shed: Vec<Duration> = results.iter().filter(|r| r.0 == 429).map(|r| r.3).collect();
    for (status, body, retry_after, _) in &results {
        match status {
            200 => {}
            429 => {
                assert_error(*status, body, 429, "queue_full");
                assert!(retry_after, "429 carries Retry-After");
            }
            other => panic!("status {other}: {body}"),
        }
    }
    assert!(
        !served.is_empty() && !shed.is_empty(),
        "{} served, {} shed",
        served.len(),
        shed.len()
    );
    // Shed requests do not wait for the model: each is answered before the
    // first generation of 200 tokens could have finished.
    let slowest_shed = shed.iter().max().expect("some shed");
    let fastest_served = served.iter().min().expect("some served");
    assert!(
        slowest_shed < fastest_served,
        "a 429 took {slowest_shed:?}, longer than a whole generation ({fastest_served:?})"
    );
}

#[test]
fn a_short_completion_does_not_wait_behind_a_long_one() {
    let app = std::sync::Arc::new({
        let app = spawn_app(tiny_settings());
        app.wait_ready();
        app
    });
    let mut long = app
        .client
        .post(app.url("/complete"))
        .json(
            &json!({"prompt": "A long story", "max_new_tokens": 240, "min_new_tokens": 240,
                      "temperature": 0.8, "stream": true}),
        )
        .send()
        .expect("answered");
    // Wait until the long generation is running.
    read_until(&mut long, "event: token");
    let reader = thread::spawn(move || {
        let mut rest = String::new();
        long.read_to_string(&mut rest).expect("stream completes");
        (Instant::now(), rest)
    });
    let (status, short) = app.post(
        "/complete",
        &json!({"prompt": "Quick", "max_new_tokens": 4, "temperature": 0}),
    );
    let short_done = Instant::now();
    assert_eq!(status, 200, "{short}");
    let (long_done, rest) = reader.join().expect("reader");
    assert!(rest.contains("event: done"), "{rest}");
    assert!(
        short_done < long_done,
        "the short request finished after the long generation it should have overtaken"
    );
}
