//! The serving engine: the `Predictor` trait that every one-shot model
//! implements, the worker that owns a model on its own thread behind a
//! bounded queue, dynamic batching over that queue, and the pool of threads
//! that tokenizes before anything is queued. HTTP code talks to models only
//! through worker handles.

pub mod batching;
pub mod predictor;
pub mod task;
pub mod tokenizer_pool;
pub mod worker;

pub use batching::{Answered, BatchShape, TaskHandle};
pub use predictor::{LoadError, PredictError, Predictor};
pub use task::Task;
pub use worker::{LoadReport, ModelStatus, SubmitError, Timing, Worker};
