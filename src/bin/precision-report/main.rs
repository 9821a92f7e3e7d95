//! How far fp16 and int8 weights move a model from fp32, for the benchmark
//! report and for choosing each task's default precision. The model
//! directory's config.json says which report: GPT-2 (`causal`: greedy
//! agreement, logit drift, decoding speed) or DistilBERT question answering
//! (`qa`: identical answer spans, logit drift, forward time).
//!
//! usage: precision-report MODEL_DIR TEXT_FILE [COUNT] [TOKENS]
//!
//! COUNT is the number of prompts (GPT-2, default 24) or of paragraphs
//! questions are asked about (QA, default 12); TOKENS the tokens decoded per
//! prompt (GPT-2, default 32). Prints a JSON list, one entry per precision.

mod causal;
mod qa;

use std::path::{Path, PathBuf};

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: precision-report MODEL_DIR TEXT_FILE [COUNT] [TOKENS]";
    let dir = PathBuf::from(args.next().context(usage)?);
    let text_file = PathBuf::from(args.next().context(usage)?);
    let count: Option<usize> = args.next().map(|a| a.parse()).transpose()?;
    let tokens: Option<usize> = args.next().map(|a| a.parse()).transpose()?;
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
    let _no_grad = tch::no_grad_guard();
    let report = match config["model_type"].as_str() {
        Some("distilbert") => qa::report(&dir, &text_file, count)?,
        _ => causal::report(&dir, &text_file, count, tokens)?,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// The model's weights file, as the server looks for it.
pub(crate) fn weights_file(dir: &Path) -> anyhow::Result<PathBuf> {
    ["rust_model.ot", "model.safetensors"]
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.exists())
        .context("no weights in the model directory")
}
