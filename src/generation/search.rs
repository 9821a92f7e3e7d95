//! Greedy and beam search for sequence-to-sequence models, written once
//! over `Seq2SeqLm`, with transformers' semantics (`generate` with
//! `num_beams`, `length_penalty`, `early_stopping`, `min_length`,
//! `bad_words_ids`, `forced_eos_token_id`), so that the same checkpoint
//! gives the same tokens. Many sources decode together; a source whose
//! search has ended leaves the batch at once.

use tch::{Kind, Tensor};

use super::seq2seq::{EarlyStopping, Seq2SeqLm};

/// How one batch of sources is decoded.
#[derive(Debug, Clone, Copy)]
pub struct SearchOptions {
    /// 1 is greedy search.
    pub num_beams: usize,
    /// The most tokens generated per source, the end token included (the
    /// start token is not counted).
    pub max_new_tokens: usize,
    /// The fewest tokens generated before the end token may come.
    pub min_new_tokens: usize,
    pub length_penalty: f64,
    pub early_stopping: EarlyStopping,
}

/// Transformers' "minus infinity" for a finished beam's running score.
const FINISHED: f32 = -1.0e9;

/// The generated tokens of each source, in order: the start token not
/// included, the end token included when the search produced it.
pub fn generate(
    model: &dyn Seq2SeqLm,
    sources: &[&[i64]],
    options: &SearchOptions,
) -> Vec<Vec<i64>> {
    if sources.is_empty() {
        return Vec::new();
    }
    if options.num_beams <= 1 {
        greedy(model, sources, options)
    } else {
        beam(model, sources, options)
    }
}

/// Sets banned continuations to -inf in `scores` ([rows, vocab]), given
/// each row's tokens so far (start token included), as transformers'
/// min-length, bad-words and forced-EOS processors do.
fn process(
    model: &dyn Seq2SeqLm,
    scores: &mut Tensor,
    histories: &[&[i64]],
    options: &SearchOptions,
) {
    let eos = model.eos_id();
    let generated = histories.first().map_or(0, |history| history.len());
    // transformers counts the start token in `cur_len`.
    let max_length = options.max_new_tokens + 1;
    let vocab = scores.size()[1];
    // Tokens banned for every row at once (single-token bad words, the end
    // token before the minimum length), then per-row bans of multi-token
    // bad words whose prefix a row has just written.
    let mut columns: Vec<i64> = Vec::new();
    let mut cells: Vec<(i64, i64)> = Vec::new();
    for bad in &model.generation().bad_words_ids {
        match bad.split_last() {
            Some((&last, [])) => columns.push(last),
            Some((&last, prefix)) => {
                for (row, history) in histories.iter().enumerate() {
                    if history.ends_with(prefix) {
                        cells.push((row as i64, last));
                    }
                }
            }
            None => {}
        }
    }
    if generated < options.min_new_tokens + 1 {
        columns.push(eos);
    }
    columns.retain(|token| (0..vocab).contains(token));
    if !columns.is_empty() {
        let index = Tensor::from_slice(&columns).to_device(scores.device());
        let _ = scores.index_fill_(1, &index, f64::NEG_INFINITY);
    }
    for (row, token) in cells {
        if (0..vocab).contains(&token) {
            let _ = scores.get(row).get(token).fill_(f64::NEG_INFINITY);
        }
    }
    if let Some(forced) = model.generation().forced_eos_token_id {
        if generated + 1 == max_length && (0..vocab).contains(&forced) {
            // As transformers: every other token -inf, the forced one 0 (so a
            // beam's score is unchanged by its forced last token).
            let _ = scores.fill_(f64::NEG_INFINITY);
            let _ = scores.select(1, forced).fill_(0.0);
        }
    }
}

