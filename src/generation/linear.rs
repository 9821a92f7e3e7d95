//! Linear layers at the precision a model is configured for.
//!
//! fp32 is the reference. fp16 and int8 keep activations in fp32 and store
//! weights packed for their kernels, so each decoding step reads half or a
//! quarter of the bytes. int8 quantises every output row with its own scale
//! (per-channel). On a CPU with AVX-512 VNNI it runs on our own kernel
//! (src/native/int8.cpp, `int8::Blocks`): activations quantised per row
//! inside the call, scales and bias applied as the output is written. On
//! one thread of a 2-vCPU Zen 4 it took 0.8-1.15x fbgemm's time from 4 to
//! 384 rows and less on one row (GPT-2's vocabulary: 1.9-2.5 against
//! 2.3-2.7 ms); split with the crew (below) a GPT-2 step's int8 layers took
//! 2.8 ms against fbgemm's 5.1 at one row. Elsewhere (AVX2) it
//! runs on libtorch's fbgemm kernel, which takes one scale per matrix, so
//! the rows are normalised before quantising and the scales are applied to
//! the output.
//! bf16 stores weights as bfloat16 for oneDNN's kernels (AMX or AVX-512 BF16
//! where the CPU has them): it halves the bytes as fp16 does, and on such a
//! CPU a large product (an encoder window) runs several times faster than
//! fp32. A bf16 layer takes and gives the kind of its input: an encoder
//! carries bf16 activations from layer to layer, a decoder keeps fp32 ones
//! and each layer converts.
//!
//! An encoder on a CPU with AMX runs int8 on oneDNN's kernels instead
//! (`Linear::int8_onednn`, src/native): weights quantised per row to 8
//! bits, activations per call to uint8, output in the input's kind (bf16
//! between an encoder's layers). On a window's hundreds of rows its product
//! is 2-3x faster than bf16 and fbgemm's int8; on a decoding step's few rows
//! the int8 kernels above are faster, so decoders keep them, except that on
//! such a CPU an int8 projection onto a vocabulary also keeps a oneDNN copy
//! for steps of many rows (`WIDE_ROWS`: 16 clients' beams, a batch of
//! prompts; measured against fbgemm).
//!
//! A model thread's int8 products, and its fp32 ones over a few rows
//! (`FEW_ROWS`, src/native/fp32.cpp), are split between it and a crew of
//! helper threads that poll between products (src/native/crew.h): a
//! decoding step's product over one row streams megabytes of weights, which
//! two cores read about twice as fast as one, and libtorch's threads sleep
//! after each product.

use serde::Deserialize;
use tch::{Kind, Tensor};

use crate::native::{self, int8, PackedInt8, Post};

/// Largest quantised weight magnitude. fbgemm (and int8.cpp's AVX2 loop)
/// multiply unsigned 8-bit activations by signed 8-bit weights and add
/// pairs in 16 bits (vpmaddubsw), which saturates when both weights of a
/// pair exceed 64 in magnitude; 7-bit weights (as PyTorch's `reduce_range`)
/// never saturate.
const WEIGHT_LEVELS: f64 = 63.0;

/// oneDNN's int8 product on AMX or VNNI accumulates in 32 bits: full 8-bit
/// weights (elsewhere `WEIGHT_LEVELS`, see `native::int8_sums_in_32_bits`).
const ONEDNN_WEIGHT_LEVELS: f64 = 127.0;

/// Layers with at least this many outputs (a projection onto a
/// vocabulary) run on all threads even in a single-threaded step (on
/// fbgemm; the blocks kernel splits every layer with the crew), and get
/// a oneDNN copy on AMX CPUs. At 64 rows oneDNN's int8
/// product over opus-mt's 58,101 words takes 1.4 ms against fbgemm's 3.4
/// (GPT-2's 50,257: 1.6 against 4.3); on 512- to 2,048-wide layers fbgemm
/// was faster at every row count up to 128.
const WIDE_OUTPUTS: i64 = 8192;

/// From this many rows oneDNN's product beats fbgemm's on a vocabulary
/// (16 rows: 0.76 against 1.12 ms; 8 rows: even).
const WIDE_ROWS: i64 = 16;

/// Weights quantised per block of rows while loading (4M: 16 MB of fp32).
const QUANTIZE_BLOCK_ELEMENTS: i64 = 4 << 20;

