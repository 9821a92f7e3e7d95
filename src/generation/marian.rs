//! Marian (opus-mt) encoder-decoder forward passes over the checkpoint's
//! own tensor names, as transformers' `MarianMTModel` computes them:
//! post-norm layers, embeddings scaled by sqrt(d_model), sinusoidal
//! positions (computed here: transformers does not save them), the output
//! projection tied to the shared embeddings plus `final_logits_bias`.
//!
//! Linear layers run at the configured `Precision`. Reads checkpoints saved
//! by transformers (`model.safetensors`, sharded or not, fp16/bf16 included,
//! buffers absent) and by rust-bert (`rust_model.ot`, the same names)
//! through `checkpoint`.

use std::path::Path;

use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use super::checkpoint::Checkpoint;
use super::kv_cache::KvCache;
use super::layers::{attend_through, split_heads};
use super::linear::{Linear, Precision};
use super::seq2seq::{DecoderState, EarlyStopping, GenerationDefaults, Seq2SeqLm};

/// The fields of a Marian config.json we use, with transformers'
/// `MarianConfig` defaults for any it leaves out.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MarianConfig {
    pub vocab_size: i64,
    pub decoder_vocab_size: Option<i64>,
    pub d_model: i64,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub encoder_attention_heads: i64,
    pub decoder_attention_heads: i64,
    pub max_position_embeddings: i64,
    pub activation_function: String,
    pub scale_embedding: bool,
    pub pad_token_id: i64,
    pub eos_token_id: i64,
    pub decoder_start_token_id: i64,
    pub forced_eos_token_id: Option<i64>,
    pub bad_words_ids: Option<Vec<Vec<i64>>>,
    pub length_penalty: Option<f64>,
    pub early_stopping: Option<serde_json::Value>,
}

impl Default for MarianConfig {
    fn default() -> Self {
        MarianConfig {
            vocab_size: 58101,
            decoder_vocab_size: None,
            d_model: 1024,
            encoder_layers: 12,
            decoder_layers: 12,
            encoder_attention_heads: 16,
            decoder_attention_heads: 16,
            max_position_embeddings: 1024,
            activation_function: "gelu".into(),
            scale_embedding: false,
            pad_token_id: 58100,
            eos_token_id: 0,
            decoder_start_token_id: 58100,
            forced_eos_token_id: Some(0),
            bad_words_ids: None,
            length_penalty: None,
            early_stopping: None,
        }
    }
}

/// generation_config.json's fields that override config.json's.
#[derive(Debug, Default, Deserialize)]
struct GenerationConfigFile {
    bad_words_ids: Option<Vec<Vec<i64>>>,
    forced_eos_token_id: Option<i64>,
    decoder_start_token_id: Option<i64>,
    length_penalty: Option<f64>,
    early_stopping: Option<serde_json::Value>,
}

fn early_stopping(value: Option<&serde_json::Value>) -> EarlyStopping {
    match value {
        Some(serde_json::Value::Bool(true)) => EarlyStopping::Stop,
        Some(serde_json::Value::String(text)) if text == "never" => EarlyStopping::Never,
        _ => EarlyStopping::Heuristic,
    }
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    fn forward(&self, input: &Tensor) -> Tensor {
        let width = self.weight.size()[0];
        input.layer_norm([width], Some(&self.weight), Some(&self.bias), 1e-5, false)
    }
}

/// Splitting hidden states into attention heads and attending over them.
struct Heads {
    heads: i64,
    head_dim: i64,
}

impl Heads {
    /// [rows, length, d_model] -> [rows, heads, length, head_dim]
    fn split(&self, input: &Tensor) -> Tensor {
        split_heads(input, self.heads)
    }

    /// The output of `N` stacked projections, [rows, length, N * d_model],
    /// as `N` tensors of heads.
    fn split_stacked<const N: usize>(&self, stacked: &Tensor) -> [Tensor; N] {
        let width = self.heads * self.head_dim;
        std::array::from_fn(|part| self.split(&stacked.narrow(2, part as i64 * width, width)))
    }

