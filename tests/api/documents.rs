//! The document store over HTTP (/documents) and questions answered from
//! stored documents through retrieval (/qa with `document`, `documents`, or
//! a long context).

use serde_json::{json, Value};

use crate::helpers::{app, assert_error, read, spawn_app, tiny_settings, TestApp};

const SVM: &str = "# Margins\n\nSupport vector machines were introduced by Corinna Cortes and \
                   Vladimir Vapnik in 1995.\n\nRandom forests were described by Leo Breiman in 2001.";

fn add(app: &TestApp, title: &str, text: &str) -> Value {
    let (status, body) = app.post("/documents", &json!({"title": title, "text": text}));
    assert_eq!(status, 201, "{body}");
    body
}

fn delete(app: &TestApp, id: &str) -> (u16, String) {
    let response = app
        .client
        .delete(app.url(&format!("/documents/{id}")))
        .send()
        .expect("answered");
    let status = response.status().as_u16();
    (status, response.text().expect("body"))
}

fn slice(text: &str, start: &Value, end: &Value) -> String {
    let (start, end) = (
        start.as_u64().expect("start") as usize,
        end.as_u64().expect("end") as usize,
    );
    text.chars().skip(start).take(end - start).collect()
}

#[test]
fn a_document_is_stored_listed_read_and_deleted() {
    let app = app();
    let stored = add(app, "SVM", SVM);
    let id = stored["id"].as_str().expect("id").to_string();
    assert_eq!(stored["title"], "SVM");
    assert_eq!(stored["chars"], SVM.chars().count());
    assert_eq!(stored["passages"], 2, "heading + paragraph, paragraph");

    let (status, list) = read(app.get("/documents"));
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .map(|d| d["id"].as_str().expect("id"))
        .collect();
    assert!(ids.contains(&"machine-learning.md"), "{list}");
    assert!(ids.contains(&id.as_str()), "{list}");

    let (status, document) = read(app.get(&format!("/documents/{id}")));
    assert_eq!(status, 200);
    assert_eq!(document["text"], SVM);
    assert_eq!(document["title"], "SVM");

    let (status, _) = delete(app, &id);
    assert_eq!(status, 204);
    let (status, body) = read(app.get(&format!("/documents/{id}")));
    assert_error(status, &body, 404, "document_not_found");
    let (status, body) = delete(app, &id);
    assert_eq!(status, 404, "{body}");
}

#[test]
fn plain_text_and_markdown_uploads_take_their_title_from_the_query_or_heading() {
    let app = app();
    let response = app
        .client
        .post(app.url("/documents?title=Forests"))
        .header("content-type", "text/plain; charset=utf-8")
        .body("Random forests average many trees.")
        .send()
        .expect("answered");
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("location header")
        .to_string();
    let (status, body) = read(response);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["title"], "Forests");
    assert_eq!(
        location,
        format!("/documents/{}", body["id"].as_str().expect("id"))
    );

    let response = app
        .client
        .post(app.url("/documents"))
        .header("content-type", "text/markdown")
        .body(SVM)
        .send()
        .expect("answered");
    let (status, body) = read(response);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["title"], "Margins");
}

