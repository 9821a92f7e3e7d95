//! A beam search step's candidates: for each source, its `2 * width` best
//! continuations over all its beams, scored as transformers' `_beam_search`
//! scores them (log_softmax of the logits, the processors' bans, plus the
//! beam's running score), best first, the earlier (beam, token) first
//! among equals, as a top-k over the flattened `[width * vocab]` scores.
//!
//! On CPUs with AVX-512 src/native/beam.cpp reads each row's best logits
//! and its log-softmax terms in one pass (rows split with the crew), and
//! only those few continuations are scored here; elsewhere (a GPU, an
//! older CPU) libtorch's log_softmax scores every one.

use tch::{Device, Kind, Tensor};

use super::bans::Bans;
use crate::native::beam;

/// A continuation: (score, beam within its source, token).
pub type Candidate = (f32, usize, i64);

/// Each source's best `2 * width` candidates for `logits` ([sources *
/// width, vocab]), given each row's bans and running score.
pub fn best(logits: Tensor, bans: &Bans, running: &[f32], width: usize) -> Vec<Vec<Candidate>> {
    let vocab = logits.size()[1];
    let wanted = 2 * width;
    // Enough per row that `wanted` remain after its bans.
    let k = (wanted + bans.most_per_row()).min(vocab.max(0) as usize);
    if k >= 1 && logits.device() == Device::Cpu && beam::available() {
        let contiguous = logits.to_kind(Kind::Float).contiguous();
        let threads = i64::from(crate::openmp::model_threads());
        match beam::candidates(&contiguous, k, threads) {
            Ok(rows) => return from_rows(&rows, bans, running, width),
            Err(error) => tracing::debug!(%error, "beam candidates fell back to libtorch's"),
        }
    }
    scored_by_libtorch(logits, bans, running, width)
}

/// `best` from each row's best logits: a row's own `2 * width` allowed
/// ones suffice, since its running score shifts all its columns alike.
fn from_rows(
    rows: &beam::RowCandidates,
    bans: &Bans,
    running: &[f32],
    width: usize,
) -> Vec<Vec<Candidate>> {
    running
        .chunks(width.max(1))
        .enumerate()
        .map(|(source, offsets)| {
            let mut found: Vec<Candidate> = Vec::with_capacity(2 * width * width);
            for (beam, &offset) in offsets.iter().enumerate() {
                let row = source * width + beam;
                match bans.forced(row) {
                    Some(token) => found.push((0.0 + offset, beam, token)),
                    None => found.extend(
                        rows.row(row)
                            .filter(|&(_, token)| bans.allows(row, token))
                            .take(2 * width)
                            .map(|(log_prob, token)| (log_prob + offset, beam, token)),
                    ),
                }
            }
            found.sort_by(|a, b| {
                b.0.partial_cmp(&a.0)
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then((a.1, a.2).cmp(&(b.1, b.2)))
            });
            found.truncate(2 * width);
            found
        })
        .collect()
}

/// `best` through libtorch's log_softmax over every column.
fn scored_by_libtorch(
    logits: Tensor,
    bans: &Bans,
    running: &[f32],
    width: usize,
) -> Vec<Vec<Candidate>> {
    let mut scores = logits.log_softmax(-1, Kind::Float);
    bans.apply(&mut scores);
    let vocab = scores.size()[1] as usize;
    // One copy of the log-probabilities; each beam's running score is added
    // while scanning (as transformers' `log_probs + beam_scores`).
    let copied;
    let log_probs = match cpu_f32_values(&scores) {
        Some(values) => values,
        None => {
            copied = Vec::<f32>::try_from(scores.flatten(0, -1)).unwrap_or_default();
            copied.as_slice()
        }
    };
    let span = width * vocab;
    running
        .chunks(width.max(1))
        .enumerate()
        .map(|(source, offsets)| {
            let rows = log_probs
                .get(source * span..(source + 1) * span)
                .unwrap_or(&[]);
            top_k(rows, vocab, offsets, 2 * width)
                .into_iter()
                .map(|(score, flat)| (score, flat / vocab, (flat % vocab) as i64))
                .collect()
        })
        .collect()
}

/// The `k` largest of `values[i] + offsets[i / width]` with their indices,
/// largest first (an earlier index first among equals). One pass, cheaper
/// than libtorch's topk over a beam's `num_beams * vocab` scores.
fn top_k(values: &[f32], width: usize, offsets: &[f32], k: usize) -> Vec<(f32, usize)> {
    let mut best: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    let width = width.max(1);
    let mut threshold = f32::NEG_INFINITY;
    for (row, (values, &offset)) in values.chunks(width).zip(offsets).enumerate() {
        for (block, chunk) in values.chunks(BLOCK).enumerate() {
            // Most blocks hold nothing above the threshold once `best` is
            // full: their maximum (a vectorised pass) says so.
            if best.len() == k && block_max(chunk) + offset <= threshold {
                continue;
            }
            for (place, &value) in chunk.iter().enumerate() {
                let total = value + offset;
                // -inf (a banned token) never enters, as in transformers only
                // when nothing else is left; there always is.
                if total <= threshold && best.len() == k {
                    continue;
                }
                let at = best.partition_point(|&(kept, _)| kept >= total);
                best.insert(at, (total, row * width + block * BLOCK + place));
                best.truncate(k);
                if best.len() == k {
                    threshold = best[k - 1].0;
                }
            }
        }
    }
    best
}

