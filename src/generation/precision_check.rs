//! How far fp16, int8 and bf16 weights move a Marian model from fp32, for
//! `precision-report translation` and the benchmark report: the share of
//! sentences whose greedy and beam-4 translations are identical to fp32's,
//! top-1 agreement along fp32's greedy path, and time per sentence.

use std::path::Path;
use std::time::Instant;

use rust_tokenizers::tokenizer::{MarianTokenizer, Tokenizer, TruncationStrategy};
use serde_json::{json, Value};
use tch::Device;

use super::linear::Precision;
use super::marian::MarianModel;
use super::search::{generate, SearchOptions};
use super::seq2seq::Seq2SeqLm;
use crate::text::sentences::split_sentences;

/// Compares precisions on up to `count` sentences of `text`, decoding at
/// most `max_new_tokens` per sentence.
pub fn translation_report(
    dir: &Path,
    text: &str,
    count: usize,
    max_new_tokens: usize,
) -> Result<Value, String> {
    let tokenizer =
        MarianTokenizer::from_files(dir.join("vocab.json"), dir.join("source.spm"), false)
            .map_err(|error| error.to_string())?;
    let all: Vec<&str> = text
        .lines()
        .flat_map(split_sentences)
        .map(|segment| segment.sentence)
        .filter(|sentence| sentence.split_whitespace().count() >= 4)
        .collect();
    let stride = (all.len() / count.max(1)).max(1);
    let sources: Vec<Vec<i64>> = all
        .iter()
        .step_by(stride)
        .take(count)
        .map(|sentence| {
            tokenizer
                .encode(sentence, None, 256, &TruncationStrategy::LongestFirst, 0)
                .token_ids
        })
        .collect();
    if sources.is_empty() {
        return Err("no sentences of four words or more in the text".into());
    }
    let weights = ["rust_model.ot", "model.safetensors"]
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.exists())
        .ok_or("no weights in the model directory")?;
    let generation = dir.join("generation_config.json");
    let load = |precision| {
        MarianModel::load(
            &dir.join("config.json"),
            generation.exists().then_some(generation.as_path()),
            &weights,
            precision,
            Device::Cpu,
        )
    };
    let _no_grad = tch::no_grad_guard();
    let options = |num_beams| SearchOptions {
        num_beams,
        max_new_tokens,
        min_new_tokens: 0,
        length_penalty: 1.0,
        early_stopping: super::seq2seq::EarlyStopping::Heuristic,
    };
    let run = |model: &MarianModel, num_beams| -> (Vec<Vec<i64>>, f64) {
        let started = Instant::now();
        let outputs = sources
            .iter()
            .map(|source| generate(model, &[source.as_slice()], &options(num_beams)).remove(0))
            .collect();
        (
            outputs,
            started.elapsed().as_secs_f64() * 1000.0 / sources.len() as f64,
        )
    };
    let reference = load(Precision::Fp32)?;
    let (greedy_reference, greedy_ms) = run(&reference, 1);
    let (beam_reference, beam_ms) = run(&reference, 4);
    let mut report = vec![json!({
        "precision": "fp32", "sentences": sources.len(),
        "greedy_ms_per_sentence": greedy_ms, "beam4_ms_per_sentence": beam_ms,
    })];
    for precision in Precision::reduced_here() {
        let model = load(precision)?;
        let (greedy, greedy_ms) = run(&model, 1);
        let (beam, beam_ms) = run(&model, 4);
        let identical = |ours: &[Vec<i64>], theirs: &[Vec<i64>]| {
            ours.iter().zip(theirs).filter(|(a, b)| a == b).count() as f64 / sources.len() as f64
        };
        let (mut same, mut positions) = (0usize, 0usize);
        for (source, path) in sources.iter().zip(&greedy_reference) {
            let (ours, theirs) = (
                forced_argmax(&model, source, path),
                forced_argmax(&reference, source, path),
            );
            positions += ours.len();
            same += ours.iter().zip(&theirs).filter(|(a, b)| a == b).count();
        }
        report.push(json!({
            "precision": precision.name(),
            "sentences": sources.len(),
            "greedy_identical_share": identical(&greedy, &greedy_reference),
            "beam4_identical_share": identical(&beam, &beam_reference),
            "top1_agreement_along_fp32_path": same as f64 / positions.max(1) as f64,
            "greedy_ms_per_sentence": greedy_ms,
            "beam4_ms_per_sentence": beam_ms,
        }));
    }
    Ok(Value::Array(report))
}

/// The model's top token after the start token and each token of `path`
/// (teacher forcing), the last one left out.
fn forced_argmax(model: &MarianModel, source: &[i64], path: &[i64]) -> Vec<i64> {
    let mut state = model.start(&[source], 1);
    let mut token = model.decoder_start_id();
    let mut argmaxes = Vec::with_capacity(path.len());
    for &next in path {
        let logits = model.step(&[token], &mut state);
        argmaxes.push(logits.argmax(-1, false).int64_value(&[0]));
        token = next;
    }
    argmaxes
}