/// How a model's linear weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Fp16,
    Int8,
    Bf16,
}

impl Precision {
    /// The precisions measured against fp32 (`precision-report`).
    pub const REDUCED: [Precision; 3] = [Precision::Fp16, Precision::Int8, Precision::Bf16];

    /// `REDUCED` as worth measuring on this CPU: bf16 only where it
    /// multiplies bfloat16 natively (`native_bf16`). Elsewhere it is
    /// emulated: one QA window took 14 s at bf16 against 0.26 s at int8 on
    /// a 2-vCPU AMD EPYC.
    pub fn reduced_here() -> Vec<Precision> {
        Self::REDUCED
            .into_iter()
            .filter(|&precision| precision != Precision::Bf16 || native_bf16())
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
            Precision::Bf16 => "bf16",
        }
    }

    /// fp16 and int8 run on libtorch's fbgemm kernels (CPU, x86-64 with
    /// AVX2); fp32 and bf16 run wherever libtorch does.
    pub fn needs_fbgemm(self) -> bool {
        matches!(self, Precision::Fp16 | Precision::Int8)
    }

    /// The precision of an output projection onto a vocabulary: bf16 would
    /// round the logits themselves to 8 significant bits (steps of 0.25 at
    /// -50), enough to reorder near ties and skew sampling, so a bf16 model
    /// projects its logits at fp32. fp16 and int8 kernels give fp32 outputs.
    pub fn for_logits(self) -> Precision {
        match self {
            Precision::Bf16 => Precision::Fp32,
            other => other,
        }
    }

    /// The kind an encoder carries its activations in between layers.
    pub fn activations(self) -> Kind {
        match self {
            Precision::Bf16 => Kind::BFloat16,
            _ => Kind::Float,
        }
    }
}

/// Whether this CPU multiplies bfloat16 natively (AMX or AVX-512 BF16): bf16
/// runs anywhere, but without these it is slower than fp32.
pub fn native_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // Every CPU with AMX (Sapphire Rapids on) also has AVX-512 BF16.
        std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("bf16")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// `y = x W^T + b` with W of shape [out, in].
pub enum Linear {
    Fp32 {
        weight: Tensor,
        bias: Option<Tensor>,
    },
    Fp16 {
        packed: Tensor,
        bias: Tensor,
    },
    Int8 {
        weights: Int8Weights,
        /// A projection onto a vocabulary on a CPU with AMX also keeps its
        /// weights packed for oneDNN, which runs it for `WIDE_ROWS` rows or
        /// more (see `WIDE_OUTPUTS`).
        wide: Option<Box<Linear>>,
    },
    Bf16 {
        weight: Tensor,
        bias: Option<Tensor>,
    },
    /// int8 on oneDNN's kernels (encoders on AMX CPUs; `int8_onednn`).
    Int8Onednn(PackedInt8),
}

impl Linear {
    /// `weight` is [out, in] in fp32; fp16 and int8 need fbgemm (CPU,
    /// x86-64 with AVX2), checked by the caller through `fbgemm_available`.
    pub fn new(weight: &Tensor, bias: Option<&Tensor>, precision: Precision) -> Linear {
        let bias = bias.map(|b| b.detach().to_kind(Kind::Float));
        let dense = || weight.detach().to_kind(Kind::Float).contiguous();
        match precision {
            // Shares the loaded storage, whatever its layout.
            Precision::Fp32 => Linear::Fp32 {
                weight: weight.detach(),
                bias,
            },
            Precision::Fp16 => Self::fp16(&dense(), bias),
            Precision::Int8 => Self::int8(&dense(), bias),
            Precision::Bf16 => Linear::Bf16 {
                weight: weight.detach().to_kind(Kind::BFloat16).contiguous(),
                bias: bias.map(|b| b.to_kind(Kind::BFloat16)),
            },
        }
    }

    fn fp16(weight: &Tensor, bias: Option<Tensor>) -> Linear {
        let out_features = weight.size()[0];
        Linear::Fp16 {
            packed: weight.fbgemm_pack_gemm_matrix_fp16(),
            bias: bias
                .unwrap_or_else(|| Tensor::zeros([out_features], (Kind::Float, weight.device()))),
        }
    }