fn greedy(model: &dyn Seq2SeqLm, sources: &[&[i64]], options: &SearchOptions) -> Vec<Vec<i64>> {
    let mut state = model.start(sources);
    let start = model.decoder_start_id();
    let eos = model.eos_id();
    let max_length = options.max_new_tokens + 1;
    // Every row's tokens, the start token first; `alive` maps rows to sources.
    let mut sequences: Vec<Vec<i64>> = vec![vec![start]; sources.len()];
    let mut alive: Vec<usize> = (0..sources.len()).collect();
    while !alive.is_empty() {
        let tokens: Vec<i64> = alive
            .iter()
            .map(|&source| *sequences[source].last().unwrap_or(&start))
            .collect();
        let mut scores = model.step(&tokens, &mut state);
        let histories: Vec<&[i64]> = alive
            .iter()
            .map(|&source| sequences[source].as_slice())
            .collect();
        process(model, &mut scores, &histories, options);
        let next = Vec::<i64>::try_from(scores.argmax(-1, false)).unwrap_or_default();
        let mut keep = Vec::new();
        for (row, (&source, &token)) in alive.iter().zip(&next).enumerate() {
            sequences[source].push(token);
            if token != eos && sequences[source].len() < max_length {
                keep.push(row);
            }
        }
        if keep.len() < alive.len() {
            let rows: Vec<i64> = keep.iter().map(|&row| row as i64).collect();
            alive = keep.iter().map(|&row| alive[row]).collect();
            if !alive.is_empty() {
                state.select_rows(&rows);
            }
        }
    }
    sequences
        .into_iter()
        .map(|mut tokens| tokens.split_off(1))
        .collect()
}

/// One source's beam search, as transformers keeps it.
struct Beams {
    source: usize,
    /// The running hypotheses (start token first) and their scores.
    running: Vec<(Vec<i64>, f32)>,
    /// The best finished hypotheses, best first, at most `num_beams`.
    finished: Vec<(Vec<i64>, f32)>,
    /// Whether the running beams may still beat the finished ones.
    improvable: bool,
    done: bool,
}

