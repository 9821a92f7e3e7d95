//! DistilBERT with its question-answering head (transformers'
//! `DistilBertForQuestionAnswering`), loaded by the checkpoint's tensor names
//! from `model.safetensors` or `rust_model.ot`. Linear layers run at the
//! configured `Precision`; at fp32 the spans are transformers' own (tests/oracle).

use std::path::Path;

use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use super::layers::{
    embed, fused_qkv, linear, project, project_activate, project_add, self_attention, visible_keys,
    Activation, Kernels, LayerNorm,
};
use super::weights::{read_config, Weights};
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

/// One transformer block: post-norm self-attention, then the feed-forward net.
struct Layer {
    /// q_lin, k_lin and v_lin as one projection.
    qkv: Linear,
    out_lin: Linear,
    sa_layer_norm: LayerNorm,
    lin1: Linear,
    lin2: Linear,
    output_layer_norm: LayerNorm,
}

impl Layer {
    fn load(weights: &Weights, prefix: &str, kernels: Kernels) -> Result<Layer, String> {
        let attention = format!("{prefix}.attention");
        Ok(Layer {
            qkv: fused_qkv(
                weights,
                [
                    &format!("{attention}.q_lin"),
                    &format!("{attention}.k_lin"),
                    &format!("{attention}.v_lin"),
                ],
                kernels,
            )?,
            out_lin: linear(weights, &format!("{attention}.out_lin"), kernels)?,
            sa_layer_norm: LayerNorm::load(
                weights,
                &format!("{prefix}.sa_layer_norm"),
                LAYER_NORM_EPS,
            )?,
            lin1: linear(weights, &format!("{prefix}.ffn.lin1"), kernels)?,
            lin2: linear(weights, &format!("{prefix}.ffn.lin2"), kernels)?,
            output_layer_norm: LayerNorm::load(
                weights,
                &format!("{prefix}.output_layer_norm"),
                LAYER_NORM_EPS,
            )?,
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
    activation: Activation,
    heads: i64,
    pad_id: i64,
    device: Device,
    /// The kind hidden states are carried in (bf16 at bf16, else fp32).
    activations: Kind,
    /// The kind attention runs in (`Kernels::attention`).
    attention: Kind,
}

impl DistilBertQa {
    pub fn load(
        config_path: &Path,
        weights_path: &Path,
        precision: Precision,
        device: Device,
    ) -> Result<DistilBertQa, String> {
        let config: DistilBertConfig = read_config(config_path)?;
        if config.n_heads <= 0 || config.dim % config.n_heads != 0 {
            return Err(format!(
                "dim {} is not a multiple of n_heads {}",
                config.dim, config.n_heads
            ));
        }
        let weights = Weights::read(weights_path, device)?;
        let kernels = Kernels::choose(precision, weights.device());
        let layers = (0..config.n_layers)
            .map(|index| {
                Layer::load(
                    &weights,
                    &format!("distilbert.transformer.layer.{index}"),
                    kernels,
                )
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(DistilBertQa {
            word_embeddings: weights.get("distilbert.embeddings.word_embeddings.weight")?,
            position_embeddings: weights.get("distilbert.embeddings.position_embeddings.weight")?,
            embeddings_norm: LayerNorm::load(
                &weights,
                "distilbert.embeddings.LayerNorm",
                LAYER_NORM_EPS,
            )?,
            layers,
            qa_outputs: linear(
                &weights,
                "qa_outputs",
                Kernels::choose(Precision::Fp32, device),
            )?,
            activation: Activation::named(&config.activation)?,
            heads: config.n_heads,
            pad_id: config.pad_token_id,
            device: weights.device(),
            activations: kernels.activations(),
            attention: kernels.attention(),
        })
    }

    /// One block over `hidden`, whose storage it may reuse (a fused
    /// residual sum writes into it).
    fn layer(&self, layer: &Layer, hidden: Tensor, visible: &Tensor) -> Tensor {
        let attended = self_attention(
            &project(&layer.qkv, &hidden),
            self.heads,
            visible,
            self.attention,
        );
        let attended = layer
            .sa_layer_norm
            .forward(&project_add(&layer.out_lin, &attended, hidden));
        let inner = project_activate(&layer.lin1, &attended, self.activation);
        layer
            .output_layer_norm
            .forward(&project_add(&layer.lin2, &inner, attended))
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
        let mut hidden = self
            .embeddings_norm
            .forward(&embedded)
            .to_kind(self.activations);
        let visible = visible_keys(&windows.attention_mask);
        for layer in &self.layers {
            hidden = self.layer(layer, hidden, &visible);
        }
        super::split_span_logits(&self.qa_outputs.forward(&hidden.to_kind(Kind::Float)))
    }

    fn pad_id(&self) -> i64 {
        self.pad_id
    }

    fn device(&self) -> Device {
        self.device
    }
}
