//! Extractive question answering with a DistilBERT/BERT model fine-tuned on
//! SQuAD. Long contexts are cut into overlapping windows (`max_seq_length`,
//! `doc_stride`); windows of all requests in a batch run through the model
//! together.

use std::sync::Arc;

use rust_bert::pipelines::common::ModelType;
use rust_bert::pipelines::question_answering::{
    QaInput, QuestionAnsweringConfig, QuestionAnsweringModel,
};
use tch::Device;

use super::{local, model_error, read_json, torch_weights, FAULT_INPUT};
use crate::configuration::QaSettings;
use crate::engine::{LoadError, PredictError, Predictor};
use crate::model_source::{FileWanted, ModelLocation, CONFIG, WEIGHTS};

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
}

/// A validated question.
#[derive(Debug, Clone)]
pub struct QaJob {
    pub question: String,
    pub context: Arc<str>,
    pub top_k: usize,
}

/// A span of the context; offsets in Unicode code points.
#[derive(Debug, Clone)]
pub struct AnswerSpan {
    pub text: String,
    pub score: f64,
    pub start: usize,
    pub end: usize,
}

pub struct QaPredictor {
    model: QuestionAnsweringModel,
    window_batch_size: usize,
    fault_injection: bool,
}

impl Predictor for QaPredictor {
    type Config = QaConfig;
    type Request = QaJob;
    type Output = Vec<AnswerSpan>;

    fn init(config: QaConfig) -> Result<Self, LoadError> {
        super::delay_load_for_fault_injection(config.fault_injection);
        let files = &config.location.resolve(&FILES)?;
        let settings = &config.settings;
        let model_type = model_type(&read_json(files.require("config.json")?)?);
        // An explicit do_lower_case in the model's tokenizer_config.json wins.
        let lower_case = match files.get("tokenizer_config.json") {
            Some(path) => read_json(path)?["do_lower_case"]
                .as_bool()
                .unwrap_or(settings.lower_case),
            None => settings.lower_case,
        };
        let model = QuestionAnsweringModel::new(QuestionAnsweringConfig {
            model_resource: torch_weights(files.require("rust_model.ot")?),
            config_resource: local(files.require("config.json")?),
            vocab_resource: local(files.require("vocab.txt")?),
            merges_resource: None,
            device: config.device,
            model_type,
            lower_case,
            strip_accents: None,
            add_prefix_space: None,
            max_seq_length: settings.max_seq_length,
            doc_stride: settings.doc_stride,
            max_query_length: settings.max_question_tokens,
            max_answer_length: settings.max_answer_tokens,
            kind: None,
        })
        .map_err(|e| model_error(&files.source, e))?;
        Ok(QaPredictor {
            model,
            window_batch_size: settings.window_batch_size.max(1),
            fault_injection: config.fault_injection,
        })
    }

    fn predict(&mut self, batch: Vec<QaJob>) -> Vec<Result<Vec<AnswerSpan>, PredictError>> {
        if self.fault_injection && batch.iter().any(|job| job.question == FAULT_INPUT) {
            panic!("fault injection: the question was {FAULT_INPUT}");
        }
        let top_k = batch.iter().map(|job| job.top_k).max().unwrap_or(1).max(1);
        let inputs: Vec<QaInput> = batch
            .iter()
            .map(|job| QaInput {
                question: job.question.clone(),
                context: job.context.to_string(),
            })
            .collect();
        let answers = tch::no_grad(|| {
            self.model
                .predict(&inputs, top_k as i64, self.window_batch_size)
        });
        batch
            .iter()
            .zip(answers)
            .map(|(job, answers)| {
                Ok(answers
                    .into_iter()
                    .filter(|answer| !answer.answer.is_empty())
                    .take(job.top_k)
                    .map(|answer| AnswerSpan {
                        text: answer.answer,
                        score: answer.score,
                        start: answer.start,
                        end: answer.end,
                    })
                    .collect())
            })
            .collect()
    }
}

/// BERT-family architecture named by a config.json.
fn model_type(config: &serde_json::Value) -> ModelType {
    match config["model_type"].as_str() {
        Some("bert") => ModelType::Bert,
        Some("roberta") => ModelType::Roberta,
        _ => ModelType::DistilBert,
    }
}
