//! GPT-2 forward passes for incremental decoding, over the weights of
//! rust-bert's `GPT2LMHeadModel`.
//!
//! rust-bert builds the model and loads its variables; this module reads
//! them back and runs two passes: `prefill` (several prompts at once,
//! left-padded, causal attention, logits for the last position only) and
//! `step` (one new token for every row of a `KvCache`, each at its own
//! position). Linear layers run at the
//! configured `Precision`; at fp32 the logits match rust-bert's forward pass
//! (tested).

use std::collections::HashMap;
use std::path::Path;

use rust_bert::gpt2::{GPT2LMHeadModel, Gpt2Config};
use rust_bert::Activation;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::kv_cache::{KvCache, Prefilled};
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

    /// Query, keys and values of a block's input, each [batch, heads, tokens, head_dim].
    fn project(&self, block: &Block, hidden: &Tensor) -> (Tensor, Tensor, Tensor) {
        let qkv = block.qkv.forward(&block.ln_1.forward(hidden));
        let parts = qkv.split(qkv.size()[2] / 3, 2);
        (
            self.split_heads(&parts[0]),
            self.split_heads(&parts[1]),
            self.split_heads(&parts[2]),
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
        let attended =
            Tensor::scaled_dot_product_attention(query, keys, values, Some(bias), 0.0, false, None);
        let hidden = hidden + block.attention_out.forward(&self.merge_heads(&attended));
        let inner = block.mlp_in.forward(&block.ln_2.forward(&hidden));
        &hidden + block.mlp_out.forward(&(self.activation)(&inner))
    }

    fn logits(&self, last_hidden: &Tensor) -> Tensor {
        self.lm_head.forward(&self.ln_f.forward(last_hidden))
    }

    /// Runs whole prompts, all at once: one read of the weights serves them
    /// all. Each prompt must hold at least one token.
    pub fn prefill(&self, prompts: &[&[i64]]) -> Prefilled {
        let rows = prompts.len() as i64;
        let columns = prompts.iter().map(|p| p.len()).max().unwrap_or(0) as i64;
        let starts: Vec<i64> = prompts.iter().map(|p| columns - p.len() as i64).collect();
        let mut ids = vec![0i64; (rows * columns) as usize];
        let mut positions = vec![0i64; (rows * columns) as usize];
        for (row, prompt) in prompts.iter().enumerate() {
            let offset = row * columns as usize + starts[row] as usize;
            ids[offset..offset + prompt.len()].copy_from_slice(prompt);
            for (index, position) in positions[offset..offset + prompt.len()]
                .iter_mut()
                .enumerate()
            {
                *position = index as i64;
            }
        }
        let positions = Tensor::from_slice(&positions).to_device(self.device);
        let mut hidden = self.embed(&ids, &positions).view([rows, columns, -1]);
        let bias = prefill_bias(&starts, columns, self.device);
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
            starts,
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

/// Additive attention bias of a left-padded prefill, [rows, 1, columns, columns]:
/// a query sees the tokens of its row up to itself. (A padding query also sees
/// itself, so no softmax row is empty; its output is never attended to.)
fn prefill_bias(starts: &[i64], columns: i64, device: Device) -> Tensor {
    let position = Tensor::arange(columns, (Kind::Int64, device));
    let query = position.view([1, columns, 1]);
    let key = position.view([1, 1, columns]);
    let starts = Tensor::from_slice(starts)
        .to_device(device)
        .view([-1, 1, 1]);
    let causal = key.le_tensor(&query);
    let visible = causal.logical_and(&key.ge_tensor(&starts).logical_or(&key.eq_tensor(&query)));
    Tensor::zeros(visible.size(), (Kind::Float, device))
        .masked_fill(&visible.logical_not(), f64::NEG_INFINITY)
        .unsqueeze(1)
}
