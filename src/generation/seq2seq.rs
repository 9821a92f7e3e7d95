//! What sequence-to-sequence decoding needs from an encoder-decoder model:
//! encode the sources once, compute each layer's cross-attention keys and
//! values once per row, then decode one token at a time for every row with
//! a self-attention key/value cache. The searches (`search`) are written
//! once over this trait; Marian (`marian`) is the first model.

use tch::Tensor;

use super::kv_cache::KvCache;

/// An encoder-decoder model on its model thread (neither `Send` nor `Sync`
/// needed once loaded).
pub trait Seq2SeqLm {
    /// Encodes source rows (each ends with the end token; rows of unequal
    /// length are right-padded here) and returns the decoder's starting
    /// state: `group_size` empty rows per source, cross-attention keys and
    /// values computed from the encoder output once per source.
    fn start(&self, sources: &[&[i64]], group_size: usize) -> DecoderState;
    /// Feeds one token to every row of `state`, each at its own position;
    /// returns next-token logits, [rows, vocab], in fp32.
    fn step(&self, tokens: &[i64], state: &mut DecoderState) -> Tensor;
    /// The token every decoded sequence starts with.
    fn decoder_start_id(&self) -> i64;
    /// The token that ends a sequence.
    fn eos_id(&self) -> i64;
    /// How the model's own generation configuration decodes by default.
    fn generation(&self) -> &GenerationDefaults;
}

/// The generation settings a checkpoint carries (config.json and
/// generation_config.json), with transformers' defaults where it has none.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationDefaults {
    /// Token sequences never to produce (transformers' `bad_words_ids`).
    pub bad_words_ids: Vec<Vec<i64>>,
    /// The token forced as the last one at the length limit.
    pub forced_eos_token_id: Option<i64>,
    /// Exponent of the length in a finished hypothesis' score.
    pub length_penalty: f64,
    pub early_stopping: EarlyStopping,
}

/// When beam search stops, with transformers' three meanings of
/// `early_stopping`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EarlyStopping {
    /// `true`: as soon as `num_beams` hypotheses are finished.
    Stop,
    /// `false`: when the best running beam, scored at its current length,
    /// cannot beat the worst finished hypothesis.
    Heuristic,
    /// `"never"`: the same test, scored at the longest possible length.
    Never,
}

/// The decoder's state for every running row. Rows come in groups, one
/// group per source, `group_size` rows each (a source's beams): the
/// cross-attention keys and values are kept once per group. Rows join and
/// leave at any step, so each has its own position, and the self-attention
/// cache is left-padded (`KvCache`).
pub struct DecoderState {
    /// Self-attention keys and values, one row per decoded sequence; the
    /// tokens a row holds (the start token included) are the position of
    /// its next one.
    pub cache: KvCache,
    /// Per layer, [groups, heads, source columns, head_dim].
    pub cross_keys: Vec<Tensor>,
    pub cross_values: Vec<Tensor>,
    /// Additive mask over each group's padded source columns,
    /// [groups, 1, 1, source columns].
    pub source_bias: Tensor,
    /// Per group, the length of its source.
    pub source_lengths: Vec<i64>,
    /// Rows per group.
    pub group_size: usize,
}

/// The additive source mask's value over padding (transformers' large
/// negative number: the smallest f32).
pub const MASKED: f64 = f32::MIN as f64;

impl DecoderState {
    pub fn rows(&self) -> usize {
        self.cache.rows()
    }

    /// Per row, the position of the token it takes next.
    pub fn positions(&self) -> Vec<i64> {
        self.cache.row_lengths()
    }

    pub fn groups(&self) -> usize {
        self.source_lengths.len()
    }

    /// Keeps the groups `groups` (in that order), and as decoder rows
    /// `rows`: row `i` becomes old row `rows[i]`, which must belong to the
    /// `i / group_size`-th kept group (a beam search reorders a group's rows
    /// among themselves).
    pub fn select(&mut self, groups: &[usize], rows: &[usize]) {
        self.cache.select_rows(rows);
        let kept_all = groups.len() == self.groups()
            && groups.iter().enumerate().all(|(i, &group)| i == group);
        if kept_all {
            return;
        }
        self.source_lengths = groups.iter().map(|&g| self.source_lengths[g]).collect();
        let Some(first) = self.cross_keys.first() else {
            return;
        };
        let columns = first.size()[2];
        let needed = self.source_lengths.iter().copied().max().unwrap_or(0);
        let index = Tensor::from_slice(&groups.iter().map(|&g| g as i64).collect::<Vec<_>>())
            .to_device(first.device());
        let pick = |tensor: &Tensor, dim: i64| {
            let tensor = tensor.index_select(0, &index);
            if needed < columns {
                tensor.narrow(dim, 0, needed)
            } else {
                tensor
            }
        };
        for tensor in self
            .cross_keys
            .iter_mut()
            .chain(self.cross_values.iter_mut())
        {
            *tensor = pick(tensor, 2);
        }
        self.source_bias = pick(&self.source_bias, 3);
    }

