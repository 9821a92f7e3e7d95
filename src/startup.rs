//! Builds the application: starts a worker per enabled task (each loads its
//! model in the background), binds the listener and assembles the actix App.
//! `Application::build` binds before returning, so tests can use port 0.

use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::middleware::{from_fn, Condition};
use actix_web::{web, App, HttpServer};
use tracing_actix_web::TracingLogger;

use crate::access::{self, AccessControl};
use crate::configuration::{CorsSettings, DocumentSettings};
use crate::configuration::{ModelSettings, Settings};
use crate::documents::{DocumentStore, StoreError};
use crate::engine::tokenizer_pool::TokenizerPool;
use crate::engine::{worker, BatchShape, LoadError, LoadReport, Task};
use crate::extract::BodyLimit;
use crate::generation::scheduler::BatchLimits;
use crate::metrics::Metrics;
use crate::model_source::ModelLocation;
use crate::predictors::completion::CompletionConfig;
use crate::predictors::question_answering::QaConfig;
use crate::predictors::translation::TranslationModelConfig;
use crate::predictors::{self};
use crate::state::{AppState, ReferenceDocument, Tasks};
use crate::{allocator, middleware, routes};

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot read the reference document {path}: {detail}")]
    ReferenceDocument { path: String, detail: String },
    #[error("cannot listen on {address}: {detail}")]
    Bind { address: String, detail: String },
    #[error("cannot start the {task} worker: {detail}")]
    Worker { task: Task, detail: String },
    #[error("the {task} model could not be loaded: {error}")]
    ModelLoad { task: Task, error: LoadError },
    #[error("cannot open the document store {path}: {detail}")]
    DocumentStore { path: String, detail: String },
    #[error("server error: {0}")]
    Server(#[from] std::io::Error),
}

pub struct Application {
    port: u16,
    server: Server,
    loads: Vec<(Task, LoadReport)>,
}

