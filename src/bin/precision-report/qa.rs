//! DistilBERT and BERT question answering: how often fp16, int8 and bf16 give fp32's
//! answers (the same spans, as the server selects them), how far their
//! start/end logits move, and how long a forward pass takes.
//!
//! Cases are questions about the reference document, asked of each of its
//! first paragraphs (one window each, like the benchmark's qa_paragraph)
//! and of the whole document (many windows).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use nlp_serve::encoder::{load_span_encoder, run_windows, WindowLogits};
use nlp_serve::generation::linear::Precision;
use nlp_serve::qa::spans;
use nlp_serve::qa::windows::{EncodedQuestion, QaTokenizer, Window, WindowLimits};
use nlp_serve::qa::{AnswerSpan, QaJob};
use serde_json::json;
use tch::Device;

use crate::{median, weights_file};

const QUESTIONS: [&str; 6] = [
    "Who introduced support vector machines?",
    "When was the term machine learning made popular?",
    "What does gradient descent minimise?",
    "What is overfitting?",
    "Which network won the ImageNet challenge?",
    "What are language models trained to predict?",
];
/// Answers compared per case, and the windows per forward pass (the
/// server's defaults).
const TOP_K: usize = 3;
const MAX_ANSWER_TOKENS: usize = 15;
const WINDOW_BATCH: usize = 4;

struct Case {
    context: Arc<str>,
    encoded: EncodedQuestion,
    /// The whole document rather than one paragraph.
    document: bool,
}

/// What one precision gives for every case.
struct Run {
    answers: Vec<Vec<AnswerSpan>>,
    logits: Vec<Vec<WindowLogits>>,
    paragraph_ms: Vec<f64>,
    document_ms: Vec<f64>,
}

pub fn report(
    model_type: &str,
    dir: &Path,
    text_file: &Path,
    paragraphs: Option<usize>,
) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(text_file)?;
    let lower_case = std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|config| config["do_lower_case"].as_bool())
        .unwrap_or(false);
    let limits = WindowLimits {
        max_seq_length: 384,
        doc_stride: 128,
        max_question_tokens: 64,
    };
    let tokenizer = QaTokenizer::from_vocab(&dir.join("vocab.txt"), lower_case, limits, false)
        .map_err(anyhow::Error::msg)?;
    let cases = cases(&tokenizer, &text, paragraphs.unwrap_or(12))?;
    let weights = weights_file(dir)?;
    let run = |precision| -> anyhow::Result<Run> {
        let config = dir.join("config.json");
        let model = load_span_encoder(model_type, &config, &weights, precision, Device::Cpu)
            .map_err(anyhow::Error::msg)?;
        let mut run = Run {
            answers: Vec::new(),
            logits: Vec::new(),
            paragraph_ms: Vec::new(),
            document_ms: Vec::new(),
        };
        for case in &cases {
            let windows: Vec<&Window> = case.encoded.job.windows.iter().collect();
            let started = Instant::now();
            let logits = run_windows(&*model, &windows, WINDOW_BATCH);
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            if case.document {
                run.document_ms.push(elapsed);
            } else {
                run.paragraph_ms.push(elapsed);
            }
            run.answers.push(spans::select(
                &case.encoded.layout,
                &logits,
                &case.context,
                TOP_K,
                MAX_ANSWER_TOKENS,
            ));
            run.logits.push(logits);
        }
        Ok(run)
    };
    let mut reference = run(Precision::Fp32)?;
    let mut report = vec![json!({
        "precision": "fp32",
        "cases": cases.len(),
        "paragraph_forward_ms_p50": median(&mut reference.paragraph_ms),
        "document_forward_ms_p50": median(&mut reference.document_ms),
    })];
    for precision in Precision::reduced_here() {
        let mut ours = run(precision)?;
        let same_top =
            |a: &[AnswerSpan], b: &[AnswerSpan]| a.first().map(span) == b.first().map(span);
        let same_all =
            |a: &[AnswerSpan], b: &[AnswerSpan]| a.iter().map(span).eq(b.iter().map(span));
        let pairs = || ours.answers.iter().zip(&reference.answers);
        let top1 = pairs().filter(|(a, b)| same_top(a, b)).count();
        let top3 = pairs().filter(|(a, b)| same_all(a, b)).count();
        report.push(json!({
            "precision": precision.name(),
            "cases": cases.len(),
            "top1_identical_share": top1 as f64 / cases.len() as f64,
            "top3_identical_share": top3 as f64 / cases.len() as f64,
            "max_logit_difference_in_std": worst_drift(&ours.logits, &reference.logits),
            "paragraph_forward_ms_p50": median(&mut ours.paragraph_ms),
            "document_forward_ms_p50": median(&mut ours.document_ms),
        }));
    }
    Ok(serde_json::Value::Array(report))
}

/// Every question asked of each of the first `paragraphs` paragraphs
/// (blank-line separated, headings and short ones skipped), then of the
/// whole text.
fn cases(tokenizer: &QaTokenizer, text: &str, paragraphs: usize) -> anyhow::Result<Vec<Case>> {
    let document: Arc<str> = Arc::from(text);
    let contexts = text
        .split("\n\n")
        .map(str::trim)
        .filter(|p| p.len() >= 300 && !p.starts_with('#'))
        .take(paragraphs)
        .map(|p| (Arc::from(p), false))
        .chain(std::iter::once((document, true)));
    let mut cases = Vec::new();
    for (context, document) in contexts {
        for question in QUESTIONS {
            let job = QaJob {
                question: question.to_string(),
                context: Arc::clone(&context),
                top_k: TOP_K,
            };
            let encoded = tokenizer
                .encode(&job)
                .map_err(|error| anyhow::anyhow!("{question}: {error}"))?;
            cases.push(Case {
                context: Arc::clone(&context),
                encoded,
                document,
            });
        }
    }
    Ok(cases)
}

fn span(answer: &AnswerSpan) -> (&str, usize, usize) {
    (&answer.text, answer.start, answer.end)
}

/// Largest start/end logit change, relative to the spread of fp32's logits
/// of that window.
fn worst_drift(ours: &[Vec<WindowLogits>], reference: &[Vec<WindowLogits>]) -> f64 {
    let mut worst = 0f64;
    let windows = ours.iter().flatten().zip(reference.iter().flatten());
    for (a, b) in windows {
        for (x, y) in [(&a.start, &b.start), (&a.end, &b.end)] {
            let mean = y.iter().map(|&v| f64::from(v)).sum::<f64>() / y.len().max(1) as f64;
            let variance = y
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / y.len().max(1) as f64;
            let difference = x
                .iter()
                .zip(y.iter())
                .map(|(&p, &q)| f64::from((p - q).abs()))
                .fold(0.0, f64::max);
            worst = worst.max(difference / variance.sqrt().max(1e-12));
        }
    }
    worst
}
