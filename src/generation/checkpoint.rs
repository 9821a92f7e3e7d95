//! Named weight tensors of a checkpoint, read without rust-bert's VarStore:
//! a `model.safetensors` (as transformers' `save_pretrained` writes it), a
//! sharded `model.safetensors.index.json` (its shards next to it),
//! rust-bert's `rust_model.ot` or, as a last resort, a `pytorch_model.bin`
//! (a state dict written by torch.save, read through libtorch's pickle
//! loader, which holds the whole file in memory while reading).
//!
//! Safetensors files are read lazily: opening one reads only its header,
//! and each tensor is read from the file (a positioned read) when a model
//! asks for it. A model that builds each layer from its tensors at once
//! (packing fp16/int8 weights and dropping the fp32 ones) so needs its final
//! size plus the layer being built (a few times its largest matrix: the
//! fp32 tensors, a fused or transposed copy, the quantised and packed ones)
//! to load. Ask for each tensor once: a second request reads it again (tied
//! weights share the tensor read first).
//!
//! Every floating tensor comes out fp32 on the target device (fp16/bf16
//! files included); `Linear` then applies the configured precision. Lookups
//! tolerate transformers' `transformer.` prefix being present or not, and
//! buffers transformers no longer saves (causal masks) are never asked for.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use safetensors::tensor::Metadata;
use tch::{Device, Kind, Tensor};

/// Larger safetensors headers are refused (as the safetensors crate does).
const MAX_HEADER_BYTES: u64 = 100_000_000;

pub struct Checkpoint {
    tensors: HashMap<String, Entry>,
    device: Device,
    /// For messages.
    origin: String,
}

/// Where a tensor is: already in memory (archives libtorch reads whole), or
/// at a place in a safetensors file.
enum Entry {
    Loaded(Tensor),
    Stored(Stored),
}

struct Stored {
    file: Arc<SafetensorsFile>,
    /// From the start of the file.
    offset: u64,
    bytes: usize,
    kind: Kind,
    shape: Vec<i64>,
}

struct SafetensorsFile {
    file: File,
    path: String,
}

impl Checkpoint {
    /// Opens `path`, picked by its name: `*.safetensors` and `*.index.json`
    /// (sharded safetensors) are indexed and read tensor by tensor on
    /// request; `*.bin` (torch.save) and anything else (a tch archive) are
    /// read whole.
    pub fn read(path: &Path, device: Device) -> Result<Checkpoint, String> {
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let loaded = |entries: Vec<(String, Tensor)>| {
            entries
                .into_iter()
                .map(|(name, tensor)| (name, Entry::Loaded(tensor)))
                .collect()
        };
        let tensors = if name.ends_with(".index.json") {
            index_sharded(path)?
        } else if name.ends_with(".safetensors") {
            index_safetensors(path)?
        } else if name.ends_with(".bin") {
            loaded(
                Tensor::loadz_multi(path)
                    .map_err(|error| format!("cannot load {}: {error}", path.display()))?,
            )
        } else {
            loaded(
                Tensor::load_multi(path)
                    .map_err(|error| format!("cannot load {}: {error}", path.display()))?,
            )
        };
        Ok(Checkpoint {
            tensors,
            device,
            origin: path.display().to_string(),
        })
    }

    /// The tensor `name` (written without the `transformer.` prefix or with
    /// it; both spellings are tried).
    pub fn get(&self, name: &str) -> Result<Tensor, String> {
        self.find(name)?
            .ok_or_else(|| format!("{} has no tensor {name}", self.origin))
    }

    /// Like `get`, but a missing tensor is `None` (tied or optional
    /// weights); a tensor that is there but cannot be read is an error.
    pub fn find(&self, name: &str) -> Result<Option<Tensor>, String> {
        let bare = name.strip_prefix("transformer.").unwrap_or(name);
        let entry = [
            name.to_string(),
            bare.to_string(),
            format!("transformer.{bare}"),
        ]
        .iter()
        .find_map(|candidate| self.tensors.get(candidate));
        let tensor = match entry {
            None => return Ok(None),
            Some(Entry::Loaded(tensor)) => tensor.shallow_clone(),
            Some(Entry::Stored(stored)) => stored.read()?,
        };
        Ok(Some(if tensor.is_floating_point() {
            tensor.to_device(self.device).to_kind(Kind::Float)
        } else {
            tensor.to_device(self.device)
        }))
    }
}