impl Application {
    pub fn build(settings: Settings) -> Result<Application, StartupError> {
        worker::set_torch_threads(settings.runtime.torch_threads);
        if settings.runtime.retain_freed_memory && !allocator::retain_freed_memory() {
            tracing::warn!("runtime.retain_freed_memory is set but the allocator did not take it");
        }
        let metrics = Arc::new(Metrics::new());
        let reference = read_reference(&settings.qa.reference_document)?;
        let documents = open_documents(&settings.documents, &reference)?;
        metrics.store_size(documents.size().ok());
        let (tasks, loads) = start_tasks(&settings, &metrics)?;

        let address = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&address).map_err(|error| StartupError::Bind {
            address: address.clone(),
            detail: error.to_string(),
        })?;
        let port = listener.local_addr()?.port();
        let server_settings = settings.server.clone();
        let access = web::Data::new(AccessControl::new(&settings.auth, &settings.rate_limit));
        let cors_settings = settings.cors.clone();
        // A JSON document escapes some characters: room beyond the text limit.
        let document_body_limit = settings.documents.max_document_bytes.saturating_mul(2);
        let state = web::Data::new(AppState {
            settings,
            tasks,
            metrics,
            reference,
            documents,
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(access.clone())
                .app_data(BodyLimit(server_settings.max_body_bytes))
                .wrap(from_fn(access::check))
                .wrap(from_fn(middleware::observe))
                .wrap(TracingLogger::default())
                .wrap(Condition::new(
                    !cors_settings.allowed_origins.is_empty(),
                    cors(&cors_settings),
                ))
                .configure(|config| routes::configure(config, document_body_limit))
        })
        .workers(server_settings.workers.max(1))
        .shutdown_timeout(server_settings.shutdown_timeout_secs)
        .listen(listener)?
        .run();
        Ok(Application {
            port,
            server,
            loads,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the server stops (SIGINT/SIGTERM drain in-flight requests),
    /// or stops it and fails as soon as any model fails to load.
    pub async fn run_until_stopped(self) -> Result<(), StartupError> {
        let handle = self.server.handle();
        let server = actix_web::rt::spawn(self.server);
        for (task, report) in self.loads {
            match report.await {
                Ok(Ok(elapsed)) => {
                    tracing::info!(%task, seconds = elapsed.as_secs_f64(), "model loaded");
                }
                Ok(Err(error)) => {
                    handle.stop(false).await;
                    return Err(StartupError::ModelLoad { task, error });
                }
                Err(_) => {
                    handle.stop(false).await;
                    return Err(StartupError::Worker {
                        task,
                        detail: "the worker ended while loading".into(),
                    });
                }
            }
        }
        tracing::info!("all enabled models loaded; ready");
        match server.await {
            Ok(result) => Ok(result?),
            Err(error) => Err(StartupError::Server(std::io::Error::other(error))),
        }
    }
}

/// CORS for the configured origins. Other origins get no CORS headers (so
/// browsers refuse them) but are not blocked: same-origin pages keep working.
fn cors(settings: &CorsSettings) -> Cors {
    let mut cors = Cors::default()
        .block_on_origin_mismatch(false)
        .allowed_methods(["GET", "POST"])
        .allowed_headers([
            actix_web::http::header::CONTENT_TYPE,
            actix_web::http::header::AUTHORIZATION,
            actix_web::http::header::HeaderName::from_static("x-timeout-ms"),
        ])
        .expose_headers([
            "x-request-id",
            "x-queue-time",
            "x-inference-time",
            "retry-after",
        ])
        .max_age(settings.max_age_secs);
    for origin in &settings.allowed_origins {
        cors = if origin == "*" {
            cors.allow_any_origin()
        } else {
            cors.allowed_origin(origin)
        };
    }
    cors
}

/// Opens the document store and stores the reference document in it under
/// its file name (unchanged text is left alone).
fn open_documents(
    settings: &DocumentSettings,
    reference: &ReferenceDocument,
) -> Result<Arc<DocumentStore>, StartupError> {
    let failed = |error: StoreError| StartupError::DocumentStore {
        path: settings.database.display().to_string(),
        detail: error.to_string(),
    };
    let store = DocumentStore::open(
        &settings.database,
        settings.passage_chars,
        settings.max_documents,
    )
    .map_err(failed)?;
    store
        .ensure(&reference.name, &reference.title(), &reference.text)
        .map_err(failed)?;
    Ok(Arc::new(store))
}

fn read_reference(path: &Path) -> Result<ReferenceDocument, StartupError> {
    let text = std::fs::read_to_string(path).map_err(|error| StartupError::ReferenceDocument {
        path: path.display().to_string(),
        detail: error.to_string(),
    })?;
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().to_string())
        .unwrap_or_else(|| path.display().to_string());
    Ok(ReferenceDocument {
        name,
        text: Arc::from(text),
    })
}

fn start_tasks(
    settings: &Settings,
    metrics: &Arc<Metrics>,
) -> Result<(Tasks, Vec<(Task, LoadReport)>), StartupError> {
    let device = predictors::device(settings.runtime.device);
    let location = |model: &ModelSettings| ModelLocation {
        model: model.clone(),
        hub: settings.hub.clone(),
    };
    let mut loads = Vec::new();
    let (completion, qa, translation) = (&settings.completion, &settings.qa, &settings.translation);
    // One pool tokenizes for every task that takes ids.
    let pool = TokenizerPool::new(
        settings.runtime.tokenizer_threads,
        settings.runtime.tokenizer_queue_size,
    )
    .map_err(|error| StartupError::Worker {
        task: Task::Completion,
        detail: format!("cannot start the tokenizer threads: {error}"),
    })?;
    let tasks = Tasks {
        completion: start_task(Task::Completion, &completion.model, &mut loads, || {
            let config = CompletionConfig {
                location: location(&completion.model),
                device,
                precision: completion.precision,
                max_prompt_tokens: completion.max_prompt_tokens,
                fault_injection: settings.runtime.fault_injection,
            };
            let limits = BatchLimits {
                max_sequences: completion.model.max_batch_size.max(1),
                max_tokens: completion.max_batch_tokens,
            };
            predictors::completion::spawn(
                config,
                completion.model.queue_size,
                limits,
                pool.clone(),
                metrics.clone(),
            )
        })?,
        qa: start_task(Task::QuestionAnswering, &qa.model, &mut loads, || {
            let config = QaConfig {
                location: location(&qa.model),
                device,
                settings: qa.clone(),
                fault_injection: settings.runtime.fault_injection,
                tokenizer: Default::default(),
            };
            predictors::question_answering::spawn(
                config,
                qa.model.queue_size,
                batch_shape(&qa.model),
                pool.clone(),
                metrics.clone(),
            )
        })?,
        translation: start_task(Task::Translation, &translation.model, &mut loads, || {
            let config = TranslationModelConfig {
                location: location(&translation.model),
                device,
                settings: translation.clone(),
                fault_injection: settings.runtime.fault_injection,
                codec: Arc::new(OnceLock::new()),
            };
            predictors::translation::spawn(
                config,
                translation.model.queue_size,
                Duration::from_millis(translation.model.max_batch_wait_ms),
                pool.clone(),
                metrics.clone(),
            )
        })?,
    };
    Ok((tasks, loads))
}

/// Starts the worker of an enabled task with `start` and keeps its load
/// report; `None` for a disabled task.
fn start_task<H>(
    task: Task,
    model: &ModelSettings,
    loads: &mut Vec<(Task, LoadReport)>,
    start: impl FnOnce() -> std::io::Result<(H, LoadReport)>,
) -> Result<Option<H>, StartupError> {
    if !model.enabled {
        return Ok(None);
    }
    let (handle, load) = start().map_err(|error| StartupError::Worker {
        task,
        detail: error.to_string(),
    })?;
    loads.push((task, load));
    Ok(Some(handle))
}

/// How a task's worker forms batches, from its model settings.
fn batch_shape(model: &ModelSettings) -> BatchShape {
    BatchShape {
        max_batch_size: model.max_batch_size.max(1),
        max_wait: Duration::from_millis(model.max_batch_wait_ms),
    }
}
