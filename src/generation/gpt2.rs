//! GPT-2 forward passes for incremental decoding, over weights read by
//! `checkpoint` (transformers' safetensors, sharded or not, or rust-bert's
//! rust_model.ot) and a config.json read with transformers' defaults.
//!
//! Two passes: `prefill` (several prompts at once,
//! left-padded, causal attention, logits for the last position only) and
//! `step` (one new token for every row of a `KvCache`, each at its own
//! position). Linear layers run at the
//! configured `Precision`; at fp32 the logits match rust-bert's forward pass
//! (tested).

use std::path::Path;

use rust_bert::Activation;
use serde::Deserialize;
use tch::{Device, Tensor};

use super::checkpoint::Checkpoint;

use super::kv_cache::{KvCache, Prefilled};
use super::layers::{attend, split_heads, DecoderShape, LayerNorm, LeftPadded};
use super::linear::{Linear, Precision};

struct Block {
    ln_1: LayerNorm,
    qkv: Linear,
    attention_out: Linear,
    ln_2: LayerNorm,
    mlp_in: Linear,
    mlp_out: Linear,
    /// Attention score scale (transformers' scale_attn_* settings).
    scale: f64,
}

pub struct Gpt2Decoder {
    token_embeddings: Tensor,
    position_embeddings: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Linear,
    activation: fn(&Tensor) -> Tensor,
    shape: DecoderShape,
    device: Device,
}

/// The config.json fields GPT-2 uses, with transformers' defaults for any
/// left out (`GPT2Config`).
#[derive(Debug, Deserialize)]
struct Gpt2Config {
    #[serde(default = "default_layers")]
    n_layer: usize,
    #[serde(default = "default_heads")]
    n_head: i64,
    #[serde(default = "default_width")]
    n_embd: i64,
    #[serde(default = "default_positions")]
    n_positions: usize,
    #[serde(default = "default_vocab")]
    vocab_size: i64,
    #[serde(default = "default_eps")]
    layer_norm_epsilon: f64,
    #[serde(default = "default_activation")]
    activation_function: String,
    #[serde(default = "default_true")]
    scale_attn_weights: bool,
    #[serde(default)]
    scale_attn_by_inverse_layer_idx: bool,
}

fn default_layers() -> usize {
    12
}
fn default_heads() -> i64 {
    12
}
fn default_width() -> i64 {
    768
}
fn default_positions() -> usize {
    1024
}
fn default_vocab() -> i64 {
    50257
}
fn default_eps() -> f64 {
    1e-5
}
fn default_activation() -> String {
    "gelu_new".into()
}
fn default_true() -> bool {
    true
}

/// transformers' `ACT2FN` names, as far as GPT-2 checkpoints use them.
pub(crate) fn activation(name: &str) -> Result<fn(&Tensor) -> Tensor, String> {
    if matches!(name, "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast") {
        // GELU's tanh approximation in one pass over the tensor; rust-bert's
        // `gelu_new` composes it from nine operations, each a pass with an
        // output of its own.
        return Ok(|x: &Tensor| x.gelu("tanh"));
    }
    let activation = match name {
        "gelu" => Activation::gelu,
        "relu" => Activation::relu,
        "silu" | "swish" => Activation::swish,
        "tanh" => Activation::tanh,
        "linear" => Activation::identity,
        other => return Err(format!("unsupported activation_function {other:?}")),
    };
    Ok(*activation.get_function().get_fn())
}

impl Gpt2Decoder {
    /// Loads config.json and the weights (`model.safetensors`, a sharded
    /// index, or `rust_model.ot`).
    pub fn load(
        config_path: &Path,
        weights_path: &Path,
        precision: Precision,
        device: Device,
    ) -> Result<Gpt2Decoder, String> {
        let text = std::fs::read_to_string(config_path)
            .map_err(|error| format!("cannot read {}: {error}", config_path.display()))?;
        let config: Gpt2Config = serde_json::from_str(&text)
            .map_err(|error| format!("{} is not a GPT-2 config: {error}", config_path.display()))?;
        let checkpoint = Checkpoint::read(weights_path, device)?;
        Self::from_checkpoint(&config, &checkpoint, precision, device)
    }

