//! The decoder-only architectures with forward passes here, picked by
//! config.json's `model_type`: one type over them so the completion model
//! (and through it the scheduler) holds whichever was loaded.

use std::path::Path;

use tch::{Device, Tensor};

use super::gpt2::Gpt2Decoder;
use super::gpt_neo::GptNeoDecoder;
use super::gptj::GptjDecoder;
use super::kv_cache::{KvCache, Prefilled};
use super::layers::DecoderShape;
use super::linear::Precision;

/// The `model_type` values with forward passes here.
pub const SUPPORTED_MODEL_TYPES: [&str; 4] = ["gpt2", "distilgpt2", "gpt_neo", "gptj"];

pub enum Decoder {
    Gpt2(Gpt2Decoder),
    GptNeo(GptNeoDecoder),
    Gptj(GptjDecoder),
}

impl Decoder {
    /// Loads the architecture `model_type` names (none is taken as GPT-2, as
    /// rust-bert's converted configs sometimes leave it out); an unknown one
    /// is an error listing the supported types.
    pub fn load(
        model_type: Option<&str>,
        config_path: &Path,
        weights_path: &Path,
        precision: Precision,
        device: Device,
    ) -> Result<Decoder, String> {
        Ok(match model_type {
            None | Some("gpt2") | Some("distilgpt2") => Decoder::Gpt2(Gpt2Decoder::load(
                config_path,
                weights_path,
                precision,
                device,
            )?),
            Some("gpt_neo") => Decoder::GptNeo(GptNeoDecoder::load(
                config_path,
                weights_path,
                precision,
                device,
            )?),
            Some("gptj") => Decoder::Gptj(GptjDecoder::load(
                config_path,
                weights_path,
                precision,
                device,
            )?),
            Some(other) => return Err(unsupported(&format!("{other:?}"))),
        })
    }

    /// Reads `model_type` from config.json and loads that architecture.
    pub fn load_from_config(
        config_path: &Path,
        weights_path: &Path,
        precision: Precision,
        device: Device,
    ) -> Result<Decoder, String> {
        let text = std::fs::read_to_string(config_path)
            .map_err(|error| format!("cannot read {}: {error}", config_path.display()))?;
        let config: serde_json::Value = serde_json::from_str(&text)
            .map_err(|error| format!("{} is not JSON: {error}", config_path.display()))?;
        let model_type = model_type(&config)?;
        Self::load(model_type, config_path, weights_path, precision, device)
    }

    pub fn shape(&self) -> DecoderShape {
        match self {
            Decoder::Gpt2(decoder) => decoder.shape(),
            Decoder::GptNeo(decoder) => decoder.shape(),
            Decoder::Gptj(decoder) => decoder.shape(),
        }
    }

    pub fn new_cache(&self) -> KvCache {
        match self {
            Decoder::Gpt2(decoder) => decoder.new_cache(),
            Decoder::GptNeo(decoder) => decoder.new_cache(),
            Decoder::Gptj(decoder) => decoder.new_cache(),
        }
    }

    pub fn prefill(&self, prompts: &[&[i64]]) -> Prefilled {
        match self {
            Decoder::Gpt2(decoder) => decoder.prefill(prompts),
            Decoder::GptNeo(decoder) => decoder.prefill(prompts),
            Decoder::Gptj(decoder) => decoder.prefill(prompts),
        }
    }

    pub fn step(&self, tokens: &[i64], positions: &[i64], cache: &mut KvCache) -> Tensor {
        match self {
            Decoder::Gpt2(decoder) => decoder.step(tokens, positions, cache),
            Decoder::GptNeo(decoder) => decoder.step(tokens, positions, cache),
            Decoder::Gptj(decoder) => decoder.step(tokens, positions, cache),
        }
    }
}

/// config.json's `model_type`, checked to be one with forward passes here
/// (`None` when it is missing or null).
pub fn model_type(config: &serde_json::Value) -> Result<Option<&str>, String> {
    match config.get("model_type") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(name)) if SUPPORTED_MODEL_TYPES.contains(&name.as_str()) => {
            Ok(Some(name))
        }
        Some(other) => Err(unsupported(&other.to_string())),
    }
}

fn unsupported(shown: &str) -> String {
    format!(
        "model_type {shown} is not a supported completion model; supported: {}",
        SUPPORTED_MODEL_TYPES.join(", ")
    )
}
