//! Pieces every decoder-only forward pass here shares: layer norm, the
//! left-padded layout of a prefill (ids, positions, attention bias) and
//! splitting hidden states into attention heads. The architectures
//! (`gpt2`, `gpt_neo`, `gptj`) differ in what they do between these.

use tch::{Device, Kind, Tensor};

use super::checkpoint::Checkpoint;
use super::kv_cache::gather_columns;
use super::linear::{Linear, Precision};
use crate::native::attention;

/// The shape numbers a caller needs.
#[derive(Debug, Clone, Copy)]
pub struct DecoderShape {
    pub layers: usize,
    pub heads: i64,
    pub head_dim: i64,
    pub context_length: usize,
    pub vocab_size: i64,
}

pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// `{prefix}.weight` and `{prefix}.bias` of `checkpoint`.
    pub(crate) fn read(checkpoint: &Checkpoint, prefix: &str, eps: f64) -> Result<Self, String> {
        Ok(LayerNorm {
            weight: checkpoint.get(&format!("{prefix}.weight"))?,
            bias: checkpoint.get(&format!("{prefix}.bias"))?,
            eps,
        })
    }

    pub(crate) fn forward(&self, input: &Tensor) -> Tensor {
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

/// Several prompts laid out left-padded in one [rows, columns] block.
pub(crate) struct LeftPadded {
    pub rows: i64,
    pub columns: i64,
    /// Per row, the first column holding a token.
    pub starts: Vec<i64>,
    /// Row-major ids (0 on padding).
    pub ids: Vec<i64>,
    /// Row-major positions, counted from each row's first token (0 on padding).
    pub positions: Vec<i64>,
}

impl LeftPadded {
    pub(crate) fn new(prompts: &[&[i64]]) -> LeftPadded {
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
        LeftPadded {
            rows,
            columns,
            starts,
            ids,
            positions,
        }
    }

    /// Additive attention bias, [rows, 1, columns, columns]: a query sees the
    /// tokens of its row up to itself, and with a `window` only the last
    /// `window` of them (itself included). A padding query also sees itself,
    /// so no softmax row is empty; its output is never attended to.
    pub(crate) fn attention_bias(&self, window: Option<i64>, device: Device) -> Tensor {
        let position = Tensor::arange(self.columns, (Kind::Int64, device));
        let query = position.view([1, self.columns, 1]);
        let key = position.view([1, 1, self.columns]);
        let starts = Tensor::from_slice(&self.starts)
            .to_device(device)
            .view([-1, 1, 1]);
        let mut visible = key
            .le_tensor(&query)
            .logical_and(&key.ge_tensor(&starts).logical_or(&key.eq_tensor(&query)));
        if let Some(window) = window {
            // Within a row tokens sit in consecutive columns, so a column
            // distance is a distance in positions.
            visible = visible.logical_and(&(&query - &key).lt(window));
        }
        Tensor::zeros(visible.size(), (Kind::Float, device))
            .masked_fill(&visible.logical_not(), f64::NEG_INFINITY)
            .unsqueeze(1)
    }
}

/// The step's bias from `KvCache::attention_bias` (padding hidden),
/// [rows, 1, 1, keys], further limited to the last `window` keys (the new
/// one included) for a local attention layer.
pub(crate) fn windowed(bias: &Tensor, window: i64) -> Tensor {
    let keys = bias.size()[3];
    if keys <= window {
        return bias.shallow_clone();
    }
    let outside = Tensor::arange(keys, (Kind::Int64, bias.device())).lt(keys - window);
    bias.masked_fill(&outside.view([1, 1, 1, keys]), f64::NEG_INFINITY)
}

/// The separate bias-free query, key and value projections `{prefix}.q_proj`,
/// `k_proj`, `v_proj` (nn.Linear, [out, in]) as one layer whose output is
/// the three side by side: one matrix product per step instead of three.
pub(crate) fn fused_qkv(
    checkpoint: &Checkpoint,
    prefix: &str,
    precision: Precision,
) -> Result<Linear, String> {
    let weights = ["q_proj", "k_proj", "v_proj"]
        .iter()
        .map(|name| checkpoint.get(&format!("{prefix}.{name}.weight")))
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Linear::stacked(&weights, None, precision))
}

/// A fused projection's output split into query, keys and values, each
/// [batch, heads, tokens, head_dim].
pub(crate) fn split_qkv(qkv: &Tensor, heads: i64) -> (Tensor, Tensor, Tensor) {
    let parts = qkv.split(qkv.size()[2] / 3, 2);
    (
        split_heads(&parts[0], heads),
        split_heads(&parts[1], heads),
        split_heads(&parts[2], heads),
    )
}

