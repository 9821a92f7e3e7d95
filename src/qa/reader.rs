//! Reading retrieved passages: each passage is answered as a context of its
//! own (the passages of one question queue together, so the model thread
//! batches their windows), and the answers are moved back to document
//! offsets and merged as transformers' pipeline merges windows: the same
//! text (ignoring case) found in several passages adds its scores, and keeps
//! the place where it scored best.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use super::{AnswerSpan, QaHandle, QaJob};
use crate::documents::Hit;
use crate::engine::{Answered, SubmitError};

/// An answer and the document it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundAnswer {
    pub document: String,
    pub span: AnswerSpan,
}

/// The best `top_k` answers to `question` from `passages`, best first.
pub async fn read(
    handle: &QaHandle,
    question: &str,
    passages: &[Hit],
    top_k: usize,
    timeout: Option<Duration>,
) -> Result<Answered<Vec<FoundAnswer>>, SubmitError> {
    let jobs = passages.iter().map(|passage| {
        handle.answer(
            QaJob {
                question: question.to_string(),
                context: Arc::from(passage.text.as_str()),
                top_k,
            },
            timeout,
        )
    });
    let mut found = Vec::new();
    let (mut queue_time, mut inference_time) = (Duration::ZERO, Duration::ZERO);
    for (passage, answered) in passages.iter().zip(join_all(jobs).await) {
        let answered = answered?;
        queue_time = queue_time.max(answered.queue_time);
        inference_time = inference_time.max(answered.inference_time);
        found.extend(answered.output.into_iter().map(|span| FoundAnswer {
            document: passage.document.clone(),
            span: AnswerSpan {
                start: span.start + passage.start,
                end: span.end + passage.start,
                ..span
            },
        }));
    }
    Ok(Answered {
        output: merge(found, top_k),
        queue_time,
        inference_time,
    })
}

/// Same text adds scores; best first; at most `top_k`.
fn merge(found: Vec<FoundAnswer>, top_k: usize) -> Vec<FoundAnswer> {
    let mut merged: Vec<(FoundAnswer, f64)> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for answer in found {
        let key = answer.span.text.to_lowercase();
        match seen.get(&key) {
            Some(&index) => {
                let (best, total) = &mut merged[index];
                *total += answer.span.score;
                if answer.span.score > best.span.score {
                    *best = answer;
                }
            }
            None => {
                seen.insert(key, merged.len());
                let score = answer.span.score;
                merged.push((answer, score));
            }
        }
    }
    let mut answers: Vec<FoundAnswer> = merged
        .into_iter()
        .map(|(mut answer, total)| {
            answer.span.score = total;
            answer
        })
        .collect();
    answers.sort_by(|a, b| b.span.score.total_cmp(&a.span.score));
    answers.truncate(top_k);
    answers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(document: &str, text: &str, score: f64, start: usize) -> FoundAnswer {
        FoundAnswer {
            document: document.to_string(),
            span: AnswerSpan {
                text: text.to_string(),
                score,
                start,
                end: start + text.chars().count(),
            },
        }
    }

    #[test]
    fn the_same_text_adds_scores_and_keeps_its_best_place() {
        let merged = merge(
            vec![
                found("a", "Vapnik", 0.3, 10),
                found("b", "Cortes", 0.5, 4),
                found("c", "vapnik", 0.4, 99),
            ],
            2,
        );
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].document, "c");
        assert_eq!(merged[0].span.start, 99);
        assert!((merged[0].span.score - 0.7).abs() < 1e-12);
        assert_eq!(merged[1].span.text, "Cortes");
    }

    #[test]
    fn at_most_top_k_best_first() {
        let merged = merge(
            vec![
                found("a", "one", 0.1, 0),
                found("a", "two", 0.9, 5),
                found("a", "three", 0.5, 9),
            ],
            2,
        );
        let texts: Vec<&str> = merged.iter().map(|a| a.span.text.as_str()).collect();
        assert_eq!(texts, ["two", "three"]);
    }
}
