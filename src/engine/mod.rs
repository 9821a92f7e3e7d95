//! The serving engine: the `Predictor` trait that every model implements, and
//! the worker that owns a predictor on its own thread behind a bounded queue.
//! HTTP code talks to models only through a `TaskHandle`.

pub mod predictor;
pub mod task;
pub mod worker;

pub use predictor::{LoadError, PredictError, Predictor};
pub use task::Task;
pub use worker::{SubmitError, TaskHandle};