/// [batch, tokens, heads * head_dim] -> [batch, heads, tokens, head_dim]
pub(crate) fn split_heads(x: &Tensor, heads: i64) -> Tensor {
    let size = x.size();
    x.view([size[0], size[1], heads, size[2] / heads])
        .transpose(1, 2)
}

/// [batch, heads, tokens, head_dim] -> [batch, tokens, heads * head_dim]
pub(crate) fn merge_heads(x: &Tensor) -> Tensor {
    let size = x.size();
    x.transpose(1, 2)
        .contiguous()
        .view([size[0], size[2], size[1] * size[3]])
}

/// Attention of `query` over `keys` and `values` ([batch, heads, tokens,
/// head_dim] each), scores scaled by `scale` and shifted by the additive
/// `bias`; heads merged again. A decoding step's few queries per row run
/// on src/native/attention.cpp, split between the model thread and its
/// crew; a prefill's on libtorch's fused kernel (no [batch, heads, tokens,
/// keys] scores written and read back), with MKL single-threaded in a
/// single-threaded step (`openmp::mkl_alone_in_small_steps`).
pub(crate) fn attend(
    query: &Tensor,
    keys: &Tensor,
    values: &Tensor,
    bias: &Tensor,
    scale: f64,
) -> Tensor {
    attend_through(query, keys, values, None, bias, scale)
}

/// `attend` over key and value buffers whose rows are picked per column
/// where `sources` ([batch, tokens] int64) is given: row b's column k is
/// buffer row `sources[b][k]` (a beam search's deferred reorder,
/// `KvCache::row_sources`).
pub(crate) fn attend_through(
    query: &Tensor,
    keys: &Tensor,
    values: &Tensor,
    sources: Option<&Tensor>,
    bias: &Tensor,
    scale: f64,
) -> Tensor {
    if attention::takes(query, keys, values, bias) {
        let threads = i64::from(crate::openmp::model_threads());
        match attention::attend(query, keys, values, bias, sources, scale, threads) {
            Ok(attended) => return attended,
            Err(error) => tracing::debug!(%error, "decoding attention fell back to libtorch's"),
        }
    }
    let (keys, values) = match sources {
        Some(sources) => (
            gather_columns(keys, sources),
            gather_columns(values, sources),
        ),
        None => (keys.shallow_clone(), values.shallow_clone()),
    };
    merge_heads(&crate::openmp::mkl_alone_in_small_steps(|| {
        Tensor::scaled_dot_product_attention(
            query,
            &keys,
            &values,
            Some(bias),
            0.0,
            false,
            Some(scale),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1.0 where the bias lets a query see a key, 0.0 where it hides it.
    fn visible(bias: &Tensor) -> Vec<Vec<f64>> {
        let seen = bias.isfinite().to_kind(Kind::Float);
        let size = seen.size();
        let flat = seen.view([-1, size[size.len() - 1]]);
        (0..flat.size()[0])
            .map(|row| {
                let values = flat.get(row);
                (0..values.size()[0])
                    .map(|column| values.double_value(&[column]))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn left_padding_counts_positions_from_each_first_token() {
        let padded = LeftPadded::new(&[&[11, 12, 13], &[21]]);
        assert_eq!(padded.starts, vec![0, 2]);
        assert_eq!(padded.ids, vec![11, 12, 13, 0, 0, 21]);
        assert_eq!(padded.positions, vec![0, 1, 2, 0, 0, 0]);
    }

    #[test]
    fn a_local_window_hides_keys_older_than_it_in_prefill() {
        let padded = LeftPadded::new(&[&[1, 2, 3], &[4, 5]]);
        let bias = padded.attention_bias(Some(2), Device::Cpu);
        assert_eq!(
            visible(&bias),
            vec![
                // row 0: each query sees itself and the key before it.
                vec![1.0, 0.0, 0.0],
                vec![1.0, 1.0, 0.0],
                vec![0.0, 1.0, 1.0],
                // row 1: column 0 is padding (seen only by itself).
                vec![1.0, 0.0, 0.0],
                vec![0.0, 1.0, 0.0],
                vec![0.0, 1.0, 1.0],
            ]
        );
    }

    #[test]
    fn a_local_window_in_a_step_keeps_the_last_keys_and_the_padding_mask() {
        // Two rows over 5 keys; row 1's first 3 columns are padding.
        let bias = Tensor::zeros([2, 1, 1, 5], (Kind::Float, Device::Cpu));
        let _ = bias.get(1).narrow(2, 0, 3).fill_(f64::NEG_INFINITY);
        assert_eq!(
            visible(&windowed(&bias, 3)),
            vec![vec![0.0, 0.0, 1.0, 1.0, 1.0], vec![0.0, 0.0, 0.0, 1.0, 1.0]]
        );
        assert_eq!(visible(&windowed(&bias, 8)), visible(&bias));
    }
}
