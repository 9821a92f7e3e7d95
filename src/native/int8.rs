//! The int8 linear layer of src/native/int8.cpp: weights packed in blocks of
//! 16 output rows with 4 inputs interleaved (the order vpdpbusd and
//! vpmaddubsw read them in), activations quantised per row inside the call,
//! and the output written once with scales and bias applied. AMX tiles
//! (the same packed blocks are their weight tiles), AVX-512 VNNI, AVX2 and
//! plain loops, the fastest this CPU has.
//!
//! AMX from 16 rows: on a 2-vCPU Xeon (Emerald Rapids), two threads, the
//! VNNI loop against the tiles (microseconds per product): 512 x 512 at 16
//! rows 36.8 -> 12.2, at 64 rows 134 -> 34; 2,048 outputs x 512 inputs at
//! 64 rows 578 -> 130; 512 x 2,048 at 64 rows 552 -> 205. At 4 rows the
//! loop reads the weights once and a tile would waste three quarters.

use tch::{Kind, Tensor};

use super::{returned, tensor};

/// Output rows per block and inputs per interleaved group (int8.cpp's
/// `BLOCK` and `QUAD`).
const BLOCK: i64 = 16;
const QUAD: i64 = 4;

extern "C" {
    fn nlp_int8_linear(
        input: tensor,
        packed: tensor,
        sums: tensor,
        scales: tensor,
        bias: tensor,
        inputs: i64,
        outputs: i64,
        threads: i64,
        kernel: i32,
        into: tensor,
        add: i32,
    ) -> tensor;
}

/// Which loop int8.cpp runs (its `kernel` argument); the server runs
/// `Best`, the tests all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
enum Kernel {
    /// The fastest this CPU has: AMX from 16 rows (on layers whose inputs
    /// are a multiple of 64), else AVX-512 VNNI, else AVX2, else `Plain`.
    Best = 0,
    /// AVX2 (or `Plain` without it).
    Avx2 = 1,
    /// Scalar loops.
    Plain = 2,
    /// AVX-512 VNNI, never AMX (else as `Best`).
    Vnni = 3,
}

/// An int8 layer's weights in int8.cpp's layout.
pub struct Blocks {
    /// [blocks, quads, 16, 4] int8.
    packed: Tensor,
    /// Each weight row's sum (for the activations' zero point), its scale
    /// and its bias, padded with zeros to whole blocks: [blocks * 16].
    sums: Tensor,
    scales: Tensor,
    bias: Tensor,
    inputs: i64,
    outputs: i64,
}

/// `values` ([n]) padded with zeros to `length`.
fn padded(values: &Tensor, length: i64) -> Tensor {
    let n = values.size()[0];
    values.constant_pad_nd([0, length - n]).contiguous()
}

impl Blocks {
    /// `quantized` [out, in] int8 (magnitudes at most 64), `scales` [out]
    /// fp32, `bias` [out] fp32: the layer is `scales * (x Wq^T) + bias`.
    pub fn pack(quantized: &Tensor, scales: &Tensor, bias: Option<&Tensor>) -> Blocks {
        let [outputs, inputs] = [quantized.size()[0], quantized.size()[1]];
        let rows = (outputs + BLOCK - 1) / BLOCK * BLOCK;
        let width = (inputs + QUAD - 1) / QUAD * QUAD;
        let whole = quantized.constant_pad_nd([0, width - inputs, 0, rows - outputs]);
        let packed = whole
            .view([rows / BLOCK, BLOCK, width / QUAD, QUAD])
            .permute([0, 2, 1, 3])
            .contiguous();
        let sums = whole
            .sum_dim_intlist([1].as_slice(), false, Kind::Int)
            .contiguous();
        let scales = padded(&scales.to_kind(Kind::Float).view([-1]), rows);
        let bias = match bias {
            Some(bias) => padded(&bias.to_kind(Kind::Float), rows),
            None => Tensor::zeros([rows], (Kind::Float, quantized.device())),
        };
        Blocks {
            packed,
            sums,
            scales,
            bias,
            inputs,
            outputs,
        }
    }

    /// Whether this kernel is the int8 layer to use here: with AVX-512 VNNI
    /// it takes 0.8-1.15x fbgemm's time from 4 to 384 rows and less on one
    /// row; with AVX2 only, fbgemm is twice as fast from 4 rows on.
    pub fn preferred() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// `input` [..., in] to [..., out] fp32, the blocks split between
    /// `threads` threads: the caller and helpers of its own, which poll for
    /// work between calls rather than sleep (int8.cpp's `Crew`).
    pub fn forward(&self, input: &Tensor, threads: i64) -> Result<Tensor, String> {
        self.call(input, threads, Kernel::Best, None)
    }

