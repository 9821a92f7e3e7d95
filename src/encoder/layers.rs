//! Building blocks the encoder architectures share: layer norm, linear
//! layers loaded by name at a precision, embedding lookup, activations and
//! bidirectional self-attention over padded windows.

use tch::Tensor;

use super::shares;
use super::weights::Weights;
use crate::generation::linear::{native_bf16, onednn_int8_available, Linear, Precision};
use crate::native::{window_attention, Post};

pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// `{prefix}.weight` and `{prefix}.bias` (or the `gamma`/`beta` of older
    /// BERT checkpoints).
    pub fn load(weights: &Weights, prefix: &str, eps: f64) -> Result<LayerNorm, String> {
        let get = |name: &str, old_name: &str| match weights.find(&format!("{prefix}.{name}"))? {
            Some(tensor) => Ok(tensor),
            None => weights.get(&format!("{prefix}.{old_name}")),
        };
        Ok(LayerNorm {
            weight: get("weight", "gamma")?,
            bias: get("bias", "beta")?,
            eps,
        })
    }

    /// On the CPU a bf16 input takes the fp32 weights as they are (libtorch
    /// normalises in fp32 either way); CUDA's kernel wants them in the
    /// input's kind.
    pub fn forward(&self, input: &Tensor) -> Tensor {
        let width = self.weight.size()[0];
        let on_cpu = input.device() == tch::Device::Cpu;
        let as_input = |tensor: &Tensor| {
            if on_cpu {
                tensor.shallow_clone()
            } else {
                tensor.to_kind(input.kind())
            }
        };
        input.layer_norm(
            [width],
            Some(&as_input(&self.weight)),
            Some(&as_input(&self.bias)),
            self.eps,
            false,
        )
    }
}

/// The kernels an encoder's linear layers run on: its precision, and at
/// int8 on a CPU with AMX, oneDNN's int8 kernels with bf16 activations
/// between layers instead of fp32 ones. At int8 on another CPU that
/// multiplies bfloat16 natively (AMD Zen 4), attention runs in bf16 between
/// fp32 layers: a 345-token window took 77-92 ms against 90-108 ms with
/// fp32 attention (and 115-121 ms at bf16) on a 2-vCPU Zen 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernels {
    precision: Precision,
    onednn_int8: bool,
    bf16_attention: bool,
}

impl Kernels {
    pub fn choose(precision: Precision, device: tch::Device) -> Kernels {
        let int8_on_cpu = precision == Precision::Int8 && device == tch::Device::Cpu;
        Kernels {
            precision,
            onednn_int8: int8_on_cpu && onednn_int8_available(),
            bf16_attention: int8_on_cpu && native_bf16(),
        }
    }

    /// The kind attention runs in.
    pub fn attention(self) -> tch::Kind {
        if self.bf16_attention {
            tch::Kind::BFloat16
        } else {
            self.activations()
        }
    }

    /// The kind hidden states are carried in between layers.
    pub fn activations(self) -> tch::Kind {
        if self.onednn_int8 {
            tch::Kind::BFloat16
        } else {
            self.precision.activations()
        }
    }

    fn linear(self, weight: &Tensor, bias: &Tensor) -> Result<Linear, String> {
        if self.onednn_int8 {
            Linear::int8_onednn(weight, Some(bias))
        } else {
            Ok(Linear::new(weight, Some(bias), self.precision))
        }
    }
}

/// `{prefix}.weight` and `{prefix}.bias` as a `Linear` on `kernels`.
pub fn linear(weights: &Weights, prefix: &str, kernels: Kernels) -> Result<Linear, String> {
    let weight = weights.get(&format!("{prefix}.weight"))?;
    let bias = weights.get(&format!("{prefix}.bias"))?;
    kernels.linear(&weight, &bias)
}

/// Query, key and value projections fused into one `Linear` (one read of
/// the input), from three layers named `{prefix}.{name}` for each name.
pub fn fused_qkv(
    weights: &Weights,
    prefixes: [&str; 3],
    kernels: Kernels,
) -> Result<Linear, String> {
    let mut matrices = Vec::with_capacity(3);
    let mut biases = Vec::with_capacity(3);
    for prefix in prefixes {
        matrices.push(weights.get(&format!("{prefix}.weight"))?);
        biases.push(weights.get(&format!("{prefix}.bias"))?);
    }
    kernels.linear(&Tensor::cat(&matrices, 0), &Tensor::cat(&biases, 0))
}

/// Fewer rows than this run in one call: splitting would not pay for the threads.
const MIN_ROWS_PER_THREAD: i64 = 32;

/// `linear` over every row of `input` ([..., in] -> [..., out]). At fp16 and
/// int8 a window's rows are split between the cores (`shares`; fp32 and bf16
/// matrix products are threaded by libtorch itself). int8 then quantises the
/// activations of each share with its own scale.
pub fn project(linear: &Linear, input: &Tensor) -> Tensor {
    match shares_of(linear, input) {
        Some(chunks) => shaped(shares::forward_in_shares(linear, chunks), input),
        None => linear.forward(input),
    }
}

/// `input`'s rows ([rows, in]) in as many shares as pay for their
/// threads, or None where the layer runs in one call.
fn shares_of(linear: &Linear, input: &Tensor) -> Option<Vec<Tensor>> {
    let size = input.size();
    let width = size.last().copied().unwrap_or(0);
    let rows: i64 = size[..size.len().saturating_sub(1)].iter().product();
    if matches!(
        linear,
        Linear::Fp32 { .. } | Linear::Bf16 { .. } | Linear::Int8Onednn(_)
    ) || rows < 2 * MIN_ROWS_PER_THREAD
    {
        return None;
    }
    let threads = i64::try_from(shares::threads()).unwrap_or(1);
    let count = threads.min(rows / MIN_ROWS_PER_THREAD);
    (count >= 2).then(|| input.reshape([rows, width]).chunk(count, 0))
}

