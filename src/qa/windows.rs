//! Question + context windows, built on the tokenizer pool as transformers'
//! question-answering pipeline builds them (a fast BERT tokenizer with
//! `truncation="only_second"`, `stride=doc_stride`, overflowing tokens and
//! offsets): `[CLS] question [SEP] context chunk [SEP]`, consecutive chunks
//! `budget - doc_stride` tokens apart, where the budget is what the question
//! leaves of `max_seq_length`. The model thread gets only the windows' ids;
//! the offsets and word boundaries stay here for span selection.

use std::ops::Range;
use std::path::Path;

use rust_tokenizers::tokenizer::{BertTokenizer, Tokenizer};
use rust_tokenizers::vocab::{BertVocab, Vocab};
use rust_tokenizers::Mask;

use super::QaJob;
use crate::engine::PredictError;
use crate::predictors::FAULT_INPUT;

/// `[CLS]`, `[SEP]`, `[SEP]`.
const SPECIAL_TOKENS: usize = 3;

/// How windows are cut.
#[derive(Debug, Clone, Copy)]
pub struct WindowLimits {
    pub max_seq_length: usize,
    pub doc_stride: usize,
    pub max_question_tokens: usize,
}

/// One window's input to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub ids: Vec<i64>,
    /// Index in `ids` of the first context token (BERT's segment 1 starts here).
    pub context_start: usize,
}

/// What the model thread gets for one question: ids only.
#[derive(Debug, Clone)]
pub struct WindowsJob {
    pub windows: Vec<Window>,
    /// Testing only: the question was the fault-injection input, and the
    /// model thread panics on it.
    pub inject_fault: bool,
}

/// Where the windows' tokens come from in the context, for span selection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowLayout {
    /// Index of the first context token in every window.
    pub context_start: usize,
    /// Per window, the range of the context's tokens it holds.
    pub chunks: Vec<Range<usize>>,
    /// Per context token: the characters (code points) of the whole word it
    /// belongs to, as transformers' `word_to_chars(token_to_word(token))`
    /// (a word is what BERT's pre-tokenizer splits: whitespace-separated,
    /// each punctuation and CJK character on its own).
    pub words: Vec<Range<usize>>,
}

/// A question ready for the model, and what span selection needs afterwards.
#[derive(Debug, Clone)]
pub struct EncodedQuestion {
    pub job: WindowsJob,
    pub layout: WindowLayout,
}

/// The BERT tokenizer and the window limits; shared by the pool's threads.
pub struct QaTokenizer {
    tokenizer: BertTokenizer,
    cls: i64,
    sep: i64,
    limits: WindowLimits,
    fault_injection: bool,
}

impl QaTokenizer {
    /// `lower_case` also strips accents, as transformers' BERT tokenizers do
    /// when `strip_accents` is unset.
    pub fn from_vocab(
        vocab: &Path,
        lower_case: bool,
        limits: WindowLimits,
        fault_injection: bool,
    ) -> Result<QaTokenizer, String> {
        let vocab = BertVocab::from_file(vocab).map_err(|error| error.to_string())?;
        let cls = vocab.token_to_id(vocab.get_cls_value());
        let sep = vocab.token_to_id(vocab.get_sep_value());
        Ok(QaTokenizer {
            tokenizer: BertTokenizer::from_existing_vocab(vocab, lower_case, lower_case),
            cls,
            sep,
            limits,
            fault_injection,
        })
    }

    /// The windows of a question, or which field cannot be answered from.
    pub fn encode(&self, job: &QaJob) -> Result<EncodedQuestion, PredictError> {
        let question = self
            .tokenizer
            .convert_tokens_to_ids(&self.tokenizer.tokenize(&job.question));
        if question.len() > self.limits.max_question_tokens {
            return Err(invalid(
                "question",
                format!(
                    "is {} tokens long; the limit is {} tokens",
                    question.len(),
                    self.limits.max_question_tokens
                ),
            ));
        }
        let tokens = self.tokenizer.tokenize_with_offsets(&job.context);
        if tokens.tokens.is_empty() {
            return Err(invalid("context", "contains no tokens".to_string()));
        }
        let ids = self.tokenizer.convert_tokens_to_ids(&tokens.tokens);
        let budget = self
            .limits
            .max_seq_length
            .saturating_sub(question.len() + SPECIAL_TOKENS);
        let chunks = chunks(ids.len(), budget, self.limits.doc_stride).ok_or_else(|| {
            invalid(
                "question",
                "leaves no room for the context in a window".to_string(),
            )
        })?;
        let windows = chunks
            .iter()
            .map(|chunk| self.window(&question, &ids[chunk.clone()]))
            .collect();
        Ok(EncodedQuestion {
            job: WindowsJob {
                windows,
                inject_fault: self.fault_injection && job.question == FAULT_INPUT,
            },
            layout: WindowLayout {
                context_start: question.len() + 2,
                chunks,
                words: word_spans(&tokens.offsets, &tokens.masks),
            },
        })
    }

    fn window(&self, question: &[i64], context: &[i64]) -> Window {
        let mut ids = Vec::with_capacity(question.len() + context.len() + SPECIAL_TOKENS);
        ids.push(self.cls);
        ids.extend_from_slice(question);
        ids.push(self.sep);
        let context_start = ids.len();
        ids.extend_from_slice(context);
        ids.push(self.sep);
        Window { ids, context_start }
    }
}

