//! GPT-2 forward passes for incremental decoding, over the weights of
//! rust-bert's `GPT2LMHeadModel`.
//!
//! rust-bert builds the model and loads its variables; this module reads
//! them back and runs two passes: `prefill` (one prompt, causal attention,
//! logits for the last position only) and `step` (one new token for every
//! row of a `KvCache`, each at its own position). Linear layers run at the
//! configured `Precision`; at fp32 the logits match rust-bert's forward pass
//! (tested).

use std::collections::HashMap;
use std::path::Path;

use rust_bert::gpt2::{GPT2LMHeadModel, Gpt2Config};
use rust_bert::Activation;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::kv_cache::KvCache;
use super::linear::{Linear, Precision};

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn forward(&self, input: &Tensor) -> Tensor {
        let width = self.weight.size()[0];
        input.layer_norm(
            [width],
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            false,
        )
    }
}

struct Block {
    ln_1: LayerNorm,
    qkv: Linear,
    attention_out: Linear,
    ln_2: LayerNorm,
    mlp_in: Linear,
    mlp_out: Linear,
}

/// The shape numbers a caller needs.
#[derive(Debug, Clone, Copy)]
pub struct Gpt2Shape {
    pub layers: usize,
    pub heads: i64,
    pub head_dim: i64,
    pub context_length: usize,
    pub vocab_size: i64,
}

pub struct Gpt2Decoder {
    token_embeddings: Tensor,
    position_embeddings: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Linear,
    activation: fn(&Tensor) -> Tensor,
    shape: Gpt2Shape,
    device: Device,
}

/// Per layer, the keys and values of one prefilled prompt: [1, heads, tokens, head_dim].
pub type PrefillCache = Vec<(Tensor, Tensor)>;

