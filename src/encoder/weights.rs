//! A checkpoint: its config.json, and its tensors by name as transformers
//! (`model.safetensors`) or rust-bert (`rust_model.ot`) saved them. Names are the checkpoint's own:
//! model code asks for `distilbert.transformer.layer.0.attention.q_lin.weight`,
//! not for a variable of a module tree built first.

use std::collections::HashMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use tch::{Device, Kind, Tensor};

/// config.json into an architecture's config type, whose serde defaults
/// are transformers' (keys transformers leaves out take them; keys it adds,
/// or rust-bert expects, are ignored).
pub fn read_config<C: DeserializeOwned>(path: &Path) -> Result<C, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    serde_json::from_str(&text).map_err(|error| {
        format!(
            "{} is not a config this model reads: {error}",
            path.display()
        )
    })
}

pub struct Weights {
    tensors: HashMap<String, Tensor>,
    device: Device,
}

impl Weights {
    /// Reads every tensor of `path` (by extension: `.safetensors`, else a
    /// libtorch archive) as fp32 on `device`.
    pub fn read(path: &Path, device: Device) -> Result<Weights, String> {
        let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
        let named = if is_safetensors {
            Tensor::read_safetensors(path)
        } else {
            Tensor::load_multi(path)
        }
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let tensors = named
            .into_iter()
            .map(|(name, tensor)| (name, tensor.to_kind(Kind::Float).to_device(device)))
            .collect();
        Ok(Weights { tensors, device })
    }

    /// The tensor `name`, or an error naming it.
    pub fn get(&self, name: &str) -> Result<Tensor, String> {
        self.tensors
            .get(name)
            .map(Tensor::shallow_clone)
            .ok_or_else(|| format!("the weights have no tensor {name}"))
    }

    pub fn device(&self) -> Device {
        self.device
    }
}
