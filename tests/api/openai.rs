//! The OpenAI-compatible routes: `/v1/completions` gives what `/complete`
//! gives, in OpenAI's shapes (answers, stream chunks, errors); `/v1/models`.
//! (The official Python client is run against the server by `make openai-check`.)

use serde_json::{json, Value};

use crate::helpers::{app, read};

/// `POST /v1/completions`; the status and JSON body.
fn openai(body: &Value) -> (u16, Value) {
    app().post("/v1/completions", body)
}

fn ok(body: &Value) -> Value {
    let (status, response) = openai(body);
    assert_eq!(status, 200, "{response}");
    response
}

/// Asserts OpenAI's error shape; returns the error object.
fn assert_openai_error(status: u16, body: &Value, expected_status: u16, code: &str) -> Value {
    assert_eq!(status, expected_status, "{body}");
    let error = &body["error"];
    assert!(error.is_object(), "OpenAI's shape: {body}");
    assert_eq!(error["code"], code, "{body}");
    assert!(!error["message"].as_str().expect("message").is_empty());
    let kind = error["type"].as_str().expect("type");
    let expected_kind = match expected_status {
        401 => "authentication_error",
        429 => "rate_limit_error",
        500.. => "server_error",
        _ => "invalid_request_error",
    };
    assert_eq!(kind, expected_kind, "{body}");
    error.clone()
}

/// The data lines of a streamed answer, in order (the last is `[DONE]`).
fn stream(body: &Value) -> (Vec<String>, reqwest::header::HeaderMap) {
    let (text, headers) = app().stream_text("/v1/completions", body);
    let data = text
        .split("\n\n")
        .flat_map(|block| block.lines())
        .filter_map(|line| line.strip_prefix("data: "))
        .map(str::to_string)
        .collect();
    (data, headers)
}

/// The streamed chunks as JSON, checking that `[DONE]` ends the stream.
fn chunks(body: &Value) -> Vec<Value> {
    let (data, headers) = stream(body);
    assert!(headers["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/event-stream"));
    let (last, chunks) = data.split_last().expect("some events");
    assert_eq!(last, "[DONE]", "{data:?}");
    chunks
        .iter()
        .map(|chunk| serde_json::from_str(chunk).expect("chunk is JSON"))
        .collect()
}

#[test]
fn greedy_completion_equals_the_native_route_in_openai_shape() {
    let prompt = "The history of machine learning";
    let native = app().complete(&json!({"prompt": prompt, "max_new_tokens": 12, "temperature": 0}));
    let answer = ok(&json!({"model": "gpt-3.5-turbo-instruct", "prompt": prompt,
                            "max_tokens": 12, "temperature": 0, "user": "someone"}));
    assert_eq!(answer["object"], "text_completion");
    assert!(answer["id"].as_str().expect("id").starts_with("cmpl-"));
    assert!(answer["created"].as_u64().expect("created") > 1_700_000_000);
    assert_eq!(
        answer["model"], native["model"],
        "the served model is reported"
    );
    let choices = answer["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 1);
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[0]["text"], native["completions"][0]["text"]);
    assert!(choices[0]["logprobs"].is_null());
    let expected_reason = match native["completions"][0]["finish_reason"].as_str() {
        Some("length") => "length",
        _ => "stop",
    };
    assert_eq!(choices[0]["finish_reason"], expected_reason);
    let usage = &answer["usage"];
    assert_eq!(usage["prompt_tokens"], native["usage"]["prompt_tokens"]);
    assert_eq!(
        usage["completion_tokens"],
        native["usage"]["completion_tokens"]
    );
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().expect("count")
                + usage["completion_tokens"].as_u64().expect("count")
        )
    );
}

#[test]
fn max_tokens_defaults_to_openais_sixteen() {
    let answer = ok(&json!({"prompt": "Counting tokens", "temperature": 0.7, "seed": 3}));
    let generated = answer["usage"]["completion_tokens"]
        .as_u64()
        .expect("count");
    let reason = answer["choices"][0]["finish_reason"]
        .as_str()
        .expect("reason");
    assert!(generated <= 16, "{answer}");
    assert!(reason == "stop" || generated == 16, "{answer}");
}

