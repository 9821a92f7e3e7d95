//! Every class of bad input gets a JSON error with the right 4xx status.

use serde_json::json;

use crate::helpers::{app, assert_error, read};

#[test]
fn malformed_json_is_400() {
    for path in ["/complete", "/qa", "/translate"] {
        let (status, body) = app().post_raw(path, "{\"prompt\": ");
        assert_error(status, &body, 400, "malformed_json");
        let (status, body) = app().post_raw(path, "");
        assert_error(status, &body, 400, "malformed_json");
    }
}

#[test]
fn wrong_types_and_ranges_are_422_naming_the_field() {
    let cases = [
        (
            "/complete",
            json!({"prompt": "a", "max_new_tokens": "ten"}),
            "max_new_tokens",
        ),
        (
            "/complete",
            json!({"prompt": "a", "max_new_tokens": -1}),
            "max_new_tokens",
        ),
        (
            "/complete",
            json!({"prompt": "a", "max_new_tokens": 100000}),
            "max_new_tokens",
        ),
        ("/complete", json!({"prompt": ""}), "prompt"),
        ("/complete", json!({"prompt": "   "}), "prompt"),
        (
            "/complete",
            json!({"prompt": "a", "temperature": 9}),
            "temperature",
        ),
        ("/complete", json!({"prompt": "a", "top_p": 1.5}), "top_p"),
        (
            "/complete",
            json!({"prompt": "a", "repetition_penalty": 0}),
            "repetition_penalty",
        ),
        (
            "/complete",
            json!({"prompt": "a", "num_return_sequences": 99, "temperature": 1}),
            "num_return_sequences",
        ),
        (
            "/complete",
            json!({"prompt": "a", "stop": ["1", "2", "3", "4", "5"]}),
            "stop",
        ),
        ("/complete", json!({"prompt": "a", "stop": "\n"}), "stop"),
        ("/complete", json!({"prompt": "a", "seed": "x"}), "seed"),
        ("/complete", json!({"prompt": "a", "bogus": 1}), "bogus"),
        ("/complete", json!({"max_new_tokens": 3}), "prompt"),
        (
            "/complete",
            json!({"prompt": "word ".repeat(400)}),
            "prompt",
        ),
        (
            "/complete",
            json!({"prompt": "word ".repeat(150), "max_new_tokens": 200}),
            "max_new_tokens",
        ),
        ("/qa", json!({"question": ""}), "question"),
        (
            "/qa",
            json!({"question": "Why?", "context": "  "}),
            "context",
        ),
        ("/qa", json!({"question": "Why?", "top_k": 0}), "top_k"),
        ("/qa", json!({"question": "Why?", "top_k": 6}), "top_k"),
        ("/qa", json!({"question": 5}), "question"),
        ("/translate", json!({"text": []}), "text"),
        ("/translate", json!({"text": 5}), "text"),
        (
            "/translate",
            json!({"text": [null]}),
            "a string or a list of strings",
        ),
        ("/translate", json!({"text": vec!["a"; 40]}), "text"),
        // One sentence longer than the model's 512 positions: refused, not cut.
        ("/translate", json!({"text": "words ".repeat(700)}), "text"),
        ("/translate", json!({}), "text"),
        ("/complete", json!([1, 2]), ""),
    ];
    for (path, body, field) in cases {
        let (status, response) = app().post(path, &body);
        let message = assert_error(status, &response, 422, "validation_error");
        assert!(
            message.contains(field),
            "{path} {body}: {message:?} should name {field:?}"
        );
    }
}

#[test]
fn too_large_bodies_are_413() {
    let prompt = "x".repeat(300 * 1024);
    let (status, body) = app().post("/complete", &json!({"prompt": prompt}));
    assert_error(status, &body, 413, "payload_too_large");
}

#[test]
fn unknown_routes_are_404_and_wrong_methods_405() {
    let (status, body) = read(app().get("/nope"));
    assert_error(status, &body, 404, "not_found");
    let (status, body) = app().post("/v2/complete", &json!({}));
    assert_error(status, &body, 404, "not_found");
    for path in ["/complete", "/qa", "/translate"] {
        let (status, body) = read(app().get(path));
        assert_error(status, &body, 405, "method_not_allowed");
    }
    let response = app()
        .client
        .delete(app().url("/health"))
        .send()
        .expect("answered");
    let (status, body) = read(response);
    assert_error(status, &body, 405, "method_not_allowed");
}

#[test]
fn any_content_type_is_read_as_json() {
    let response = app()
        .client
        .post(app().url("/translate"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"text": "Hello."}"#)
        .send()
        .expect("answered");
    assert_eq!(read(response).0, 200);
}
