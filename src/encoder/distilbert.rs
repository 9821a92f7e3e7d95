//! DistilBERT with its question-answering head (transformers'
//! `DistilBertForQuestionAnswering`), loaded by the checkpoint's tensor names
//! from `model.safetensors` or `rust_model.ot`. Linear layers run at the
//! configured `Precision`; at fp32 the spans are transformers' own (tests/oracle).

use std::path::Path;

use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use super::weights::Weights;
use super::{PaddedWindows, SpanEncoder};
use crate::generation::linear::{Linear, Precision};

/// DistilBERT's layer-norm epsilon (fixed in transformers, not configured).
const LAYER_NORM_EPS: f64 = 1e-12;

/// config.json as transformers writes it; a key it leaves out takes
/// transformers' default (`DistilBertConfig`), and keys it adds are ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DistilBertConfig {
    pub dim: i64,
    pub n_heads: i64,
    pub n_layers: usize,
    pub hidden_dim: i64,
    pub activation: String,
    pub max_position_embeddings: i64,
    pub pad_token_id: i64,
}

impl Default for DistilBertConfig {
    fn default() -> Self {
        DistilBertConfig {
            dim: 768,
            n_heads: 12,
            n_layers: 6,
            hidden_dim: 3072,
            activation: "gelu".to_string(),
            max_position_embeddings: 512,
            pad_token_id: 0,
        }
    }
}

impl DistilBertConfig {
    pub fn read(path: &Path) -> Result<DistilBertConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let config: DistilBertConfig = serde_json::from_str(&text)
            .map_err(|error| format!("{} is not a DistilBERT config: {error}", path.display()))?;
        if config.n_heads <= 0 || config.dim % config.n_heads != 0 {
            return Err(format!(
                "{}: dim {} is not a multiple of n_heads {}",
                path.display(),
                config.dim,
                config.n_heads
            ));
        }
        Ok(config)
    }
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    fn load(weights: &Weights, prefix: &str) -> Result<LayerNorm, String> {
        Ok(LayerNorm {
            weight: weights.get(&format!("{prefix}.weight"))?,
            bias: weights.get(&format!("{prefix}.bias"))?,
        })
    }

    fn forward(&self, input: &Tensor) -> Tensor {
        let width = self.weight.size()[0];
        input.layer_norm(
            [width],
            Some(&self.weight),
            Some(&self.bias),
            LAYER_NORM_EPS,
            false,
        )
    }
}

fn linear(weights: &Weights, prefix: &str, precision: Precision) -> Result<Linear, String> {
    let weight = weights.get(&format!("{prefix}.weight"))?;
    let bias = weights.get(&format!("{prefix}.bias"))?;
    Ok(Linear::new(&weight, Some(&bias), precision))
}

/// One transformer block: post-norm self-attention, then the feed-forward net.
struct Layer {
    /// q_lin, k_lin and v_lin as one projection (one read of the input).
    qkv: Linear,
    out_lin: Linear,
    sa_layer_norm: LayerNorm,
    lin1: Linear,
    lin2: Linear,
    output_layer_norm: LayerNorm,
}

impl Layer {
    fn load(weights: &Weights, prefix: &str, precision: Precision) -> Result<Layer, String> {
        let attention = format!("{prefix}.attention");
        let part = |name: &str, kind: &str| weights.get(&format!("{attention}.{name}.{kind}"));
        let qkv_weight = Tensor::cat(
            &[
                part("q_lin", "weight")?,
                part("k_lin", "weight")?,
                part("v_lin", "weight")?,
            ],
            0,
        );
        let qkv_bias = Tensor::cat(
            &[
                part("q_lin", "bias")?,
                part("k_lin", "bias")?,
                part("v_lin", "bias")?,
            ],
            0,
        );
        Ok(Layer {
            qkv: Linear::new(&qkv_weight, Some(&qkv_bias), precision),
            out_lin: linear(weights, &format!("{attention}.out_lin"), precision)?,
            sa_layer_norm: LayerNorm::load(weights, &format!("{prefix}.sa_layer_norm"))?,
            lin1: linear(weights, &format!("{prefix}.ffn.lin1"), precision)?,
            lin2: linear(weights, &format!("{prefix}.ffn.lin2"), precision)?,
            output_layer_norm: LayerNorm::load(weights, &format!("{prefix}.output_layer_norm"))?,
        })
    }
}

