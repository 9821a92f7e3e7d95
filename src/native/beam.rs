//! A beam search step's candidates straight from its logits
//! (src/native/beam.cpp): each row's best logits with their columns and its
//! log-softmax terms, the rows split between the model thread and its
//! crew, instead of libtorch's log_softmax over every column.

use tch::{Device, Kind, Tensor};

use super::tensor;

extern "C" {
    fn nlp_beam_candidates_available() -> i32;
    fn nlp_beam_candidates(
        logits: tensor,
        k: i64,
        values: *mut f32,
        columns: *mut i64,
        terms: *mut f32,
        threads: i64,
    ) -> i32;
}

/// Whether this CPU runs the kernel (AVX-512).
pub fn available() -> bool {
    // SAFETY: no arguments; reads the CPU's features.
    unsafe { nlp_beam_candidates_available() != 0 }
}

/// Each row's `k` largest logits and its log-softmax terms.
#[derive(Debug)]
pub struct RowCandidates {
    k: usize,
    /// [rows, k]: largest first, the earlier column first among equals.
    values: Vec<f32>,
    /// [rows, k]: the values' columns.
    columns: Vec<i64>,
    /// [rows, 2]: the row's maximum and log(sum of e^(x - max)).
    terms: Vec<f32>,
}

impl RowCandidates {
    /// Row `row`'s candidates, best first: (log-probability, column), the
    /// log-probability computed as libtorch's log_softmax does.
    pub fn row(&self, row: usize) -> impl Iterator<Item = (f32, i64)> + '_ {
        let (maximum, log_sum) = (self.terms[2 * row], self.terms[2 * row + 1]);
        let span = row * self.k..(row + 1) * self.k;
        self.values[span.clone()]
            .iter()
            .zip(&self.columns[span])
            .map(move |(&value, &column)| ((value - maximum) - log_sum, column))
    }
}

/// The candidates of `logits` ([rows, vocab] fp32 on the CPU, contiguous)
/// for `k` in 1..=vocab, on `threads` threads; an error for other operands
/// or where the CPU lacks AVX-512 (the caller checks `available`).
pub fn candidates(logits: &Tensor, k: usize, threads: i64) -> Result<RowCandidates, String> {
    let size = logits.size();
    let fits = logits.kind() == Kind::Float
        && logits.device() == Device::Cpu
        && logits.is_contiguous()
        && size.len() == 2
        && k >= 1
        && (k as i64) <= size[1];
    if !fits || !available() {
        return Err("beam candidates take contiguous [rows, vocab] fp32 CPU logits and 1 <= k <= vocab on AVX-512".into());
    }
    let rows = size[0] as usize;
    let mut values = vec![0.0f32; rows * k];
    let mut columns = vec![0i64; rows * k];
    let mut terms = vec![0.0f32; rows * 2];
    // SAFETY: `logits` is live for the call and checked above; each output
    // buffer holds exactly what the kernel writes ([rows, k], [rows, k],
    // [rows, 2]), and nothing else touches them during the call.
    let status = unsafe {
        nlp_beam_candidates(
            logits.as_ptr() as tensor,
            k as i64,
            values.as_mut_ptr(),
            columns.as_mut_ptr(),
            terms.as_mut_ptr(),
            threads,
        )
    };
    if status != 0 {
        // SAFETY: the kernel set this thread's message before returning -1.
        let message = unsafe { std::ffi::CStr::from_ptr(super::nlp_last_error()) };
        return Err(message.to_string_lossy().into_owned());
    }
    Ok(RowCandidates {
        k,
        values,
        columns,
        terms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against libtorch: the same log-probabilities (within a few units in
    /// the last place: the exponential is not libtorch's) and each row's
    /// best columns in libtorch's order, ties to the earlier column.
    #[test]
    fn gives_libtorchs_log_softmax_at_the_best_columns() {
        if !available() {
            return;
        }
        tch::manual_seed(7);
        for vocab in [5i64, 16, 100, 1000, 58_101] {
            let logits = Tensor::randn([6, vocab], (Kind::Float, Device::Cpu)) * 4.0;
            // Ties (the first two columns equal the best), a banned column.
            let best = logits.argmax(-1, true);
            let top = logits.gather(1, &best, false);
            logits.narrow(1, 0, 2).copy_(&top.expand([6, 2], false));
            let _ = logits.narrow(1, vocab - 1, 1).fill_(f64::NEG_INFINITY);
            let k = 4.min(vocab as usize);
            let found = candidates(&logits, k, 2).expect("candidates");
            let log_probs = logits.log_softmax(-1, Kind::Float);
            for row in 0..6 {
                let expected: Vec<f32> = Vec::try_from(log_probs.get(row as i64)).expect("row");
                let mut order: Vec<usize> = (0..vocab as usize).collect();
                order.sort_by(|&a, &b| expected[b].total_cmp(&expected[a]).then(a.cmp(&b)));
                let got: Vec<(f32, i64)> = found.row(row).collect();
                let columns: Vec<i64> = got.iter().map(|&(_, column)| column).collect();
                let wanted: Vec<i64> = order[..k].iter().map(|&c| c as i64).collect();
                assert_eq!(columns, wanted, "vocab {vocab}, row {row}");
                assert_eq!(&columns[..2], [0, 1], "ties go to the earlier column");
                for (log_prob, column) in got {
                    let exact = expected[column as usize];
                    assert!(
                        (log_prob - exact).abs() <= 4.0 * f32::EPSILON * exact.abs().max(1.0),
                        "vocab {vocab}: {log_prob} against {exact}"
                    );
                }
            }
        }
    }

    #[test]
    fn other_operands_are_refused() {
        let logits = Tensor::zeros([2, 8], (Kind::Float, Device::Cpu));
        assert!(candidates(&logits, 0, 1).is_err());
        assert!(candidates(&logits, 9, 1).is_err());
        assert!(candidates(&logits.to_kind(Kind::Double), 2, 1).is_err());
        assert!(candidates(&logits.transpose(0, 1), 1, 1).is_err());
    }
}
