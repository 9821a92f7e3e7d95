//! The three models behind the API, each over our own forward passes:
//! completion (GPT-2, served by `generation::scheduler`), question answering
//! (a span encoder, `encoder`, a `Predictor` served by `engine::batching`)
//! and translation (Marian, served by `generation::seq2seq_scheduler`).
//! Requests arrive here validated and tokenized on the tokenizer pool; no
//! HTTP types appear.

pub mod completion;
pub mod question_answering;
pub mod translation;

use std::path::Path;

use tch::Device;

use crate::configuration::DeviceSetting;
use crate::engine::LoadError;
use crate::generation::linear::{fbgemm_available, native_bf16, Precision};

/// With `[runtime] fault_injection`, an input of exactly this (a prompt, a
/// question, a text to translate) makes its task's worker panic.
pub const FAULT_INPUT: &str = "__panic__";

/// With `[runtime] fault_injection`, each model load takes this much longer,
/// so that the reload after an injected panic (and `/ready` at 503 meanwhile)
/// lasts long enough to be observed; a tiny model otherwise reloads in a few
/// milliseconds, between two polls of `/ready`.
const FAULT_INJECTION_LOAD_DELAY: std::time::Duration = std::time::Duration::from_millis(300);

pub(crate) fn delay_load_for_fault_injection(enabled: bool) {
    if enabled {
        std::thread::sleep(FAULT_INJECTION_LOAD_DELAY);
    }
}

/// The libtorch device for a configured device setting.
pub fn device(setting: DeviceSetting) -> Device {
    match setting {
        DeviceSetting::Cpu => Device::Cpu,
        DeviceSetting::Cuda => Device::Cuda(0),
        DeviceSetting::Auto => Device::cuda_if_available(),
    }
}

/// Reads a model's config.json as loose JSON, for the few values we need.
pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value, LoadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| LoadError::Io(format!("cannot read {}: {error}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|error| LoadError::Io(format!("{} is not valid JSON: {error}", path.display())))
}

/// Warns when bf16 weights will run slower than fp32: on a CPU without
/// bfloat16 instructions (AMX or AVX-512 BF16) libtorch converts every value.
pub(crate) fn warn_if_bf16_is_slow(task: &str, precision: Precision, device: Device) {
    if precision == Precision::Bf16 && device == Device::Cpu && !native_bf16() {
        let hint = if fbgemm_available() {
            "; int8 is faster here"
        } else {
            ""
        };
        tracing::warn!(
            "{task} precision bf16 on a CPU without AMX or AVX-512 BF16 runs slower than fp32{hint}"
        );
    }
}

pub(crate) fn model_error(source: &str, error: impl std::fmt::Display) -> LoadError {
    LoadError::Model {
        source_name: source.to_string(),
        detail: error.to_string(),
    }
}