/// The values of a contiguous fp32 tensor on the CPU, read in place (the
/// log-probabilities of a 64-row step are 15 MB: copying them out took
/// as long as scanning them). None for any other tensor.
fn cpu_f32_values(tensor: &Tensor) -> Option<&[f32]> {
    let readable = tensor.device() == tch::Device::Cpu
        && tensor.kind() == Kind::Float
        && tensor.is_contiguous();
    if !readable {
        return None;
    }
    let count = tensor.numel();
    if count == 0 {
        return Some(&[]);
    }
    // SAFETY: the tensor is a contiguous fp32 CPU tensor of `count` values
    // starting at `data_ptr`; the slice borrows `tensor`, so the storage
    // outlives it, and nothing writes to it while it is borrowed (the
    // caller's scores are not modified after this point).
    Some(unsafe { std::slice::from_raw_parts(tensor.data_ptr() as *const f32, count) })
}

/// Values `top_k` skips at once when none passes its threshold.
const BLOCK: usize = 64;

/// The largest of `values` (NaN-free log-probabilities), in lanes the
/// compiler vectorises.
fn block_max(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let mut chunks = values.chunks_exact(16);
    for chunk in &mut chunks {
        for (lane, &value) in lanes.iter_mut().zip(chunk) {
            *lane = if value > *lane { value } else { *lane };
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    lanes.iter().fold(tail, |a, &b| if b > a { b } else { a })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's path and libtorch's give the same candidates, with
    /// bans on every row, on one row, a forced row and ties.
    #[test]
    fn both_paths_give_the_same_candidates() {
        if !beam::available() {
            return;
        }
        tch::manual_seed(3);
        let (width, sources, vocab) = (4usize, 3usize, 997i64);
        let rows = (width * sources) as i64;
        let logits = Tensor::randn([rows, vocab], (Kind::Float, Device::Cpu)) * 3.0;
        let top = logits.get(0).argmax(0, false).int64_value(&[]);
        // Rows 4 and 5 (source 1) the same: equal scores, the earlier beam
        // first. Column 7 of row 0 ties its best.
        logits.get(5).copy_(&logits.get(4));
        logits.get(0).get(7).copy_(&logits.get(0).max());
        let mut running: Vec<f32> = (0..rows).map(|row| -(row as f32) * 0.37).collect();
        running[5] = running[4];
        // The best token of row 2 banned everywhere, of row 9 on row 9 only;
        // row 11 forced to end.
        let best_of = |row: i64| logits.get(row).argmax(0, false).int64_value(&[]);
        let bans = Bans::from_parts(
            vec![best_of(2)],
            vec![(9, best_of(9)), (9, 0)],
            (0..rows).map(|row| (row == 11).then_some(2)).collect(),
        );
        let fast = best(logits.shallow_clone(), &bans, &running, width);
        let slow = scored_by_libtorch(logits.shallow_clone(), &bans, &running, width);
        assert_eq!(fast.len(), sources);
        for (fast, slow) in fast.iter().zip(&slow) {
            let picks = |list: &[Candidate]| -> Vec<(usize, i64)> {
                list.iter().map(|&(_, beam, token)| (beam, token)).collect()
            };
            assert_eq!(picks(fast), picks(slow));
            for (a, b) in fast.iter().zip(slow) {
                assert!(
                    (a.0 - b.0).abs() <= 1e-5 * b.0.abs().max(1.0),
                    "{a:?} {b:?}"
                );
            }
        }
        // Beam 0's tie: equal scores, the earlier column first.
        let tied: Vec<&Candidate> = fast[0].iter().filter(|c| c.1 == 0).take(2).collect();
        assert_eq!(tied[0].0, tied[1].0);
        assert_eq!((tied[0].2, tied[1].2), (top.min(7), top.max(7)));
        assert!(fast
            .iter()
            .flatten()
            .all(|&(_, _, token)| token != best_of(2)));
        assert!(fast[2]
            .iter()
            .all(|&(_, beam, token)| beam != 1 || (token != best_of(9) && token != 0)));
        assert!(fast[2]
            .iter()
            .any(|&(score, beam, token)| beam == 3 && token == 2 && score == running[11]));
    }

    #[test]
    fn top_k_takes_the_largest_first_and_the_earliest_among_equals() {
        let values = [0.5, f32::NEG_INFINITY, 2.0, 0.5, -1.0, 2.0, 3.0, 0.0];
        // Two rows of four: the second row's values gain 1.0.
        let offsets = [0.0, 1.0];
        assert_eq!(
            top_k(&values, 4, &offsets, 4),
            [(4.0, 6), (3.0, 5), (2.0, 2), (1.0, 7)]
        );
        assert_eq!(top_k(&values, 4, &offsets, 10).len(), values.len());
        assert!(top_k(&values, 4, &offsets, 0).is_empty());
        assert_eq!(top_k(&[1.0, 1.0], 2, &[0.0], 1), [(1.0, 0)]);
    }

    /// Over rows of many blocks, with ties and banned tokens, the block
    /// skipping gives what sorting every value gives.
    #[test]
    fn top_k_over_blocks_is_a_full_sort() {
        let width = 1000;
        let rows = 4;
        // Coarse values (many ties), a few banned, the best late in a row.
        let values: Vec<f32> = (0..rows * width)
            .map(|i| match i % 97 {
                0 => f32::NEG_INFINITY,
                _ => ((i * 7919) % 61) as f32 * 0.25 - 10.0 + (i % width) as f32 * 1e-3,
            })
            .collect();
        let offsets = [0.0, -0.5, 0.75, -3.0];
        let mut sorted: Vec<(f32, usize)> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| (v + offsets[i / width], i))
            .collect();
        sorted.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for k in [1, 8, 100] {
            assert_eq!(
                top_k(&values, width, &offsets, k),
                sorted[..k].to_vec(),
                "k {k}"
            );
        }
    }
}