    fn int8(weight: &Tensor, bias: Option<Tensor>) -> Linear {
        let (quantized, row_scales) = quantize_rows(weight, WEIGHT_LEVELS);
        let rows = weight.size()[0];
        let wide = (rows >= WIDE_OUTPUTS && weight.device() == tch::Device::Cpu)
            .then(onednn_int8_available)
            .filter(|&available| available)
            .and_then(|_| Linear::int8_onednn(weight, bias.as_ref()).ok())
            .map(Box::new);
        let row_scales = row_scales.view([-1]);
        let weights = if int8::Blocks::preferred() && weight.device() == tch::Device::Cpu {
            Int8Weights::Blocks(int8::Blocks::pack(&quantized, &row_scales, bias.as_ref()))
        } else {
            Int8Weights::Fbgemm(FbgemmInt8::new(&quantized, row_scales, bias))
        };
        Linear::Int8 { weights, wide }
    }

    /// `weight` ([out, in], fp32) at int8 for oneDNN's kernels; see
    /// `onednn_int8_available` for where they run. The bias stays fp32.
    pub fn int8_onednn(weight: &Tensor, bias: Option<&Tensor>) -> Result<Linear, String> {
        let levels = if native::int8_sums_in_32_bits() {
            ONEDNN_WEIGHT_LEVELS
        } else {
            WEIGHT_LEVELS
        };
        let (quantized, row_scales) = quantize_rows(&weight.detach().to_kind(Kind::Float), levels);
        let rows = quantized.size()[0];
        Ok(Linear::Int8Onednn(PackedInt8 {
            packed: native::qlinear_prepack(&quantized)?,
            scales: row_scales.view([-1]).contiguous(),
            zero_points: Tensor::zeros([rows], (Kind::Int64, quantized.device())),
            bias: bias.map(|b| b.detach().to_kind(Kind::Float).contiguous()),
        }))
    }

    /// This layer on `input`, then `post`, then `+ residual`; fused into
    /// the product on oneDNN's int8 kernels, which may write the sum into
    /// `residual`'s storage (the caller gives it up).
    pub fn forward_fused(&self, input: &Tensor, post: Post, residual: Option<Tensor>) -> Tensor {
        if let Linear::Int8Onednn(layer) = self {
            return layer
                .apply(input, post, residual)
                .unwrap_or_else(|error| panic!("oneDNN int8 linear layer: {error}"));
        }
        let output = post.apply(self.forward(input));
        match residual {
            Some(residual) => output + residual,
            None => output,
        }
    }

    /// Several layers over the same input as one: their weights (each
    /// [out_i, in]) and biases stacked in order, so that one product gives
    /// their outputs side by side. int8 quantises per output row, so a stack
    /// gives what its layers give apart. A stack of one is that layer, its
    /// loaded storage shared (no copy).
    pub fn stacked(weights: &[Tensor], biases: Option<&[Tensor]>, precision: Precision) -> Linear {
        if let [weight] = weights {
            let bias = biases.and_then(<[Tensor]>::first);
            return Linear::new(weight, bias, precision);
        }
        let bias = biases.map(|biases| Tensor::cat(biases, 0));
        Linear::new(&Tensor::cat(weights, 0), bias.as_ref(), precision)
    }

    /// The same layer sharing this one's storage (for another thread: a
    /// tensor may move between threads but not be shared by them).
    pub fn shallow_clone(&self) -> Linear {
        let clone = |tensor: &Tensor| tensor.shallow_clone();
        match self {
            Linear::Fp32 { weight, bias } => Linear::Fp32 {
                weight: clone(weight),
                bias: bias.as_ref().map(clone),
            },
            Linear::Fp16 { packed, bias } => Linear::Fp16 {
                packed: clone(packed),
                bias: clone(bias),
            },
            Linear::Int8 { weights, wide } => Linear::Int8 {
                weights: weights.shallow_clone(),
                wide: wide.as_ref().map(|wide| Box::new(wide.shallow_clone())),
            },
            Linear::Bf16 { weight, bias } => Linear::Bf16 {
                weight: clone(weight),
                bias: bias.as_ref().map(clone),
            },
            Linear::Int8Onednn(layer) => Linear::Int8Onednn(layer.shallow_clone()),
        }
    }

