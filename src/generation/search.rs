//! Greedy and beam search for sequence-to-sequence models, written once
//! over `Seq2SeqLm`, with transformers' semantics (`generate` with
//! `num_beams`, `length_penalty`, `early_stopping`, `min_length`,
//! `bad_words_ids`, `forced_eos_token_id`), so that the same checkpoint
//! gives the same tokens.
//!
//! A `Search` is resumable: sources join it between any two steps (each
//! at its own length), and a source whose search has ended leaves at
//! once, so that a scheduler can keep one batch running for every request.

use tch::{Kind, Tensor};

use super::seq2seq::{DecoderState, EarlyStopping, Seq2SeqLm};

/// How sources are decoded.
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
/// included, the end token included when the search produced it. The
/// sources decode together.
pub fn generate(
    model: &dyn Seq2SeqLm,
    sources: &[&[i64]],
    options: &SearchOptions,
) -> Vec<Vec<i64>> {
    let mut search = Search::new(*options);
    search.admit(model, sources.iter().copied().enumerate().collect());
    let mut outputs = vec![Vec::new(); sources.len()];
    while !search.is_empty() {
        for (index, tokens) in search.step(model) {
            outputs[index] = tokens;
        }
    }
    outputs
}

/// Sources being decoded together, each known by a key of the caller's.
pub struct Search<K> {
    options: SearchOptions,
    /// One group of `width` decoder rows per source, in `sources` order.
    state: Option<DecoderState>,
    sources: Vec<Source<K>>,
}

/// One source's search, as transformers keeps it.
struct Source<K> {
    key: K,
    /// The running hypotheses (start token first) and their scores; one,
    /// unscored, in greedy search.
    running: Vec<(Vec<i64>, f32)>,
    /// The best finished hypotheses, best first, at most `num_beams`.
    finished: Vec<(Vec<i64>, f32)>,
    /// Whether the running beams may still beat the finished ones.
    improvable: bool,
}

impl<K> Source<K> {
    /// Tokens so far, the start token included (the same for every beam).
    fn length(&self) -> usize {
        self.running.first().map_or(0, |(tokens, _)| tokens.len())
    }

    /// The answer: the best finished hypothesis, else the best running one,
    /// without the start token.
    fn answer(self) -> (K, Vec<i64>) {
        let best = self.finished.into_iter().next().map(|(tokens, _)| tokens);
        let mut tokens = best
            .or_else(|| self.running.into_iter().next().map(|(tokens, _)| tokens))
            .unwrap_or_default();
        let generated = if tokens.is_empty() {
            tokens
        } else {
            tokens.split_off(1)
        };
        (self.key, generated)
    }
}

impl<K> Search<K> {
    pub fn new(options: SearchOptions) -> Search<K> {
        Search {
            options,
            state: None,
            sources: Vec::new(),
        }
    }

    fn width(&self) -> usize {
        self.options.num_beams.max(1)
    }

    /// Sources still searching.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Encodes `sources` and adds them; they decode from the next step on.
    pub fn admit(&mut self, model: &dyn Seq2SeqLm, sources: Vec<(K, &[i64])>) {
        if sources.is_empty() {
            return;
        }
        let width = self.width();
        let ids: Vec<&[i64]> = sources.iter().map(|&(_, ids)| ids).collect();
        let started = model.start(&ids, width);
        match &mut self.state {
            Some(state) => state.append(started),
            None => self.state = Some(started),
        }
        let start = model.decoder_start_id();
        for (key, _) in sources {
            self.sources.push(Source {
                key,
                // Only the first beam is live at the start (the others score -1e9).
                running: (0..width)
                    .map(|beam| (vec![start], if beam == 0 { 0.0 } else { FINISHED }))
                    .collect(),
                finished: Vec::new(),
                improvable: true,
            });
        }
    }

