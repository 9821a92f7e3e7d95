//! What every HTTP handler can reach: the task handles, settings, metrics,
//! the reference document and the document store.

use std::sync::Arc;

use crate::api::health::ModelState;
use crate::configuration::Settings;
use crate::documents::DocumentStore;
use crate::engine::Task;
use crate::error::ApiError;
use crate::generation::GenerationHandle;
use crate::metrics::Metrics;
pub use crate::predictors::translation::TranslationHandle;
use crate::qa::QaHandle;

/// The task handles; `None` for a task disabled in configuration.
#[derive(Clone, Default)]
pub struct Tasks {
    pub completion: Option<GenerationHandle>,
    pub qa: Option<QaHandle>,
    pub translation: Option<TranslationHandle>,
}

impl Tasks {
    pub fn state(&self, task: Task) -> ModelState {
        match task {
            Task::Completion => self.completion.as_ref().map(|h| h.state()),
            Task::QuestionAnswering => self.qa.as_ref().map(|h| h.state()),
            Task::Translation => self.translation.as_ref().map(|h| h.worker.state()),
        }
        .unwrap_or(ModelState::Disabled)
    }
}

/// The reference document answered from when a QA request has no context.
#[derive(Clone)]
pub struct ReferenceDocument {
    /// File name: its id in the document store, reported in responses.
    pub name: String,
    pub text: Arc<str>,
}

impl ReferenceDocument {
    /// Its first Markdown heading, else its file name.
    pub fn title(&self) -> String {
        self.text
            .lines()
            .find_map(|line| line.strip_prefix("# "))
            .map_or_else(|| self.name.clone(), |title| title.trim().to_string())
    }
}

pub struct AppState {
    pub settings: Settings,
    pub tasks: Tasks,
    pub metrics: Arc<Metrics>,
    pub reference: ReferenceDocument,
    pub documents: Arc<DocumentStore>,
}

impl AppState {
    pub fn completion(&self) -> Result<&GenerationHandle, ApiError> {
        self.tasks
            .completion
            .as_ref()
            .ok_or(ApiError::disabled(Task::Completion))
    }

    pub fn qa(&self) -> Result<&QaHandle, ApiError> {
        self.tasks
            .qa
            .as_ref()
            .ok_or(ApiError::disabled(Task::QuestionAnswering))
    }

    pub fn translation(&self) -> Result<&TranslationHandle, ApiError> {
        self.tasks
            .translation
            .as_ref()
            .ok_or(ApiError::disabled(Task::Translation))
    }
}
