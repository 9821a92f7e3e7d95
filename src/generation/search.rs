//! Greedy and beam search for sequence-to-sequence models, written once
//! over `Seq2SeqLm`, with transformers' semantics (`generate` with
//! `num_beams`, `length_penalty`, `early_stopping`, `min_length`,
//! `bad_words_ids`, `forced_eos_token_id`), so that the same checkpoint
//! gives the same tokens.
//!
//! A `Search` is resumable: sources join it between any two steps (each
//! at its own length), and a source whose search has ended leaves at
//! once, so that a scheduler can keep one batch running for every request.

use tch::Tensor;

use super::bans::Bans;
use super::candidates;
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
    Bans::new(model, &histories, options, scores.size()[1]).apply(&mut scores);
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
    let histories: Vec<&[i64]> = sources
        .iter()
        .flat_map(|source| source.running.iter().map(|(tokens, _)| tokens.as_slice()))
        .collect();
    let running: Vec<f32> = sources
        .iter()
        .flat_map(|source| source.running.iter().map(|&(_, score)| score))
        .collect();
    let bans = Bans::new(model, &histories, options, logits.size()[1]);
    let best = candidates::best(logits, &bans, &running, width);
    let mut next_rows: Vec<usize> = Vec::new();
    let mut done = Vec::with_capacity(sources.len());
    for (index, (search, candidates)) in sources.iter_mut().zip(best).enumerate() {
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
