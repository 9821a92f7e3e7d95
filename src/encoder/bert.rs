//! BERT with its question-answering head (transformers'
//! `BertForQuestionAnswering`), loaded by the checkpoint's tensor names from
//! `model.safetensors` or `rust_model.ot`. Unlike DistilBERT it adds segment
//! (token type) embeddings: 0 for `[CLS] question [SEP]`, 1 for the context.

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

/// config.json with transformers' `BertConfig` defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct BertConfig {
    pub hidden_size: i64,
    pub num_attention_heads: i64,
    pub num_hidden_layers: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    pub pad_token_id: i64,
}

impl Default for BertConfig {
    fn default() -> Self {
        BertConfig {
            hidden_size: 768,
            num_attention_heads: 12,
            num_hidden_layers: 12,
            hidden_act: "gelu".to_string(),
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
        }
    }
}

/// One post-norm transformer block.
struct Layer {
    /// attention.self.{query,key,value} as one projection.
    qkv: Linear,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

impl Layer {
    fn load(
        weights: &Weights,
        prefix: &str,
        config: &BertConfig,
        kernels: Kernels,
    ) -> Result<Layer, String> {
        let eps = config.layer_norm_eps;
        Ok(Layer {
            qkv: fused_qkv(
                weights,
                [
                    &format!("{prefix}.attention.self.query"),
                    &format!("{prefix}.attention.self.key"),
                    &format!("{prefix}.attention.self.value"),
                ],
                kernels,
            )?,
            attention_output: linear(
                weights,
                &format!("{prefix}.attention.output.dense"),
                kernels,
            )?,
            attention_norm: LayerNorm::load(
                weights,
                &format!("{prefix}.attention.output.LayerNorm"),
                eps,
            )?,
            intermediate: linear(weights, &format!("{prefix}.intermediate.dense"), kernels)?,
            output: linear(weights, &format!("{prefix}.output.dense"), kernels)?,
            output_norm: LayerNorm::load(weights, &format!("{prefix}.output.LayerNorm"), eps)?,
        })
    }
}

pub struct BertQa {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embeddings: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    /// [2, hidden]: start and end logits; kept at fp32.
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

impl BertQa {
    pub fn load(
        config_path: &Path,
        weights_path: &Path,
        precision: Precision,
        device: Device,
    ) -> Result<BertQa, String> {
        let config: BertConfig = read_config(config_path)?;
        let heads = config.num_attention_heads;
        if heads <= 0 || config.hidden_size % heads != 0 {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {heads}",
                config.hidden_size
            ));
        }
        let weights = Weights::read(weights_path, device)?;
        let kernels = Kernels::choose(precision, weights.device());
        let layers = (0..config.num_hidden_layers)
            .map(|index| {
                Layer::load(
                    &weights,
                    &format!("bert.encoder.layer.{index}"),
                    &config,
                    kernels,
                )
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(BertQa {
            word_embeddings: weights.get("bert.embeddings.word_embeddings.weight")?,
            position_embeddings: weights.get("bert.embeddings.position_embeddings.weight")?,
            token_type_embeddings: weights.get("bert.embeddings.token_type_embeddings.weight")?,
            embeddings_norm: LayerNorm::load(
                &weights,
                "bert.embeddings.LayerNorm",
                config.layer_norm_eps,
            )?,
            layers,
            qa_outputs: linear(
                &weights,
                "qa_outputs",
                Kernels::choose(Precision::Fp32, device),
            )?,
            activation: Activation::named(&config.hidden_act)?,
            heads,
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
        let attended =
            layer
                .attention_norm
                .forward(&project_add(&layer.attention_output, &attended, hidden));
        let inner = project_activate(&layer.intermediate, &attended, self.activation);
        layer
            .output_norm
            .forward(&project_add(&layer.output, &inner, attended))
    }
}

impl SpanEncoder for BertQa {
    fn span_logits(&self, windows: &PaddedWindows) -> (Tensor, Tensor) {
        let columns = windows.ids.size()[1];
        let positions = Tensor::arange(columns, (Kind::Int64, self.device));
        let embedded = embed(&self.word_embeddings, &windows.ids)
            + embed(&self.token_type_embeddings, &windows.token_types)
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
