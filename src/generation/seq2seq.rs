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
    /// Self-attention keys and values, one row per decoded sequence.
    pub cache: KvCache,
    /// Per row, the tokens decoded so far (the start token included): the
    /// position of the next one.
    pub positions: Vec<i64>,
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
        self.positions.len()
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
        self.positions = rows.iter().map(|&row| self.positions[row]).collect();
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
        self.positions.extend(newcomers.positions);
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
