//! An encoder's self-attention over padded windows in bfloat16 products
//! (src/native/window_attention.cpp, AVX-512 BF16): from the fused
//! query/key/value projection's fp32 output straight to the merged-heads
//! fp32 output, the (window, head) pairs split between the model thread and
//! its crew.

use tch::{Device, Kind, Tensor};

use super::{returned, tensor};

extern "C" {
    fn nlp_window_attention_available() -> i32;
    fn nlp_window_attention(
        qkv: tensor,
        visible: tensor,
        heads: i64,
        scale: f64,
        threads: i64,
    ) -> tensor;
}

/// Head sizes must be a multiple of this (one AVX-512 register of fp32).
const HEAD_MULTIPLE: i64 = 16;

/// Whether this CPU runs the kernel (AVX-512 with BF16: AMD Zen 4 on, Intel
/// Cooper Lake and Sapphire Rapids on).
pub fn available() -> bool {
    // SAFETY: no arguments; reads the CPU's features.
    unsafe { nlp_window_attention_available() == 1 }
}

/// Whether the kernel takes `qkv` split in `heads` heads: [windows, tokens,
/// 3 * width] fp32 on the CPU, a head size that is a multiple of 16.
pub fn takes(qkv: &Tensor, heads: i64) -> bool {
    let size = qkv.size();
    qkv.kind() == Kind::Float
        && qkv.device() == Device::Cpu
        && size.len() == 3
        && heads > 0
        && size[2] % (3 * heads) == 0
        && (size[2] / (3 * heads)) % HEAD_MULTIPLE == 0
        && available()
}

