//! Named weight tensors of a checkpoint, read without rust-bert's VarStore:
//! a `model.safetensors` (as transformers' `save_pretrained` writes it), a
//! sharded `model.safetensors.index.json` (its shards next to it),
//! rust-bert's `rust_model.ot` or, as a last resort, a `pytorch_model.bin`
//! (a state dict written by torch.save, read through libtorch's pickle
//! loader; it holds the whole file in memory while reading). Every floating tensor comes out fp32 on the
//! target device (fp16/bf16 files included); `Linear` then applies the
//! configured precision. Lookups tolerate transformers' `transformer.`
//! prefix being present or not, and buffers transformers no longer saves
//! (causal masks) are simply never asked for.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use tch::{Device, Kind, Tensor};

pub struct Checkpoint {
    tensors: HashMap<String, Tensor>,
    /// For messages.
    origin: String,
}

impl Checkpoint {
    /// Reads every tensor of `path`, picked by its name: `*.safetensors`,
    /// `*.index.json` (sharded safetensors), `*.bin` (torch.save) or anything
    /// else as a tch archive.
    pub fn read(path: &Path, device: Device) -> Result<Checkpoint, String> {
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let entries = if name.ends_with(".index.json") {
            read_sharded(path)?
        } else if name.ends_with(".safetensors") {
            read_safetensors(path)?
        } else if name.ends_with(".bin") {
            Tensor::loadz_multi(path)
                .map_err(|error| format!("cannot load {}: {error}", path.display()))?
        } else {
            Tensor::load_multi(path)
                .map_err(|error| format!("cannot load {}: {error}", path.display()))?
        };
        let tensors = entries
            .into_iter()
            .map(|(name, tensor)| {
                let tensor = if tensor.is_floating_point() {
                    tensor.to_device(device).to_kind(Kind::Float)
                } else {
                    tensor.to_device(device)
                };
                (name, tensor)
            })
            .collect();
        Ok(Checkpoint {
            tensors,
            origin: path.display().to_string(),
        })
    }

    /// The tensor `name` (written without the `transformer.` prefix or with
    /// it; both spellings are tried).
    pub fn get(&self, name: &str) -> Result<Tensor, String> {
        self.find(name)
            .ok_or_else(|| format!("{} has no tensor {name}", self.origin))
    }

    /// Like `get`, but a missing tensor is `None` (tied or optional weights).
    pub fn find(&self, name: &str) -> Option<Tensor> {
        let bare = name.strip_prefix("transformer.").unwrap_or(name);
        [
            name.to_string(),
            bare.to_string(),
            format!("transformer.{bare}"),
        ]
        .iter()
        .find_map(|candidate| self.tensors.get(candidate))
        .map(Tensor::shallow_clone)
    }
}

fn read_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>, String> {
    Tensor::read_safetensors(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))
}

/// The shards an index names (`weight_map` values), each read once.
fn read_sharded(index: &Path) -> Result<Vec<(String, Tensor)>, String> {
    let text = std::fs::read_to_string(index)
        .map_err(|error| format!("cannot read {}: {error}", index.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|error| format!("{} is not JSON: {error}", index.display()))?;
    let map = json["weight_map"]
        .as_object()
        .ok_or_else(|| format!("{} has no weight_map", index.display()))?;
    let shards: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut entries = Vec::new();
    for shard in shards {
        if shard.contains('/') || shard.contains('\\') || shard.starts_with('.') {
            return Err(format!("{} names an odd shard {shard}", index.display()));
        }
        entries.extend(read_safetensors(&dir.join(shard))?);
    }
    Ok(entries)
}
