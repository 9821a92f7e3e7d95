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
        sources: tensor,
        scale: f64,
        threads: i64,
    ) -> tensor;
}

/// Queries per row up to which the kernel serves: a decoding step's one,
/// or a beam group's few over its source in cross-attention. Prefills go
/// to libtorch's fused kernel.
pub const MOST_QUERIES: i64 = 16;

/// Whether this CPU runs the kernel (AVX2 and FMA).
pub fn available() -> bool {
    super::fp32::available()
}

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
        && available()
}

/// softmax(query keys^T * scale + bias) values for query [batch, heads,
/// queries, dim], keys and values [rows, heads, length, dim] and an
/// additive bias broadcast to [batch, 1, queries, length]; heads merged:
/// [batch, queries, heads * dim]. Row b's column k is read from row
/// `sources[b][k]` of the keys and values ([batch, length] int64), or from
/// row b without `sources`. The caller checks `takes`.
pub fn attend(
    query: &Tensor,
    keys: &Tensor,
    values: &Tensor,
    bias: &Tensor,
    sources: Option<&Tensor>,
    scale: f64,
    threads: i64,
) -> Result<Tensor, String> {
    let none = Tensor::new();
    let sources = sources.unwrap_or(&none);
    // SAFETY: every tensor is live for the call; the C++ side checks kinds,
    // shapes and strides and reports a mismatch as an error.
    returned(unsafe {
        nlp_decode_attention(
            query.as_ptr() as tensor,
            keys.as_ptr() as tensor,
            values.as_ptr() as tensor,
            bias.as_ptr() as tensor,
            sources.as_ptr() as tensor,
            scale,
            threads,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generation::kv_cache::gather_columns;
    use crate::generation::layers::merge_heads;

    /// libtorch's attention, heads merged.
    fn reference(
        query: &Tensor,
        keys: &Tensor,
        values: &Tensor,
        bias: &Tensor,
        scale: f64,
    ) -> Tensor {
        merge_heads(&Tensor::scaled_dot_product_attention(
            query,
            keys,
            values,
            Some(bias),
            0.0,
            false,
            Some(scale),
        ))
    }

    #[test]
    fn gives_libtorchs_attention_on_strided_operands_and_masks() {
        if !available() {
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
                    let output =
                        attend(&query, &keys, &values, bias, None, 0.3, threads).expect("runs");
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

    /// Row b's column k read from row sources[b][k]: what gathering those
    /// rows first and attending over them gives.
    #[test]
    fn reads_each_column_from_its_source_row() {
        if !available() {
            return;
        }
        tch::manual_seed(6);
        let options = (Kind::Float, Device::Cpu);
        let (rows, heads, length, dim) = (4, 2, 11, 16);
        let keys = Tensor::randn([rows, heads, length + 3, dim], options).narrow(2, 0, length);
        let values = Tensor::randn([rows, heads, length + 3, dim], options).narrow(2, 0, length);
        let sources = Tensor::randint(rows, [rows, length], (Kind::Int64, Device::Cpu));
        let gather = |buffer: &Tensor| gather_columns(buffer, &sources);
        let query = Tensor::randn([rows, heads, 1, dim], options);
        let bias = Tensor::zeros([rows, 1, 1, length], options);
        let expected = reference(&query, &gather(&keys), &gather(&values), &bias, 0.25);
        for threads in [1, 2] {
            let output =
                attend(&query, &keys, &values, &bias, Some(&sources), 0.25, threads).expect("runs");
            let error = (&output - &expected).abs().max().double_value(&[]);
            assert!(error < 1e-5, "{error}");
        }
        let outside = sources.full_like(rows);
        let error =
            attend(&query, &keys, &values, &bias, Some(&outside), 1.0, 1).expect_err("fails");
        assert!(error.contains("out of range"), "{error}");
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
        if !available() {
            return;
        }
        let error =
            attend(&query, &keys.narrow(3, 0, 4), &keys, &bias, None, 1.0, 1).expect_err("fails");
        assert!(error.contains("another shape"), "{error}");
    }
}