    /// Scaled dot-product attention of `query` (already split) over `keys`
    /// and `values`, heads merged again: [rows, length, d_model]. On the
    /// fused kernels (`layers::attend_through`) instead of five operations;
    /// the rows of `keys` and `values` picked per column by `sources` where
    /// given (`KvCache::row_sources`).
    fn attend(
        &self,
        query: &Tensor,
        keys: &Tensor,
        values: &Tensor,
        sources: Option<&Tensor>,
        bias: &Tensor,
    ) -> Tensor {
        let scale = (self.head_dim as f64).powf(-0.5);
        attend_through(query, keys, values, sources, bias, scale)
    }
}

/// Self-attention, its query, key and value projections stacked into one
/// layer (one pass over the input instead of three).
struct SelfAttention {
    /// [3 d_model, d_model]: query, key, value.
    qkv: Linear,
    out: Linear,
    heads: Heads,
}

impl SelfAttention {
    /// Query, keys and values of `input`, each split into heads.
    fn project(&self, input: &Tensor) -> (Tensor, Tensor, Tensor) {
        let [query, keys, values] = self.heads.split_stacked(&self.qkv.forward(input));
        (query, keys, values)
    }

    /// Attention over `keys` and `values`, their rows picked per column by
    /// `sources` where given, then the output projection.
    fn attend(
        &self,
        query: &Tensor,
        keys: &Tensor,
        values: &Tensor,
        sources: Option<&Tensor>,
        bias: &Tensor,
    ) -> Tensor {
        self.out
            .forward(&self.heads.attend(query, keys, values, sources, bias))
    }

    fn forward(&self, input: &Tensor, bias: &Tensor) -> Tensor {
        let (query, keys, values) = self.project(input);
        self.attend(&query, &keys, &values, None, bias)
    }
}

/// Attention over the encoder's states: the query projection reads the
/// decoder's, the stacked key and value projections the encoder's (once per
/// source).
struct CrossAttention {
    query: Linear,
    /// [2 d_model, d_model]: key, value.
    key_value: Linear,
    out: Linear,
    heads: Heads,
}

impl CrossAttention {
    /// Keys and values of the encoder's states, each split into heads and
    /// made contiguous once per source, not handed to every step's products
    /// as strided views.
    fn keys_values(&self, encoded: &Tensor) -> (Tensor, Tensor) {
        let [keys, values] = self.heads.split_stacked(&self.key_value.forward(encoded));
        (keys.contiguous(), values.contiguous())
    }

    fn forward(&self, input: &Tensor, keys: &Tensor, values: &Tensor, bias: &Tensor) -> Tensor {
        let query = self.heads.split(&self.query.forward(input));
        self.out
            .forward(&self.heads.attend(&query, keys, values, None, bias))
    }
}

struct FeedForward {
    fc1: Linear,
    fc2: Linear,
}

struct EncoderLayer {
    attention: SelfAttention,
    attention_norm: LayerNorm,
    feed_forward: FeedForward,
    final_norm: LayerNorm,
}

struct DecoderLayer {
    attention: SelfAttention,
    attention_norm: LayerNorm,
    cross_attention: CrossAttention,
    cross_attention_norm: LayerNorm,
    feed_forward: FeedForward,
    final_norm: LayerNorm,
}

pub struct MarianModel {
    shared: Tensor,
    positions: Tensor,
    embed_scale: f64,
    encoder: Vec<EncoderLayer>,
    decoder: Vec<DecoderLayer>,
    lm_head: Linear,
    activation: fn(&Tensor) -> Tensor,
    pad_id: i64,
    eos_id: i64,
    decoder_start_id: i64,
    generation: GenerationDefaults,
    device: Device,
}

/// The layers `{prefix}.{name}` for each of `names` (their `.weight` and
/// `.bias`) as one stacked layer (`Linear::stacked`).
fn stacked_linear(
    checkpoint: &Checkpoint,
    prefix: &str,
    names: &[&str],
    precision: Precision,
) -> Result<Linear, String> {
    let mut weights = Vec::with_capacity(names.len());
    let mut biases = Vec::with_capacity(names.len());
    for name in names {
        weights.push(checkpoint.get(&format!("{prefix}.{name}.weight"))?);
        biases.push(checkpoint.get(&format!("{prefix}.{name}.bias"))?);
    }
    Ok(Linear::stacked(&weights, Some(&biases), precision))
}

