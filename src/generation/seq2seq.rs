//! What sequence-to-sequence decoding needs from an encoder-decoder model:
//! encode the sources once, compute each layer's cross-attention keys and
//! values once per row, then decode one token at a time for every row with
//! a self-attention key/value cache. The searches (`search`) are written
//! once over this trait; Marian (`marian`) is the first model.

use tch::Tensor;

/// An encoder-decoder model on its model thread (neither `Send` nor `Sync`
/// needed once loaded).
pub trait Seq2SeqLm {
    /// Encodes source rows (each ends with the end token; rows of unequal
    /// length are right-padded here) and returns the decoder's starting
    /// state: empty self-attention caches, cross-attention keys and values
    /// computed from the encoder output, one row per source.
    fn start(&self, sources: &[&[i64]]) -> DecoderState;
    /// Feeds one token to every row of `state`; returns next-token logits,
    /// [rows, vocab], in fp32.
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

/// The decoder's per-row state, at one position for every row.
pub struct DecoderState {
    /// Per layer, [rows, heads, decoded, head_dim].
    pub self_keys: Vec<Tensor>,
    pub self_values: Vec<Tensor>,
    /// Per layer, [rows, heads, source, head_dim].
    pub cross_keys: Vec<Tensor>,
    pub cross_values: Vec<Tensor>,
    /// Additive mask over padded source positions, [rows, 1, 1, source].
    pub source_bias: Tensor,
    /// Tokens decoded so far (the start token included).
    pub position: i64,
}

impl DecoderState {
    /// Keeps (and reorders, and repeats) rows: row `i` of the result is row
    /// `rows[i]` of this state.
    pub fn select_rows(&mut self, rows: &[i64]) {
        let Some(first) = self.cross_keys.first() else {
            return;
        };
        let index = Tensor::from_slice(rows).to_device(first.device());
        let pick = |tensors: &mut Vec<Tensor>| {
            for tensor in tensors.iter_mut() {
                *tensor = tensor.index_select(0, &index);
            }
        };
        pick(&mut self.self_keys);
        pick(&mut self.self_values);
        pick(&mut self.cross_keys);
        pick(&mut self.cross_values);
        self.source_bias = self.source_bias.index_select(0, &index);
    }

    pub fn rows(&self) -> usize {
        self.source_bias.size()[0] as usize
    }
}
