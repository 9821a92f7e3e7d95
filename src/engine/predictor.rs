//! The init/predict shape shared by every model.

/// A loaded model that answers batches of validated requests.
///
/// `init` runs on the worker thread that will own the predictor, so a
/// predictor needs to be neither `Send` nor `Sync` (rust-bert models are not
/// `Sync`). The worker holds it as a trait object.
pub trait Predictor {
    /// Everything `init` needs: model files and task settings (kept, so a
    /// model that panicked can be loaded again).
    type Config: Clone + Send + 'static;
    /// One validated request.
    type Request: Send + 'static;
    /// The answer to one request.
    type Output: Send + 'static;

    /// Loads the model.
    fn init(config: Self::Config) -> Result<Self, LoadError>
    where
        Self: Sized;

    /// Answers a batch: exactly one result per request, in order.
    fn predict(&mut self, batch: Vec<Self::Request>) -> Vec<Result<Self::Output, PredictError>>;
}

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The hub could not be reached at all (no network, DNS failure, refused).
    #[error("cannot reach the model hub at {endpoint} to download '{repo}': {detail}")]
    HubUnreachable {
        endpoint: String,
        repo: String,
        detail: String,
    },
    /// The hub answered, but not with the file.
    #[error("the model hub could not provide {file} of '{repo}' (revision {revision}): {detail}")]
    HubFile {
        repo: String,
        revision: String,
        file: String,
        detail: String,
    },
    /// The hub refused access: a private or gated repository (or none).
    #[error("the model hub refused access to '{repo}': {detail}")]
    HubDenied { repo: String, detail: String },
    /// The hub has the repository and revision, but none of these files.
    #[error("{files} not found in {repo}@{revision} on the model hub")]
    HubFileNotFound {
        repo: String,
        revision: String,
        files: String,
    },
    /// Offline (HF_HUB_OFFLINE or `[hub] offline`) and not in the cache.
    #[error(
        "{files} of {repo}@{revision} not in the hub cache {cache} (offline: \
         HF_HUB_OFFLINE or [hub] offline is set, so the hub is not asked)"
    )]
    HubOffline {
        repo: String,
        revision: String,
        files: String,
        cache: String,
    },
    /// A local model directory lacks a file.
    #[error("model directory {dir} has none of: {names}")]
    MissingFile { dir: String, names: String },
    /// Files were found but the model could not be built from them.
    #[error("could not load the model from {source_name}: {detail}")]
    Model { source_name: String, detail: String },
    #[error("{0}")]
    Io(String),
}

/// Why one request could not be answered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PredictError {
    /// The request is valid JSON but the model cannot take it (too many tokens).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The model failed; the request itself may be fine.
    #[error("inference failed: {0}")]
    Failed(String),
    /// The request's deadline passed before the model got to it.
    #[error("the request's deadline passed before the model could answer")]
    DeadlineExceeded,
}