impl Gpt2Decoder {
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
        let mut store = VarStore::new(device);
        let _model = GPT2LMHeadModel::new(store.root(), &config);
        store
            .load(weights_path)
            .map_err(|error| format!("cannot load {}: {error}", weights_path.display()))?;
        let variables = store.variables();
        Self::from_variables(&config, &variables, precision, device)
    }

    fn from_variables(
        config: &Gpt2Config,
        variables: &HashMap<String, Tensor>,
        precision: Precision,
        device: Device,
    ) -> Result<Gpt2Decoder, String> {
        let get = |name: &str| {
            variables
                .get(name)
                .map(Tensor::detach)
                .ok_or_else(|| format!("the weights have no variable {name}"))
        };
        let layer_norm = |prefix: &str| -> Result<LayerNorm, String> {
            Ok(LayerNorm {
                weight: get(&format!("{prefix}.weight"))?,
                bias: get(&format!("{prefix}.bias"))?,
                eps: config.layer_norm_epsilon,
            })
        };
        // GPT-2 stores its projections as Conv1D, [in, out]; Linear wants [out, in].
        let conv1d = |prefix: &str| -> Result<Linear, String> {
            let weight = get(&format!("{prefix}.weight"))?;
            let bias = get(&format!("{prefix}.bias"))?;
            Ok(Linear::new(&weight.transpose(0, 1), Some(&bias), precision))
        };
        let blocks = (0..config.n_layer)
            .map(|layer| {
                let prefix = format!("transformer.h.{layer}");
                Ok(Block {
                    ln_1: layer_norm(&format!("{prefix}.ln_1"))?,
                    qkv: conv1d(&format!("{prefix}.attn.c_attn"))?,
                    attention_out: conv1d(&format!("{prefix}.attn.c_proj"))?,
                    ln_2: layer_norm(&format!("{prefix}.ln_2"))?,
                    mlp_in: conv1d(&format!("{prefix}.mlp.c_fc"))?,
                    mlp_out: conv1d(&format!("{prefix}.mlp.c_proj"))?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let token_embeddings = get("transformer.wte.weight")?;
        // rust-bert maps gelu to gelu_new for GPT-2; so do we.
        let activation = match config.afn {
            None | Some(Activation::gelu) => Activation::gelu_new,
            Some(other) => other,
        };
        let heads = config.n_head;
        Ok(Gpt2Decoder {
            lm_head: Linear::new(&token_embeddings, None, precision),
            token_embeddings,
            position_embeddings: get("transformer.wpe.weight")?,
            blocks,
            ln_f: layer_norm("transformer.ln_f")?,
            activation: *activation.get_function().get_fn(),
            shape: Gpt2Shape {
                layers: config.n_layer as usize,
                heads,
                head_dim: config.n_embd / heads,
                context_length: config.n_positions as usize,
                vocab_size: config.vocab_size,
            },
            device,
        })
    }

    pub fn shape(&self) -> Gpt2Shape {
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

    /// [batch, tokens, embd] -> [batch, heads, tokens, head_dim]
    fn split_heads(&self, x: &Tensor) -> Tensor {
        let size = x.size();
        x.view([size[0], size[1], self.shape.heads, self.shape.head_dim])
            .transpose(1, 2)
    }

    fn merge_heads(&self, x: &Tensor) -> Tensor {
        let size = x.size();
        x.transpose(1, 2).contiguous().view([
            size[0],
            size[2],
            self.shape.heads * self.shape.head_dim,
        ])
    }

    fn mlp(&self, block: &Block, hidden: &Tensor) -> Tensor {
        let inner = block.mlp_in.forward(&block.ln_2.forward(hidden));
        hidden + block.mlp_out.forward(&(self.activation)(&inner))
    }

    fn logits(&self, last_hidden: &Tensor) -> Tensor {
        self.lm_head.forward(&self.ln_f.forward(last_hidden))
    }

    /// Runs a whole prompt; returns the logits after its last token, [1, vocab],
    /// and the keys and values of every layer.
    pub fn prefill(&self, tokens: &[i64]) -> (Tensor, PrefillCache) {
        let count = tokens.len() as i64;
        let positions = Tensor::arange(count, (Kind::Int64, self.device));
        let mut hidden = self.embed(tokens, &positions).unsqueeze(0);
        // libtorch 2.4 rejects an absent mask passed through tch, so the
        // causal mask is explicit: -inf above the diagonal.
        let causal = Tensor::full(
            [count, count],
            f64::NEG_INFINITY,
            (Kind::Float, self.device),
        )
        .triu(1);
        let mut cache = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let qkv = block.qkv.forward(&block.ln_1.forward(&hidden));
            let parts = qkv.split(qkv.size()[2] / 3, 2);
            let (query, keys, values) = (
                self.split_heads(&parts[0]),
                self.split_heads(&parts[1]).contiguous(),
                self.split_heads(&parts[2]).contiguous(),
            );
            let attended = Tensor::scaled_dot_product_attention(
                &query,
                &keys,
                &values,
                Some(&causal),
                0.0,
                false,
                None,
            );
            hidden += block.attention_out.forward(&self.merge_heads(&attended));
            hidden = self.mlp(block, &hidden);
            cache.push((keys, values));
        }
        let last = hidden.narrow(1, count - 1, 1).squeeze_dim(1);
        (self.logits(&last), cache)
    }

    /// Feeds one token to every row of `cache` (`tokens[i]` at `positions[i]`)
    /// and returns the next-token logits, [rows, vocab].
    pub fn step(&self, tokens: &[i64], positions: &[i64], cache: &mut KvCache) -> Tensor {
        let positions = Tensor::from_slice(positions).to_device(self.device);
        let mut hidden = self.embed(tokens, &positions).unsqueeze(1);
        cache.reserve_column();
        let bias = cache.attention_bias(1);
        for (layer, block) in self.blocks.iter().enumerate() {
            let qkv = block.qkv.forward(&block.ln_1.forward(&hidden));
            let parts = qkv.split(qkv.size()[2] / 3, 2);
            let query = self.split_heads(&parts[0]);
            cache.write_column(
                layer,
                &self.split_heads(&parts[1]),
                &self.split_heads(&parts[2]),
            );
            let (keys, values) = cache.layer_with_new_column(layer);
            let attended = Tensor::scaled_dot_product_attention(
                &query,
                &keys,
                &values,
                Some(&bias),
                0.0,
                false,
                None,
            );
            hidden += block.attention_out.forward(&self.merge_heads(&attended));
            hidden = self.mlp(block, &hidden);
        }
        cache.commit_column();
        self.logits(&hidden.squeeze_dim(1))
    }
}
