//! The fp32 linear layer of src/native/fp32.cpp for a decoding step's few
//! rows: the weights read where they were loaded (a Linear's rows or a
//! Conv1D's transpose), the outputs split between the model thread and its
//! crew of polling helpers.

use std::sync::OnceLock;

use tch::{Kind, Tensor};

use super::{returned, tensor};

extern "C" {
    fn nlp_fp32_linear_available() -> i32;
    fn nlp_fp32_tiles_available() -> i32;
    fn nlp_fp32_linear(input: tensor, weight: tensor, bias: tensor, threads: i64) -> tensor;
}

/// Whether this CPU runs the kernel (AVX2 and FMA).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    // SAFETY: reads the CPU's features.
    *AVAILABLE.get_or_init(|| unsafe { nlp_fp32_linear_available() } != 0)
}

/// Whether this CPU runs the kernel's register tiles (AVX-512), which take
/// many rows of the [in, out] layout (a prompt's) at once.
pub fn tiles_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    // SAFETY: reads the CPU's features.
    *AVAILABLE.get_or_init(|| unsafe { nlp_fp32_tiles_available() } != 0)
}

/// Whether `weight` ([out, in]) is the transpose of an [in, out] matrix
/// (GPT-2's Conv1D), the layout the register tiles read.
pub fn columns_contiguous(weight: &Tensor) -> bool {
    let size = weight.size();
    size.len() == 2 && weight.stride() == [1, size[0]]
}

/// Whether the kernel reads `weight` ([out, in] fp32 on the CPU) in place:
/// its rows or its columns contiguous.
pub fn takes(weight: &Tensor) -> bool {
    let (size, stride) = (weight.size(), weight.stride());
    weight.kind() == Kind::Float
        && weight.device() == tch::Device::Cpu
        && size.len() == 2
        && (stride == [size[1], 1] || columns_contiguous(weight))
}

/// `input` [..., in] fp32 times `weight` ([out, in], `takes`) plus `bias`,
/// on `threads` threads; the caller checks `available`.
pub fn linear(
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    threads: i64,
) -> Result<Tensor, String> {
    let none = Tensor::new();
    let bias = bias.unwrap_or(&none);
    // SAFETY: every tensor is live for the call; the C++ side checks kinds,
    // shapes and layout and reports a mismatch as an error.
    returned(unsafe {
        nlp_fp32_linear(
            input.as_ptr() as tensor,
            weight.as_ptr() as tensor,
            bias.as_ptr() as tensor,
            threads,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn both_layouts_give_libtorchs_product() {
        if !available() {
            return;
        }
        tch::manual_seed(21);
        // Odd sizes: partial vectors, partial tiles of both layouts; from 9
        // rows the [in, out] layout runs on AVX-512 register tiles of 12
        // rows and 32 outputs (13 and 37 rows leave one row over, 37 and
        // 101 outputs a partial slab, 3 outputs less than a register).
        for (outputs, inputs) in [(37, 70), (64, 64), (101, 13), (3, 9)] {
            let rows_layout = Tensor::randn([outputs, inputs], (Kind::Float, Device::Cpu));
            let columns_layout = Tensor::randn([inputs, outputs], (Kind::Float, Device::Cpu));
            let bias = Tensor::randn([outputs], (Kind::Float, Device::Cpu));
            for weight in [rows_layout, columns_layout.transpose(0, 1)] {
                assert!(takes(&weight));
                for rows in [1, 2, 5, 9, 13, 24, 37] {
                    let input = Tensor::randn([rows, inputs], (Kind::Float, Device::Cpu));
                    for bias in [None, Some(&bias)] {
                        let expected = input.linear(&weight, bias);
                        for threads in [1, 2, 3] {
                            let output = linear(&input, &weight, bias, threads).expect("runs");
                            assert_eq!(output.size(), [rows, outputs]);
                            let error = (&output - &expected).abs().max().double_value(&[]);
                            assert!(error < 1e-4, "{outputs}x{inputs} {rows} rows: {error}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn leading_dimensions_are_kept() {
        if !available() {
            return;
        }
        let weight = Tensor::randn([40, 24], (Kind::Float, Device::Cpu));
        let input = Tensor::randn([2, 1, 24], (Kind::Float, Device::Cpu));
        let output = linear(&input, &weight, None, 2).expect("runs");
        assert_eq!(output.size(), [2, 1, 40]);
    }

    #[test]
    fn other_layouts_and_kinds_are_refused() {
        let weight = Tensor::randn([8, 16], (Kind::Float, Device::Cpu));
        assert!(!takes(&weight.slice(1, 0, 16, 2)));
        assert!(!takes(&weight.to_kind(Kind::Double)));
        if !available() {
            return;
        }
        let input = Tensor::randn([1, 15], (Kind::Float, Device::Cpu));
        let error = linear(&input, &weight, None, 1).expect_err("fails");
        assert!(error.contains("takes 16 inputs, given 15"), "{error}");
    }
}
