//! GPT-J forward passes (transformers' `GPTJForCausalLM`, model_type
//! `gptj`) for incremental decoding, with the same interface as
//! `Gpt2Decoder`: `prefill` of left-padded prompts and `step` over a
//! `KvCache`.
//!
//! What differs from GPT-2: no position embeddings but rotary ones, applied
//! rotate-every-two (interleaved pairs) to the first `rotary_dim` dims of
//! each head's query and key at the row's own position (counted from its
//! first real token; keys are cached rotated); attention and MLP both read
//! ln_1's output and are added to the residual together; q/k/v/out
//! projections have no bias; lm_head is not tied and has a bias; vocab_size
//! may exceed the tokenizer's (50400 for GPT-J 6B).

use std::path::Path;

use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use super::checkpoint::Checkpoint;
use super::gpt2::activation;
use super::kv_cache::{KvCache, Prefilled};
use super::layers::{attend, fused_qkv, split_qkv, DecoderShape, LayerNorm, LeftPadded};
use super::linear::{Linear, Precision};

struct Block {
    ln_1: LayerNorm,
    /// q_proj, k_proj and v_proj fused.
    qkv: Linear,
    attention_out: Linear,
    mlp_in: Linear,
    mlp_out: Linear,
}

/// Rotary tables, [positions, rotary_dim]: each pair's sine and cosine,
/// repeated for both members of the pair.
struct Rotary {
    sin: Tensor,
    cos: Tensor,
    dims: i64,
}

impl Rotary {
    /// transformers' `create_sinusoidal_positions`, in fp32 as it computes
    /// them (the table's values must match to the bit for identical tokens).
    fn new(positions: i64, dims: i64, device: Device) -> Rotary {
        let exponents = Tensor::arange_start_step(0, dims, 2, (Kind::Int64, device))
            .to_kind(Kind::Float)
            / dims as f64;
        let inverse_frequencies = Tensor::pow_scalar(10000.0, &exponents).reciprocal();
        let angles = Tensor::arange(positions, (Kind::Int64, device))
            .to_kind(Kind::Float)
            .unsqueeze(1)
            * inverse_frequencies.unsqueeze(0);
        let pairwise = |table: Tensor| table.repeat_interleave_self_int(2, Some(1), None);
        Rotary {
            sin: pairwise(angles.sin()),
            cos: pairwise(angles.cos()),
            dims,
        }
    }

    /// Rotates the first `dims` of every head of `x` ([batch, heads, tokens,
    /// head_dim]) by the angles of `positions` ([batch * tokens], row-major).
    fn apply(&self, x: &Tensor, positions: &Tensor) -> Tensor {
        let size = x.size();
        let (batch, tokens, head_dim) = (size[0], size[2], size[3]);
        let shape = [batch, 1, tokens, self.dims];
        let sin = self.sin.index_select(0, positions).view(shape);
        let cos = self.cos.index_select(0, positions).view(shape);
        let rotated = x.narrow(3, 0, self.dims);
        // (x0, x1) -> (-x1, x0) for every pair.
        let pairs = rotated.reshape([batch, size[1], tokens, self.dims / 2, 2]);
        let every_two = Tensor::stack(&[-pairs.select(4, 1), pairs.select(4, 0)], 4)
            .reshape([batch, size[1], tokens, self.dims]);
        let turned = &rotated * &cos + every_two * &sin;
        if self.dims == head_dim {
            turned
        } else {
            Tensor::cat(&[turned, x.narrow(3, self.dims, head_dim - self.dims)], 3)
        }
    }
}

pub struct GptjDecoder {
    token_embeddings: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Linear,
    rotary: Rotary,
    activation: fn(&Tensor) -> Tensor,
    scale: f64,
    shape: DecoderShape,
    device: Device,
}

/// The config.json fields GPT-J uses, with transformers' defaults
/// (`GPTJConfig`, whose defaults are GPT-J 6B's shape).
#[derive(Debug, Deserialize)]
struct GptjConfig {
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
    /// null rotates whole heads.
    #[serde(default = "default_rotary_dim")]
    rotary_dim: Option<i64>,
    #[serde(default = "default_eps")]
    layer_norm_epsilon: f64,
    #[serde(default = "default_activation")]
    activation_function: String,
}

fn default_layers() -> usize {
    28
}
fn default_heads() -> i64 {
    16
}
fn default_width() -> i64 {
    4096
}
fn default_positions() -> usize {
    2048
}
fn default_vocab() -> i64 {
    50400
}
fn default_rotary_dim() -> Option<i64> {
    Some(64)
}
fn default_eps() -> f64 {
    1e-5
}
fn default_activation() -> String {
    "gelu_new".into()
}

impl GptjDecoder {
    /// Loads config.json and the weights (any file `Checkpoint` reads).
    pub fn load(
        config_path: &Path,
        weights_path: &Path,
        precision: Precision,
        device: Device,
    ) -> Result<GptjDecoder, String> {
        let text = std::fs::read_to_string(config_path)
            .map_err(|error| format!("cannot read {}: {error}", config_path.display()))?;
        let config: GptjConfig = serde_json::from_str(&text)
            .map_err(|error| format!("{} is not a GPT-J config: {error}", config_path.display()))?;
        let checkpoint = Checkpoint::read(weights_path, device)?;
        Self::from_checkpoint(&config, &checkpoint, precision, device)
    }

