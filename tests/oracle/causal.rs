//! Oracle tests: causal LMs. The server loads the GPT-2, GPT-Neo and GPT-J
//! checkpoints that transformers saved (safetensors without the
//! attention-mask buffers), and GPT-2's weights re-saved sharded or as fp16,
//! and must continue every fixture prompt greedily with exactly
//! transformers' tokens, one request at a time and batched together.

use std::path::{Path, PathBuf};

use nlp_serve::generation::linear::Precision;
use nlp_serve::model_source::ModelLocation;
use nlp_serve::predictors::completion::{CompletionConfig, CompletionModel};
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

use super::fixtures;
use super::helpers::{spawn_app, tiny_settings, TestApp};

/// A server whose completion model is the checkpoint in `dir`.
fn serve(dir: &str) -> TestApp {
    serve_at(dir, Precision::Fp32)
}

fn serve_at(dir: &str, precision: Precision) -> TestApp {
    let mut settings = tiny_settings();
    settings.completion.model.source = dir.to_string();
    settings.completion.precision = precision;
    let app = spawn_app(settings);
    app.wait_ready();
    app
}

/// The greedy continuation request for one fixture case: exactly as many
/// tokens as transformers generated (the minimum keeps EOS from ending it).
fn request(case: &Value) -> Value {
    let tokens = case["ids"].as_array().expect("fixture ids").len();
    json!({
        "prompt": case["prompt"],
        "max_new_tokens": tokens,
        "min_new_tokens": tokens,
        "temperature": 0.0,
    })
}

fn cases(name: &str) -> &'static Vec<Value> {
    fixtures::model(name)["greedy"]
        .as_array()
        .expect("fixture has greedy cases")
}

/// Every fixture prompt, one after another, gives transformers' text.
fn assert_matches_oracle(app: &TestApp, name: &str) {
    for case in cases(name) {
        let (status, body) = app.post("/complete", &request(case));
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["completions"][0]["text"], case["text"],
            "prompt {:?}",
            case["prompt"]
        );
    }
}

#[test]
fn gpt2_saved_by_transformers_continues_like_transformers() {
    let app = serve(&fixtures::checkpoint("gpt2"));
    assert_matches_oracle(&app, "gpt2");
}

/// Every fixture prompt sent at once (so they are prefilled and decoded in
/// one batch, left-padded) gives transformers' text.
fn assert_batched_matches_oracle(app: &TestApp, name: &str) {
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = cases(name)
            .iter()
            .map(|case| scope.spawn(move || app.post("/complete", &request(case))))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("request thread"))
            .collect()
    });
    for ((status, body), case) in answers.iter().zip(cases(name)) {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(
            body["completions"][0]["text"], case["text"],
            "prompt {:?}",
            case["prompt"]
        );
    }
}

#[test]
fn gpt2_prompts_batched_together_continue_like_transformers() {
    let app = serve(&fixtures::checkpoint("gpt2"));
    assert_batched_matches_oracle(&app, "gpt2");
}

#[test]
fn gpt_neo_saved_by_transformers_continues_like_transformers() {
    let app = serve(&fixtures::checkpoint("gpt_neo"));
    assert_matches_oracle(&app, "gpt_neo");
}

#[test]
fn gpt_neo_prompts_batched_together_continue_like_transformers() {
    let app = serve(&fixtures::checkpoint("gpt_neo"));
    assert_batched_matches_oracle(&app, "gpt_neo");
}

#[test]
fn gptj_saved_by_transformers_continues_like_transformers() {
    let app = serve(&fixtures::checkpoint("gptj"));
    assert_matches_oracle(&app, "gptj");
}

#[test]
fn gptj_prompts_batched_together_continue_like_transformers() {
    let app = serve(&fixtures::checkpoint("gptj"));
    assert_batched_matches_oracle(&app, "gptj");
}

/// Streamed token texts of a greedy fixture continuation, joined, are
/// transformers' text, and the final event says the same.
fn assert_streams_oracle_text(app: &TestApp, name: &str) {
    let case = &cases(name)[0];
    let mut body = request(case);
    body["stream"] = json!(true);
    let (events, _) = app.stream(&body);
    let (done, tokens) = events.split_last().expect("some events");
    assert_eq!(done.name, "done", "{done:?}");
    // An event per token, except where a token ends inside a character.
    let generated = case["ids"].as_array().expect("ids").len();
    assert!(
        tokens.len() > 1 && tokens.len() <= generated,
        "{} events for {generated} tokens: {tokens:?}",
        tokens.len()
    );
    let streamed: String = tokens
        .iter()
        .map(|event| event.data["text"].as_str().expect("token text"))
        .collect();
    assert_eq!(streamed, case["text"].as_str().expect("fixture text"));
    assert_eq!(done.data["completions"][0]["text"], case["text"]);
}