    pub fn forward(&self, input: &Tensor) -> Tensor {
        match self {
            Linear::Fp32 { weight, bias } if few_rows_on_crew(input, weight) => {
                native::fp32::linear(
                    input,
                    weight,
                    bias.as_ref(),
                    crate::openmp::model_threads().into(),
                )
                .unwrap_or_else(|error| panic!("fp32 linear layer: {error}"))
            }
            Linear::Fp32 { weight, bias } => input.linear(weight, bias.as_ref()),
            Linear::Fp16 { packed, bias } => {
                input.fbgemm_linear_fp16_weight_fp32_activation(packed, bias)
            }
            Linear::Int8 {
                wide: Some(wide), ..
            } if rows(input) >= WIDE_ROWS => wide.forward(input),
            Linear::Int8 { weights, .. } => weights.forward(input),
            Linear::Bf16 { weight, bias } => match input.kind() {
                Kind::BFloat16 => input.linear(weight, bias.as_ref()),
                kind => input
                    .to_kind(Kind::BFloat16)
                    .linear(weight, bias.as_ref())
                    .to_kind(kind),
            },
            Linear::Int8Onednn(_) => self.forward_fused(input, Post::None, None),
        }
    }
}

impl Linear {
    /// Output features of a layer that can write its output into a given
    /// buffer (`forward_into`): int8 on src/native/int8.cpp's kernel.
    pub fn writes_into(&self) -> Option<i64> {
        match self {
            Linear::Int8 {
                weights: Int8Weights::Blocks(blocks),
                wide: None,
            } => Some(blocks.outputs()),
            _ => None,
        }
    }

    /// `forward` written into `into` (contiguous fp32, as many elements as
    /// the output), or with `add` added to what it holds, on the calling
    /// thread, for a layer `writes_into` names.
    pub fn forward_into(&self, input: &Tensor, into: &Tensor, add: bool) -> Result<Tensor, String> {
        match self {
            Linear::Int8 {
                weights: Int8Weights::Blocks(blocks),
                wide: None,
            } => blocks.forward_into(input, into, add, i64::from(crate::openmp::model_threads())),
            _ => Err("this layer does not write into a given buffer".into()),
        }
    }
}

/// An int8 layer's weights in the layout of the kernel that runs it here.
pub enum Int8Weights {
    /// src/native/int8.cpp's kernel, on CPUs with AVX-512 VNNI
    /// (`int8::Blocks::preferred`): activations quantised per row, so a
    /// row's output does not depend on the rows batched with it.
    Blocks(int8::Blocks),
    /// libtorch's fbgemm kernel elsewhere (AVX2).
    Fbgemm(FbgemmInt8),
}

impl Int8Weights {
    fn forward(&self, input: &Tensor) -> Tensor {
        match self {
            Int8Weights::Blocks(blocks) => blocks
                .forward(input, i64::from(crate::openmp::model_threads()))
                .unwrap_or_else(|error| panic!("int8 linear layer: {error}")),
            Int8Weights::Fbgemm(layer) => layer.forward(input),
        }
    }

    fn shallow_clone(&self) -> Int8Weights {
        match self {
            Int8Weights::Blocks(blocks) => Int8Weights::Blocks(blocks.shallow_clone()),
            Int8Weights::Fbgemm(layer) => Int8Weights::Fbgemm(layer.shallow_clone()),
        }
    }
}

/// An int8 layer packed for fbgemm, which takes one scale per matrix: the
/// rows are normalised before quantising and their scales applied to the
/// output.
pub struct FbgemmInt8 {
    /// Only its shape [out, in] is read by the kernel (the weights are in
    /// `packed`): a stride-0 view of one byte, not a second copy.
    shape: Tensor,
    packed: Tensor,
    col_offsets: Tensor,
    row_scales: Tensor,
    /// The bias divided by the row scales, added by the kernel as it
    /// writes each output, so that the one multiplication by the scales
    /// that follows gives `x W^T + b` (no second pass for the bias).
    scaled_bias: Tensor,
    /// A projection onto a vocabulary (`WIDE_OUTPUTS`): it runs on all of
    /// a model thread's threads even in a single-threaded step
    /// (`openmp::on_all_step_threads`; the blocks kernel splits every layer
    /// with the thread's crew instead).
    vocabulary: bool,
}