    /// Drops the sources whose key fails `keep`, unanswered.
    pub fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        let done: Vec<bool> = self
            .sources
            .iter()
            .map(|source| !keep(&source.key))
            .collect();
        if !done.contains(&true) {
            return;
        }
        let width = self.width();
        let rows: Vec<usize> = (0..done.len())
            .filter(|&group| !done[group])
            .flat_map(|group| group * width..(group + 1) * width)
            .collect();
        self.remove(&done, &rows);
    }

    /// Removes the sources marked `done` and returns them; the decoder keeps
    /// `rows` (the remaining sources' rows, in order).
    fn remove(&mut self, done: &[bool], rows: &[usize]) -> Vec<Source<K>> {
        let kept: Vec<usize> = (0..done.len()).filter(|&index| !done[index]).collect();
        if kept.is_empty() {
            self.state = None;
        } else if let Some(state) = &mut self.state {
            state.select(&kept, rows);
        }
        let (removed, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.sources)
            .into_iter()
            .zip(done)
            .partition(|(_, &done)| done);
        self.sources = kept.into_iter().map(|(source, _)| source).collect();
        removed.into_iter().map(|(source, _)| source).collect()
    }

    /// One decoding step for every source; returns the sources whose search
    /// ended, with their generated tokens. They have left the search.
    pub fn step(&mut self, model: &dyn Seq2SeqLm) -> Vec<(K, Vec<i64>)> {
        let Some(state) = &mut self.state else {
            return Vec::new();
        };
        let start = model.decoder_start_id();
        let tokens: Vec<i64> = self
            .sources
            .iter()
            .flat_map(|source| {
                source
                    .running
                    .iter()
                    .map(|(tokens, _)| *tokens.last().unwrap_or(&start))
            })
            .collect();
        let logits = model.step(&tokens, state);
        let (rows, done) = if self.options.num_beams <= 1 {
            greedy_step(model, &mut self.sources, logits, &self.options)
        } else {
            beam_step(model, &mut self.sources, logits, &self.options)
        };
        self.remove(&done, &rows)
            .into_iter()
            .map(Source::answer)
            .collect()
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
    // transformers counts the start token in `cur_len`.
    let max_length = options.max_new_tokens + 1;
    let vocab = scores.size()[1];
    // Tokens banned for every row at once (single-token bad words), then
    // per-row bans: multi-token bad words whose prefix a row has just
    // written, the end token before the minimum length.
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
    let too_short: Vec<i64> = (0..histories.len() as i64)
        .filter(|&row| histories[row as usize].len() < options.min_new_tokens + 1)
        .collect();
    if too_short.len() == histories.len() {
        columns.push(eos);
    } else {
        cells.extend(too_short.into_iter().map(|row| (row, eos)));
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
        if (0..vocab).contains(&forced) {
            for (row, history) in histories.iter().enumerate() {
                if history.len() + 1 == max_length {
                    // As transformers: every other token -inf, the forced one
                    // 0 (so a beam's score is unchanged by its forced last
                    // token).
                    let mut row = scores.get(row as i64);
                    let _ = row.fill_(f64::NEG_INFINITY);
                    let _ = row.get(forced).fill_(0.0);
                }
            }
        }
    }
}

/// Greedy search's step over `logits` ([sources, vocab]): each source takes
/// its top token. Returns the rows of the sources still searching and which
/// sources are done.
fn greedy_step<K>(
    model: &dyn Seq2SeqLm,
    sources: &mut [Source<K>],
    mut scores: Tensor,
    options: &SearchOptions,
) -> (Vec<usize>, Vec<bool>) {
    let eos = model.eos_id();
    let max_length = options.max_new_tokens + 1;
    let histories: Vec<&[i64]> = sources
        .iter()
        .map(|source| source.running[0].0.as_slice())
        .collect();
    process(model, &mut scores, &histories, options);
    let next = Vec::<i64>::try_from(scores.argmax(-1, false)).unwrap_or_default();
    let mut rows = Vec::with_capacity(sources.len());
    let mut done = Vec::with_capacity(sources.len());
    for (row, (source, &token)) in sources.iter_mut().zip(&next).enumerate() {
        let tokens = &mut source.running[0].0;
        tokens.push(token);
        let finished = token == eos || tokens.len() >= max_length;
        if !finished {
            rows.push(row);
        }
        done.push(finished);
    }
    (rows, done)
}

/// Beam search's step over `logits` ([sources * width, vocab]), as
/// transformers' `_beam_search`. Returns the rows the next step continues
/// from (each kept source's new beams, in order) and which sources are done.
fn beam_step<K>(
    model: &dyn Seq2SeqLm,
    sources: &mut [Source<K>],
    logits: Tensor,
    options: &SearchOptions,
) -> (Vec<usize>, Vec<bool>) {
    let width = options.num_beams;
    let eos = model.eos_id();
    let max_length = options.max_new_tokens + 1;
    let mut scores = logits.log_softmax(-1, Kind::Float);
    let histories: Vec<&[i64]> = sources
        .iter()
        .flat_map(|source| source.running.iter().map(|(tokens, _)| tokens.as_slice()))
        .collect();
    process(model, &mut scores, &histories, options);
    let running: Vec<f32> = sources
        .iter()
        .flat_map(|source| source.running.iter().map(|&(_, score)| score))
        .collect();
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
    let mut next_rows: Vec<usize> = Vec::new();
    let mut done = Vec::with_capacity(sources.len());
    for (index, search) in sources.iter_mut().enumerate() {
        let rows = log_probs
            .get(index * span..(index + 1) * span)
            .unwrap_or(&[]);
        let offsets = running
            .get(index * width..(index + 1) * width)
            .unwrap_or(&[]);
        let candidates: Vec<(f32, usize, i64)> = top_k(rows, vocab, offsets, 2 * width)
            .into_iter()
            .map(|(score, flat)| (score, flat / vocab, (flat % vocab) as i64))
            .collect();
        let cur_len = search.length();
        let hits = |token: i64| token == eos || cur_len + 1 >= max_length;
        // Finished hypotheses: only among the best `width` candidates.
        let full = search.finished.len() == width;
        let may_add = search.improvable && !(full && options.early_stopping == EarlyStopping::Stop);
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
        let mut beams = Vec::with_capacity(width);
        let mut rows = Vec::with_capacity(width);
        for &(score, beam, token) in ranked.iter().take(width) {
            let mut tokens = search.running[beam].0.clone();
            tokens.push(token);
            beams.push((tokens, score));
            rows.push(index * width + beam);
        }
        search.running = beams;
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
        let finished = !search.improvable
            || (all_finished && options.early_stopping == EarlyStopping::Stop)
            || all_hit;
        if !finished {
            next_rows.extend(rows);
        }
        done.push(finished);
    }
    (next_rows, done)
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
