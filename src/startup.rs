//! Builds the application: starts a worker per enabled task (each loads its
//! model in the background), binds the listener and assembles the actix App.
//! `Application::build` binds before returning, so tests can use port 0.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use tokio::sync::oneshot;
use tracing_actix_web::TracingLogger;

use crate::configuration::{ModelSettings, Settings};
use crate::engine::worker::QueueShape;
use crate::engine::{LoadError, Predictor, Task, TaskHandle};
use crate::extract::BodyLimit;
use crate::metrics::Metrics;
use crate::model_source::ModelLocation;
use crate::predictors::completion::{CompletionConfig, CompletionPredictor};
use crate::predictors::question_answering::{QaConfig, QaPredictor};
use crate::predictors::translation::{TranslationModelConfig, TranslationPredictor};
use crate::predictors::{self};
use crate::state::{AppState, ReferenceDocument, Tasks};
use crate::{middleware, routes};

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
    #[error("server error: {0}")]
    Server(#[from] std::io::Error),
}

type LoadReport = oneshot::Receiver<Result<Duration, LoadError>>;
type HandleOf<P> = TaskHandle<<P as Predictor>::Request, <P as Predictor>::Output>;

pub struct Application {
    port: u16,
    server: Server,
    loads: Vec<(Task, LoadReport)>,
}

impl Application {
    pub fn build(settings: Settings) -> Result<Application, StartupError> {
        if settings.runtime.torch_threads > 0 {
            tch::set_num_threads(settings.runtime.torch_threads);
        }
        let metrics = Arc::new(Metrics::new());
        let reference = read_reference(&settings.qa.reference_document)?;
        let (tasks, loads) = start_tasks(&settings, &metrics)?;

        let address = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&address).map_err(|error| StartupError::Bind {
            address: address.clone(),
            detail: error.to_string(),
        })?;
        let port = listener.local_addr()?.port();
        let server_settings = settings.server.clone();
        let state = web::Data::new(AppState {
            settings,
            tasks,
            metrics,
            reference,
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(BodyLimit(server_settings.max_body_bytes))
                .wrap(from_fn(middleware::observe))
                .wrap(TracingLogger::default())
                .configure(routes::configure)
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
    let completion = &settings.completion;
    let qa = &settings.qa;
    let translation = &settings.translation;
    let tasks = Tasks {
        completion: spawn::<CompletionPredictor>(
            Task::Completion,
            &completion.model,
            || CompletionConfig {
                location: location(&completion.model),
                device,
                max_prompt_tokens: completion.max_prompt_tokens,
                metrics: metrics.clone(),
            },
            metrics,
            &mut loads,
        )?,
        qa: spawn::<QaPredictor>(
            Task::QuestionAnswering,
            &qa.model,
            || QaConfig {
                location: location(&qa.model),
                device,
                settings: qa.clone(),
            },
            metrics,
            &mut loads,
        )?,
        translation: spawn::<TranslationPredictor>(
            Task::Translation,
            &translation.model,
            || TranslationModelConfig {
                location: location(&translation.model),
                device,
                settings: translation.clone(),
            },
            metrics,
            &mut loads,
        )?,
    };
    Ok((tasks, loads))
}

/// Starts the worker of an enabled task; `None` for a disabled one.
fn spawn<P: Predictor + 'static>(
    task: Task,
    model: &ModelSettings,
    config: impl FnOnce() -> P::Config,
    metrics: &Arc<Metrics>,
    loads: &mut Vec<(Task, LoadReport)>,
) -> Result<Option<HandleOf<P>>, StartupError> {
    if !model.enabled {
        return Ok(None);
    }
    let shape = QueueShape {
        queue_size: model.queue_size,
        max_batch_size: model.max_batch_size,
    };
    let (handle, load) =
        TaskHandle::spawn::<P>(task, config(), shape, metrics.clone()).map_err(|error| {
            StartupError::Worker {
                task,
                detail: error.to_string(),
            }
        })?;
    loads.push((task, load));
    Ok(Some(handle))
}
