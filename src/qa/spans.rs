//! Span selection from start/end logits, as transformers' question-answering
//! pipeline does it (`select_starts_ends`, `decode_spans`, `postprocess`
//! with `align_to_words`): per window, a softmax over the context tokens and
//! `[CLS]` (whose probability is then zeroed), scores start × end for spans
//! of at most `max_answer_len` tokens, the best `2 top_k + 10`, each widened
//! to whole words; answers with the same text (ignoring case) add their
//! scores, across windows too; the best `top_k` win. Runs off the model
//! thread (in the request's handler, once the logits are back).
//!
//! One deliberate difference: spans of probability zero (transformers pads
//! its candidates with them when a context has fewer than `2 top_k + 10`
//! possible spans, answering empty or `[CLS]`-anchored text with score 0)
//! are never answers here.

use std::collections::HashMap;

use super::windows::WindowLayout;
use super::AnswerSpan;
use crate::encoder::WindowLogits;

/// transformers' stand-in logit for tokens that cannot be in an answer.
const MASKED_LOGIT: f32 = -10000.0;

/// The best `top_k` answers, best first. `logits` has one entry per window.
pub fn select(
    layout: &WindowLayout,
    logits: &[WindowLogits],
    context: &str,
    top_k: usize,
    max_answer_len: usize,
) -> Vec<AnswerSpan> {
    let characters = CharIndex::new(context);
    let candidates_per_window = top_k * 2 + 10;
    let mut answers: Vec<AnswerSpan> = Vec::new();
    // Lower-cased answer text -> index in `answers`.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let context_start = layout.context_start;
    for (chunk, logits) in layout.chunks.iter().zip(logits) {
        let available = logits.start.len().min(logits.end.len());
        let context_tokens = context_start..(context_start + chunk.len()).min(available);
        let start = probabilities(&logits.start, &context_tokens);
        let end = probabilities(&logits.end, &context_tokens);
        let spans = best_spans(
            &start,
            &end,
            &context_tokens,
            max_answer_len,
            candidates_per_window,
        );
        for (first, last, score) in spans {
            let word = |token: usize| {
                layout
                    .words
                    .get(chunk.start + token - context_start)
                    .cloned()
                    .unwrap_or(0..0)
            };
            let (begin, finish) = (word(first).start, word(last).end);
            let text = characters.slice(begin, finish);
            let key = text.to_lowercase();
            match seen.get(&key) {
                Some(&index) => answers[index].score += f64::from(score),
                None => {
                    seen.insert(key, answers.len());
                    answers.push(AnswerSpan {
                        text: text.to_string(),
                        score: f64::from(score),
                        start: begin,
                        end: finish,
                    });
                }
            }
        }
    }
    // A stable sort: equal scores keep the order they were found in.
    answers.sort_by(|a, b| b.score.total_cmp(&a.score));
    answers.truncate(top_k);
    answers
}

/// Softmax over `[CLS]` (index 0) and the context tokens, the others masked
/// as transformers masks them; then `[CLS]` set to zero.
fn probabilities(logits: &[f32], context_tokens: &std::ops::Range<usize>) -> Vec<f32> {
    let allowed = |index: usize| index == 0 || context_tokens.contains(&index);
    let masked: Vec<f32> = logits
        .iter()
        .enumerate()
        .map(|(index, &logit)| if allowed(index) { logit } else { MASKED_LOGIT })
        .collect();
    let max = masked.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exponentials: Vec<f32> = masked.iter().map(|&logit| (logit - max).exp()).collect();
    let sum: f32 = exponentials.iter().sum();
    let mut probabilities: Vec<f32> = exponentials.iter().map(|&value| value / sum).collect();
    if let Some(cls) = probabilities.first_mut() {
        *cls = 0.0;
    }
    probabilities
}

/// The `count` best (start, end, score) spans of context tokens with
/// `start <= end < start + max_answer_len` and a score above zero, best first.
fn best_spans(
    start: &[f32],
    end: &[f32],
    context_tokens: &std::ops::Range<usize>,
    max_answer_len: usize,
    count: usize,
) -> Vec<(usize, usize, f32)> {
    let mut spans = Vec::new();
    for first in context_tokens.clone() {
        let last_allowed = (first + max_answer_len).min(context_tokens.end);
        let ends = end.get(first..last_allowed).unwrap_or_default();
        for (last, &end_probability) in (first..).zip(ends) {
            let score = start[first] * end_probability;
            if score > 0.0 {
                spans.push((first, last, score));
            }
        }
    }
    // Best score first; ties in the order numpy's flattened index gives.
    let order = |a: &(usize, usize, f32), b: &(usize, usize, f32)| {
        b.2.total_cmp(&a.2).then((a.0, a.1).cmp(&(b.0, b.1)))
    };
    if spans.len() > count {
        spans.select_nth_unstable_by(count, order);
        spans.truncate(count);
    }
    spans.sort_by(order);
    spans
}

/// Character (code point) offsets to byte offsets of one text.
struct CharIndex<'a> {
    text: &'a str,
    bytes: Vec<usize>,
}

impl<'a> CharIndex<'a> {
    fn new(text: &'a str) -> CharIndex<'a> {
        let mut bytes: Vec<usize> = text.char_indices().map(|(byte, _)| byte).collect();
        bytes.push(text.len());
        CharIndex { text, bytes }
    }

    /// Characters `begin..end`, clamped to the text.
    fn slice(&self, begin: usize, end: usize) -> &'a str {
        let last = self.bytes.len() - 1;
        let from = self.bytes[begin.min(last)];
        let to = self.bytes[end.min(last)];
        self.text.get(from..to.max(from)).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_cover_cls_and_context_then_drop_cls() {
        // [CLS] q [SEP] c c [SEP]
        let logits = [1.0, 5.0, 5.0, 2.0, 3.0, 5.0];
        let p = probabilities(&logits, &(3..5));
        let total = 1f32.exp() + 2f32.exp() + 3f32.exp();
        assert_eq!(p[0], 0.0);
        assert_eq!(p[1], 0.0);
        assert!((p[3] - 2f32.exp() / total).abs() < 1e-6);
        assert!((p[4] - 3f32.exp() / total).abs() < 1e-6);
        assert_eq!(p[5], 0.0);
    }

    #[test]
    fn spans_respect_order_and_length() {
        let start = [0.0, 0.5, 0.3, 0.2];
        let end = [0.0, 0.1, 0.2, 0.7];
        let spans = best_spans(&start, &end, &(1..4), 2, 10);
        // (1,3) is 3 tokens long: excluded; (2,1) ends before it starts.
        assert_eq!(
            spans.iter().map(|&(s, e, _)| (s, e)).collect::<Vec<_>>(),
            vec![(2, 3), (3, 3), (1, 2), (2, 2), (1, 1)]
        );
        assert_eq!(best_spans(&start, &end, &(1..4), 2, 2).len(), 2);
    }

    #[test]
    fn character_slices_handle_multibyte_text() {
        let index = CharIndex::new("héllo wörld");
        assert_eq!(index.slice(6, 11), "wörld");
        assert_eq!(index.slice(1, 2), "é");
        assert_eq!(index.slice(9, 99), "ld");
    }
}