    fn from_checkpoint(
        config: &GptjConfig,
        checkpoint: &Checkpoint,
        precision: Precision,
        device: Device,
    ) -> Result<GptjDecoder, String> {
        let linear = |prefix: &str| -> Result<Linear, String> {
            let weight = checkpoint.get(&format!("{prefix}.weight"))?;
            let bias = checkpoint.find(&format!("{prefix}.bias"))?;
            Ok(Linear::new(&weight, bias.as_ref(), precision))
        };
        if config.n_head <= 0 || config.n_embd % config.n_head != 0 {
            return Err(format!(
                "n_embd {} is not a multiple of n_head {}",
                config.n_embd, config.n_head
            ));
        }
        let heads = config.n_head;
        let head_dim = config.n_embd / heads;
        let rotary_dim = config.rotary_dim.unwrap_or(head_dim);
        if rotary_dim <= 0 || rotary_dim % 2 != 0 || rotary_dim > head_dim {
            return Err(format!(
                "rotary_dim {rotary_dim} must be even and at most the head size {head_dim}"
            ));
        }
        let blocks = (0..config.n_layer)
            .map(|layer| {
                let prefix = format!("transformer.h.{layer}");
                Ok(Block {
                    ln_1: LayerNorm::read(
                        checkpoint,
                        &format!("{prefix}.ln_1"),
                        config.layer_norm_epsilon,
                    )?,
                    qkv: fused_qkv(checkpoint, &format!("{prefix}.attn"), precision)?,
                    attention_out: linear(&format!("{prefix}.attn.out_proj"))?,
                    mlp_in: linear(&format!("{prefix}.mlp.fc_in"))?,
                    mlp_out: linear(&format!("{prefix}.mlp.fc_out"))?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let token_embeddings = checkpoint.get("transformer.wte.weight")?;
        // GPT-J does not tie lm_head; a checkpoint without one ties it anyway
        // rather than failing (tie_word_embeddings = true).
        let lm_head = match checkpoint.find("lm_head.weight")? {
            Some(weight) => Linear::new(
                &weight,
                checkpoint.find("lm_head.bias")?.as_ref(),
                precision.for_logits(),
            ),
            None => Linear::new(&token_embeddings, None, precision.for_logits()),
        };
        Ok(GptjDecoder {
            lm_head,
            token_embeddings,
            blocks,
            ln_f: LayerNorm::read(checkpoint, "transformer.ln_f", config.layer_norm_epsilon)?,
            rotary: Rotary::new(config.n_positions as i64, rotary_dim, device),
            activation: activation(&config.activation_function)?,
            scale: 1.0 / (head_dim as f64).sqrt(),
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

    fn embed(&self, tokens: &[i64]) -> Tensor {
        let ids = Tensor::from_slice(tokens).to_device(self.device);
        self.token_embeddings.index_select(0, &ids)
    }

    /// ln_1's output, and from it the rotated query and keys and the
    /// values, each [batch, heads, tokens, head_dim].
    fn project(
        &self,
        block: &Block,
        hidden: &Tensor,
        positions: &Tensor,
    ) -> (Tensor, Tensor, Tensor, Tensor) {
        let normed = block.ln_1.forward(hidden);
        let (query, keys, values) = split_qkv(&block.qkv.forward(&normed), self.shape.heads);
        (
            self.rotary.apply(&query, positions),
            self.rotary.apply(&keys, positions),
            values,
            normed,
        )
    }

    /// The rest of a block once its keys and values are in place: attention
    /// and MLP, both of ln_1's output (`normed`), added to the residual.
    #[allow(clippy::too_many_arguments)]
    fn finish_block(
        &self,
        block: &Block,
        hidden: &Tensor,
        normed: &Tensor,
        query: &Tensor,
        keys: &Tensor,
        values: &Tensor,
        bias: &Tensor,
    ) -> Tensor {
        let attended = attend(query, keys, values, bias, self.scale);
        let attention = block.attention_out.forward(&attended);
        let feed_forward = block
            .mlp_out
            .forward(&(self.activation)(&block.mlp_in.forward(normed)));
        attention + feed_forward + hidden
    }

    fn logits(&self, last_hidden: &Tensor) -> Tensor {
        self.lm_head.forward(&self.ln_f.forward(last_hidden))
    }

    /// Runs whole prompts, all at once. Each prompt must hold at least one token.
    pub fn prefill(&self, prompts: &[&[i64]]) -> Prefilled {
        let padded = LeftPadded::new(prompts);
        let (rows, columns) = (padded.rows, padded.columns);
        let positions = Tensor::from_slice(&padded.positions).to_device(self.device);
        let mut hidden = self.embed(&padded.ids).view([rows, columns, -1]);
        let bias = padded.attention_bias(None, self.device);
        let mut layers = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let (query, keys, values, normed) = self.project(block, &hidden, &positions);
            let (keys, values) = (keys.contiguous(), values.contiguous());
            hidden = self.finish_block(block, &hidden, &normed, &query, &keys, &values, &bias);
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
        let mut hidden = self.embed(tokens).unsqueeze(1);
        cache.reserve_column();
        let bias = cache.attention_bias(1);
        for (layer, block) in self.blocks.iter().enumerate() {
            let (query, new_keys, new_values, normed) = self.project(block, &hidden, &positions);
            cache.write_column(layer, &new_keys, &new_values);
            let (keys, values) = cache.layer_with_new_column(layer);
            hidden = self.finish_block(block, &hidden, &normed, &query, &keys, &values, &bias);
        }
        cache.commit_column();
        self.logits(&hidden.squeeze_dim(1))
    }
}