#[test]
fn a_list_of_prompts_gives_n_choices_each_in_openais_order() {
    let prompts = ["Alpha beta", "Gamma delta epsilon zeta"];
    let answer = ok(&json!({"prompt": prompts, "n": 2, "max_tokens": 6,
                            "temperature": 0.9, "seed": 5}));
    let choices = answer["choices"].as_array().expect("choices");
    let indices: Vec<u64> = choices
        .iter()
        .map(|choice| choice["index"].as_u64().expect("index"))
        .collect();
    assert_eq!(indices, [0, 1, 2, 3]);
    // Choices 0 and 1 belong to the first prompt, 2 and 3 to the second.
    let echoed = ok(&json!({"prompt": prompts, "n": 2, "max_tokens": 3,
                            "temperature": 0.9, "seed": 5, "echo": true}));
    for (index, choice) in echoed["choices"]
        .as_array()
        .expect("choices")
        .iter()
        .enumerate()
    {
        assert_eq!(choice["index"], index);
        let text = choice["text"].as_str().expect("text");
        assert!(text.starts_with(prompts[index / 2]), "{index}: {text:?}");
    }
    // Each prompt's own token count, summed: the second prompt is longer.
    let alone: u64 = prompts
        .iter()
        .map(|prompt| {
            ok(&json!({"prompt": prompt, "max_tokens": 1}))["usage"]["prompt_tokens"]
                .as_u64()
                .expect("count")
        })
        .sum();
    assert_eq!(answer["usage"]["prompt_tokens"].as_u64(), Some(alone));
    // Greedy answers per prompt are each prompt's own greedy answer.
    let greedy = ok(&json!({"prompt": prompts, "max_tokens": 8, "temperature": 0}));
    for (index, prompt) in prompts.iter().enumerate() {
        let native =
            app().complete(&json!({"prompt": prompt, "max_new_tokens": 8, "temperature": 0}));
        assert_eq!(
            greedy["choices"][index]["text"], native["completions"][0]["text"],
            "{prompt}"
        );
    }
}

#[test]
fn stop_sequences_end_choices_with_finish_reason_stop() {
    let prompt = "Stops are found";
    let free = ok(&json!({"prompt": prompt, "max_tokens": 24, "temperature": 0}));
    let text = free["choices"][0]["text"]
        .as_str()
        .expect("text")
        .to_string();
    // Two characters of the unconstrained answer that first occur past its
    // start: the stopped answer is exactly the text before them.
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let (start, stop) = chars
        .windows(2)
        .skip(1)
        .map(|pair| (pair[0].0, format!("{}{}", pair[0].1, pair[1].1)))
        .find(|(start, stop)| text.find(stop.as_str()) == Some(*start))
        .expect("a fresh pair of characters");
    for body in [
        json!({"prompt": prompt, "max_tokens": 24, "temperature": 0, "stop": stop}),
        json!({"prompt": prompt, "max_tokens": 24, "temperature": 0, "stop": ["@@@", stop]}),
    ] {
        let stopped = ok(&body);
        let choice = &stopped["choices"][0];
        assert_eq!(choice["finish_reason"], "stop", "{stopped}");
        assert_eq!(choice["text"], text[..start], "stop {stop:?} in {text:?}");
    }
}

#[test]
fn null_options_take_their_defaults() {
    let answer = ok(
        &json!({"prompt": "Nulls", "max_tokens": 2, "stream": null, "echo": null,
                            "n": null, "stop": null, "temperature": null}),
    );
    assert_eq!(answer["object"], "text_completion");
    assert_eq!(answer["choices"].as_array().expect("choices").len(), 1);
}

#[test]
fn echo_puts_the_prompt_before_the_text() {
    let body = json!({"prompt": "Echo this", "max_tokens": 5, "temperature": 0});
    let plain = ok(&body);
    let mut echoed_body = body.clone();
    echoed_body["echo"] = json!(true);
    let echoed = ok(&echoed_body);
    assert_eq!(
        echoed["choices"][0]["text"].as_str().expect("text"),
        format!(
            "Echo this{}",
            plain["choices"][0]["text"].as_str().expect("text")
        )
    );
}

#[test]
fn streamed_chunks_add_up_to_the_answer_and_end_with_done() {
    let body = json!({"prompt": ["Streaming chunks", "A second prompt"], "max_tokens": 20,
                      "temperature": 0, "stream": true,
                      "stream_options": {"include_usage": true}});
    let chunks = chunks(&body);
    let mut whole = body.clone();
    whole["stream"] = json!(false);
    whole
        .as_object_mut()
        .expect("object")
        .remove("stream_options");
    let answer = ok(&whole);
    let id = chunks[0]["id"].as_str().expect("id");
    assert!(id.starts_with("cmpl-"));
    let (usage_chunk, text_chunks) = chunks.split_last().expect("chunks");
    assert!(text_chunks.len() > 4, "one chunk per piece of text");
    for chunk in &chunks {
        assert_eq!(chunk["id"], id, "one id for the whole stream");
        assert_eq!(chunk["object"], "text_completion");
        assert_eq!(chunk["model"], answer["model"]);
    }
    for choice in answer["choices"].as_array().expect("choices") {
        let index = &choice["index"];
        let mine: Vec<&Value> = text_chunks
            .iter()
            .map(|chunk| &chunk["choices"][0])
            .filter(|streamed| &streamed["index"] == index)
            .collect();
        let text: String = mine
            .iter()
            .map(|streamed| streamed["text"].as_str().expect("text"))
            .collect();
        assert_eq!(
            text,
            choice["text"].as_str().expect("text"),
            "index {index}"
        );
        let (last, before) = mine.split_last().expect("chunks of this choice");
        assert_eq!(last["finish_reason"], choice["finish_reason"]);
        assert!(before.iter().all(|chunk| chunk["finish_reason"].is_null()));
        assert!(text_chunks.iter().all(|chunk| chunk["usage"].is_null()));
    }
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"], answer["usage"]);
}