impl Stored {
    /// The tensor, read from the file straight into its own memory (no
    /// second buffer: a 150 MB embedding table costs 150 MB to read).
    fn read(&self) -> Result<Tensor, String> {
        let failed =
            |error: &dyn std::fmt::Display| format!("cannot read {}: {error}", self.file.path);
        // Zeroed, so the slice below covers initialised bytes.
        let tensor = Tensor::f_zeros(self.shape.as_slice(), (self.kind, Device::Cpu))
            .map_err(|error| failed(&error))?;
        if self.bytes == 0 {
            return Ok(tensor);
        }
        if tensor.numel() * self.kind.elt_size_in_bytes() != self.bytes {
            return Err(failed(&"a tensor's size does not match its bytes"));
        }
        // SAFETY: `tensor` is a new, zeroed, contiguous CPU tensor of exactly
        // `self.bytes` bytes (checked just above), owned here and not yet
        // shared, so nothing else reads or writes its memory while the slice
        // lives. (Any bytes are valid values of its numeric kinds.)
        let memory =
            unsafe { std::slice::from_raw_parts_mut(tensor.data_ptr().cast::<u8>(), self.bytes) };
        self.file
            .file
            .read_exact_at(memory, self.offset)
            .map_err(|error| failed(&error))?;
        Ok(tensor)
    }
}

