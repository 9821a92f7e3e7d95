//! Engine behaviour that needs a server of its own: a client that leaves
//! frees its compute slot, overload is shed with immediate 429s, prompts over
//! a token limit get 422 before any queue, tokenizing them never stalls
//! a running stream, and a translation joins the running batch.

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use helpers::{assert_error, long_stream, parse_sse, read, read_until, spawn_app, tiny_settings};

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
    while app.metric(series) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the disconnect was never noticed"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let generated = app.metric("nlp_serve_generated_tokens_total{task=\"completion\"}");
    assert!(
        generated < TOKENS as f64,
        "generation went on after the client left: {generated} tokens"
    );
    assert_eq!(
        app.metric("nlp_serve_active_sequences{task=\"completion\"}"),
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
    let mut long = long_stream(&app, "A long story", 240);
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

/// A translation server whose sentences all take `tokens` steps, `slots`
/// of them decoding at once.
fn fixed_length_translation_server(tokens: i64, slots: usize) -> helpers::TestApp {
    let mut settings = tiny_settings();
    settings.completion.model.enabled = false;
    settings.qa.model.enabled = false;
    settings.translation.min_output_tokens = tokens;
    settings.translation.max_output_tokens = tokens;
    settings.translation.sentence_batch_size = slots;
    let app = spawn_app(settings);
    app.wait_ready();
    app
}

#[test]
fn a_short_translation_joins_the_running_batch_and_leaves_first() {
    let app = Arc::new(fixed_length_translation_server(60, 2));
    // 32 sentences, two at a time: 16 rounds of 60 steps.
    let texts: Vec<String> = (0..32).map(|i| format!("Sentence number {i}.")).collect();
    let long = {
        let app = app.clone();
        thread::spawn(move || {
            let answer = app.post("/translate", &json!({ "text": texts }));
            (Instant::now(), answer)
        })
    };
    // Until the long request is decoding.
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.metric("nlp_serve_active_sequences{task=\"translation\"}") < 1.0 {
        assert!(Instant::now() < deadline, "the long request never started");
        thread::sleep(Duration::from_millis(2));
    }
    let (status, short) = app.post("/translate", &json!({"text": "Short."}));
    let short_done = Instant::now();
    assert_eq!(status, 200, "{short}");
    assert_eq!(short["translations"].as_array().map(Vec::len), Some(1));
    let (long_done, (status, long)) = long.join().expect("long request");
    assert_eq!(status, 200, "{long}");
    assert_eq!(long["translations"].as_array().map(Vec::len), Some(32));
    // Waiting for the whole batch, the short request would end after it.
    assert!(
        short_done < long_done,
        "the short translation waited for the long request to finish"
    );
}

#[test]
fn a_translation_past_its_deadline_leaves_the_running_batch() {
    // 32 sentences of 500 steps, four at a time: 4,000 steps of work.
    let app = fixed_length_translation_server(500, 4);
    let texts: Vec<String> = (0..32).map(|i| format!("Sentence number {i}.")).collect();
    let sent = Instant::now();
    let response = app
        .client
        .post(app.url("/translate"))
        .header("x-timeout-ms", "100")
        .json(&json!({ "text": texts }))
        .send()
        .expect("request sent");
    let (status, body) = helpers::read(response);
    let waited = sent.elapsed();
    assert_error(status, &body, 408, "deadline_exceeded");
    let series = "nlp_serve_abandoned_requests_total{reason=\"deadline\",task=\"translation\"}";
    assert_eq!(app.metric(series), 1.0);
    // Answered once the deadline passed, not once the work was done; and
    // nothing is left decoding.
    let full = Instant::now();
    let (status, short) = app.post("/translate", &json!({"text": "One sentence."}));
    assert_eq!(status, 200, "{short}");
    let one_sentence = full.elapsed();
    assert!(
        waited < one_sentence * 4,
        "the 408 took {waited:?}; one sentence of 500 steps takes {one_sentence:?}"
    );
    // (The gauge is set at the end of the turn that answered.)
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.metric("nlp_serve_active_sequences{task=\"translation\"}") != 0.0 {
        assert!(Instant::now() < deadline, "sentences are still decoding");
        thread::sleep(Duration::from_millis(5));
    }
}

/// A prompt of about `chars` characters of English, far over the tiny
/// profile's 200-token limit, different for every `tag` so that no tokenizer
/// cache makes it cheap.
fn oversized_prompt(tag: usize, chars: usize) -> String {
    let document = include_str!("../../resources/documents/machine-learning.md");
    let mut prompt = String::with_capacity(chars + document.len());
    let mut copy = 0;
    while prompt.len() < chars {
        prompt.push_str(&format!("Copy {tag}-{copy}. "));
        prompt.push_str(document);
        copy += 1;
    }
    let mut end = chars;
    while !prompt.is_char_boundary(end) {
        end -= 1;
    }
    prompt.truncate(end);
    prompt
}

#[test]
fn oversized_prompts_are_rejected_with_422_before_any_queue() {
    let mut settings = tiny_settings();
    settings.completion.model.queue_size = 1;
    settings.completion.model.max_batch_size = 1;
    settings.completion.max_return_sequences = 256;
    let app = Arc::new(spawn_app(settings));
    app.wait_ready();
    let fits = json!({"prompt": "Fits", "max_new_tokens": 4});
    // The queue stays full only while one generation runs: the rejections
    // are checked between two requests that find it full, and tried again
    // if it drained meanwhile.
    for attempt in 0.. {
        assert!(attempt < 10, "the queue never stayed full long enough");
        let mut running = app
            .client
            .post(app.url("/complete"))
            // Many sequences (256) sampled from the whole vocabulary make
            // each step slow (a request alone is admitted whatever its size),
            // so the queue stays full for many seconds.
            .json(
                &json!({"prompt": "Occupy", "max_new_tokens": 250, "min_new_tokens": 250,
                          "temperature": 0.8, "top_k": 0, "num_return_sequences": 256,
                          "stream": true}),
            )
            .send()
            .expect("answered");
        read_until(&mut running, "event: token");
        // The scheduler holds the first waiting request aside (the batch is
        // full) at its next step; then the second fills the queue. Sent one
        // after the other: sent together, the second could find the first
        // still queued and get 429 itself.
        let depth = "nlp_serve_queue_depth{task=\"completion\"}";
        let deadline = Instant::now() + Duration::from_secs(20);
        let send = || {
            let (app, fits) = (app.clone(), fits.clone());
            thread::spawn(move || app.post("/complete", &fits))
        };
        let first = send();
        thread::sleep(Duration::from_millis(300));
        while app.metric(depth) > 0.0 {
            assert!(
                Instant::now() < deadline,
                "the first request was never taken aside"
            );
            thread::sleep(Duration::from_millis(1));
        }
        let second = send();
        while app.metric(depth) < 1.0 && !second.is_finished() {
            assert!(Instant::now() < deadline, "the requests never queued");
            thread::sleep(Duration::from_millis(1));
        }
        let queued = [first, second];
        let (before, _) = app.post("/complete", &fits);
        let over_limit = app.post(
            "/complete",
            &json!({"prompt": oversized_prompt(attempt, 20_000), "max_new_tokens": 4}),
        );
        let over_context = app.post(
            "/complete",
            &json!({"prompt": "Fits alone", "max_new_tokens": 256}),
        );
        let (after, body) = app.post("/complete", &fits);
        drop(running);
        for waiting in queued {
            let (status, body) = waiting.join().expect("queued request");
            assert!([200, 429].contains(&status), "{body}");
        }
        if before != 429 || after != 429 {
            continue;
        }
        assert_error(after, &body, 429, "queue_full");
        // Over the token limits: 422 although the queue was full.
        let message = assert_error(over_limit.0, &over_limit.1, 422, "validation_error");
        assert!(
            message.contains("tokens long; the limit is 200"),
            "{message}"
        );
        let message = assert_error(over_context.0, &over_context.1, 422, "validation_error");
        assert!(message.contains("exceed the model's context"), "{message}");
        break;
    }
}

#[test]
fn a_stream_keeps_its_pace_while_oversized_prompts_are_rejected() {
    let mut settings = tiny_settings();
    // One tokenizer thread (the default) and one model thread
    // (torch_threads = 1): on a two-core machine each has a core.
    settings.runtime.tokenizer_threads = 1;
    let app = Arc::new(spawn_app(settings));
    app.wait_ready();
    let mut stream = long_stream(&app, "Keep the pace", 250);
    let mut seen = read_until(&mut stream, "event: token");
    // Attackers send prompts of ~250 KB (tens of milliseconds to tokenize
    // each) for as long as the stream runs.
    let finished = Arc::new(AtomicBool::new(false));
    let attackers: Vec<_> = (0..4)
        .map(|attacker| {
            let (app, finished) = (app.clone(), finished.clone());
            thread::spawn(move || {
                let mut rejected = 0;
                while !finished.load(Ordering::SeqCst) {
                    let prompt = oversized_prompt(attacker * 1000 + rejected, 250_000);
                    let (status, body) =
                        app.post("/complete", &json!({"prompt": prompt, "max_new_tokens": 4}));
                    assert_error(status, &body, 422, "validation_error");
                    rejected += 1;
                }
                rejected
            })
        })
        .collect();
    let mut arrivals = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = stream.read(&mut buffer).expect("stream readable");
        if read == 0 {
            break;
        }
        arrivals.push(Instant::now());
        seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
    }
    finished.store(true, Ordering::SeqCst);
    let rejected: usize = attackers
        .into_iter()
        .map(|attacker| attacker.join().expect("attacker"))
        .sum();
    assert!(rejected >= 4, "only {rejected} oversized prompts were sent");
    let events = parse_sse(&seen);
    let done = events.last().expect("events");
    assert_eq!(done.name, "done", "{seen}");
    assert_eq!(done.data["usage"]["completion_tokens"], 250);

    let mut gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    let median = gaps[gaps.len() / 2];
    let longest = gaps[gaps.len() - 1];
    // Tokenizing on the model thread stalled the stream by the whole
    // tokenizing time of the waiting prompts (over 100 ms); a few steps'
    // time, with room for a loaded machine, is the bound.
    let bound = Duration::from_millis(50).max(median * 25);
    assert!(
        longest < bound,
        "the stream stalled for {longest:?} (median gap {median:?}, {rejected} prompts rejected, longest gaps {:?})",
        &gaps[gaps.len().saturating_sub(8)..]
    );
}