    fn from_checkpoint(
        config: &Gpt2Config,
        checkpoint: &Checkpoint,
        precision: Precision,
        device: Device,
    ) -> Result<Gpt2Decoder, String> {
        let get = |name: &str| checkpoint.get(name);
        let layer_norm =
            |prefix: &str| LayerNorm::read(checkpoint, prefix, config.layer_norm_epsilon);
        // GPT-2 stores its projections as Conv1D, [in, out]; Linear wants [out, in].
        let conv1d = |prefix: &str| -> Result<Linear, String> {
            let weight = get(&format!("{prefix}.weight"))?;
            let bias = get(&format!("{prefix}.bias"))?;
            Ok(Linear::new(&weight.transpose(0, 1), Some(&bias), precision))
        };
        if config.n_head <= 0 || config.n_embd % config.n_head != 0 {
            return Err(format!(
                "n_embd {} is not a multiple of n_head {}",
                config.n_embd, config.n_head
            ));
        }
        let heads = config.n_head;
        let head_dim = config.n_embd / heads;
        let blocks = (0..config.n_layer)
            .map(|layer| {
                let prefix = format!("transformer.h.{layer}");
                // transformers' scale_attn_weights and scale_attn_by_inverse_layer_idx.
                let mut scale = if config.scale_attn_weights {
                    1.0 / (head_dim as f64).sqrt()
                } else {
                    1.0
                };
                if config.scale_attn_by_inverse_layer_idx {
                    scale /= (layer + 1) as f64;
                }
                Ok(Block {
                    ln_1: layer_norm(&format!("{prefix}.ln_1"))?,
                    qkv: conv1d(&format!("{prefix}.attn.c_attn"))?,
                    attention_out: conv1d(&format!("{prefix}.attn.c_proj"))?,
                    ln_2: layer_norm(&format!("{prefix}.ln_2"))?,
                    mlp_in: conv1d(&format!("{prefix}.mlp.c_fc"))?,
                    mlp_out: conv1d(&format!("{prefix}.mlp.c_proj"))?,
                    scale,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let token_embeddings = get("transformer.wte.weight")?;
        // Tied weights: transformers saves lm_head only when it is not the embeddings.
        let lm_head = checkpoint
            .find("lm_head.weight")?
            .unwrap_or_else(|| token_embeddings.shallow_clone());
        Ok(Gpt2Decoder {
            lm_head: Linear::new(&lm_head, None, precision.for_logits()),
            token_embeddings,
            position_embeddings: get("transformer.wpe.weight")?,
            blocks,
            ln_f: layer_norm("transformer.ln_f")?,
            activation: activation(&config.activation_function)?,
            shape: DecoderShape {
                layers: config.n_layer,
                heads,
                head_dim,
                context_length: config.n_positions,
                vocab_size: config.vocab_size,
            },
            device,
        })
    }

    pub fn shape(&self) -> DecoderShape {
        self.shape
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(
            self.shape.layers,
            self.shape.heads,
            self.shape.head_dim,
            self.device,
        )
    }

    fn embed(&self, tokens: &[i64], positions: &Tensor) -> Tensor {
        let ids = Tensor::from_slice(tokens).to_device(self.device);
        self.token_embeddings.index_select(0, &ids)
            + self.position_embeddings.index_select(0, positions)
    }

    /// Query, keys and values of a block's input, each [batch, heads, tokens, head_dim].
    fn project(&self, block: &Block, hidden: &Tensor) -> (Tensor, Tensor, Tensor) {
        let qkv = block.qkv.forward(&block.ln_1.forward(hidden));
        let parts = qkv.split(qkv.size()[2] / 3, 2);
        (
            split_heads(&parts[0], self.shape.heads),
            split_heads(&parts[1], self.shape.heads),
            split_heads(&parts[2], self.shape.heads),
        )
    }

    /// The rest of a block once its keys and values are in place: attention
    /// (with the additive `bias`), projection, residual, then the MLP.
    fn finish_block(
        &self,
        block: &Block,
        hidden: &Tensor,
        query: &Tensor,
        keys: &Tensor,
        values: &Tensor,
        bias: &Tensor,
    ) -> Tensor {
        let attended = attend(query, keys, values, bias, block.scale);
        let hidden = hidden + block.attention_out.forward(&attended);
        let inner = block.mlp_in.forward(&block.ln_2.forward(&hidden));
        &hidden + block.mlp_out.forward(&(self.activation)(&inner))
    }

    fn logits(&self, last_hidden: &Tensor) -> Tensor {
        self.lm_head.forward(&self.ln_f.forward(last_hidden))
    }

    /// Runs whole prompts, all at once: one read of the weights serves them
    /// all. Each prompt must hold at least one token.
    pub fn prefill(&self, prompts: &[&[i64]]) -> Prefilled {
        let padded = LeftPadded::new(prompts);
        let (rows, columns) = (padded.rows, padded.columns);
        let positions = Tensor::from_slice(&padded.positions).to_device(self.device);
        let mut hidden = self
            .embed(&padded.ids, &positions)
            .view([rows, columns, -1]);
        let bias = padded.attention_bias(None, self.device);
        let mut layers = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let (query, keys, values) = self.project(block, &hidden);
            let (keys, values) = (keys.contiguous(), values.contiguous());
            hidden = self.finish_block(block, &hidden, &query, &keys, &values, &bias);
            layers.push((keys, values));
        }
        // Left padding puts every prompt's last token in the last column.
        let last = hidden.narrow(1, columns - 1, 1).squeeze_dim(1);
        Prefilled {
            logits: self.logits(&last),
            layers,
            starts: padded.starts,
        }
    }

    /// Feeds one token to every row of `cache` (`tokens[i]` at `positions[i]`)
    /// and returns the next-token logits, [rows, vocab].
    pub fn step(&self, tokens: &[i64], positions: &[i64], cache: &mut KvCache) -> Tensor {
        let positions = Tensor::from_slice(positions).to_device(self.device);
        let mut hidden = self.embed(tokens, &positions).unsqueeze(1);
        cache.reserve_column();
        let bias = cache.attention_bias(1);
        for (layer, block) in self.blocks.iter().enumerate() {
            let (query, new_keys, new_values) = self.project(block, &hidden);
            cache.write_column(layer, &new_keys, &new_values);
            let (keys, values) = cache.layer_with_new_column(layer);
            hidden = self.finish_block(block, &hidden, &query, &keys, &values, &bias);
        }
        cache.commit_column();
        self.logits(&hidden.squeeze_dim(1))
    }
}
