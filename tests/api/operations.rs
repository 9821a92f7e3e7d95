//! Swagger UI, the OpenAPI document, metrics, health and request ids.

use serde_json::{json, Value};

use crate::helpers::{app, read};

#[test]
fn swagger_ui_is_served() {
    let response = app().get("/docs/");
    assert_eq!(response.status(), 200);
    let html = response.text().expect("html");
    assert!(html.to_lowercase().contains("swagger"), "{html}");
}

#[test]
fn served_openapi_document_matches_the_committed_one() {
    let served: Value = app()
        .get("/api-docs/openapi.json")
        .json()
        .expect("JSON document");
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string("api/openapi.json").expect("api/openapi.json exists"),
    )
    .expect("committed document is JSON");
    assert!(
        served == committed,
        "api/openapi.json is stale: run `make openapi` and commit it"
    );
    for path in [
        "/complete",
        "/qa",
        "/translate",
        "/health",
        "/ready",
        "/metrics",
    ] {
        assert!(served["paths"][path].is_object(), "{path} documented");
    }
    for schema in ["CompleteRequest", "QaRequest", "TranslateRequest"] {
        assert!(
            served["components"]["schemas"][schema]["examples"].is_array(),
            "{schema} has an example"
        );
    }
}

#[test]
fn metrics_are_exposed_in_prometheus_format() {
    let (status, _) = app().post(
        "/complete",
        &json!({"prompt": "Hi", "max_new_tokens": 2, "temperature": 0}),
    );
    assert_eq!(status, 200);
    let response = app().get("/metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().expect("text");
    for expected in [
        "nlp_serve_http_requests_total{method=\"POST\",route=\"/complete\",status=\"200\"}",
        "nlp_serve_http_request_duration_seconds_bucket{route=\"/complete\"",
        "nlp_serve_request_duration_seconds_bucket{task=\"completion\"",
        "nlp_serve_queue_duration_seconds_count{task=\"completion\"}",
        "nlp_serve_inference_duration_seconds_sum{task=\"completion\"}",
        "nlp_serve_batch_size_bucket{task=\"completion\"",
        "nlp_serve_queue_depth{task=\"qa\"}",
        "nlp_serve_active_sequences{task=\"completion\"}",
        "nlp_serve_abandoned_requests_total{reason=\"disconnected\",task=\"completion\"}",
        "nlp_serve_generated_tokens_total{task=\"completion\"}",
        "nlp_serve_model_load_duration_seconds{task=\"translation\"}",
        "nlp_serve_model_ready{task=\"completion\"} 1",
        "# TYPE nlp_serve_http_requests_total counter",
        "# TYPE nlp_serve_request_duration_seconds histogram",
    ] {
        assert!(text.contains(expected), "missing {expected} in:\n{text}");
    }
}

#[test]
fn unknown_paths_share_one_metrics_label() {
    read(app().get("/no/such/path/12345"));
    let text = app().get("/metrics").text().expect("text");
    assert!(text.contains("route=\"unmatched\""));
    // The path, not its digits: a metric's value may contain those.
    assert!(!text.contains("no/such/path"));
}

#[test]
fn health_is_ok_and_every_response_has_a_request_id() {
    let response = app().get("/health");
    let id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(id.len() >= 16, "{id}");
    let (status, body) = read(response);
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    let other = app().get("/nope");
    assert_ne!(other.headers()["x-request-id"].to_str().expect("ascii"), id);
}

#[test]
fn ready_lists_every_model_as_ready() {
    let (status, body) = read(app().get("/ready"));
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ready");
    for task in ["completion", "qa", "translation"] {
        assert_eq!(body["models"][task], "ready", "{body}");
    }
}

#[test]
fn the_playground_page_and_its_assets_are_served() {
    for (path, content_type, marker) in [
        ("/", "text/html", "Smart Compose"),
        ("/static/app.js", "application/javascript", "readEvents"),
        ("/static/app.css", "text/css", ".ghost"),
    ] {
        let response = app().get(path);
        assert_eq!(response.status(), 200, "{path}");
        let served_type = response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .to_string();
        assert!(
            served_type.starts_with(content_type),
            "{path}: {served_type}"
        );
        assert!(response.text().expect("text").contains(marker), "{path}");
    }
}

#[test]
fn the_reference_document_is_served_for_the_page() {
    let response = app().get("/qa/document");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().expect("JSON");
    assert_eq!(body["name"], "machine-learning.md");
    assert!(body["text"].as_str().expect("text").len() > 10_000);
}
