//! How far fp16, int8 and bf16 weights move a model from fp32, for the benchmark
//! report and for choosing each task's default precision. The model
//! directory's config.json says which report: GPT-2, GPT-Neo or GPT-J
//! (`causal`: greedy agreement, logit drift, decoding speed), DistilBERT or
//! BERT question answering
//! (`qa`: identical answer spans, logit drift, forward time) or Marian
//! translation (`generation::precision_check`: identical greedy and beam-4
//! translations, top-1 agreement, time per sentence).
//!
//! usage: precision-report MODEL_DIR TEXT_FILE [COUNT] [TOKENS]
//!
//! COUNT is the number of prompts (GPT-2, default 24), of paragraphs
//! questions are asked about (QA, default 12) or of sentences (Marian,
//! default 16); TOKENS the tokens decoded per prompt or sentence (GPT-2,
//! default 32; Marian, default 40). Prints a JSON list, one entry per precision
//! (bf16 only on CPUs that multiply bfloat16 natively).

mod causal;
mod qa;

use std::path::{Path, PathBuf};

use anyhow::Context;
use nlp_serve::generation::precision_check::translation_report;

fn main() -> anyhow::Result<()> {
    nlp_serve::mkl::keep_linked();
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
        Some(model_type @ ("distilbert" | "bert")) => {
            qa::report(model_type, &dir, &text_file, count)?
        }
        Some("marian") => translation_report(
            &dir,
            &std::fs::read_to_string(&text_file)?,
            count.unwrap_or(16),
            tokens.unwrap_or(40),
        )
        .map_err(anyhow::Error::msg)?,
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