impl FbgemmInt8 {
    /// `quantized` [out, in] int8, `row_scales` [out].
    fn new(quantized: &Tensor, row_scales: Tensor, bias: Option<Tensor>) -> FbgemmInt8 {
        let [rows, columns] = [quantized.size()[0], quantized.size()[1]];
        // With a zero point of 0 the column offsets are the row sums.
        let col_offsets = quantized
            .sum_dim_intlist([1].as_slice(), false, Kind::Int)
            .contiguous();
        let scaled_bias = match bias {
            Some(bias) => (bias / &row_scales).contiguous(),
            None => Tensor::zeros([rows], (Kind::Float, quantized.device())),
        };
        FbgemmInt8 {
            packed: quantized.fbgemm_pack_quantized_matrix(),
            shape: Tensor::zeros([1, 1], (Kind::Int8, quantized.device()))
                .expand([rows, columns], false),
            col_offsets,
            row_scales,
            scaled_bias,
            vocabulary: rows >= WIDE_OUTPUTS,
        }
    }

    fn forward(&self, input: &Tensor) -> Tensor {
        let product = || {
            input.fbgemm_linear_int8_weight_fp32_activation(
                &self.shape,
                &self.packed,
                &self.col_offsets,
                tch::Scalar::float(1.0),
                tch::Scalar::int(0),
                &self.scaled_bias,
            )
        };
        let mut output = if self.vocabulary {
            crate::openmp::on_all_step_threads(product)
        } else {
            product()
        };
        let _ = output.g_mul_(&self.row_scales);
        output
    }

    fn shallow_clone(&self) -> FbgemmInt8 {
        FbgemmInt8 {
            shape: self.shape.shallow_clone(),
            packed: self.packed.shallow_clone(),
            col_offsets: self.col_offsets.shallow_clone(),
            row_scales: self.row_scales.shallow_clone(),
            scaled_bias: self.scaled_bias.shallow_clone(),
            vocabulary: self.vocabulary,
        }
    }
}

/// Up to this many rows a model thread's fp32 layers run on
/// src/native/fp32.cpp, split with its crew of polling helpers: a decoding
/// step's product over a row or a few streams the weights, and libtorch's
/// runs on threads that sleep between products. On a 2-vCPU Zen 4, a
/// GPT-2 step's layers (324 MB) at 1 / 2 / 4 rows: 14.6 / 20.2 / 19.1 ms
/// against libtorch's 16.1 / 28.5 / 33.6; Marian's decoder 11.6 / 11.5 /
/// 13.5 against 11.8 / 17.2 / 28.2.
const FEW_ROWS: i64 = 8;

/// Up to this many rows (a prompt's) a model thread's fp32 layers in the
/// [in, out] layout (GPT-2's Conv1D) run on src/native/fp32.cpp's AVX-512
/// register tiles where the CPU has them: libtorch's MKL sgemm copies the
/// whole weight matrix into its own layout on every call, which took a
/// third of a 32-token GPT-2 prefill on a 2-vCPU Xeon (Emerald Rapids):
/// 43.7 ms for the prompt with it, 28.6 ms on the tiles.
const PROMPT_ROWS: i64 = 64;

/// Whether `input` times `weight` runs on src/native/fp32.cpp: few fp32
/// rows on a model thread with more than one thread, on a CPU with AVX2.
fn few_rows_on_crew(input: &Tensor, weight: &Tensor) -> bool {
    crate::openmp::model_threads() > 1
        && input.kind() == Kind::Float
        && (rows(input) <= FEW_ROWS
            || (rows(input) <= PROMPT_ROWS
                && native::fp32::columns_contiguous(weight)
                && native::fp32::tiles_available()))
        && native::fp32::available()
        && native::fp32::takes(weight)
        && input.device() == tch::Device::Cpu
}

/// The rows of an [..., in] input.
fn rows(input: &Tensor) -> i64 {
    let size = input.size();
    size[..size.len().saturating_sub(1)].iter().product()
}