#[test]
fn bad_documents_get_clear_errors() {
    let app = app();
    for (body, status, kind) in [
        (
            json!({"title": "t", "text": "  \n "}),
            422,
            "validation_error",
        ),
        (
            json!({"title": " ", "text": "Text."}),
            422,
            "validation_error",
        ),
        (json!({"title": "t"}), 422, "validation_error"),
        (json!({"title": "t", "text": 3}), 422, "validation_error"),
        (
            json!({"title": "t", "text": "x", "extra": 1}),
            422,
            "validation_error",
        ),
        (
            json!({"title": "t".repeat(201), "text": "x"}),
            422,
            "validation_error",
        ),
    ] {
        let (got, answer) = app.post("/documents", &body);
        assert_error(got, &answer, status, kind);
    }
    let (status, body) = app.post_raw("/documents", "{\"title\": ");
    assert_error(status, &body, 400, "malformed_json");
    let response = app
        .client
        .post(app.url("/documents"))
        .header("content-type", "text/plain")
        .body(vec![0xff, 0xfe, 0x41])
        .send()
        .expect("answered");
    let (status, body) = read(response);
    assert_error(status, &body, 400, "malformed_json");
    // Unknown query parameters are refused, for uploads and JSON alike.
    for content_type in ["text/markdown", "application/json"] {
        let response = app
            .client
            .post(app.url("/documents?titel=Typo"))
            .header("content-type", content_type)
            .body(r#"{"title": "t", "text": "Some text."}"#)
            .send()
            .expect("answered");
        let (status, body) = read(response);
        let message = assert_error(status, &body, 422, "validation_error");
        assert!(message.contains("unknown field `titel`"), "{message}");
    }
    let (status, body) = read(
        app.client
            .put(app.url("/documents"))
            .send()
            .expect("answered"),
    );
    assert_error(status, &body, 405, "method_not_allowed");
    let (status, body) = delete(app, "machine-learning.md");
    assert_eq!(status, 422, "{body}");
    let (status, body) = read(app.get("/documents/machine-learning.md"));
    assert_eq!(status, 200, "the reference document stays: {body}");
}

#[test]
fn size_and_count_limits_answer_413_and_422() {
    let mut settings = tiny_settings();
    settings.documents.max_document_bytes = 1000;
    settings.documents.max_documents = 2; // the reference document and one more
    let app = spawn_app(settings);
    app.wait_ready();
    let (status, body) = app.post(
        "/documents",
        &json!({"title": "big", "text": "é".repeat(501)}),
    );
    assert_error(status, &body, 413, "payload_too_large");
    add(&app, "one", "A small document.");
    let (status, body) = app.post("/documents", &json!({"title": "two", "text": "Another."}));
    let message = assert_error(status, &body, 422, "store_full");
    assert!(message.contains("limit of 2 documents"), "{message}");
    let (_, list) = read(app.get("/documents"));
    assert_eq!(
        list["documents"].as_array().expect("list").len(),
        2,
        "nothing half-stored"
    );
}

#[test]
fn a_question_about_a_stored_document_reads_its_best_passages() {
    let app = app();
    let stored = add(app, "SVM", SVM);
    let id = stored["id"].as_str().expect("id");
    let (status, body) = app.post(
        "/qa",
        &json!({"question": "Who described random forests?", "document": id, "passages": 1, "top_k": 3}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["document"], id);
    let passages = body["passages"].as_array().expect("passages");
    assert_eq!(passages.len(), 1, "{body}");
    assert_eq!(passages[0]["document"], id);
    assert_eq!(
        slice(SVM, &passages[0]["start"], &passages[0]["end"]),
        "Random forests were described by Leo Breiman in 2001."
    );
    assert!(passages[0]["score"].as_f64().expect("score") > 0.0);
    let answers = body["answers"].as_array().expect("answers");
    assert!(!answers.is_empty(), "{body}");
    for answer in answers {
        assert_eq!(answer["document"], id);
        // Offsets index the whole document, inside the passage read.
        assert_eq!(
            slice(SVM, &answer["start"], &answer["end"]),
            answer["text"].as_str().expect("text")
        );
        assert!(answer["start"].as_u64() >= passages[0]["start"].as_u64());
        assert!(answer["end"].as_u64() <= passages[0]["end"].as_u64());
    }
}

#[test]
fn the_reference_document_is_answered_from_its_retrieved_passages() {
    let document =
        std::fs::read_to_string("resources/documents/machine-learning.md").expect("document");
    let (status, body) = app().post(
        "/qa",
        &json!({"question": "Who introduced support vector machines?"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["document"], "machine-learning.md");
    let passages = body["passages"].as_array().expect("passages");
    assert_eq!(passages.len(), 3, "the default number of passages: {body}");
    let best = slice(&document, &passages[0]["start"], &passages[0]["end"]);
    assert!(
        best.contains("introduced by Corinna Cortes and Vladimir Vapnik"),
        "{best}"
    );
    let scores: Vec<f64> = passages
        .iter()
        .map(|p| p["score"].as_f64().expect("score"))
        .collect();
    assert!(
        scores.windows(2).all(|pair| pair[0] >= pair[1]),
        "{scores:?}"
    );
}

#[test]
fn a_question_over_all_documents_finds_the_one_that_holds_the_answer() {
    let app = spawn_app(tiny_settings());
    app.wait_ready();
    let stored = add(
        &app,
        "Birds",
        "Albatrosses glide over the Southern Ocean for days.",
    );
    let (status, body) = app.post(
        "/qa",
        &json!({"question": "Where do albatrosses glide?", "documents": "all", "passages": 2}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["document"], "all");
    assert_eq!(body["passages"][0]["document"], stored["id"], "{body}");
}

#[test]
fn a_long_context_is_retrieved_from_and_a_short_one_read_whole() {
    let app = app();
    let answer = "The Eiffel Tower was finished in 1889.";
    let filler = "Gardening needs patience and water. ".repeat(90);
    // Longer than [qa] read_whole_context_chars (6000): cut into passages.
    let long = format!("{filler}\n\n{answer}\n\n{filler}");
    assert!(long.chars().count() > 6000);
    let question = "When was the Eiffel Tower finished?";
    let (status, body) = app.post(
        "/qa",
        &json!({"question": question, "context": long, "passages": 1}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["document"], "request");
    let passages = body["passages"].as_array().expect("passages");
    assert_eq!(passages.len(), 1, "{body}");
    assert_eq!(
        slice(&long, &passages[0]["start"], &passages[0]["end"]),
        answer
    );
    assert!(passages[0]["score"].as_f64().expect("score") > 0.0);
    for found in body["answers"].as_array().expect("answers") {
        assert_eq!(found["document"], "request");
        assert_eq!(
            slice(&long, &found["start"], &found["end"]),
            found["text"].as_str().expect("text")
        );
    }

    let short = format!("{filler}{answer}");
    let (status, body) = app.post("/qa", &json!({"question": question, "context": short}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["passages"],
        json!([{"document": "request", "start": 0, "end": short.chars().count(), "score": null}]),
        "a context within the limit is read whole"
    );
}

#[test]
fn bad_retrieval_requests_get_clear_errors() {
    let app = app();
    for (body, status, kind) in [
        (
            json!({"question": "Who?", "document": "doc-missing"}),
            404,
            "document_not_found",
        ),
        (
            json!({"question": "Who?", "documents": "some"}),
            422,
            "validation_error",
        ),
        (
            json!({"question": "Who?", "document": "d", "context": "c"}),
            422,
            "validation_error",
        ),
        (
            json!({"question": "Who?", "documents": "all", "document": "d"}),
            422,
            "validation_error",
        ),
        (
            json!({"question": "Who?", "passages": 0}),
            422,
            "validation_error",
        ),
        (
            json!({"question": "Who?", "passages": 11}),
            422,
            "validation_error",
        ),
        (
            json!({"question": "Who?", "passages": "3"}),
            422,
            "validation_error",
        ),
    ] {
        let (got, answer) = app.post("/qa", &body);
        assert_error(got, &answer, status, kind);
    }
}

#[test]
fn a_question_without_content_words_reads_nothing() {
    let (status, body) = app().post("/qa", &json!({"question": "Who is it?"}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["passages"], json!([]));
    assert_eq!(body["answers"], json!([]));
}

#[test]
fn retrieval_and_the_store_size_are_in_the_metrics() {
    let app = spawn_app(tiny_settings());
    app.wait_ready();
    let before = app.metric("nlp_serve_passages_read_count");
    let documents = app.metric("nlp_serve_document_store{measure=\"documents\"}");
    assert_eq!(documents, 1.0, "the reference document");
    add(&app, "SVM", SVM);
    assert_eq!(
        app.metric("nlp_serve_document_store{measure=\"documents\"}"),
        2.0
    );
    assert_eq!(
        app.metric("nlp_serve_document_store{measure=\"passages\"}"),
        42.0,
        "40 reference passages and 2"
    );
    let (status, _) = app.post(
        "/qa",
        &json!({"question": "Who introduced support vector machines?", "passages": 2}),
    );
    assert_eq!(status, 200);
    assert_eq!(app.metric("nlp_serve_passages_read_count"), before + 1.0);
    assert_eq!(app.metric("nlp_serve_passages_read_sum"), 2.0);
    assert_eq!(
        app.metric("nlp_serve_retrieval_duration_seconds_count"),
        1.0
    );
}
