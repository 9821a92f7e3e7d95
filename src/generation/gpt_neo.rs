//! GPT-Neo forward passes (transformers' `GPTNeoForCausalLM`, model_type
//! `gpt_neo`) for incremental decoding, with the same interface as
//! `Gpt2Decoder`: `prefill` of left-padded prompts and `step` over a
//! `KvCache`.
//!
//! What differs from GPT-2: separate q/k/v projections without bias
//! (nn.Linear, [out, in]), attention scores NOT scaled by 1/sqrt(head_dim),
//! and layers alternating between global attention and local attention that
//! sees only the last `window_size` positions (the query's own included), in
//! prefill and in every cached step alike.

use std::path::Path;

use serde::Deserialize;
use tch::{Device, Tensor};

use super::checkpoint::Checkpoint;
use super::gpt2::activation;
use super::kv_cache::{KvCache, Prefilled};
use super::layers::{attend, fused_qkv, split_qkv, windowed, DecoderShape, LayerNorm, LeftPadded};
use super::linear::{Linear, Precision};

/// Which positions a layer's attention sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    Global,
    /// The last `window_size` positions.
    Local,
}

struct Block {
    ln_1: LayerNorm,
    /// q_proj, k_proj and v_proj fused.
    qkv: Linear,
    attention_out: Linear,
    ln_2: LayerNorm,
    mlp_in: Linear,
    mlp_out: Linear,
    reach: Reach,
}

pub struct GptNeoDecoder {
    token_embeddings: Tensor,
    position_embeddings: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Linear,
    activation: fn(&Tensor) -> Tensor,
    window: i64,
    shape: DecoderShape,
    device: Device,
}

/// The config.json fields GPT-Neo uses, with transformers' defaults
/// (`GPTNeoConfig`). `attention_layers` is derived from `attention_types`,
/// as transformers does.
#[derive(Debug, Deserialize)]
struct GptNeoConfig {
    #[serde(default = "default_layers")]
    num_layers: usize,
    #[serde(default = "default_heads")]
    num_heads: i64,
    #[serde(default = "default_width")]
    hidden_size: i64,
    #[serde(default = "default_positions")]
    max_position_embeddings: usize,
    #[serde(default = "default_vocab")]
    vocab_size: i64,
    #[serde(default = "default_eps")]
    layer_norm_epsilon: f64,
    #[serde(default = "default_activation")]
    activation_function: String,
    #[serde(default = "default_attention_types")]
    attention_types: Vec<(Vec<String>, usize)>,
    #[serde(default = "default_window")]
    window_size: i64,
}

