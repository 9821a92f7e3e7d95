//! Extractive question answering with a DistilBERT or BERT model fine-tuned
//! on SQuAD: its files, and the model thread's `Predictor`, which sees only
//! windows of token ids and returns their start/end logits. Tokenizing and
//! span selection live in `qa`; the networks in `encoder`.

use std::sync::{Arc, OnceLock};

use tch::Device;

use super::{model_error, read_json, FAULT_INPUT};
use crate::configuration::QaSettings;
use crate::encoder::{load_span_encoder, run_windows, SpanEncoder, WindowLogits};
use crate::engine::tokenizer_pool::TokenizerPool;
use crate::engine::{BatchShape, LoadError, LoadReport, PredictError, Predictor, Task, TaskHandle};
use crate::generation::linear::{fbgemm_available, native_bf16, onednn_int8_available, Precision};
use crate::metrics::Metrics;
use crate::model_source::{FileWanted, ModelLocation, CONFIG, WEIGHTS};
use crate::qa::precision::CpuKernels;
use crate::qa::windows::{QaTokenizer, Window, WindowLimits, WindowsJob};
use crate::qa::QaHandle;

pub const FILES: [FileWanted; 4] = [
    CONFIG,
    WEIGHTS,
    FileWanted::required(&["vocab.txt"]),
    FileWanted::optional(&["tokenizer_config.json"]),
];

#[derive(Clone)]
pub struct QaConfig {
    pub location: ModelLocation,
    pub device: Device,
    pub settings: QaSettings,
    /// Testing only: the question FAULT_INPUT makes `predict` panic.
    pub fault_injection: bool,
    /// Where the loaded model publishes its tokenizer for the pool.
    pub tokenizer: Arc<OnceLock<Arc<QaTokenizer>>>,
}

pub struct QaPredictor {
    encoder: Box<dyn SpanEncoder>,
    window_batch_size: usize,
}

/// Loads the QA model on its own thread and returns the handle that
/// tokenizes, queues and selects spans.
pub fn spawn(
    config: QaConfig,
    queue_size: usize,
    shape: BatchShape,
    pool: TokenizerPool,
    metrics: Arc<Metrics>,
) -> std::io::Result<(QaHandle, LoadReport)> {
    let tokenizer = config.tokenizer.clone();
    let max_answer_tokens = config.settings.max_answer_tokens;
    let (worker, report) = TaskHandle::spawn_predictor::<QaPredictor>(
        Task::QuestionAnswering,
        config,
        queue_size,
        shape,
        metrics,
    )?;
    Ok((
        QaHandle::new(worker, tokenizer, pool, max_answer_tokens),
        report,
    ))
}

impl Predictor for QaPredictor {
    type Config = QaConfig;
    type Request = WindowsJob;
    type Output = Vec<WindowLogits>;

    fn init(config: QaConfig) -> Result<Self, LoadError> {
        super::delay_load_for_fault_injection(config.fault_injection);
        let files = &config.location.resolve(&FILES)?;
        let settings = &config.settings;
        let config_path = files.require("config.json")?;
        let model_type = read_json(config_path)?["model_type"]
            .as_str()
            .unwrap_or("distilbert")
            .to_string();
        let fbgemm = fbgemm_available();
        let onednn_int8 = onednn_int8_available();
        let requested = settings.precision.resolve(
            config.device,
            CpuKernels {
                onednn_int8,
                vnni_int8: crate::native::int8::Blocks::preferred(),
                native_bf16: native_bf16(),
                fbgemm,
            },
        );
        let precision = runnable_precision(requested, config.device, fbgemm);
        if precision != requested {
            tracing::warn!(
                "qa precision {} needs libtorch's fbgemm kernels on an x86-64 CPU with AVX2; running fp32 on {:?}",
                requested.name(),
                config.device
            );
        }
        let kernels = match precision {
            Precision::Int8 if onednn_int8 && config.device == Device::Cpu => {
                " on oneDNN's AMX kernels"
            }
            Precision::Int8
                if crate::native::int8::Blocks::preferred() && config.device == Device::Cpu =>
            {
                if native_bf16() {
                    " on AVX-512 VNNI, attention in bf16"
                } else {
                    " on AVX-512 VNNI"
                }
            }
            _ => "",
        };
        tracing::info!(
            "qa runs at {}{kernels} (configured: {})",
            precision.name(),
            settings.precision.name()
        );
        super::warn_if_bf16_is_slow("qa", precision, config.device);
        // An explicit do_lower_case in the model's tokenizer_config.json wins.
        let lower_case = match files.get("tokenizer_config.json") {
            Some(path) => read_json(path)?["do_lower_case"]
                .as_bool()
                .unwrap_or(settings.lower_case),
            None => settings.lower_case,
        };
        let limits = WindowLimits {
            max_seq_length: settings.max_seq_length,
            doc_stride: settings.doc_stride,
            max_question_tokens: settings.max_question_tokens,
        };
        let tokenizer = QaTokenizer::from_vocab(
            files.require("vocab.txt")?,
            lower_case,
            limits,
            config.fault_injection,
        )
        .map_err(|e| model_error(&files.source, e))?;
        let weights = files.require("rust_model.ot")?;
        let device = config.device;
        let encoder = load_span_encoder(&model_type, config_path, weights, precision, device)
            .map_err(|e| model_error(&files.source, e))?;
        // The tokenizer does not change when a model is reloaded.
        let _ = config.tokenizer.set(Arc::new(tokenizer));
        Ok(QaPredictor {
            encoder,
            window_batch_size: settings.window_batch_size.max(1),
        })
    }

    fn predict(&mut self, batch: Vec<WindowsJob>) -> Vec<Result<Vec<WindowLogits>, PredictError>> {
        if batch.iter().any(|job| job.inject_fault) {
            panic!("fault injection: the question was {FAULT_INPUT}");
        }
        // Windows of every request share the forward passes.
        let windows: Vec<&Window> = batch.iter().flat_map(|job| &job.windows).collect();
        let mut logits = run_windows(&*self.encoder, &windows, self.window_batch_size).into_iter();
        batch
            .iter()
            .map(|job| Ok(logits.by_ref().take(job.windows.len()).collect()))
            .collect()
    }
}

/// The precision QA can run at: fp16 and int8 use libtorch's fbgemm kernels
/// (CPU only, x86-64 with AVX2); elsewhere the default int8 gives way to fp32,
/// so that a GPU or another CPU still serves. fp32 and bf16 run anywhere.
fn runnable_precision(requested: Precision, device: Device, fbgemm: bool) -> Precision {
    if requested.needs_fbgemm() && (device != Device::Cpu || !fbgemm) {
        Precision::Fp32
    } else {
        requested
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fbgemm_precisions_need_fbgemm_on_the_cpu() {
        let cpu = Device::Cpu;
        assert_eq!(
            runnable_precision(Precision::Int8, cpu, true),
            Precision::Int8
        );
        assert_eq!(
            runnable_precision(Precision::Fp16, cpu, true),
            Precision::Fp16
        );
        assert_eq!(
            runnable_precision(Precision::Int8, cpu, false),
            Precision::Fp32
        );
        assert_eq!(
            runnable_precision(Precision::Int8, Device::Cuda(0), true),
            Precision::Fp32
        );
        assert_eq!(
            runnable_precision(Precision::Fp32, cpu, false),
            Precision::Fp32
        );
        assert_eq!(
            runnable_precision(Precision::Bf16, Device::Cuda(0), false),
            Precision::Bf16
        );
    }
}