pub struct DistilBertQa {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    /// [2, dim]: start and end logits; kept at fp32 (two rows, no gain).
    qa_outputs: Linear,
    activation: fn(&Tensor) -> Tensor,
    heads: i64,
    head_dim: i64,
    pad_id: i64,
    device: Device,
}

impl DistilBertQa {
    pub fn load(
        config_path: &Path,
        weights_path: &Path,
        precision: Precision,
        device: Device,
    ) -> Result<DistilBertQa, String> {
        let config = DistilBertConfig::read(config_path)?;
        let activation: fn(&Tensor) -> Tensor = match config.activation.as_str() {
            "gelu" => |x| x.gelu("none"),
            "gelu_new" | "gelu_pytorch_tanh" => |x| x.gelu("tanh"),
            "relu" => Tensor::relu,
            other => return Err(format!("unsupported DistilBERT activation {other}")),
        };
        let weights = Weights::read(weights_path, device)?;
        let layers = (0..config.n_layers)
            .map(|index| {
                Layer::load(
                    &weights,
                    &format!("distilbert.transformer.layer.{index}"),
                    precision,
                )
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(DistilBertQa {
            word_embeddings: weights.get("distilbert.embeddings.word_embeddings.weight")?,
            position_embeddings: weights.get("distilbert.embeddings.position_embeddings.weight")?,
            embeddings_norm: LayerNorm::load(&weights, "distilbert.embeddings.LayerNorm")?,
            layers,
            qa_outputs: linear(&weights, "qa_outputs", Precision::Fp32)?,
            activation,
            heads: config.n_heads,
            head_dim: config.dim / config.n_heads,
            pad_id: config.pad_token_id,
            device: weights.device(),
        })
    }

    /// [batch, tokens, dim] -> [batch, heads, tokens, head_dim]
    fn split_heads(&self, x: &Tensor) -> Tensor {
        let size = x.size();
        x.view([size[0], size[1], self.heads, self.head_dim])
            .transpose(1, 2)
    }

    fn layer(&self, layer: &Layer, hidden: &Tensor, visible: &Tensor) -> Tensor {
        let qkv = layer.qkv.forward(hidden);
        let parts = qkv.split(self.heads * self.head_dim, 2);
        let attended = Tensor::scaled_dot_product_attention(
            &self.split_heads(&parts[0]),
            &self.split_heads(&parts[1]),
            &self.split_heads(&parts[2]),
            Some(visible),
            0.0,
            false,
            None,
        );
        let size = hidden.size();
        let merged = attended
            .transpose(1, 2)
            .contiguous()
            .view([size[0], size[1], -1]);
        let attended = layer
            .sa_layer_norm
            .forward(&(layer.out_lin.forward(&merged) + hidden));
        let inner = (self.activation)(&layer.lin1.forward(&attended));
        layer
            .output_layer_norm
            .forward(&(layer.lin2.forward(&inner) + &attended))
    }
}

impl SpanEncoder for DistilBertQa {
    fn span_logits(&self, windows: &PaddedWindows) -> (Tensor, Tensor) {
        let columns = windows.ids.size()[1];
        let positions = Tensor::arange(columns, (Kind::Int64, self.device));
        let embedded = embed(&self.word_embeddings, &windows.ids)
            + self
                .position_embeddings
                .index_select(0, &positions)
                .unsqueeze(0);
        let mut hidden = self.embeddings_norm.forward(&embedded);
        // [windows, 1, 1, keys]: a query sees every real token of its window.
        let visible = windows.attention_mask.ne(0).unsqueeze(1).unsqueeze(1);
        for layer in &self.layers {
            hidden = self.layer(layer, &hidden, &visible);
        }
        let logits = self.qa_outputs.forward(&hidden);
        let parts = logits.split(1, 2);
        (parts[0].squeeze_dim(2), parts[1].squeeze_dim(2))
    }

    fn pad_id(&self) -> i64 {
        self.pad_id
    }

    fn device(&self) -> Device {
        self.device
    }
}

/// Rows of a [vocab, dim] table for [batch, tokens] ids.
fn embed(table: &Tensor, ids: &Tensor) -> Tensor {
    let size = ids.size();
    table
        .index_select(0, &ids.view([-1]))
        .view([size[0], size[1], -1])
}