#[test]
fn gpt_neo_and_gptj_stream_transformers_text() {
    assert_streams_oracle_text(&serve(&fixtures::checkpoint("gpt_neo")), "gpt_neo");
    assert_streams_oracle_text(&serve(&fixtures::checkpoint("gptj")), "gptj");
}

#[test]
fn gptj_saved_with_torch_save_continues_like_transformers() {
    // build/oracle/gptj_bin: the gptj weights as save_pretrained(safe_serialization=False)
    // writes them (pytorch_model.bin only), as EleutherAI/gpt-j-6b has on main.
    let app = serve(&fixtures::checkpoint("gptj_bin"));
    assert_matches_oracle(&app, "gptj");
}

#[test]
fn gptj_with_a_vocabulary_larger_than_its_tokenizer_never_picks_the_extra_ids() {
    // GPT-J 6B's lm_head has 50400 rows for 50257 tokens. Padded here with
    // rows whose bias would win every argmax: the continuations must stay
    // transformers' (the extra ids are not the tokenizer's, so never picked).
    let dir = copy_of("gptj", "gptj-wide-vocab");
    let extra = 50400 - 50257;
    let tensors: Vec<(String, Tensor)> = checkpoint_tensors("gptj")
        .into_iter()
        .map(|(name, tensor)| {
            let padding = match name.as_str() {
                "lm_head.weight" | "transformer.wte.weight" => {
                    Tensor::zeros([extra, tensor.size()[1]], (Kind::Float, Device::Cpu))
                }
                "lm_head.bias" => Tensor::full([extra], 1e4, (Kind::Float, Device::Cpu)),
                _ => return (name, tensor),
            };
            (name, Tensor::cat(&[tensor, padding], 0))
        })
        .collect();
    Tensor::write_safetensors(&tensors, dir.join("model.safetensors")).expect("write");
    let config_path = dir.join("config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).expect("config"))
            .expect("json");
    config["vocab_size"] = json!(50400);
    std::fs::write(&config_path, config.to_string()).expect("config");
    let app = serve(&dir.display().to_string());
    assert_matches_oracle(&app, "gptj");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gpt_neo_and_gptj_serve_and_stream_at_reduced_precisions() {
    // Reduced precision may flip the tiny random models' near ties (fixture
    // min_logit_gap), so the check is that each loads, streams, and decodes
    // exactly the tokens asked for; precision-report measures agreement.
    for name in ["gpt_neo", "gptj"] {
        for precision in Precision::REDUCED {
            let app = serve_at(&fixtures::checkpoint(name), precision);
            let case = &cases(name)[1];
            let mut body = request(case);
            body["stream"] = json!(true);
            let (events, _) = app.stream(&body);
            let (done, tokens) = events.split_last().expect("some events");
            assert_eq!(done.name, "done", "{name} {precision:?}: {done:?}");
            let streamed: String = tokens
                .iter()
                .map(|event| event.data["text"].as_str().expect("token text"))
                .collect();
            let answer = &done.data;
            assert_eq!(answer["completions"][0]["text"], json!(streamed));
            assert_eq!(answer["completions"][0]["finish_reason"], "length");
            assert_eq!(
                answer["usage"]["completion_tokens"],
                json!(case["ids"].as_array().expect("ids").len())
            );
            assert_eq!(
                answer["usage"]["prompt_tokens"],
                json!(case["prompt_ids"].as_array().expect("prompt ids").len())
            );
        }
    }
}

/// A fresh directory with the tokenizer and config of build/oracle/`name`.
fn copy_of(name: &str, label: &str) -> PathBuf {
    let source = PathBuf::from(fixtures::checkpoint(name));
    let dir = std::env::temp_dir().join(format!("nlp-serve-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    for file in ["config.json", "vocab.json", "merges.txt"] {
        std::fs::copy(source.join(file), dir.join(file)).expect("copy");
    }
    dir
}

fn checkpoint_tensors(name: &str) -> Vec<(String, Tensor)> {
    Tensor::read_safetensors(Path::new(&fixtures::checkpoint(name)).join("model.safetensors"))
        .expect("oracle safetensors")
}

/// A fresh directory with the tokenizer and config of build/oracle/gpt2.
fn copy_of_gpt2(label: &str) -> PathBuf {
    copy_of("gpt2", label)
}

fn gpt2_tensors() -> Vec<(String, Tensor)> {
    checkpoint_tensors("gpt2")
}

#[test]
fn gpt2_in_two_shards_with_an_index_continues_like_transformers() {
    let dir = copy_of_gpt2("sharded");
    let tensors = gpt2_tensors();
    let half = tensors.len() / 2;
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in [&tensors[..half], &tensors[half..]].iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", shard + 1);
        Tensor::write_safetensors(part, dir.join(&file)).expect("write shard");
        for (name, _) in part.iter() {
            weight_map.insert(name.clone(), json!(file));
        }
    }
    let index = json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).expect("index");
    let app = serve(&dir.display().to_string());
    assert_matches_oracle(&app, "gpt2");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The texts a server gives for the gpt2 fixture prompts.
fn texts(app: &TestApp) -> Vec<Value> {
    cases("gpt2")
        .iter()
        .map(|case| {
            let (status, body) = app.post("/complete", &request(case));
            assert_eq!(status, 200, "{body}");
            body["completions"][0]["text"].clone()
        })
        .collect()
}

#[test]
fn gpt2_with_fp16_tensors_loads_as_those_values_in_fp32() {
    // The oracle ran on fp32 weights and rounding them to fp16 may flip a near
    // tie, so the reference is the same fp16-rounded values stored as fp32:
    // the fp16 file must give exactly its continuations.
    let rounded: Vec<(String, Tensor)> = gpt2_tensors()
        .into_iter()
        .map(|(name, tensor)| (name, tensor.to_kind(Kind::Half)))
        .collect();
    let half_dir = copy_of_gpt2("fp16");
    Tensor::write_safetensors(&rounded, half_dir.join("model.safetensors")).expect("write");
    let widened: Vec<(String, Tensor)> = rounded
        .iter()
        .map(|(name, tensor)| (name.clone(), tensor.to_kind(Kind::Float)))
        .collect();
    let float_dir = copy_of_gpt2("fp16-as-fp32");
    Tensor::write_safetensors(&widened, float_dir.join("model.safetensors")).expect("write");
    let from_half = texts(&serve(&half_dir.display().to_string()));
    let from_float = texts(&serve(&float_dir.display().to_string()));
    assert_eq!(from_half, from_float);
    assert!(from_half
        .iter()
        .all(|text| !text.as_str().unwrap_or("").is_empty()));
    let _ = std::fs::remove_dir_all(&half_dir);
    let _ = std::fs::remove_dir_all(&float_dir);
}

/// The load error of the checkpoint `name` with `edit` applied to its config.json.
fn load_error_with_config(name: &str, label: &str, edit: impl FnOnce(&mut Value)) -> String {
    let dir = copy_of(name, label);
    std::fs::copy(
        Path::new(&fixtures::checkpoint(name)).join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .expect("copy weights");
    let config_path = dir.join("config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).expect("config"))
            .expect("json");
    edit(&mut config);
    std::fs::write(&config_path, config.to_string()).expect("config");
    let mut settings = tiny_settings();
    settings.completion.model.source = dir.display().to_string();
    let location = ModelLocation {
        model: settings.completion.model.clone(),
        hub: settings.hub.clone(),
    };
    let result = CompletionModel::load(CompletionConfig {
        location,
        device: Device::Cpu,
        precision: Precision::Fp32,
        max_prompt_tokens: 100,
        fault_injection: false,
    });
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(_) => panic!("{label}: the edited config loaded"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn an_unknown_model_type_is_a_clear_load_error() {
    let message = load_error_with_config("gpt2", "unknown-type", |config| {
        config["model_type"] = json!("mamba");
    });
    assert!(
        message.contains(
            "model_type \"mamba\" is not a supported completion model; supported: gpt2, distilgpt2, gpt_neo, gptj"
        ),
        "{message}"
    );
}

#[test]
fn inconsistent_gpt_neo_and_gptj_configs_are_clear_load_errors() {
    let message = load_error_with_config("gpt_neo", "neo-layers", |config| {
        config["attention_types"] = json!([[["global", "local"], 2]]);
    });
    assert!(
        message.contains("attention_types name 4 layers but num_layers is 2"),
        "{message}"
    );
    let message = load_error_with_config("gpt_neo", "neo-kind", |config| {
        config["attention_types"] = json!([[["global", "sparse"], 1]]);
    });
    assert!(
        message.contains("attention type \"sparse\" is neither \"global\" nor \"local\""),
        "{message}"
    );
    let message = load_error_with_config("gptj", "gptj-rotary", |config| {
        config["rotary_dim"] = json!(7);
    });
    assert!(
        message.contains("rotary_dim 7 must be even and at most the head size 16"),
        "{message}"
    );
}
