//! Building blocks the encoder architectures share: layer norm, linear
//! layers loaded by name at a precision, embedding lookup, activations and
//! bidirectional self-attention over padded windows.

use tch::Tensor;

use super::weights::Weights;
use crate::generation::linear::{Linear, Precision};

pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// `{prefix}.weight` and `{prefix}.bias` (or the `gamma`/`beta` of older
    /// BERT checkpoints).
    pub fn load(weights: &Weights, prefix: &str, eps: f64) -> Result<LayerNorm, String> {
        let get = |name: &str, old_name: &str| {
            weights
                .get(&format!("{prefix}.{name}"))
                .or_else(|_| weights.get(&format!("{prefix}.{old_name}")))
        };
        Ok(LayerNorm {
            weight: get("weight", "gamma")?,
            bias: get("bias", "beta")?,
            eps,
        })
    }

    pub fn forward(&self, input: &Tensor) -> Tensor {
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

/// `{prefix}.weight` and `{prefix}.bias` as a `Linear` at `precision`.
pub fn linear(weights: &Weights, prefix: &str, precision: Precision) -> Result<Linear, String> {
    let weight = weights.get(&format!("{prefix}.weight"))?;
    let bias = weights.get(&format!("{prefix}.bias"))?;
    Ok(Linear::new(&weight, Some(&bias), precision))
}

/// Query, key and value projections fused into one `Linear` (one read of
/// the input), from three layers named `{prefix}.{name}` for each name.
pub fn fused_qkv(
    weights: &Weights,
    prefixes: [&str; 3],
    precision: Precision,
) -> Result<Linear, String> {
    let mut matrices = Vec::with_capacity(3);
    let mut biases = Vec::with_capacity(3);
    for prefix in prefixes {
        matrices.push(weights.get(&format!("{prefix}.weight"))?);
        biases.push(weights.get(&format!("{prefix}.bias"))?);
    }
    Ok(Linear::new(
        &Tensor::cat(&matrices, 0),
        Some(&Tensor::cat(&biases, 0)),
        precision,
    ))
}

/// Rows of a [vocab, dim] table for [batch, tokens] ids.
pub fn embed(table: &Tensor, ids: &Tensor) -> Tensor {
    let size = ids.size();
    table
        .index_select(0, &ids.view([-1]))
        .view([size[0], size[1], -1])
}

/// An activation by its transformers name.
pub fn activation(name: &str) -> Result<fn(&Tensor) -> Tensor, String> {
    match name {
        "gelu" => Ok(|x| x.gelu("none")),
        "gelu_new" | "gelu_pytorch_tanh" => Ok(|x| x.gelu("tanh")),
        "relu" => Ok(Tensor::relu),
        other => Err(format!("unsupported activation {other}")),
    }
}

/// [windows, 1, 1, keys]: every query sees every real token of its window.
pub fn visible_keys(attention_mask: &Tensor) -> Tensor {
    attention_mask.ne(0).unsqueeze(1).unsqueeze(1)
}

/// Self-attention from fused projections `qkv` ([batch, tokens, 3 dim]):
/// the attended values, [batch, tokens, dim], heads merged.
pub fn self_attention(qkv: &Tensor, heads: i64, visible: &Tensor) -> Tensor {
    let size = qkv.size();
    let (batch, tokens, width) = (size[0], size[1], size[2] / 3);
    let split_heads = |x: &Tensor| {
        x.view([batch, tokens, heads, width / heads])
            .transpose(1, 2)
    };
    let parts = qkv.split(width, 2);
    let attended = Tensor::scaled_dot_product_attention(
        &split_heads(&parts[0]),
        &split_heads(&parts[1]),
        &split_heads(&parts[2]),
        Some(visible),
        0.0,
        false,
        None,
    );
    attended
        .transpose(1, 2)
        .contiguous()
        .view([batch, tokens, width])
}
