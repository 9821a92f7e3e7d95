//! Access control, each on a server of its own: API keys, per-client rate
//! limits, CORS. (Recovery from panics is in `tests/faults`.)

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use helpers::{assert_error, read, spawn_app, tiny_settings, TestApp};

fn started(configure: impl FnOnce(&mut nlp_serve::configuration::Settings)) -> TestApp {
    let mut settings = tiny_settings();
    configure(&mut settings);
    let app = spawn_app(settings);
    app.wait_ready();
    app
}

fn post_with(app: &TestApp, path: &str, key: Option<&str>) -> reqwest::blocking::Response {
    let mut request = app
        .client
        .post(app.url(path))
        .json(&json!({"text": "Hello."}));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().expect("answered")
}

#[test]
fn api_keys_guard_the_models_but_not_the_probes() {
    let app = started(|s| s.auth.api_keys = vec!["key-one".into(), "key-two".into()]);
    let response = post_with(&app, "/translate", None);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let (status, body) = read(response);
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = read(post_with(&app, "/translate", Some("key-three")));
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = read(post_with(&app, "/translate", Some("key-two")));
    assert_eq!(status, 200, "{body}");
    // The OpenAI-compatible routes take the same keys, with OpenAI's error shape.
    let openai = |key: Option<&str>| {
        let mut request = app
            .client
            .post(app.url("/v1/completions"))
            .json(&json!({"model": "any", "prompt": "Hello", "max_tokens": 2}));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        read(request.send().expect("answered"))
    };
    let (status, body) = openai(None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    let (status, body) = openai(Some("key-one"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "text_completion", "{body}");
    for open in [
        "/health",
        "/ready",
        "/metrics",
        "/",
        "/api-docs/openapi.json",
    ] {
        assert_eq!(app.get(open).status(), 200, "{open}");
    }
    // Denied requests are counted like any other.
    let metrics = app.get("/metrics").text().expect("metrics");
    assert!(
        metrics.contains("route=\"/translate\",status=\"401\""),
        "{metrics}"
    );
}

#[test]
fn operations_endpoints_can_be_protected_too() {
    let mut settings = tiny_settings();
    settings.auth.api_keys = vec!["secret".into()];
    settings.auth.protect_operations = true;
    let app = spawn_app(settings);
    let ready = || {
        app.client
            .get(app.url("/ready"))
            .bearer_auth("secret")
            .send()
            .map(|response| response.status() == 200)
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "never ready");
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(app.get("/ready").status(), 401);
    assert_eq!(app.get("/metrics").status(), 401);
    let response = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("secret")
        .send()
        .expect("answered");
    assert_eq!(response.status(), 200);
}

#[test]
fn each_client_gets_its_own_rate_limit() {
    let app = started(|s| {
        s.auth.api_keys = vec!["a".into(), "b".into()];
        s.rate_limit.requests_per_second = 1;
        s.rate_limit.burst = 2;
    });
    let statuses: Vec<u16> = (0..4)
        .map(|_| post_with(&app, "/translate", Some("a")).status().as_u16())
        .collect();
    assert_eq!(&statuses[..2], &[200, 200], "{statuses:?}");
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    let limited = post_with(&app, "/translate", Some("a"));
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry_after));
    let (status, body) = read(limited);
    assert_error(status, &body, 429, "rate_limited");
    // Key "b" is another client.
    assert_eq!(post_with(&app, "/translate", Some("b")).status(), 200);
}

/// Status of a /translate request that says it was forwarded for `client`.
fn forwarded_for(app: &TestApp, client: &str) -> u16 {
    app.client
        .post(app.url("/translate"))
        .header("x-forwarded-for", client)
        .json(&json!({"text": "Hello."}))
        .send()
        .expect("answered")
        .status()
        .as_u16()
}

#[test]
fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    // The test client connects from 127.0.0.1: the "proxy".
    let app = started(|s| {
        s.rate_limit.requests_per_second = 1;
        s.rate_limit.burst = 1;
        s.rate_limit.trusted_proxies = vec!["127.0.0.0/8".into()];
    });
    assert_eq!(forwarded_for(&app, "203.0.113.1"), 200);
    assert_eq!(forwarded_for(&app, "203.0.113.2"), 200, "another client");
    assert_eq!(forwarded_for(&app, "203.0.113.1"), 429, "the first, again");
    // A client cannot escape its limit by prepending addresses.
    assert_eq!(forwarded_for(&app, "198.51.100.7, 203.0.113.1"), 429);
}

#[test]
fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let app = started(|s| {
        s.rate_limit.requests_per_second = 1;
        s.rate_limit.burst = 1;
    });
    assert_eq!(forwarded_for(&app, "203.0.113.1"), 200);
    // Spoofing another address does not buy a new budget.
    assert_eq!(forwarded_for(&app, "203.0.113.2"), 429);
}

#[test]
fn cors_answers_only_configured_origins() {
    let app = started(|s| s.cors.allowed_origins = vec!["https://app.example".into()]);
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/complete"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, authorization",
        )
        .send()
        .expect("answered");
    assert_eq!(preflight.status(), 200);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let other = app
        .client
        .post(app.url("/translate"))
        .header("origin", "https://evil.example")
        .json(&json!({"text": "Hi."}))
        .send()
        .expect("answered");
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    // Off by default: no CORS headers at all.
    let plain = started(|_| {});
    let response = plain
        .client
        .post(plain.url("/translate"))
        .header("origin", "https://app.example")
        .json(&json!({"text": "Hi."}))
        .send()
        .expect("answered");
    assert_eq!(response.status(), 200);
    assert!(!response
        .headers()
        .contains_key("access-control-allow-origin"));
}