/// The sinusoidal table of transformers' `MarianSinusoidalPositionalEmbedding`:
/// sines of every even frequency in the first half, cosines in the second.
pub fn sinusoidal_positions(positions: i64, dim: i64) -> Tensor {
    let half = (dim + 1) / 2;
    let mut table = vec![0f32; (positions * dim) as usize];
    for position in 0..positions {
        for j in 0..dim {
            let angle = position as f64 / 10000f64.powf((2 * (j / 2)) as f64 / dim as f64);
            let column = if j % 2 == 0 { j / 2 } else { half + j / 2 };
            let value = if j % 2 == 0 { angle.sin() } else { angle.cos() };
            table[(position * dim + column) as usize] = value as f32;
        }
    }
    Tensor::from_slice(&table).view([positions, dim])
}

fn activation(name: &str) -> Result<fn(&Tensor) -> Tensor, String> {
    Ok(match name {
        "swish" | "silu" => |x: &Tensor| x.silu(),
        "gelu" => |x: &Tensor| x.gelu("none"),
        "gelu_new" | "gelu_pytorch_tanh" => |x: &Tensor| x.gelu("tanh"),
        "relu" => |x: &Tensor| x.relu(),
        other => return Err(format!("unsupported activation_function {other:?}")),
    })
}

impl MarianModel {
    pub fn load(
        config_path: &Path,
        generation_config_path: Option<&Path>,
        weights_path: &Path,
        precision: Precision,
        device: Device,
    ) -> Result<MarianModel, String> {
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|error| format!("cannot read {}: {error}", path.display()))
        };
        let config: MarianConfig = serde_json::from_str(&read(config_path)?).map_err(|error| {
            format!("{} is not a Marian config: {error}", config_path.display())
        })?;
        let overrides: GenerationConfigFile = match generation_config_path {
            Some(path) => serde_json::from_str(&read(path)?)
                .map_err(|error| format!("{} is not valid: {error}", path.display()))?,
            None => GenerationConfigFile::default(),
        };
        let checkpoint = Checkpoint::read(weights_path, device)?;
        Self::from_checkpoint(&config, &overrides, &checkpoint, precision, device)
    }

    fn from_checkpoint(
        config: &MarianConfig,
        overrides: &GenerationConfigFile,
        checkpoint: &Checkpoint,
        precision: Precision,
        device: Device,
    ) -> Result<MarianModel, String> {
        let get = |name: &str| checkpoint.get(name);
        // `{prefix}.{name}` for each of `names`, stacked.
        let linear =
            |prefix: &str, names: &[&str]| stacked_linear(checkpoint, prefix, names, precision);
        let layer_norm = |prefix: &str| -> Result<LayerNorm, String> {
            Ok(LayerNorm {
                weight: get(&format!("{prefix}.weight"))?,
                bias: get(&format!("{prefix}.bias"))?,
            })
        };
        let heads = |heads: i64| Heads {
            heads,
            head_dim: config.d_model / heads,
        };
        let self_attention = |prefix: &str, count: i64| -> Result<SelfAttention, String> {
            Ok(SelfAttention {
                qkv: linear(prefix, &["q_proj", "k_proj", "v_proj"])?,
                out: linear(prefix, &["out_proj"])?,
                heads: heads(count),
            })
        };
        let cross_attention = |prefix: &str, count: i64| -> Result<CrossAttention, String> {
            Ok(CrossAttention {
                query: linear(prefix, &["q_proj"])?,
                key_value: linear(prefix, &["k_proj", "v_proj"])?,
                out: linear(prefix, &["out_proj"])?,
                heads: heads(count),
            })
        };
        let feed_forward = |prefix: &str| -> Result<FeedForward, String> {
            Ok(FeedForward {
                fc1: linear(prefix, &["fc1"])?,
                fc2: linear(prefix, &["fc2"])?,
            })
        };
        let encoder = (0..config.encoder_layers)
            .map(|layer| {
                let prefix = format!("model.encoder.layers.{layer}");
                Ok(EncoderLayer {
                    attention: self_attention(
                        &format!("{prefix}.self_attn"),
                        config.encoder_attention_heads,
                    )?,
                    attention_norm: layer_norm(&format!("{prefix}.self_attn_layer_norm"))?,
                    feed_forward: feed_forward(&prefix)?,
                    final_norm: layer_norm(&format!("{prefix}.final_layer_norm"))?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let decoder = (0..config.decoder_layers)
            .map(|layer| {
                let prefix = format!("model.decoder.layers.{layer}");
                Ok(DecoderLayer {
                    attention: self_attention(
                        &format!("{prefix}.self_attn"),
                        config.decoder_attention_heads,
                    )?,
                    attention_norm: layer_norm(&format!("{prefix}.self_attn_layer_norm"))?,
                    cross_attention: cross_attention(
                        &format!("{prefix}.encoder_attn"),
                        config.decoder_attention_heads,
                    )?,
                    cross_attention_norm: layer_norm(&format!("{prefix}.encoder_attn_layer_norm"))?,
                    feed_forward: feed_forward(&prefix)?,
                    final_norm: layer_norm(&format!("{prefix}.final_layer_norm"))?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        // Tied weights are saved once, under any of these names.
        let mut shared = None;
        for name in ["model.shared.weight", "model.encoder.embed_tokens.weight"] {
            shared = checkpoint.find(name)?;
            if shared.is_some() {
                break;
            }
        }
        let shared = shared.ok_or("the weights have no shared embeddings (model.shared.weight)")?;
        let lm_head_weight = checkpoint
            .find("lm_head.weight")?
            .unwrap_or_else(|| shared.shallow_clone());
        let vocab = config.decoder_vocab_size.unwrap_or(config.vocab_size);
        let final_logits_bias = checkpoint
            .find("final_logits_bias")?
            .map(|bias| bias.view([-1]))
            .unwrap_or_else(|| Tensor::zeros([vocab], (Kind::Float, device)));
        let generation = GenerationDefaults {
            bad_words_ids: overrides
                .bad_words_ids
                .clone()
                .or_else(|| config.bad_words_ids.clone())
                .unwrap_or_default(),
            forced_eos_token_id: overrides.forced_eos_token_id.or(config.forced_eos_token_id),
            length_penalty: overrides
                .length_penalty
                .or(config.length_penalty)
                .unwrap_or(1.0),
            early_stopping: early_stopping(
                overrides
                    .early_stopping
                    .as_ref()
                    .or(config.early_stopping.as_ref()),
            ),
        };
        Ok(MarianModel {
            positions: sinusoidal_positions(config.max_position_embeddings, config.d_model)
                .to_device(device),
            embed_scale: if config.scale_embedding {
                (config.d_model as f64).sqrt()
            } else {
                1.0
            },
            // final_logits_bias is the output projection's bias: added as
            // the product is written, not in a second pass over the logits.
            lm_head: Linear::new(
                &lm_head_weight,
                Some(&final_logits_bias),
                precision.for_logits(),
            ),
            shared,
            encoder,
            decoder,
            activation: activation(&config.activation_function)?,
            pad_id: config.pad_token_id,
            eos_id: config.eos_token_id,
            decoder_start_id: overrides
                .decoder_start_token_id
                .unwrap_or(config.decoder_start_token_id),
            generation,
            device,
        })
    }

    /// The longest source or output the position table covers.
    pub fn max_positions(&self) -> i64 {
        self.positions.size()[0]
    }

    fn feed_forward(&self, block: &FeedForward, input: &Tensor) -> Tensor {
        block
            .fc2
            .forward(&(self.activation)(&block.fc1.forward(input)))
    }

    fn encode(&self, ids: &Tensor, mask: &Tensor) -> (Tensor, Tensor) {
        let length = ids.size()[1];
        let mut hidden =
            self.shared
                .index_select(0, &ids.view([-1]))
                .view([ids.size()[0], ids.size()[1], -1])
                * self.embed_scale
                + self.positions.narrow(0, 0, length);
        // 0 where a source token is, a large negative number over padding.
        let bias = ((mask.to_kind(Kind::Float) - 1.0) * -(f32::MIN as f64)).view([
            mask.size()[0],
            1,
            1,
            length,
        ]);
        for layer in &self.encoder {
            let attended = layer.attention.forward(&hidden, &bias);
            hidden = layer.attention_norm.forward(&(hidden + attended));
            let transformed = self.feed_forward(&layer.feed_forward, &hidden);
            hidden = layer.final_norm.forward(&(hidden + transformed));
        }
        (hidden, bias)
    }
}

impl Seq2SeqLm for MarianModel {
    fn start(&self, sources: &[&[i64]], group_size: usize) -> DecoderState {
        let longest = sources
            .iter()
            .map(|ids| ids.len())
            .max()
            .unwrap_or(0)
            .max(1);
        let mut ids = Vec::with_capacity(sources.len() * longest);
        let mut mask = Vec::with_capacity(sources.len() * longest);
        for source in sources {
            ids.extend_from_slice(source);
            mask.extend(std::iter::repeat_n(1i64, source.len()));
            ids.extend(std::iter::repeat_n(self.pad_id, longest - source.len()));
            mask.extend(std::iter::repeat_n(0i64, longest - source.len()));
        }
        let groups = sources.len() as i64;
        let ids = Tensor::from_slice(&ids)
            .view([groups, longest as i64])
            .to_device(self.device);
        let mask = Tensor::from_slice(&mask)
            .view([groups, longest as i64])
            .to_device(self.device);
        let (encoded, source_bias) = self.encode(&ids, &mask);
        let (mut cross_keys, mut cross_values) = (Vec::new(), Vec::new());
        for layer in &self.decoder {
            let (keys, values) = layer.cross_attention.keys_values(&encoded);
            cross_keys.push(keys);
            cross_values.push(values);
        }
        let (heads, head_dim) = self.decoder.first().map_or((1, 1), |layer| {
            (layer.attention.heads.heads, layer.attention.heads.head_dim)
        });
        let mut cache =
            KvCache::new(self.decoder.len(), heads, head_dim, self.device).deferring_reorders();
        let rows = sources.len() * group_size;
        cache.add_empty_rows(rows);
        DecoderState {
            cache,
            cross_keys,
            cross_values,
            source_bias,
            source_lengths: sources.iter().map(|source| source.len() as i64).collect(),
            group_size,
        }
    }

    fn step(&self, tokens: &[i64], state: &mut DecoderState) -> Tensor {
        let rows = tokens.len() as i64;
        let ids = Tensor::from_slice(tokens)
            .view([rows, 1])
            .to_device(self.device);
        let positions = Tensor::from_slice(&state.positions()).to_device(self.device);
        let mut hidden = self
            .shared
            .index_select(0, &ids.view([-1]))
            .view([rows, 1, -1])
            * self.embed_scale
            + self
                .positions
                .index_select(0, &positions)
                .view([rows, 1, -1]);
        let width = hidden.size()[2];
        // Cross-attention reads each group's keys once: a group's rows
        // (beams) are its queries.
        let groups = state.groups() as i64;
        let group_size = state.group_size as i64;
        state.cache.reserve_column();
        let self_bias = state.cache.attention_bias(1);
        let sources = state.cache.row_sources();
        for (index, layer) in self.decoder.iter().enumerate() {
            let attention = &layer.attention;
            let (query, new_keys, new_values) = attention.project(&hidden);
            state.cache.write_column(index, &new_keys, &new_values);
            let (keys, values) = state.cache.layer_with_new_column(index);
            let attended = attention.attend(&query, &keys, &values, sources.as_ref(), &self_bias);
            hidden = layer.attention_norm.forward(&(hidden + attended));

            let grouped = hidden.view([groups, group_size, width]);
            let attended = layer
                .cross_attention
                .forward(
                    &grouped,
                    &state.cross_keys[index],
                    &state.cross_values[index],
                    &state.source_bias,
                )
                .view([rows, 1, width]);
            hidden = layer.cross_attention_norm.forward(&(hidden + attended));
            let transformed = self.feed_forward(&layer.feed_forward, &hidden);
            hidden = layer.final_norm.forward(&(hidden + transformed));
        }
        state.cache.commit_column();
        self.lm_head.forward(&hidden.select(1, 0))
    }

    fn decoder_start_id(&self) -> i64 {
        self.decoder_start_id
    }

    fn eos_id(&self) -> i64 {
        self.eos_id
    }

    fn generation(&self) -> &GenerationDefaults {
        &self.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinusoidal_table_matches_transformers_layout() {
        // transformers: out[:, :dim/2] = sin(pos / 10000^(2i/dim)), out[:, dim/2:] = cos(...)
        let table = sinusoidal_positions(3, 4);
        let value = |row: i64, column: i64| table.double_value(&[row, column]);
        assert_eq!(value(0, 0), 0.0);
        assert_eq!(value(0, 2), 1.0);
        assert!((value(2, 0) - 2f64.sin()).abs() < 1e-6);
        assert!((value(2, 1) - (2.0 / 100f64).sin()).abs() < 1e-6);
        assert!((value(2, 2) - 2f64.cos()).abs() < 1e-6);
        assert!((value(2, 3) - (2.0 / 100f64).cos()).abs() < 1e-6);
    }
}