/// The tensors of a safetensors file, from its header: names, kinds,
/// shapes and places, each checked against the file's size (so a truncated
/// file fails here, at start, not half-way through building a model).
fn index_safetensors(path: &Path) -> Result<HashMap<String, Entry>, String> {
    let failed = |error: &dyn std::fmt::Display| format!("cannot read {}: {error}", path.display());
    let file = File::open(path).map_err(|error| failed(&error))?;
    let file_len = file.metadata().map_err(|error| failed(&error))?.len();
    let mut prefix = [0u8; 8];
    file.read_exact_at(&mut prefix, 0)
        .map_err(|error| failed(&error))?;
    let header_len = u64::from_le_bytes(prefix);
    if header_len > MAX_HEADER_BYTES || 8 + header_len > file_len {
        return Err(failed(&format!(
            "a header of {header_len} bytes does not fit a safetensors file of {file_len} bytes"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, 8)
        .map_err(|error| failed(&error))?;
    // The crate's own reader wants the whole file in one buffer; its header
    // type is read here and checked below, tensor by tensor.
    let metadata: Metadata = serde_json::from_slice(&header)
        .map_err(|error| failed(&format!("its header is not safetensors JSON: {error}")))?;
    let data_start = 8 + header_len;
    let shared = Arc::new(SafetensorsFile {
        file,
        path: path.display().to_string(),
    });
    let mut entries = HashMap::new();
    for (name, info) in metadata.tensors() {
        let (begin, end) = info.data_offsets;
        let kind = Kind::try_from(info.dtype).map_err(|error| failed(&error))?;
        let elements = info
            .shape
            .iter()
            .try_fold(1usize, |product, &size| product.checked_mul(size));
        let expected = elements.and_then(|count| count.checked_mul(kind.elt_size_in_bytes()));
        if end < begin || expected != Some(end - begin) {
            return Err(failed(&format!(
                "tensor {name} has offsets {begin}..{end} that do not fit its shape {:?}",
                info.shape
            )));
        }
        let place = |offset: usize| data_start.checked_add(offset as u64);
        let (Some(offset), Some(stop)) = (place(begin), place(end)) else {
            return Err(failed(&format!("tensor {name} has offsets past any file")));
        };
        if stop > file_len {
            return Err(failed(&format!(
                "the file is truncated inside tensor {name}"
            )));
        }
        let stored = Stored {
            file: shared.clone(),
            offset,
            bytes: end - begin,
            kind,
            shape: info.shape.iter().map(|&size| size as i64).collect(),
        };
        entries.insert(name, Entry::Stored(stored));
    }
    Ok(entries)
}

/// The shards an index names (`weight_map` values), each indexed once.
fn index_sharded(index: &Path) -> Result<HashMap<String, Entry>, String> {
    let text = std::fs::read_to_string(index)
        .map_err(|error| format!("cannot read {}: {error}", index.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|error| format!("{} is not JSON: {error}", index.display()))?;
    let map = json["weight_map"]
        .as_object()
        .ok_or_else(|| format!("{} has no weight_map", index.display()))?;
    let shards: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut entries = HashMap::new();
    for shard in shards {
        if shard.contains('/') || shard.contains('\\') || shard.starts_with('.') {
            return Err(format!("{} names an odd shard {shard}", index.display()));
        }
        entries.extend(index_safetensors(&dir.join(shard))?);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("nlp-serve-checkpoint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join(name)
    }

    #[test]
    fn safetensors_are_read_tensor_by_tensor_with_their_values() {
        let path = temp_file("mixed.safetensors");
        let float = Tensor::from_slice(&[0.5f32, -1.25, 3.0, 7.5, 0.0, -2.0]).view([2, 3]);
        let half = Tensor::from_slice(&[1.5f32, -0.25]).to_kind(Kind::Half);
        let brain = Tensor::from_slice(&[2.0f32, 4.0, -8.0]).to_kind(Kind::BFloat16);
        let ids = Tensor::from_slice(&[7i64, 11, 13]);
        Tensor::write_safetensors(
            &[
                ("a.weight", &float),
                ("b", &half),
                ("c", &brain),
                ("ids", &ids),
            ],
            &path,
        )
        .expect("written");
        let checkpoint = Checkpoint::read(&path, Device::Cpu).expect("read");
        let a = checkpoint.get("a.weight").expect("a");
        assert_eq!(a.size(), [2, 3]);
        assert_eq!(a.kind(), Kind::Float);
        assert!(a.equal(&float));
        let b = checkpoint.get("b").expect("b");
        assert_eq!(b.kind(), Kind::Float, "fp16 comes out fp32");
        assert_eq!(Vec::<f32>::try_from(&b).expect("values"), [1.5, -0.25]);
        let c = checkpoint.get("transformer.c").expect("prefixed name");
        assert_eq!(Vec::<f32>::try_from(&c).expect("values"), [2.0, 4.0, -8.0]);
        let ids = checkpoint.get("ids").expect("ids");
        assert_eq!(ids.kind(), Kind::Int64, "integer tensors keep their kind");
        assert_eq!(Vec::<i64>::try_from(&ids).expect("values"), [7, 11, 13]);
        assert!(checkpoint.find("missing").expect("no error").is_none());
    }

    #[test]
    fn a_truncated_or_foreign_file_is_a_clear_error() {
        let path = temp_file("whole.safetensors");
        let tensor = Tensor::from_slice(&[1.0f32; 64]);
        Tensor::write_safetensors(&[("t", &tensor)], &path).expect("written");
        let bytes = std::fs::read(&path).expect("bytes");
        let truncated = temp_file("truncated.safetensors");
        std::fs::write(&truncated, &bytes[..bytes.len() - 10]).expect("written");
        let error = Checkpoint::read(&truncated, Device::Cpu)
            .err()
            .expect("refused");
        assert!(error.contains("truncated inside tensor t"), "{error}");
        let foreign = temp_file("foreign.safetensors");
        std::fs::write(&foreign, b"this is not a safetensors file at all").expect("written");
        let error = Checkpoint::read(&foreign, Device::Cpu)
            .err()
            .expect("refused");
        assert!(error.contains("does not fit"), "{error}");
        let empty = temp_file("empty.safetensors");
        std::fs::write(&empty, b"").expect("written");
        assert!(Checkpoint::read(&empty, Device::Cpu).is_err());
    }
}