/// softmax(q k^T / sqrt(head size), hidden keys masked) v for every head of
/// `qkv` ([windows, tokens, 3 * width]: queries, keys and values side by
/// side), with `visible` ([windows, tokens], true where a key may be
/// attended to): [windows, tokens, width], heads merged. Products in bf16,
/// sums and softmax in fp32. The caller checks `takes`.
pub fn attend(qkv: &Tensor, visible: &Tensor, heads: i64, threads: i64) -> Result<Tensor, String> {
    let head_size = qkv.size().last().copied().unwrap_or(0) / (3 * heads.max(1));
    let scale = 1.0 / (head_size.max(1) as f64).sqrt();
    // SAFETY: both tensors are live for the call; the C++ side checks
    // kinds and shapes and reports a mismatch as an error.
    returned(unsafe {
        nlp_window_attention(
            qkv.as_ptr() as tensor,
            visible.as_ptr() as tensor,
            heads,
            scale,
            threads,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libtorch's attention over the same operands, in `kind`, heads merged,
    /// in fp32.
    fn reference(qkv: &Tensor, visible: &Tensor, heads: i64, kind: Kind) -> Tensor {
        let size = qkv.size();
        let (windows, tokens, width) = (size[0], size[1], size[2] / 3);
        let parts = qkv.to_kind(kind).split(width, 2);
        let split = |x: &Tensor| {
            x.view([windows, tokens, heads, width / heads])
                .transpose(1, 2)
        };
        let mask = visible.unsqueeze(1).unsqueeze(1);
        Tensor::scaled_dot_product_attention(
            &split(&parts[0]),
            &split(&parts[1]),
            &split(&parts[2]),
            Some(&mask),
            0.0,
            false,
            None,
        )
        .transpose(1, 2)
        .contiguous()
        .view([windows, tokens, width])
        .to_kind(Kind::Float)
    }

    /// Windows padded at the end (each to its own length), a key hidden in
    /// the middle, lengths that are not whole blocks of 16, several head
    /// sizes, one to three threads: libtorch's fp32 attention within bf16's
    /// rounding, and libtorch's bf16 attention closer still.
    #[test]
    fn gives_libtorchs_attention_within_bf16_rounding() {
        if !available() {
            return;
        }
        tch::manual_seed(8);
        let options = (Kind::Float, Device::Cpu);
        for (windows, tokens, heads, head_size) in [
            (3, 37, 2, 64),
            (2, 5, 3, 16),
            (1, 70, 1, 32),
            (2, 16, 4, 48),
        ] {
            let width = heads * head_size;
            let qkv = Tensor::randn([windows, tokens, 3 * width], options);
            let visible = Tensor::ones([windows, tokens], (Kind::Bool, Device::Cpu));
            for window in 1..windows {
                let hidden = (tokens / 3 * window).min(tokens - 1);
                let _ = visible
                    .get(window)
                    .narrow(0, tokens - hidden, hidden)
                    .fill_(0);
            }
            if tokens > 4 {
                let _ = visible.get(0).narrow(0, 2, 1).fill_(0);
            }
            assert!(takes(&qkv, heads));
            let exact = reference(&qkv, &visible, heads, Kind::Float);
            let libtorch_bf16 = reference(&qkv, &visible, heads, Kind::BFloat16);
            let bf16_error = (&libtorch_bf16 - &exact).abs().max().double_value(&[]);
            for threads in [1, 2, 3] {
                let output = attend(&qkv, &visible, heads, threads).expect("runs");
                assert_eq!(output.size(), [windows, tokens, width]);
                let error = (&output - &exact).abs().max().double_value(&[]);
                assert!(
                    error < 0.05 && error <= 1.5 * bf16_error,
                    "{windows}x{tokens}x{heads}x{head_size}: {error} (libtorch bf16 {bf16_error})"
                );
                let mean = (&output - &exact).abs().mean(Kind::Float).double_value(&[]);
                assert!(mean < 5e-3, "{mean}");
            }
        }
    }

    /// A hidden key gets no weight however large its score: moving its
    /// value does not move the output.
    #[test]
    fn hidden_keys_get_no_weight() {
        if !available() {
            return;
        }
        tch::manual_seed(9);
        let (tokens, width) = (20, 32);
        let qkv = Tensor::randn([1, tokens, 3 * width], (Kind::Float, Device::Cpu));
        let mut visible = Tensor::ones([1, tokens], (Kind::Bool, Device::Cpu));
        let _ = visible.get(0).narrow(0, 7, 1).fill_(0);
        let before = attend(&qkv, &visible, 2, 1).expect("runs");
        let moved = qkv.copy();
        let _ = moved
            .get(0)
            .get(7)
            .narrow(0, width, 2 * width)
            .fill_(1000.0);
        let after = attend(&moved, &visible, 2, 1).expect("runs");
        assert!(before.equal(&after));
        // Without it the output moves.
        let _ = visible.get(0).narrow(0, 7, 1).fill_(1);
        let seen = attend(&moved, &visible, 2, 1).expect("runs");
        assert!(!seen.equal(&after));
        // A window with no visible key gets zeros.
        let _ = visible.fill_(0);
        let none = attend(&qkv, &visible, 2, 1).expect("runs");
        assert_eq!(none.abs().sum(Kind::Float).double_value(&[]), 0.0);
    }

    #[test]
    fn other_operands_are_refused() {
        let options = (Kind::Float, Device::Cpu);
        let qkv = Tensor::randn([1, 4, 3 * 64], options);
        assert!(!takes(&qkv.to_kind(Kind::BFloat16), 2));
        // 64 / 8 = 8 per head: not a multiple of 16.
        assert!(!takes(&qkv, 8));
        assert!(!takes(&qkv, 5));
        if !available() {
            return;
        }
        let mask = Tensor::ones([1, 3], (Kind::Bool, Device::Cpu));
        let error = attend(&qkv, &mask, 2, 1).expect_err("fails");
        assert!(error.contains("mask"), "{error}");
        let error = attend(&qkv, &mask, 8, 1).expect_err("fails");
        assert!(error.contains("multiple of 16"), "{error}");
    }
}