/// Each row of `weight` ([rows, columns], fp32) scaled to `levels` and
/// rounded to int8, with the scales ([rows, 1]). Quantised a block of rows
/// at a time, so loading a large matrix (an output projection over the
/// vocabulary) needs a few megabytes of temporaries, not copies of it.
fn quantize_rows(weight: &Tensor, levels: f64) -> (Tensor, Tensor) {
    // Each row's largest magnitude, from its largest and smallest values
    // (no full-size temporary for the magnitudes).
    let row_max = weight.amax([1].as_slice(), true);
    let row_min = weight.amin([1].as_slice(), true);
    let row_scales = row_max.maximum(&row_min.neg()).clamp_min(1e-12) / levels;
    let [rows, columns] = [weight.size()[0], weight.size()[1]];
    let quantized = Tensor::empty([rows, columns], (Kind::Int8, weight.device()));
    let block = (QUANTIZE_BLOCK_ELEMENTS / columns.max(1)).max(1);
    let mut start = 0;
    while start < rows {
        let length = block.min(rows - start);
        let mut scaled = weight.narrow(0, start, length) / row_scales.narrow(0, start, length);
        let _ = scaled.round_();
        let _ = scaled.clamp_(-levels, levels);
        quantized
            .narrow(0, start, length)
            .copy_(&scaled.to_kind(Kind::Int8));
        start += length;
    }
    (quantized, row_scales)
}

/// Whether oneDNN's int8 kernels run here and beat the others on many rows:
/// a CPU with AMX-INT8 (and the OS enabling its tiles), and a libtorch that
/// registers the layer.
pub fn onednn_int8_available() -> bool {
    native::amx_int8() && native::has_onednn_int8_linear()
}

