//! English to German translation with a Marian model. Texts are split into
//! sentences; the sentences of every request in a batch are translated
//! together and joined back with the original spacing and line breaks.

use rust_bert::pipelines::common::ModelType;
use rust_bert::pipelines::translation::{Language, TranslationConfig, TranslationModel};
use tch::Device;

use super::{local, model_error, torch_weights, FAULT_INPUT};
use crate::configuration::TranslationSettings;
use crate::engine::{LoadError, PredictError, Predictor};
use crate::model_source::{FileWanted, ModelLocation, CONFIG, WEIGHTS};
use crate::text::sentences::split_sentences;

pub const FILES: [FileWanted; 4] = [
    CONFIG,
    WEIGHTS,
    FileWanted::required(&["vocab.json"]),
    FileWanted::required(&["source.spm"]),
];

#[derive(Clone)]
pub struct TranslationModelConfig {
    pub location: ModelLocation,
    pub device: Device,
    pub settings: TranslationSettings,
    /// Testing only: the text FAULT_INPUT makes `predict` panic.
    pub fault_injection: bool,
}

/// Validated texts of one request.
#[derive(Debug, Clone)]
pub struct TranslationJob {
    pub texts: Vec<String>,
}

pub struct TranslationPredictor {
    model: TranslationModel,
    sentence_batch_size: usize,
    fault_injection: bool,
}

/// Where a sentence's translation goes back.
struct Slot {
    job: usize,
    text: usize,
    segment: usize,
}

impl Predictor for TranslationPredictor {
    type Config = TranslationModelConfig;
    type Request = TranslationJob;
    type Output = Vec<String>;

    fn init(config: TranslationModelConfig) -> Result<Self, LoadError> {
        super::delay_load_for_fault_injection(config.fault_injection);
        let files = &config.location.resolve(&FILES)?;
        let settings = &config.settings;
        let mut translation_config = TranslationConfig::new(
            ModelType::Marian,
            torch_weights(files.require("rust_model.ot")?),
            local(files.require("config.json")?),
            local(files.require("vocab.json")?),
            Some(local(files.require("source.spm")?)),
            [Language::English],
            [Language::German],
            config.device,
        );
        translation_config.num_beams = settings.num_beams.max(1);
        translation_config.max_length = Some(settings.max_output_tokens.max(1));
        translation_config.min_length = settings.min_output_tokens.max(0);
        translation_config.early_stopping = true;
        let model =
            TranslationModel::new(translation_config).map_err(|e| model_error(&files.source, e))?;
        Ok(TranslationPredictor {
            model,
            sentence_batch_size: settings.sentence_batch_size.max(1),
            fault_injection: config.fault_injection,
        })
    }

    fn predict(&mut self, batch: Vec<TranslationJob>) -> Vec<Result<Vec<String>, PredictError>> {
        let poisoned = |job: &TranslationJob| job.texts.iter().any(|text| text == FAULT_INPUT);
        if self.fault_injection && batch.iter().any(poisoned) {
            panic!("fault injection: a text was {FAULT_INPUT}");
        }
        let mut sentences: Vec<&str> = Vec::new();
        let mut slots = Vec::new();
        let segmented: Vec<Vec<_>> = batch
            .iter()
            .map(|job| job.texts.iter().map(|text| split_sentences(text)).collect())
            .collect();
        for (job, texts) in segmented.iter().enumerate() {
            for (text, segments) in texts.iter().enumerate() {
                for (segment, part) in segments.iter().enumerate() {
                    if !part.sentence.is_empty() {
                        sentences.push(part.sentence);
                        slots.push(Slot { job, text, segment });
                    }
                }
            }
        }
        let mut translated = Vec::with_capacity(sentences.len());
        for chunk in sentences.chunks(self.sentence_batch_size) {
            match tch::no_grad(|| {
                self.model
                    .translate(chunk, Language::English, Language::German)
            }) {
                Ok(output) if output.len() == chunk.len() => translated.extend(output),
                Ok(output) => {
                    let message = format!(
                        "{} translations for {} sentences",
                        output.len(),
                        chunk.len()
                    );
                    return batch
                        .iter()
                        .map(|_| Err(PredictError::Failed(message.clone())))
                        .collect();
                }
                Err(error) => {
                    let message = error.to_string();
                    return batch
                        .iter()
                        .map(|_| Err(PredictError::Failed(message.clone())))
                        .collect();
                }
            }
        }
        // Start from the original segments and put each translation in place.
        let mut outputs: Vec<Vec<Vec<String>>> = segmented
            .iter()
            .map(|texts| {
                texts
                    .iter()
                    .map(|segments| segments.iter().map(|_| String::new()).collect())
                    .collect()
            })
            .collect();
        for (slot, sentence) in slots.iter().zip(translated) {
            outputs[slot.job][slot.text][slot.segment] = sentence.trim().to_string();
        }
        outputs
            .into_iter()
            .zip(&segmented)
            .map(|(texts, original)| {
                Ok(texts
                    .into_iter()
                    .zip(original)
                    .map(|(sentences, segments)| join(&sentences, segments))
                    .collect())
            })
            .collect()
    }
}

/// Joins translated sentences with the original separators, trimmed at the ends.
fn join(sentences: &[String], segments: &[crate::text::sentences::Segment<'_>]) -> String {
    let mut text = String::new();
    for (sentence, segment) in sentences.iter().zip(segments) {
        text.push_str(sentence);
        text.push_str(segment.separator);
    }
    text.trim().to_string()
}
