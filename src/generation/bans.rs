//! The continuations a search step may not take, as transformers' logits
//! processors for `min_length`, `bad_words_ids` and `forced_eos_token_id`
//! decide them from each row's tokens so far.

use tch::Tensor;

use super::search::SearchOptions;
use super::seq2seq::Seq2SeqLm;

/// One step's bans over rows of a `vocab`-word vocabulary.
#[derive(Debug, Default)]
pub struct Bans {
    /// Tokens banned on every row (single-token bad words; the end token
    /// when every row is shorter than the minimum).
    columns: Vec<i64>,
    /// (row, token) banned on one row: a multi-token bad word whose prefix
    /// the row has just written, the end token before the minimum length.
    cells: Vec<(usize, i64)>,
    /// Per row, the token it must take now (at the length limit): every
    /// other token is banned and this one scores a log-probability of 0.
    forced: Vec<Option<i64>>,
}

impl Bans {
    /// The bans for rows whose tokens so far (start token included) are
    /// `histories`.
    pub fn new(
        model: &dyn Seq2SeqLm,
        histories: &[&[i64]],
        options: &SearchOptions,
        vocab: i64,
    ) -> Bans {
        let eos = model.eos_id();
        // transformers counts the start token in `cur_len`.
        let max_length = options.max_new_tokens + 1;
        let mut columns: Vec<i64> = Vec::new();
        let mut cells: Vec<(usize, i64)> = Vec::new();
        for bad in &model.generation().bad_words_ids {
            match bad.split_last() {
                Some((&last, [])) => columns.push(last),
                Some((&last, prefix)) => {
                    for (row, history) in histories.iter().enumerate() {
                        if history.ends_with(prefix) {
                            cells.push((row, last));
                        }
                    }
                }
                None => {}
            }
        }
        let too_short: Vec<usize> = (0..histories.len())
            .filter(|&row| histories[row].len() < options.min_new_tokens + 1)
            .collect();
        if !histories.is_empty() && too_short.len() == histories.len() {
            columns.push(eos);
        } else {
            cells.extend(too_short.into_iter().map(|row| (row, eos)));
        }
        let in_vocab = |token: &i64| (0..vocab).contains(token);
        columns.retain(in_vocab);
        columns.sort_unstable();
        columns.dedup();
        cells.retain(|(_, token)| in_vocab(token));
        let forced_token = model.generation().forced_eos_token_id.filter(in_vocab);
        let forced = histories
            .iter()
            .map(|history| forced_token.filter(|_| history.len() + 1 == max_length))
            .collect();
        Bans {
            columns,
            cells,
            forced,
        }
    }

    /// Bans given as they are kept (for tests of their users).
    #[cfg(test)]
    pub fn from_parts(
        columns: Vec<i64>,
        cells: Vec<(usize, i64)>,
        forced: Vec<Option<i64>>,
    ) -> Bans {
        Bans {
            columns,
            cells,
            forced,
        }
    }

    /// Sets the banned continuations in `scores` ([rows, vocab]) to -inf
    /// and a forced row's token to 0, as transformers' processors do.
    pub fn apply(&self, scores: &mut Tensor) {
        if !self.columns.is_empty() {
            let index = Tensor::from_slice(&self.columns).to_device(scores.device());
            let _ = scores.index_fill_(1, &index, f64::NEG_INFINITY);
        }
        for &(row, token) in &self.cells {
            let _ = scores.get(row as i64).get(token).fill_(f64::NEG_INFINITY);
        }
        for (row, forced) in self.forced.iter().enumerate() {
            if let Some(token) = *forced {
                // As transformers: every other token -inf, the forced one 0
                // (so a beam's score is unchanged by its forced last token).
                let mut row = scores.get(row as i64);
                let _ = row.fill_(f64::NEG_INFINITY);
                let _ = row.get(token).fill_(0.0);
            }
        }
    }

    /// Whether row `row` may take `token` (bans other than forcing).
    pub fn allows(&self, row: usize, token: i64) -> bool {
        !self.columns.contains(&token) && !self.cells.contains(&(row, token))
    }

    /// The token row `row` must take now, if any.
    pub fn forced(&self, row: usize) -> Option<i64> {
        self.forced.get(row).copied().flatten()
    }

    /// The most tokens banned on any one row (forcing aside).
    pub fn most_per_row(&self) -> usize {
        let mut per_row: Vec<usize> = self.cells.iter().map(|&(row, _)| row).collect();
        per_row.sort_unstable();
        let most_cells = per_row
            .chunk_by(|a, b| a == b)
            .map(<[usize]>::len)
            .max()
            .unwrap_or(0);
        self.columns.len() + most_cells
    }
}
