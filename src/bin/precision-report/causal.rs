//! Causal LMs (GPT-2, GPT-Neo, GPT-J, by model_type): greedy agreement, logit drift and decoding speed.
//!
//! Prompts are 32-token windows spread over TEXT_FILE. For each reduced
//! precision it prints, as JSON: the share of prompts whose greedy
//! continuation of TOKENS tokens equals fp32's, the mean number of leading
//! tokens that agree, the top-1 agreement and largest logit difference
//! (relative to the logits' spread) along fp32's greedy path, and the
//! median time of one decoding step at batch size 1.

use std::path::Path;
use std::time::Instant;

use nlp_serve::generation::decoder::Decoder;
use nlp_serve::generation::linear::Precision;
use rust_bert::pipelines::common::{ModelType, TokenizerOption};
use serde_json::json;
use tch::{Device, Tensor};

use crate::{median, weights_file};

const PROMPT_TOKENS: usize = 32;

fn argmax(logits: &Tensor) -> i64 {
    logits.argmax(-1, false).int64_value(&[0])
}

/// Greedy continuation; also the logits seen at each step and the step times.
fn greedy(decoder: &Decoder, prompt: &[i64], tokens: usize) -> (Vec<i64>, Vec<f64>) {
    let mut cache = decoder.new_cache();
    let prefilled = decoder.prefill(&[prompt]);
    cache.join(&prefilled);
    let mut logits = prefilled.logits;
    let mut output = Vec::with_capacity(tokens);
    let mut step_ms = Vec::new();
    for position in prompt.len()..prompt.len() + tokens {
        let next = argmax(&logits);
        output.push(next);
        let started = Instant::now();
        logits = decoder.step(&[next], &[position as i64], &mut cache);
        step_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    (output, step_ms)
}

/// Logits after every token of `prompt` followed by `path` (teacher forcing).
fn forced_logits(decoder: &Decoder, prompt: &[i64], path: &[i64]) -> Vec<Tensor> {
    let mut cache = decoder.new_cache();
    let prefilled = decoder.prefill(&[prompt]);
    cache.join(&prefilled);
    let mut all = vec![prefilled.logits];
    for (offset, &token) in path.iter().enumerate().take(path.len().saturating_sub(1)) {
        let position = (prompt.len() + offset) as i64;
        all.push(decoder.step(&[token], &[position], &mut cache));
    }
    all
}

/// The report as JSON: one entry per precision.
pub fn report(
    dir: &Path,
    text_file: &Path,
    prompts: Option<usize>,
    tokens: Option<usize>,
) -> anyhow::Result<serde_json::Value> {
    let prompts = prompts.unwrap_or(24);
    let tokens = tokens.unwrap_or(32);
    let tokenizer = TokenizerOption::from_file(
        ModelType::GPT2,
        &dir.join("vocab.json").to_string_lossy(),
        Some(&dir.join("merges.txt").to_string_lossy()),
        false,
        None,
        None,
    )?;
    let text = std::fs::read_to_string(text_file)?;
    let ids = tokenizer.convert_tokens_to_ids(&tokenizer.tokenize(&text));
    anyhow::ensure!(ids.len() > PROMPT_TOKENS * 2, "text too short");
    let stride = (ids.len() - PROMPT_TOKENS) / prompts.max(1);
    let windows: Vec<&[i64]> = (0..prompts)
        .map(|i| &ids[i * stride..i * stride + PROMPT_TOKENS])
        .collect();
    let weights = weights_file(dir)?;
    let load = |precision| {
        Decoder::load_from_config(&dir.join("config.json"), &weights, precision, Device::Cpu)
            .map_err(anyhow::Error::msg)
    };
    let reference = load(Precision::Fp32)?;
    let reference_runs: Vec<_> = windows
        .iter()
        .map(|prompt| greedy(&reference, prompt, tokens))
        .collect();
    let mut fp32_steps: Vec<f64> = reference_runs.iter().flat_map(|r| r.1.clone()).collect();
    let mut report = vec![json!({
        "precision": "fp32", "decode_step_ms_p50": median(&mut fp32_steps),
    })];
    for precision in Precision::reduced_here() {
        let decoder = load(precision)?;
        let (mut identical, mut agreeing_prefix, mut top1_same, mut positions) = (0, 0, 0, 0);
        let mut worst_relative = 0f64;
        let mut steps = Vec::new();
        for (prompt, (expected, _)) in windows.iter().zip(&reference_runs) {
            let (output, step_ms) = greedy(&decoder, prompt, tokens);
            steps.extend(step_ms);
            identical += usize::from(&output == expected);
            agreeing_prefix += output
                .iter()
                .zip(expected)
                .take_while(|(a, b)| a == b)
                .count();
            let ours = forced_logits(&decoder, prompt, expected);
            let theirs = forced_logits(&reference, prompt, expected);
            for (a, b) in ours.iter().zip(&theirs) {
                positions += 1;
                top1_same += usize::from(argmax(a) == argmax(b));
                let spread = b.std(true).double_value(&[]);
                let difference = (a - b).abs().max().double_value(&[]);
                worst_relative = worst_relative.max(difference / spread);
            }
        }
        report.push(json!({
            "precision": precision.name(),
            "prompts": windows.len(),
            "tokens": tokens,
            "greedy_identical_share": identical as f64 / windows.len() as f64,
            "mean_agreeing_prefix_tokens": agreeing_prefix as f64 / windows.len() as f64,
            "top1_agreement_along_fp32_path": top1_same as f64 / positions.max(1) as f64,
            "max_logit_difference_in_std": worst_relative,
            "decode_step_ms_p50": median(&mut steps),
        }));
    }
    Ok(serde_json::Value::Array(report))
}
