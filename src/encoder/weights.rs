//! A checkpoint: its config.json, and its tensors by name as transformers
//! (`model.safetensors`) or rust-bert (`rust_model.ot`) saved them. Names are the checkpoint's own:
//! model code asks for `distilbert.transformer.layer.0.attention.q_lin.weight`,
//! not for a variable of a module tree built first.

use std::path::Path;

use serde::de::DeserializeOwned;
use tch::{Device, Tensor};

use crate::generation::checkpoint::Checkpoint;

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

/// A checkpoint's tensors (read by `generation::checkpoint`: safetensors,
/// sharded or not, or rust_model.ot; every float tensor as fp32).
pub struct Weights {
    checkpoint: Checkpoint,
    device: Device,
}

impl Weights {
    /// Opens `path`; tensors are read (as fp32 on `device`) when asked for.
    pub fn read(path: &Path, device: Device) -> Result<Weights, String> {
        Ok(Weights {
            checkpoint: Checkpoint::read(path, device)?,
            device,
        })
    }

    /// The tensor `name`, or an error naming it.
    pub fn get(&self, name: &str) -> Result<Tensor, String> {
        self.checkpoint.get(name)
    }

    /// The tensor `name` if the checkpoint has it (an error only when it is
    /// there and cannot be read).
    pub fn find(&self, name: &str) -> Result<Option<Tensor>, String> {
        self.checkpoint.find(name)
    }

    pub fn device(&self) -> Device {
        self.device
    }
}