    /// `forward` written into `into` (contiguous fp32 with as many elements
    /// as the output, e.g. a share's rows of a larger output), which the
    /// result shares; with `add`, added to what `into` holds (a residual
    /// sum in the same pass).
    pub fn forward_into(
        &self,
        input: &Tensor,
        into: &Tensor,
        add: bool,
        threads: i64,
    ) -> Result<Tensor, String> {
        self.call(input, threads, Kernel::Best, Some((into, add)))
    }

    /// Output features.
    pub fn outputs(&self) -> i64 {
        self.outputs
    }

    fn call(
        &self,
        input: &Tensor,
        threads: i64,
        kernel: Kernel,
        into: Option<(&Tensor, bool)>,
    ) -> Result<Tensor, String> {
        let none = Tensor::new();
        let (into, add) = into.unwrap_or((&none, false));
        // SAFETY: every tensor is live for the call; the C++ side checks
        // the shapes and reports a mismatch as an error.
        returned(unsafe {
            nlp_int8_linear(
                input.as_ptr() as tensor,
                self.packed.as_ptr() as tensor,
                self.sums.as_ptr() as tensor,
                self.scales.as_ptr() as tensor,
                self.bias.as_ptr() as tensor,
                self.inputs,
                self.outputs,
                threads,
                kernel as i32,
                into.as_ptr() as tensor,
                i32::from(add),
            )
        })
    }