#[test]
fn streamed_choices_of_several_prompts_keep_openais_numbering() {
    let prompts = ["First of two", "Second of two"];
    let chunks = chunks(
        &json!({"prompt": prompts, "n": 2, "max_tokens": 6, "stream": true,
                                "temperature": 0.9, "seed": 2, "echo": true}),
    );
    for index in 0..4u64 {
        let mine: Vec<&Value> = chunks
            .iter()
            .map(|chunk| &chunk["choices"][0])
            .filter(|choice| choice["index"] == index)
            .collect();
        let (first, _) = mine.split_first().expect("chunks of this choice");
        assert_eq!(first["text"], prompts[index as usize / 2], "echo first");
        let (last, before) = mine.split_last().expect("chunks of this choice");
        assert!(last["finish_reason"].is_string(), "{last}");
        assert!(before
            .iter()
            .all(|choice| choice["finish_reason"].is_null()));
    }
}

#[test]
fn streams_without_usage_end_with_the_last_choice_then_done() {
    let chunks = chunks(&json!({"prompt": "Short", "max_tokens": 3, "stream": true,
                                "seed": 1, "echo": true}));
    assert_eq!(chunks[0]["choices"][0]["text"], "Short", "echo comes first");
    let last = chunks.last().expect("chunks");
    assert!(last["choices"][0]["finish_reason"].is_string(), "{last}");
    assert!(chunks.iter().all(|chunk| chunk["usage"].is_null()));
}

#[test]
fn bad_requests_get_openais_error_shape() {
    let (status, body) = app().post_raw("/v1/completions", "{\"prompt\": ");
    assert_openai_error(status, &body, 400, "malformed_json");
    for (request, param) in [
        (json!({"prompt": "a", "max_tokens": 100000}), "max_tokens"),
        (json!({"prompt": "a", "n": 2, "temperature": 0}), "n"),
        (json!({"prompt": "a", "temperature": 9}), "temperature"),
        (json!({"prompt": "a", "logprobs": 2}), "logprobs"),
        (
            json!({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}),
            "stop",
        ),
        (json!({"prompt": [1, 2, 3]}), "prompt"),
        (json!({"prompt": ""}), "prompt"),
        (json!({"prompt": "a", "top_k": 5}), "top_k"),
        (json!({"max_tokens": 5}), ""),
        (
            json!({"prompt": "a", "stream_options": {"include_usage": true}}),
            "stream_options",
        ),
        // Within the prompt limit, but prompt plus max_tokens pass the
        // model's context: found while tokenizing, named as OpenAI names it.
        (
            json!({"prompt": "word ".repeat(150), "max_tokens": 200}),
            "max_tokens",
        ),
        (json!({"prompt": "word ".repeat(400)}), "prompt"),
    ] {
        let (status, body) = openai(&request);
        let error = assert_openai_error(status, &body, 422, "validation_error");
        let message = error["message"].as_str().expect("message");
        assert!(!message.contains("max_new_tokens"), "{message}");
        if param.is_empty() {
            assert!(error["param"].is_null(), "{body}");
        } else {
            assert_eq!(error["param"], param, "{request}: {body}");
        }
    }
    let (status, body) = read(app().get("/v1/completions"));
    assert_openai_error(status, &body, 405, "method_not_allowed");
    let (status, body) = read(app().get("/v1/chat/completions"));
    assert_openai_error(status, &body, 404, "not_found");
    // The native routes keep their own shape.
    let (status, body) = app().post("/complete", &json!({"prompt": ""}));
    assert_eq!(status, 422);
    assert_eq!(body["type"], "validation_error", "{body}");
}

#[test]
fn models_lists_the_completion_model() {
    let (status, list) = read(app().get("/v1/models"));
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["object"], "list");
    let data = list["data"].as_array().expect("data");
    assert_eq!(data.len(), 1, "{list}");
    let native = app().complete(&json!({"prompt": "x", "max_new_tokens": 1}));
    let id = data[0]["id"].as_str().expect("id");
    assert_eq!(id, native["model"]);
    assert_eq!(data[0]["object"], "model");
    let (status, card) = read(app().get(&format!("/v1/models/{id}")));
    assert_eq!(status, 200, "{card}");
    assert_eq!(card, data[0]);
    let (status, body) = read(app().get("/v1/models/not-served"));
    let error = assert_openai_error(status, &body, 404, "model_not_found");
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("\"not-served\""),
        "{body}"
    );
}
