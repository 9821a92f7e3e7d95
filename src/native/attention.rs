//! Attention for a decoding step's few queries per row
//! (src/native/attention.cpp): each (row, head) pair reads its keys and
//! values in place and writes its part of the merged-heads output, the
//! pairs split between the model thread and its crew.

use tch::{Device, Kind, Tensor};

use super::{returned, tensor};

extern "C" {
    fn nlp_decode_attention(
        query: tensor,
        keys: tensor,
        values: tensor,
        bias: tensor,
        scale: f64,
        threads: i64,
    ) -> tensor;
}

/// Queries per row up to which the kernel serves: a decoding step's one,
/// or a beam group's few over its source in cross-attention. Prefills go
/// to libtorch's fused kernel.
pub const MOST_QUERIES: i64 = 16;

/// Whether the kernel takes these operands: fp32 on the CPU, at most
/// `MOST_QUERIES` queries, heads contiguous, a bias of one query or as
/// many as there are, on a CPU with AVX2 and FMA.
pub fn takes(query: &Tensor, keys: &Tensor, values: &Tensor, bias: &Tensor) -> bool {
    let operands = [query, keys, values, bias];
    let size = query.size();
    operands
        .iter()
        .all(|t| t.kind() == Kind::Float && t.device() == Device::Cpu && t.dim() == 4)
        && size[2] <= MOST_QUERIES
        && [query, keys, values].iter().all(|t| t.stride()[3] == 1)
        && super::fp32::available()
}

/// softmax(query keys^T * scale + bias) values for query [batch, heads,
/// queries, dim], keys and values [batch, heads, length, dim] and an
/// additive bias broadcast to [batch, 1, queries, length]; heads merged:
/// [batch, queries, heads * dim]. The caller checks `takes`.
pub fn attend(
    query: &Tensor,
    keys: &Tensor,
    values: &Tensor,
    bias: &Tensor,
    scale: f64,
    threads: i64,
) -> Result<Tensor, String> {
    // SAFETY: every tensor is live for the call; the C++ side checks kinds,
    // shapes and strides and reports a mismatch as an error.
    returned(unsafe {
        nlp_decode_attention(
            query.as_ptr() as tensor,
            keys.as_ptr() as tensor,
            values.as_ptr() as tensor,
            bias.as_ptr() as tensor,
            scale,
            threads,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libtorch's attention, heads merged.
    fn reference(
        query: &Tensor,
        keys: &Tensor,
        values: &Tensor,
        bias: &Tensor,
        scale: f64,
    ) -> Tensor {
        let attended = Tensor::scaled_dot_product_attention(
            query,
            keys,
            values,
            Some(bias),
            0.0,
            false,
            Some(scale),
        );
        let size = attended.size();
        attended
            .transpose(1, 2)
            .contiguous()
            .view([size[0], size[2], size[1] * size[3]])
    }

    #[test]
    fn gives_libtorchs_attention_on_strided_operands_and_masks() {
        if !super::super::fp32::available() {
            return;
        }
        tch::manual_seed(5);
        let options = (Kind::Float, Device::Cpu);
        // Odd head sizes (partial vectors), one query and a beam group's
        // four, keys read from a larger cache (strided), padding masked.
        for (batch, heads, queries, dim, length) in
            [(3, 2, 1, 64, 9), (2, 3, 4, 20, 17), (1, 1, 1, 7, 1)]
        {
            let query = Tensor::randn([batch, queries, heads, dim], options).transpose(1, 2);
            let cache = Tensor::randn([batch, heads, length + 5, dim], options);
            let keys = cache.narrow(2, 0, length);
            let values =
                Tensor::randn([batch, heads, length + 5, dim], options).narrow(2, 2, length);
            let bias = Tensor::zeros([batch, 1, 1, length], options);
            if batch > 1 && length > 2 {
                let _ = bias.get(1).narrow(2, 0, 2).fill_(f64::NEG_INFINITY);
            }
            let per_query = Tensor::randn([batch, 1, queries, length], options);
            for bias in [&bias, &per_query] {
                assert!(takes(&query, &keys, &values, bias));
                let expected = reference(&query, &keys, &values, bias, 0.3);
                for threads in [1, 2, 3] {
                    let output = attend(&query, &keys, &values, bias, 0.3, threads).expect("runs");
                    assert_eq!(output.size(), [batch, queries, heads * dim]);
                    let error = (&output - &expected).abs().max().double_value(&[]);
                    assert!(
                        error < 1e-5,
                        "{batch}x{heads}x{queries}x{dim}x{length}: {error}"
                    );
                }
            }
        }
    }

    #[test]
    fn other_operands_are_refused() {
        let options = (Kind::Float, Device::Cpu);
        let query = Tensor::randn([1, 2, 1, 8], options);
        let keys = Tensor::randn([1, 2, 5, 8], options);
        let bias = Tensor::zeros([1, 1, 1, 5], options);
        assert!(!takes(&query.to_kind(Kind::BFloat16), &keys, &keys, &bias));
        let prefill = Tensor::randn([1, 2, MOST_QUERIES + 1, 8], options);
        assert!(!takes(&prefill, &keys, &keys, &bias));
        if !super::super::fp32::available() {
            return;
        }
        let error = attend(&query, &keys.narrow(3, 0, 4), &keys, &bias, 1.0, 1).expect_err("fails");
        assert!(error.contains("another shape"), "{error}");
    }
}