/// Whether this CPU can run the fp16 and int8 kernels.
pub fn fbgemm_available() -> bool {
    Tensor::zeros([8, 8], (Kind::Float, tch::Device::Cpu))
        .f_fbgemm_pack_gemm_matrix_fp16()
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Largest error relative to the largest output, over a random layer.
    fn relative_error(precision: Precision) -> f64 {
        tch::manual_seed(1);
        let input = Tensor::randn([8, 256], (Kind::Float, tch::Device::Cpu));
        let weight = Tensor::randn([64, 256], (Kind::Float, tch::Device::Cpu))
            * 0.05
            * Tensor::linspace(0.1, 3.0, 64, (Kind::Float, tch::Device::Cpu)).unsqueeze(1);
        let bias = Tensor::randn([64], (Kind::Float, tch::Device::Cpu));
        let exact = input.linear(&weight, Some(&bias));
        let approximate = Linear::new(&weight, Some(&bias), precision).forward(&input);
        let error = (&approximate - &exact).abs().max().double_value(&[]);
        error / exact.abs().max().double_value(&[])
    }

    #[test]
    fn int8_layers_keep_only_the_packed_weights_quantised_block_by_block() {
        tch::manual_seed(2);
        // More rows than one quantising block holds (3 blocks of 128 columns).
        let rows = 2 * QUANTIZE_BLOCK_ELEMENTS / 128 + 100;
        let input = Tensor::randn([5, 128], (Kind::Float, tch::Device::Cpu));
        let weight = Tensor::randn([rows, 128], (Kind::Float, tch::Device::Cpu));
        let bias = Tensor::randn([rows], (Kind::Float, tch::Device::Cpu));
        let layer = Linear::new(&weight, Some(&bias), Precision::Int8);
        let Linear::Int8 { weights, .. } = &layer else {
            panic!("an int8 layer");
        };
        // The whole matrix quantised at once, packed, and given to the kernel
        // with its real weights: the same output, bit for bit.
        let scales = weight.abs().amax([1].as_slice(), true).clamp_min(1e-12) / WEIGHT_LEVELS;
        let quantized = (&weight / &scales)
            .round()
            .clamp(-WEIGHT_LEVELS, WEIGHT_LEVELS)
            .to_kind(Kind::Int8)
            .contiguous();
        let scales = scales.view([-1]);
        let reference = match weights {
            Int8Weights::Blocks(_) => {
                assert!(int8::Blocks::preferred());
                int8::Blocks::pack(&quantized, &scales, Some(&bias))
                    .forward(&input, 1)
                    .expect("runs")
            }
            Int8Weights::Fbgemm(fbgemm) => {
                assert!(!int8::Blocks::preferred());
                assert_eq!(fbgemm.shape.size(), [rows, 128]);
                assert_eq!(
                    fbgemm.shape.stride(),
                    [0, 0],
                    "no second copy of the weights"
                );
                FbgemmInt8::new(&quantized, scales, Some(bias)).forward(&input)
            }
        };
        assert!(layer.forward(&input).equal(&reference));
    }

    /// Both int8 kernels track fp32 wherever they run (fbgemm needs AVX2,
    /// the blocks kernel runs everywhere, fastest with AVX-512 VNNI).
    #[test]
    fn both_int8_kernels_track_fp32() {
        if !fbgemm_available() {
            return;
        }
        tch::manual_seed(3);
        let weight = Tensor::randn([100, 96], (Kind::Float, tch::Device::Cpu)) * 0.1;
        let bias = Tensor::randn([100], (Kind::Float, tch::Device::Cpu));
        let (quantized, scales) = quantize_rows(&weight, WEIGHT_LEVELS);
        let scales = scales.view([-1]);
        let blocks = int8::Blocks::pack(&quantized, &scales, Some(&bias));
        let fbgemm = FbgemmInt8::new(&quantized, scales, Some(bias.shallow_clone()));
        for rows in [1, 4, 33] {
            let input = Tensor::randn([rows, 96], (Kind::Float, tch::Device::Cpu));
            let exact = input.linear(&weight, Some(&bias));
            let norm = exact.norm().double_value(&[]);
            let from_blocks = blocks.forward(&input, 1).expect("runs");
            let from_fbgemm = fbgemm.forward(&input);
            for output in [from_blocks, from_fbgemm] {
                let error = (&output - &exact).norm().double_value(&[]) / norm;
                assert!(error < 2e-2, "{rows} rows: {error}");
            }
        }
    }

    /// On a CPU with AMX an int8 projection onto a vocabulary runs many
    /// rows on oneDNN and few on fbgemm; both track fp32.
    #[test]
    fn int8_vocabulary_projections_take_onednn_for_many_rows() {
        if !fbgemm_available() {
            return;
        }
        tch::manual_seed(7);
        let weight = Tensor::randn([WIDE_OUTPUTS, 64], (Kind::Float, tch::Device::Cpu)) * 0.1;
        let layer = Linear::new(&weight, None, Precision::Int8);
        let Linear::Int8 { wide, .. } = &layer else {
            panic!("an int8 layer");
        };
        assert_eq!(wide.is_some(), onednn_int8_available());
        for rows in [WIDE_ROWS - 1, WIDE_ROWS] {
            let input = Tensor::randn([rows, 64], (Kind::Float, tch::Device::Cpu));
            let exact = input.linear(&weight, None::<Tensor>);
            let output = layer.forward(&input);
            let error =
                (&output - &exact).norm().double_value(&[]) / exact.norm().double_value(&[]);
            assert!(error < 2e-2, "{rows} rows: {error}");
            if let Some(wide) = wide {
                let on_onednn = output.equal(&wide.forward(&input));
                assert_eq!(on_onednn, rows >= WIDE_ROWS, "{rows} rows");
            }
        }
    }

    #[test]
    fn reduced_precision_layers_track_fp32() {
        assert!(relative_error(Precision::Fp32) < 1e-6);
        assert!(
            relative_error(Precision::Fp16) < 2e-3,
            "{}",
            relative_error(Precision::Fp16)
        );
        assert!(
            relative_error(Precision::Int8) < 3e-2,
            "{}",
            relative_error(Precision::Int8)
        );
        // bfloat16 keeps 8 significant bits: about 0.4% per value.
        assert!(
            relative_error(Precision::Bf16) < 1.5e-2,
            "{}",
            relative_error(Precision::Bf16)
        );
    }

    #[test]
    fn bf16_layers_give_the_kind_they_are_given() {
        tch::manual_seed(4);
        let weight = Tensor::randn([16, 32], (Kind::Float, tch::Device::Cpu));
        let layer = Linear::new(&weight, None, Precision::Bf16);
        let input = Tensor::randn([3, 32], (Kind::Float, tch::Device::Cpu));
        let from_fp32 = layer.forward(&input);
        let from_bf16 = layer.forward(&input.to_kind(Kind::BFloat16));
        assert_eq!(from_fp32.kind(), Kind::Float);
        assert_eq!(from_bf16.kind(), Kind::BFloat16);
        // The same product either way: fp32 inputs are rounded to bf16 first.
        assert!(from_fp32.equal(&from_bf16.to_kind(Kind::Float)));
    }
}
