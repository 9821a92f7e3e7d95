//! Writes seeded random weights for the tiny test models.
//!
//! Usage: gen-tiny-models DIR
//!
//! DIR holds gpt2/, distilbert-qa/ and marian-en-de/, each with a config.json
//! and tokenizer files (written by scripts/prepare_tiny_models.py). The real
//! rust-bert architectures are built from those configs on a VarStore with a
//! fixed seed and saved as rust_model.ot, so the service loads them exactly
//! as it loads a downloaded model.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rust_bert::bart::BartConfig;
use rust_bert::distilbert::{DistilBertConfig, DistilBertForQuestionAnswering};
use rust_bert::gpt2::{GPT2LMHeadModel, Gpt2Config};
use rust_bert::marian::MarianForConditionalGeneration;
use rust_bert::Config;
use tch::{nn, Device};

const SEED: i64 = 20261121;
/// Standard deviation of weights, as in the configs' `initializer_range`.
const INIT_STD: f64 = 0.02;

/// Re-initialises weights the way Hugging Face trains from scratch: normal
/// weights with a small spread, zero biases, unit layer norms. (rust-bert's
/// constructors use libtorch defaults, e.g. N(0, 1) embeddings, which make a
/// random model's output distribution extremely peaked.) Fixed sinusoidal
/// position tables and causal masks are kept. Used for GPT-2, so that sampling explores the
/// vocabulary; DistilBERT and Marian keep libtorch's defaults, under which
/// their outputs depend more visibly on their inputs.
fn init_weights(vs: &nn::VarStore) {
    tch::no_grad(|| {
        // variables() is a HashMap: sort, so the seed gives the same weights every run.
        let mut variables: Vec<_> = vs.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, mut tensor) in variables {
            let norm = ["ln_", "layer_norm", "LayerNorm"]
                .iter()
                .any(|part| name.contains(part));
            // Fixed tables: sinusoidal positions, and GPT-2's causal mask
            // (a variable named "attn.bias" that must stay lower-triangular).
            if name.contains("embed_positions") || name.ends_with("attn.bias") {
                continue;
            } else if name.ends_with("bias") {
                let _ = tensor.zero_();
            } else if norm {
                let _ = tensor.fill_(1.0);
            } else {
                let values = tensor.randn_like() * INIT_STD;
                tensor.copy_(&values);
            }
        }
    });
}

fn save(vs: &nn::VarStore, dir: &Path) -> anyhow::Result<()> {
    let path = dir.join("rust_model.ot");
    vs.save(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    let bytes = std::fs::metadata(&path)?.len();
    println!(
        "{}: {} tensors, {:.1} MB",
        path.display(),
        vs.variables().len(),
        bytes as f64 / 1e6
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .context("usage: gen-tiny-models DIR")?,
    );

    let dir = root.join("gpt2");
    tch::manual_seed(SEED);
    let vs = nn::VarStore::new(Device::Cpu);
    let config = Gpt2Config::from_file(dir.join("config.json"));
    let _model = GPT2LMHeadModel::new(vs.root(), &config);
    init_weights(&vs);
    save(&vs, &dir)?;

    let dir = root.join("distilbert-qa");
    tch::manual_seed(SEED);
    let vs = nn::VarStore::new(Device::Cpu);
    let config = DistilBertConfig::from_file(dir.join("config.json"));
    let _model = DistilBertForQuestionAnswering::new(vs.root(), &config);
    save(&vs, &dir)?;

    let dir = root.join("marian-en-de");
    tch::manual_seed(SEED);
    let vs = nn::VarStore::new(Device::Cpu);
    let config = BartConfig::from_file(dir.join("config.json"));
    let _model = MarianForConditionalGeneration::new(vs.root(), &config);
    save(&vs, &dir)?;
    Ok(())
}