fn beam(model: &dyn Seq2SeqLm, sources: &[&[i64]], options: &SearchOptions) -> Vec<Vec<i64>> {
    let width = options.num_beams;
    let start = model.decoder_start_id();
    let eos = model.eos_id();
    let max_length = options.max_new_tokens + 1;
    let mut state = model.start(sources);
    // Each source's row repeated once per beam.
    let repeated: Vec<i64> = (0..sources.len() as i64)
        .flat_map(|row| std::iter::repeat_n(row, width))
        .collect();
    state.select_rows(&repeated);
    let mut searches: Vec<Beams> = (0..sources.len())
        .map(|source| Beams {
            source,
            // Only the first beam is live at the start (the others score -1e9).
            running: (0..width)
                .map(|beam| (vec![start], if beam == 0 { 0.0 } else { FINISHED }))
                .collect(),
            finished: Vec::new(),
            improvable: true,
            done: false,
        })
        .collect();
    let mut outputs: Vec<Vec<i64>> = vec![Vec::new(); sources.len()];
    let mut cur_len = 1usize;
    while !searches.is_empty() {
        let tokens: Vec<i64> = searches
            .iter()
            .flat_map(|search| {
                search
                    .running
                    .iter()
                    .map(|(tokens, _)| *tokens.last().unwrap_or(&start))
            })
            .collect();
        let logits = model.step(&tokens, &mut state);
        let mut scores = logits.log_softmax(-1, Kind::Float);
        let histories: Vec<&[i64]> = searches
            .iter()
            .flat_map(|search| search.running.iter().map(|(tokens, _)| tokens.as_slice()))
            .collect();
        process(model, &mut scores, &histories, options);
        let running: Vec<f32> = searches
            .iter()
            .flat_map(|search| search.running.iter().map(|&(_, score)| score))
            .collect();
        let vocab = scores.size()[1] as usize;
        // One copy of the log-probabilities; each beam's running score is
        // added while scanning (as transformers' `log_probs + beam_scores`).
        let log_probs = Vec::<f32>::try_from(scores.flatten(0, -1)).unwrap_or_default();
        let span = width * vocab;
        let (mut top_scores, mut top_indices) = (Vec::new(), Vec::new());
        for index in 0..searches.len() {
            let rows = log_probs
                .get(index * span..(index + 1) * span)
                .unwrap_or(&[]);
            let offsets = running
                .get(index * width..(index + 1) * width)
                .unwrap_or(&[]);
            for (score, flat) in top_k(rows, vocab, offsets, 2 * width) {
                top_scores.push(score);
                top_indices.push(flat as i64);
            }
        }
        let vocab = vocab as i64;
        // The rows the next step continues from, in the new beam order.
        let mut next_rows: Vec<i64> = Vec::new();
        for (index, search) in searches.iter_mut().enumerate() {
            let candidates = (0..2 * width).map(|rank| {
                let flat = top_indices[index * 2 * width + rank];
                let beam = (flat / vocab) as usize;
                let token = flat % vocab;
                (top_scores[index * 2 * width + rank], beam, token)
            });
            let candidates: Vec<(f32, usize, i64)> = candidates.collect();
            let hits = |token: i64| token == eos || cur_len + 1 >= max_length;
            // Finished hypotheses: only among the best `width` candidates.
            let full = search.finished.len() == width;
            let may_add =
                search.improvable && !(full && options.early_stopping == EarlyStopping::Stop);
            if may_add {
                let length = (cur_len + 1 - 1) as f64;
                for &(score, beam, token) in candidates.iter().take(width) {
                    if hits(token) {
                        let mut tokens = search.running[beam].0.clone();
                        tokens.push(token);
                        let scored = (score as f64 / length.powf(options.length_penalty)) as f32;
                        search.finished.push((tokens, scored));
                    }
                }
                // Stable: earlier entries win ties, as in topk over [old, new].
                search.finished.sort_by(|a, b| b.1.total_cmp(&a.1));
                search.finished.truncate(width);
            }
            // Running beams: the best candidates that did not finish (a finished
            // one only when fewer remain, at a score that puts it last).
            let mut ranked: Vec<(f32, usize, i64)> = candidates
                .iter()
                .map(|&(score, beam, token)| {
                    (
                        if hits(token) { score + FINISHED } else { score },
                        beam,
                        token,
                    )
                })
                .collect();
            ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
            let all_hit = candidates.iter().all(|&(_, _, token)| hits(token));
            let base = (index * width) as i64;
            let mut running = Vec::with_capacity(width);
            for &(score, beam, token) in ranked.iter().take(width) {
                let mut tokens = search.running[beam].0.clone();
                tokens.push(token);
                running.push((tokens, score));
                next_rows.push(base + beam as i64);
            }
            search.running = running;
            // transformers' `_check_early_stop_heuristic`, at the new length.
            let length = match options.early_stopping {
                EarlyStopping::Never if options.length_penalty > 0.0 => max_length - 1,
                _ => cur_len + 1 - 1,
            } as f64;
            let best_possible =
                (search.running[0].1 as f64 / length.powf(options.length_penalty)) as f32;
            let all_finished = search.finished.len() == width;
            let worst_finished = if all_finished {
                search
                    .finished
                    .iter()
                    .map(|(_, score)| *score)
                    .fold(f32::INFINITY, f32::min)
            } else {
                FINISHED
            };
            search.improvable = search.improvable && best_possible > worst_finished;
            search.done = !search.improvable
                || (all_finished && options.early_stopping == EarlyStopping::Stop)
                || all_hit;
        }
        cur_len += 1;
        // Rows of sources still searching, then the finished sources' answers.
        let mut kept_rows = Vec::with_capacity(next_rows.len());
        let mut kept = Vec::with_capacity(searches.len());
        for (index, search) in searches.into_iter().enumerate() {
            if search.done {
                let best = search.finished.into_iter().next().map(|(tokens, _)| tokens);
                let mut tokens = best.unwrap_or_else(|| search.running[0].0.clone());
                outputs[search.source] = tokens.split_off(1);
            } else {
                kept_rows.extend_from_slice(&next_rows[index * width..(index + 1) * width]);
                kept.push(search);
            }
        }
        searches = kept;
        if !searches.is_empty() {
            state.select_rows(&kept_rows);
        }
    }
    outputs
}

/// The `k` largest of `values[i] + offsets[i / width]` with their indices,
/// largest first (an earlier index first among equals). One pass, cheaper
/// than libtorch's topk over a beam's `num_beams * vocab` scores.
fn top_k(values: &[f32], width: usize, offsets: &[f32], k: usize) -> Vec<(f32, usize)> {
    let mut best: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    let mut threshold = f32::NEG_INFINITY;
    for (row, (chunk, &offset)) in values.chunks(width.max(1)).zip(offsets).enumerate() {
        for (column, &value) in chunk.iter().enumerate() {
            let total = value + offset;
            // -inf (a banned token) never enters, as in transformers only
            // when nothing else is left; there always is.
            if total <= threshold && best.len() == k {
                continue;
            }
            let at = best.partition_point(|&(kept, _)| kept >= total);
            best.insert(at, (total, row * width + column));
            best.truncate(k);
            if best.len() == k {
                threshold = best[k - 1].0;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::top_k;

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
}