    /// Adds the groups of `newcomers` (a state just started) after this
    /// one's; source columns are padded to the longer of the two.
    pub fn append(&mut self, newcomers: DecoderState) {
        if self.rows() == 0 {
            *self = newcomers;
            return;
        }
        self.cache.add_empty_rows(newcomers.rows());
        let width = |tensor: &Tensor| tensor.size()[2];
        let (ours, theirs) = match self.cross_keys.first().zip(newcomers.cross_keys.first()) {
            Some((ours, theirs)) => (width(ours), width(theirs)),
            None => (0, 0),
        };
        let columns = ours.max(theirs);
        // Widens `tensor` from `from` to `columns` columns along `dim`.
        let pad = |tensor: &Tensor, dim: usize, from: i64, value: f64| {
            if from == columns {
                return tensor.shallow_clone();
            }
            let mut size = tensor.size();
            size[dim] = columns - from;
            let padding = Tensor::full(size, value, (tensor.kind(), tensor.device()));
            Tensor::cat(&[tensor, &padding], dim as i64)
        };
        let join = |mine: &Tensor, new: &Tensor| {
            Tensor::cat(&[pad(mine, 2, ours, 0.0), pad(new, 2, theirs, 0.0)], 0)
        };
        for (tensor, new) in self.cross_keys.iter_mut().zip(&newcomers.cross_keys) {
            *tensor = join(tensor, new);
        }
        for (tensor, new) in self.cross_values.iter_mut().zip(&newcomers.cross_values) {
            *tensor = join(tensor, new);
        }
        self.source_bias = Tensor::cat(
            &[
                pad(&self.source_bias, 3, ours, MASKED),
                pad(&newcomers.source_bias, 3, theirs, MASKED),
            ],
            0,
        );
        self.source_lengths.extend(newcomers.source_lengths);
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, Tensor};

    use super::{DecoderState, KvCache, MASKED};

    /// A state of `sources` (their lengths) with `group_size` rows each,
    /// whose cross keys hold each group's index and self keys each row's.
    fn state(lengths: &[i64], group_size: usize, first_group: i64) -> DecoderState {
        let groups = lengths.len() as i64;
        let columns = lengths.iter().copied().max().unwrap_or(0);
        let keys = (Tensor::arange(groups, (Kind::Float, Device::Cpu)) + first_group as f64)
            .view([groups, 1, 1, 1])
            .expand([groups, 1, columns, 1], false)
            .contiguous();
        let mask: Vec<f32> = lengths
            .iter()
            .flat_map(|&length| {
                (0..columns).map(move |column| if column < length { 0.0 } else { MASKED as f32 })
            })
            .collect();
        let mut cache = KvCache::new(1, 1, 1, Device::Cpu);
        let rows = lengths.len() * group_size;
        cache.add_empty_rows(rows);
        DecoderState {
            cache,
            cross_keys: vec![keys.shallow_clone()],
            cross_values: vec![keys],
            source_bias: Tensor::from_slice(&mask).view([groups, 1, 1, columns]),
            source_lengths: lengths.to_vec(),
            group_size,
        }
    }

    fn write_row_ids(state: &mut DecoderState, offset: f64) {
        let rows = state.rows() as i64;
        let ids = Tensor::arange(rows, (Kind::Float, Device::Cpu)).view([rows, 1, 1, 1]) + offset;
        state.cache.reserve_column();
        state.cache.write_column(0, &ids, &ids);
        state.cache.commit_column();
    }