    pub fn shallow_clone(&self) -> Blocks {
        Blocks {
            packed: self.packed.shallow_clone(),
            sums: self.sums.shallow_clone(),
            scales: self.scales.shallow_clone(),
            bias: self.bias.shallow_clone(),
            inputs: self.inputs,
            outputs: self.outputs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Random 7-bit weights and their layer, with odd sizes (a partial
    /// block, a partial quad).
    fn layer(outputs: i64, inputs: i64) -> (Blocks, Tensor, Tensor, Tensor) {
        let quantized = Tensor::randint_low(-64, 65, [outputs, inputs], (Kind::Int8, Device::Cpu));
        let scales = Tensor::rand([outputs], (Kind::Float, Device::Cpu)) * 0.01 + 0.001;
        let bias = Tensor::randn([outputs], (Kind::Float, Device::Cpu));
        let blocks = Blocks::pack(&quantized, &scales, Some(&bias));
        (blocks, quantized, scales, bias)
    }

    /// The layer on per-row uint8 levels, computed with tch's operations:
    /// what the kernel must give.
    fn reference(input: &Tensor, quantized: &Tensor, scales: &Tensor, bias: &Tensor) -> Tensor {
        let low = input.amin([-1].as_slice(), true).clamp_max(0.0);
        let high = input.amax([-1].as_slice(), true).clamp_min(0.0);
        let step = (high - &low).clamp_min(1e-12) / 255.0;
        let zero = (-low / &step).round().clamp(0.0, 255.0);
        let levels = ((input * step.reciprocal()).round() + &zero).clamp(0.0, 255.0);
        let sums = (levels - zero).to_kind(Kind::Double);
        let product = sums.matmul(&quantized.to_kind(Kind::Double).transpose(0, 1));
        (product * step.to_kind(Kind::Double) * scales.to_kind(Kind::Double)
            + bias.to_kind(Kind::Double))
        .to_kind(Kind::Float)
    }

    #[test]
    fn both_kernels_give_the_quantised_product() {
        tch::manual_seed(11);
        for (rows, outputs, inputs) in [
            (1, 37, 70),
            (5, 24, 64),
            (9, 100, 33),
            (4, 8, 4),
            (6, 200, 70),
        ] {
            let (blocks, quantized, scales, bias) = layer(outputs, inputs);
            let input = Tensor::randn([rows, inputs], (Kind::Float, Device::Cpu)) * 2.0 + 0.3;
            let expected = reference(&input, &quantized, &scales, &bias);
            for kernel in [Kernel::Best, Kernel::Avx2, Kernel::Plain] {
                let output = blocks.call(&input, 1, kernel, None).expect("runs");
                assert_eq!(output.size(), [rows, outputs]);
                let error = (&output - &expected).abs().max().double_value(&[]);
                let size = expected.abs().max().double_value(&[]);
                assert!(
                    error < 1e-5 * size,
                    "{rows}x{outputs}x{inputs} {kernel:?}: {error}"
                );
            }
        }
    }

    #[test]
    fn leading_dimensions_are_kept_and_rows_are_independent() {
        tch::manual_seed(12);
        let (blocks, ..) = layer(40, 48);
        let input = Tensor::randn([2, 3, 48], (Kind::Float, Device::Cpu));
        let output = blocks.forward(&input, 1).expect("runs");
        assert_eq!(output.size(), [2, 3, 40]);
        // Per-row quantisation: a row gives the same alone as in a batch.
        let alone = blocks.forward(&input.get(1).get(2), 1).expect("runs");
        assert!(alone.equal(&output.get(1).get(2)));
    }

    /// Many rows (AMX's tiles where the CPU has them): the VNNI loop's
    /// output to the bit, and the quantised product, for row counts that
    /// fill no tile evenly, odd block counts, and threads sharing blocks.
    #[test]
    fn tiles_of_many_rows_give_the_vnni_loops_output() {
        tch::manual_seed(15);
        for (rows, outputs, inputs) in [(16, 48, 64), (37, 16 * 7 + 3, 128), (64, 512, 512)] {
            let (blocks, quantized, scales, bias) = layer(outputs, inputs);
            let input = Tensor::randn([rows, inputs], (Kind::Float, Device::Cpu)) * 2.0 + 0.3;
            let expected = reference(&input, &quantized, &scales, &bias);
            let vnni = blocks.call(&input, 1, Kernel::Vnni, None).expect("runs");
            for threads in [1, 2] {
                let best = blocks
                    .call(&input, threads, Kernel::Best, None)
                    .expect("runs");
                assert!(
                    best.equal(&vnni),
                    "{rows}x{outputs}x{inputs}, {threads} threads"
                );
            }
            let error = (&vnni - &expected).abs().max().double_value(&[]);
            let size = expected.abs().max().double_value(&[]);
            assert!(error < 1e-5 * size, "{rows}x{outputs}x{inputs}: {error}");
        }
    }

    /// Split between threads, every output is computed as on one.
    #[test]
    fn threads_share_the_blocks_and_give_the_same_output() {
        tch::manual_seed(13);
        let (blocks, ..) = layer(50 * 16 + 5, 64);
        for rows in [1, 3, 8] {
            let input = Tensor::randn([rows, 64], (Kind::Float, Device::Cpu));
            let alone = blocks.forward(&input, 1).expect("runs");
            for threads in [2, 3, 2] {
                for kernel in [Kernel::Best, Kernel::Avx2, Kernel::Plain] {
                    let shared = blocks.call(&input, threads, kernel, None).expect("runs");
                    let one = blocks.call(&input, 1, kernel, None).expect("runs");
                    assert!(
                        shared.equal(&one),
                        "{rows} rows, {threads} threads, {kernel:?}"
                    );
                }
                assert!(blocks.forward(&input, threads).expect("runs").equal(&alone));
            }
        }
    }

    /// Written into rows of a larger buffer: what `forward` gives, the
    /// buffer's other rows untouched; a buffer of another size is refused.
    #[test]
    fn writes_into_a_given_buffer() {
        tch::manual_seed(14);
        let (blocks, ..) = layer(40, 48);
        let input = Tensor::randn([2, 3, 48], (Kind::Float, Device::Cpu));
        let buffer = Tensor::full([10, 40], 7.0, (Kind::Float, Device::Cpu));
        let rows = buffer.narrow(0, 2, 6);
        let output = blocks.forward_into(&input, &rows, false, 2).expect("runs");
        assert_eq!(output.size(), [2, 3, 40]);
        let expected = blocks.forward(&input, 1).expect("runs");
        assert!(output.equal(&expected));
        assert!(buffer.narrow(0, 2, 6).equal(&expected.view([6, 40])));
        assert!(buffer.narrow(0, 0, 2).eq(7.0).all().int64_value(&[]) == 1);
        assert!(buffer.narrow(0, 8, 2).eq(7.0).all().int64_value(&[]) == 1);
        let error = blocks
            .forward_into(&input, &buffer.narrow(0, 0, 5), false, 1)
            .expect_err("fails");
        assert!(error.contains("does not fit"), "{error}");
    }

    /// With `add`, each kernel adds the product to what the buffer holds,
    /// as `forward(x) + residual` does (the same fp32 sum, so equal).
    #[test]
    fn adds_into_a_given_buffer() {
        tch::manual_seed(15);
        let (blocks, ..) = layer(40, 48);
        let input = Tensor::randn([7, 48], (Kind::Float, Device::Cpu));
        let residual = Tensor::randn([7, 40], (Kind::Float, Device::Cpu));
        for kernel in [Kernel::Best, Kernel::Avx2, Kernel::Plain] {
            let expected = blocks.call(&input, 1, kernel, None).expect("runs") + &residual;
            let buffer = residual.copy();
            let output = blocks
                .call(&input, 2, kernel, Some((&buffer, true)))
                .expect("runs");
            assert!(output.equal(&expected), "{kernel:?}");
            assert!(buffer.equal(&expected), "{kernel:?}");
        }
    }

    #[test]
    fn a_wrong_width_is_an_error() {
        let (blocks, ..) = layer(16, 32);
        let input = Tensor::zeros([2, 31], (Kind::Float, Device::Cpu));
        let error = blocks.forward(&input, 1).expect_err("fails");
        assert!(error.contains("takes 32 inputs, given 31"), "{error}");
    }
}