fn invalid(field: &str, message: String) -> PredictError {
    PredictError::Invalid {
        field: field.to_string(),
        message,
    }
}

/// The context token ranges of the windows, as the tokenizers library's
/// `Encoding::truncate` cuts overflowing tokens: chunks of `budget` tokens
/// starting every `budget - stride` tokens, the last one ending at the end.
/// None when the budget is not larger than the stride (transformers fails).
pub fn chunks(tokens: usize, budget: usize, stride: usize) -> Option<Vec<Range<usize>>> {
    if tokens <= budget {
        return Some(std::iter::once(0..tokens).collect());
    }
    if budget <= stride {
        return None;
    }
    let mut chunks = Vec::new();
    for start in (0..tokens).step_by(budget - stride) {
        let stop = (start + budget).min(tokens);
        chunks.push(start..stop);
        if stop == tokens {
            break;
        }
    }
    Some(chunks)
}

/// Per token, the characters of its word: wordpiece continuations join the
/// word of the piece before them; every other token starts a word.
fn word_spans(offsets: &[Option<rust_tokenizers::Offset>], masks: &[Mask]) -> Vec<Range<usize>> {
    let spans: Vec<Range<usize>> = offsets
        .iter()
        .map(|offset| offset.map_or(0..0, |o| o.begin as usize..o.end as usize))
        .collect();
    let mut words = spans.clone();
    let mut first = 0;
    for index in 0..=spans.len() {
        let word_ends = index == spans.len() || masks.get(index) != Some(&Mask::Continuation);
        if word_ends && index > first {
            let word = spans[first].start..spans[index - 1].end;
            for slot in &mut words[first..index] {
                *slot = word.clone();
            }
        }
        if word_ends {
            first = index;
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_overlap_by_the_stride_and_end_at_the_end() {
        assert_eq!(chunks(5, 10, 4), Some(std::iter::once(0..5).collect()));
        assert_eq!(chunks(10, 6, 2), Some(vec![0..6, 4..10]));
        assert_eq!(chunks(11, 6, 2), Some(vec![0..6, 4..10, 8..11]));
        assert_eq!(chunks(11, 2, 2), None);
    }

    fn tokenizer(max_seq_length: usize) -> QaTokenizer {
        let vocab = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/models/tiny/distilbert-qa/vocab.txt"
        );
        let limits = WindowLimits {
            max_seq_length,
            doc_stride: 4,
            max_question_tokens: 3,
        };
        QaTokenizer::from_vocab(Path::new(vocab), true, limits, false).expect("tiny vocabulary")
    }

    fn job(question: &str, context: &str) -> QaJob {
        QaJob {
            question: question.into(),
            context: context.into(),
            top_k: 1,
        }
    }

    /// The ids and offsets transformers' fast tokenizer gives for the same
    /// input (max_length=16, stride=4, truncation="only_second").
    #[test]
    fn windows_are_the_fast_tokenizers_overflowing_encodings() {
        let context = "one two three four five six seven eight nine ten eleven twelve \
                       thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenties";
        let encoded = tokenizer(16)
            .encode(&job("who?", context))
            .expect("encodes");
        let ids: Vec<&[i64]> = encoded.job.windows.iter().map(|w| &w.ids[..]).collect();
        assert_eq!(
            ids,
            [
                &[
                    101, 2040, 1029, 102, 2028, 2048, 2093, 2176, 2274, 2416, 2698, 2809, 3157,
                    2702, 5408, 102
                ][..],
                &[
                    101, 2040, 1029, 102, 2809, 3157, 2702, 5408, 4376, 7093, 7426, 5417, 7032,
                    9171, 7763, 102
                ],
                &[101, 2040, 1029, 102, 5417, 7032, 9171, 7763, 11977, 18946, 102],
            ]
        );
        assert_eq!(encoded.layout.context_start, 4);
        assert_eq!(encoded.layout.chunks, [0..11, 7..18, 14..20]);
        assert_eq!(encoded.layout.words[7], 34..39);
        assert_eq!(encoded.layout.words[19], 125..133);
    }

    #[test]
    fn limits_that_need_tokens_name_their_field() {
        let error = tokenizer(16)
            .encode(&job("who are you?", "Me."))
            .expect_err("4 question tokens");
        assert!(matches!(error, PredictError::Invalid { ref field, .. } if field == "question"));
        let error = tokenizer(16)
            .encode(&job("who?", "\u{7}"))
            .expect_err("no context tokens");
        assert!(matches!(error, PredictError::Invalid { ref field, .. } if field == "context"));
        // 3 question tokens leave 16 - 6 = 10 context tokens a window: more than the stride.
        assert!(tokenizer(16).encode(&job("who are?", "Me.")).is_ok());
        // In 10 tokens, 3 question tokens leave 4: no more than the stride.
        let error = tokenizer(10)
            .encode(&job("who are?", &"word ".repeat(20)))
            .expect_err("no room");
        assert!(matches!(error, PredictError::Invalid { ref field, .. } if field == "question"));
    }

    #[test]
    fn continuations_share_their_words_characters() {
        let offset = |begin, end| Some(rust_tokenizers::Offset { begin, end });
        let words = word_spans(
            &[offset(0, 3), offset(3, 5), offset(5, 6), offset(7, 9)],
            &[
                Mask::Begin,
                Mask::Continuation,
                Mask::Punctuation,
                Mask::None,
            ],
        );
        assert_eq!(words, vec![0..5, 0..5, 5..6, 7..9]);
    }
}