    #[test]
    fn newcomers_join_with_their_own_positions_and_padded_sources() {
        let mut running = state(&[2, 3], 2, 0);
        write_row_ids(&mut running, 0.0);
        running.append(state(&[5], 2, 2));
        assert_eq!(running.rows(), 6);
        assert_eq!(running.groups(), 3);
        assert_eq!(running.positions(), [1, 1, 1, 1, 0, 0]);
        // Sources padded to the longest: 5 columns, masked past each length.
        assert_eq!(running.cross_keys[0].size(), [3, 1, 5, 1]);
        let bias = Vec::<f32>::try_from(running.source_bias.flatten(0, -1)).expect("f32");
        let masked: Vec<usize> = bias
            .iter()
            .enumerate()
            .filter(|(_, &value)| value == MASKED as f32)
            .map(|(index, _)| index)
            .collect();
        assert_eq!(masked, [2, 3, 4, 8, 9]);
        // The newcomers' rows see nothing of the columns decoded before them.
        let visible =
            Vec::<f32>::try_from(running.cache.attention_bias(1).flatten(0, -1)).expect("f32");
        assert_eq!(
            visible,
            [
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                f32::NEG_INFINITY,
                0.0,
                f32::NEG_INFINITY,
                0.0
            ]
        );
    }

    #[test]
    fn dropping_the_oldest_rows_shifts_the_newer_ones_and_keeps_their_positions() {
        // Group 0 decodes two steps, then group 1 joins and decodes one.
        let mut running = state(&[2], 1, 0);
        write_row_ids(&mut running, 10.0);
        write_row_ids(&mut running, 20.0);
        running.append(state(&[3], 1, 1));
        write_row_ids(&mut running, 30.0);
        assert_eq!(running.positions(), [3, 1]);
        assert_eq!(running.cache.len(), 3);
        // Group 0 leaves: group 1's single column moves to the front.
        running.select(&[1], &[1]);
        assert_eq!(running.positions(), [1]);
        assert_eq!(running.source_lengths, [3]);
        assert_eq!(running.cache.len(), 1);
        let visible =
            Vec::<f32>::try_from(running.cache.attention_bias(1).flatten(0, -1)).expect("f32");
        assert_eq!(visible, [0.0, 0.0]);
        let (keys, _) = running.cache.layer_with_new_column(0);
        assert_eq!(keys.double_value(&[0, 0, 0, 0]), 31.0);
        // Another newcomer joins after the shift, with nothing visible yet
        // but its own next column.
        running.append(state(&[1], 1, 2));
        assert_eq!(running.positions(), [1, 0]);
        let visible =
            Vec::<f32>::try_from(running.cache.attention_bias(1).flatten(0, -1)).expect("f32");
        assert_eq!(visible, [0.0, 0.0, f32::NEG_INFINITY, 0.0]);
    }

    /// Beams that extend themselves stay in place; the others are copied
    /// from rows read before any is overwritten (row 1 takes row 0's
    /// contents while row 0 keeps them; rows 4 and 5 swap).
    #[test]
    fn select_moves_only_the_rows_that_change() {
        let mut running = state(&[2, 5, 3], 2, 0);
        write_row_ids(&mut running, 10.0);
        write_row_ids(&mut running, 20.0);
        running.select(&[0, 1, 2], &[0, 0, 2, 3, 5, 4]);
        let (keys, values) = running.cache.layer_with_new_column(0);
        for (column, offset) in [(0, 10.0), (1, 20.0)] {
            let rows = Vec::<f32>::try_from(keys.select(2, column).flatten(0, -1)).expect("f32");
            let expected: Vec<f32> = [0, 0, 2, 3, 5, 4]
                .iter()
                .map(|&row| row as f32 + offset as f32)
                .collect();
            assert_eq!(rows, expected);
            assert!(values.select(2, column).equal(&keys.select(2, column)));
        }
    }

    #[test]
    fn select_reorders_beams_and_drops_groups_and_unused_source_columns() {
        let mut running = state(&[2, 5, 3], 2, 0);
        write_row_ids(&mut running, 10.0);
        // Keep groups 0 and 2; group 0's beams swap, group 2's second beam
        // is repeated.
        running.select(&[0, 2], &[1, 0, 5, 5]);
        assert_eq!(running.source_lengths, [2, 3]);
        assert_eq!(running.cross_keys[0].size(), [2, 1, 3, 1]);
        let groups =
            Vec::<f32>::try_from(running.cross_keys[0].select(2, 0).flatten(0, -1)).expect("f32");
        assert_eq!(groups, [0.0, 2.0]);
        assert_eq!(running.source_bias.size(), [2, 1, 1, 3]);
        let (keys, _) = running.cache.layer_with_new_column(0);
        let rows = Vec::<f32>::try_from(keys.select(2, 0).flatten(0, -1)).expect("f32");
        assert_eq!(rows, [11.0, 10.0, 15.0, 15.0]);
    }
}