fn default_layers() -> usize {
    24
}
fn default_heads() -> i64 {
    16
}
fn default_width() -> i64 {
    2048
}
fn default_positions() -> usize {
    2048
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
fn default_attention_types() -> Vec<(Vec<String>, usize)> {
    vec![(vec!["global".into(), "local".into()], 12)]
}
fn default_window() -> i64 {
    256
}

impl GptNeoConfig {
    /// Each layer's reach: `[[["global", "local"], 12]]` is the pair repeated
    /// 12 times (transformers' `expand_attention_types_params`).
    fn reaches(&self) -> Result<Vec<Reach>, String> {
        let mut reaches = Vec::new();
        for (kinds, repeat) in &self.attention_types {
            for _ in 0..*repeat {
                for kind in kinds {
                    reaches.push(match kind.as_str() {
                        "global" => Reach::Global,
                        "local" => Reach::Local,
                        other => {
                            return Err(format!(
                                "attention type {other:?} is neither \"global\" nor \"local\""
                            ))
                        }
                    });
                }
            }
        }
        if reaches.len() != self.num_layers {
            return Err(format!(
                "attention_types name {} layers but num_layers is {}",
                reaches.len(),
                self.num_layers
            ));
        }
        Ok(reaches)
    }
}

impl GptNeoDecoder {
    /// Loads config.json and the weights (any file `Checkpoint` reads).
    pub fn load(
        config_path: &Path,
        weights_path: &Path,
        precision: Precision,
        device: Device,
    ) -> Result<GptNeoDecoder, String> {
        let text = std::fs::read_to_string(config_path)
            .map_err(|error| format!("cannot read {}: {error}", config_path.display()))?;
        let config: GptNeoConfig = serde_json::from_str(&text).map_err(|error| {
            format!("{} is not a GPT-Neo config: {error}", config_path.display())
        })?;
        let checkpoint = Checkpoint::read(weights_path, device)?;
        Self::from_checkpoint(&config, &checkpoint, precision, device)
    }

    fn from_checkpoint(
        config: &GptNeoConfig,
        checkpoint: &Checkpoint,
        precision: Precision,
        device: Device,
    ) -> Result<GptNeoDecoder, String> {
        let layer_norm =
            |prefix: &str| LayerNorm::read(checkpoint, prefix, config.layer_norm_epsilon);
        let linear = |prefix: &str| -> Result<Linear, String> {
            let weight = checkpoint.get(&format!("{prefix}.weight"))?;
            let bias = checkpoint.find(&format!("{prefix}.bias"))?;
            Ok(Linear::new(&weight, bias.as_ref(), precision))
        };
        if config.num_heads <= 0 || config.hidden_size % config.num_heads != 0 {
            return Err(format!(
                "hidden_size {} is not a multiple of num_heads {}",
                config.hidden_size, config.num_heads
            ));
        }
        if config.window_size <= 0 {
            return Err(format!(
                "window_size {} must be positive",
                config.window_size
            ));
        }
        let reaches = config.reaches()?;
        let blocks = reaches
            .iter()
            .enumerate()
            .map(|(layer, &reach)| {
                let prefix = format!("transformer.h.{layer}");
                let attention = format!("{prefix}.attn.attention");
                Ok(Block {
                    ln_1: layer_norm(&format!("{prefix}.ln_1"))?,
                    qkv: fused_qkv(checkpoint, &attention, precision)?,
                    attention_out: linear(&format!("{attention}.out_proj"))?,
                    ln_2: layer_norm(&format!("{prefix}.ln_2"))?,
                    mlp_in: linear(&format!("{prefix}.mlp.c_fc"))?,
                    mlp_out: linear(&format!("{prefix}.mlp.c_proj"))?,
                    reach,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let token_embeddings = checkpoint.get("transformer.wte.weight")?;
        // Tied weights: transformers saves lm_head only when it is not the embeddings.
        let lm_head = checkpoint
            .find("lm_head.weight")?
            .unwrap_or_else(|| token_embeddings.shallow_clone());
        Ok(GptNeoDecoder {
            lm_head: Linear::new(&lm_head, None, precision.for_logits()),
            token_embeddings,
            position_embeddings: checkpoint.get("transformer.wpe.weight")?,
            blocks,
            ln_f: layer_norm("transformer.ln_f")?,
            activation: activation(&config.activation_function)?,
            window: config.window_size,
            shape: DecoderShape {
                layers: config.num_layers,
                heads: config.num_heads,
                head_dim: config.hidden_size / config.num_heads,
                context_length: config.max_position_embeddings,
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
        split_qkv(&qkv, self.shape.heads)
    }

    /// The rest of a block once its keys and values are in place: unscaled
    /// attention (with the additive `bias` of the block's reach),
    /// projection, residual, then the MLP.
    fn finish_block(
        &self,
        block: &Block,
        hidden: &Tensor,
        query: &Tensor,
        keys: &Tensor,
        values: &Tensor,
        bias: &Tensor,
    ) -> Tensor {
        let attended = attend(query, keys, values, bias, 1.0);
        let hidden = hidden + block.attention_out.forward(&attended);
        let inner = block.mlp_in.forward(&block.ln_2.forward(&hidden));
        &hidden + block.mlp_out.forward(&(self.activation)(&inner))
    }

    fn logits(&self, last_hidden: &Tensor) -> Tensor {
        self.lm_head.forward(&self.ln_f.forward(last_hidden))
    }

    /// Runs whole prompts, all at once. Each prompt must hold at least one token.
    pub fn prefill(&self, prompts: &[&[i64]]) -> Prefilled {
        let padded = LeftPadded::new(prompts);
        let (rows, columns) = (padded.rows, padded.columns);
        let positions = Tensor::from_slice(&padded.positions).to_device(self.device);
        let mut hidden = self
            .embed(&padded.ids, &positions)
            .view([rows, columns, -1]);
        let global = padded.attention_bias(None, self.device);
        let local = padded.attention_bias(Some(self.window), self.device);
        let mut layers = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let bias = match block.reach {
                Reach::Global => &global,
                Reach::Local => &local,
            };
            let (query, keys, values) = self.project(block, &hidden);
            let (keys, values) = (keys.contiguous(), values.contiguous());
            hidden = self.finish_block(block, &hidden, &query, &keys, &values, bias);
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
        let global = cache.attention_bias(1);
        // Rows' tokens end in the same (new) column, so one window fits all rows.
        let local = windowed(&global, self.window);
        for (layer, block) in self.blocks.iter().enumerate() {
            let bias = match block.reach {
                Reach::Global => &global,
                Reach::Local => &local,
            };
            let (query, new_keys, new_values) = self.project(block, &hidden);
            cache.write_column(layer, &new_keys, &new_values);
            let (keys, values) = cache.layer_with_new_column(layer);
            hidden = self.finish_block(block, &hidden, &query, &keys, &values, bias);
        }
        cache.commit_column();
        self.logits(&hidden.squeeze_dim(1))
    }
}
