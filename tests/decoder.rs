//! The incremental GPT-2 decoder against rust-bert's own forward pass, on the
//! tiny generated model: prefill, cached steps, and rows of different lengths
//! decoded in one batch must give the logits of a full forward pass over each
//! sequence alone.

use std::path::PathBuf;

use nlp_serve::generation::gpt2::Gpt2Decoder;
use nlp_serve::generation::linear::Precision;
use rust_bert::gpt2::{GPT2LMHeadModel, Gpt2Config};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn model_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/models/tiny/gpt2"))
}

fn decoder(precision: Precision) -> Gpt2Decoder {
    let dir = model_dir();
    Gpt2Decoder::load(
        &dir.join("config.json"),
        &dir.join("rust_model.ot"),
        precision,
        Device::Cpu,
    )
    .expect("tiny GPT-2 loads")
}

/// rust-bert's logits after the last token of `tokens`, [vocab].
fn reference_logits(tokens: &[i64]) -> Tensor {
    let dir = model_dir();
    let config: Gpt2Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let mut store = VarStore::new(Device::Cpu);
    let model = GPT2LMHeadModel::new(store.root(), &config);
    store.load(dir.join("rust_model.ot")).unwrap();
    let input = Tensor::from_slice(tokens).view([1, -1]);
    let output = tch::no_grad(|| {
        model
            .forward_t(Some(&input), None, None, None, None, None, false)
            .unwrap()
    });
    output.lm_logits.get(0).get(tokens.len() as i64 - 1)
}

fn max_difference(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

const PROMPT_A: [i64; 5] = [464, 3290, 318, 257, 1332];
const PROMPT_B: [i64; 2] = [40, 716];

#[test]
fn prefill_matches_rust_bert() {
    let decoder = decoder(Precision::Fp32);
    let prefilled = tch::no_grad(|| decoder.prefill(&[&PROMPT_A]));
    let difference = max_difference(&prefilled.logits.get(0), &reference_logits(&PROMPT_A));
    assert!(difference < 1e-4, "max |difference| {difference}");
}

#[test]
fn batched_steps_over_unequal_rows_match_full_passes() {
    let decoder = decoder(Precision::Fp32);
    tch::no_grad(|| {
        let mut cache = decoder.new_cache();
        cache.join(&decoder.prefill(&[&PROMPT_A]));
        // Row A takes one step alone, then B (shorter) joins.
        let mut sequence_a = PROMPT_A.to_vec();
        sequence_a.push(11);
        let _ = decoder.step(&[11], &[PROMPT_A.len() as i64], &mut cache);
        cache.join(&decoder.prefill(&[&PROMPT_B]));
        let mut sequence_b = PROMPT_B.to_vec();
        for token in [13, 198, 50] {
            sequence_a.push(token);
            sequence_b.push(token + 1);
            let logits = decoder.step(
                &[token, token + 1],
                &[sequence_a.len() as i64 - 1, sequence_b.len() as i64 - 1],
                &mut cache,
            );
            for (row, sequence) in [(0, &sequence_a), (1, &sequence_b)] {
                let difference = max_difference(&logits.get(row), &reference_logits(sequence));
                assert!(
                    difference < 1e-4,
                    "row {row}: max |difference| {difference}"
                );
            }
        }
        // A leaves; B goes on alone in a trimmed cache.
        cache.retain_rows(&[1]);
        sequence_b.push(7);
        let logits = decoder.step(&[7], &[sequence_b.len() as i64 - 1], &mut cache);
        let difference = max_difference(&logits.get(0), &reference_logits(&sequence_b));
        assert!(
            difference < 1e-4,
            "after retain: max |difference| {difference}"
        );
    });
}

#[test]
fn prompts_of_different_lengths_prefill_together() {
    let decoder = decoder(Precision::Fp32);
    tch::no_grad(|| {
        let prefilled = decoder
            .prefill(&[&PROMPT_B, &PROMPT_A])
            .repeat_rows(&[2, 1]);
        assert_eq!(prefilled.starts, vec![3, 3, 0]);
        for (row, prompt) in [(0, &PROMPT_B[..]), (1, &PROMPT_B[..]), (2, &PROMPT_A[..])] {
            let difference = max_difference(&prefilled.logits.get(row), &reference_logits(prompt));
            assert!(
                difference < 1e-4,
                "row {row}: max |difference| {difference}"
            );
        }
        // Decoding goes on from the joined rows as from separate prefills.
        let mut cache = decoder.new_cache();
        cache.join(&prefilled);
        let logits = decoder.step(&[9, 9, 9], &[2, 2, 5], &mut cache);
        for (row, prompt) in [(0, &PROMPT_B[..]), (2, &PROMPT_A[..])] {
            let mut sequence = prompt.to_vec();
            sequence.push(9);
            let difference = max_difference(&logits.get(row), &reference_logits(&sequence));
            assert!(difference < 1e-4, "row {row} after a step: {difference}");
        }
    });
}

#[test]
fn reduced_precision_stays_close_to_fp32() {
    let reference = tch::no_grad(|| decoder(Precision::Fp32).prefill(&[&PROMPT_A]).logits);
    let spread = reference.std(true).double_value(&[]);
    for precision in Precision::REDUCED {
        let logits = tch::no_grad(|| decoder(precision).prefill(&[&PROMPT_A]).logits);
        let difference = max_difference(&logits, &reference);
        assert!(
            difference < 0.25 * spread,
            "{precision:?}: max |difference| {difference}, logit spread {spread}"
        );
        assert_eq!(logits.size(), reference.size());
        assert_eq!(logits.kind(), Kind::Float);
        // Full fp32 logits at every precision (bf16 projects them at fp32):
        // rounding them to bf16 changes them.
        let rounded = logits.to_kind(Kind::BFloat16).to_kind(Kind::Float);
        assert!(!logits.equal(&rounded), "{precision:?} logits are bf16's");
    }
}