/// A product's [rows, out] output in `input`'s leading dimensions.
fn shaped(output: Tensor, input: &Tensor) -> Tensor {
    let mut shape = input.size();
    if let Some(last) = shape.last_mut() {
        *last = -1;
    }
    output.view(shape.as_slice())
}

/// Rows of a [vocab, dim] table for [batch, tokens] ids.
pub fn embed(table: &Tensor, ids: &Tensor) -> Tensor {
    let size = ids.size();
    table
        .index_select(0, &ids.view([-1]))
        .view([size[0], size[1], -1])
}

/// A feed-forward activation, by its transformers name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// "gelu": exact, with erf.
    Gelu,
    /// "gelu_new", "gelu_pytorch_tanh".
    GeluTanh,
    Relu,
}

impl Activation {
    pub fn named(name: &str) -> Result<Activation, String> {
        match name {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => Err(format!("unsupported activation {other}")),
        }
    }

    fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Gelu => x.gelu("none"),
            Activation::GeluTanh => x.gelu("tanh"),
            Activation::Relu => x.relu(),
        }
    }
}

/// `activation(linear(input))`, the activation fused into the product
/// where the layer can.
pub fn project_activate(linear: &Linear, input: &Tensor, activation: Activation) -> Tensor {
    match (linear, activation) {
        (Linear::Int8Onednn(_), Activation::Gelu) => linear.forward_fused(input, Post::Gelu, None),
        _ => activation.apply(&project(linear, input)),
    }
}

/// `linear(input) + residual`, the sum fused into the product where the
/// layer can (which may write into `residual`'s storage: the caller gives
/// it up).
pub fn project_add(linear: &Linear, input: &Tensor, residual: Tensor) -> Tensor {
    if let Linear::Int8Onednn(_) = linear {
        return linear.forward_fused(input, Post::None, Some(residual));
    }
    let Some(chunks) = shares_of(linear, input) else {
        return linear.forward(input) + residual;
    };
    // int8 shares on src/native/int8.cpp add into the residual's rows.
    if shares::add_in_shares(linear, &chunks, &residual) {
        return residual;
    }
    shaped(shares::forward_in_shares(linear, chunks), input) + residual
}

/// [windows, 1, 1, keys]: every query sees every real token of its window.
pub fn visible_keys(attention_mask: &Tensor) -> Tensor {
    attention_mask.ne(0).unsqueeze(1).unsqueeze(1)
}

/// Self-attention from fused projections `qkv` ([batch, tokens, 3 dim]),
/// computed in `kind`: the attended values, [batch, tokens, dim], heads
/// merged, in `qkv`'s kind. bf16 attention over fp32 projections runs on
/// src/native/window_attention.cpp where the CPU has AVX-512 BF16: on a
/// 2-vCPU Zen 4, 16-client int8 QA took 102-106 ms of CPU per request with
/// it (and the int8 shares written in place) against 117-127 ms with
/// libtorch's fused kernel, 17.0-17.8 req/s against 14.3-16.1, alternating.
pub fn self_attention(qkv: &Tensor, heads: i64, visible: &Tensor, kind: tch::Kind) -> Tensor {
    if kind == tch::Kind::BFloat16 && window_attention::takes(qkv, heads) {
        let size = qkv.size();
        let threads = crate::openmp::model_threads().max(tch::get_num_threads());
        return window_attention::attend(
            qkv,
            &visible.reshape([size[0], size[1]]),
            heads,
            threads.into(),
        )
        .unwrap_or_else(|error| panic!("window attention: {error}"));
    }
    let given = qkv.kind();
    let qkv = if given == kind {
        qkv.shallow_clone()
    } else {
        qkv.to_kind(kind)
    };
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
    let attended = attended.transpose(1, 2);
    let merged = if given == kind {
        attended.contiguous()
    } else {
        attended.to_kind(given).contiguous()
    };
    merged.view([batch, tokens, width])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generation::linear::fbgemm_available;
    use tch::{Device, Kind};

    /// Split between threads, an int8 layer gives what one call gives, up to
    /// the per-share activation scales.
    #[test]
    fn rows_split_between_threads_match_one_call() {
        if !fbgemm_available() {
            return;
        }
        tch::manual_seed(3);
        let input = Tensor::randn([2, 96, 64], (Kind::Float, Device::Cpu));
        let weight = Tensor::randn([48, 64], (Kind::Float, Device::Cpu)) * 0.1;
        let bias = Tensor::randn([48], (Kind::Float, Device::Cpu));
        let exact = input.linear(&weight, Some(&bias));
        let layer = Linear::new(&weight, Some(&bias), Precision::Int8);
        // Three shares whatever the pool's size (`project` splits only on a
        // pool of two threads or more).
        let split = shares::forward_in_shares(&layer, input.reshape([192, 64]).chunk(3, 0))
            .view([2, 96, 48]);
        assert_eq!(split.size(), [2, 96, 48]);
        assert_eq!(project(&layer, &input).size(), [2, 96, 48]);
        let error = (&split - &exact).abs().max().double_value(&[]);
        let scale = exact.abs().max().double_value(&[]);
        assert!(error / scale < 3e-2, "{error} of {scale}");
        // Row order survives the split: each row stays with its own output.
        let rows = exact.view([-1, 48]).argmax(1, false);
        let split_rows = split.view([-1, 48]).argmax(1, false);
        let agree = rows
            .eq_tensor(&split_rows)
            .to_kind(Kind::Float)
            .mean(Kind::Float);
        assert!(agree.double_value(&[]) > 0.9);
    }
}
