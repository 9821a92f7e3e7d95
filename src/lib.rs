//! nlp-serve: language models as a web API.
//!
//! A request flows one way: `routes` (HTTP) -> `validation` -> `engine`
//! (tokenizer pool, bounded queue, worker thread) -> `predictors` (our own
//! forward passes in `generation` and `encoder`, rust-bert's Marian, on
//! libtorch) -> back; `qa` turns QA requests into windows and logits into
//! answers. `api` holds the wire types and the OpenAPI document; `error` maps
//! every failure to HTTP in one place.

pub mod access;
pub mod allocator;
pub mod api;
pub mod configuration;
pub mod documents;
pub mod encoder;
pub mod engine;
pub mod error;
pub mod extract;
pub mod generation;
pub mod metrics;
pub mod middleware;
pub mod mkl;
pub mod model_source;
pub mod native;
pub mod openmp;
pub mod predictors;
pub mod qa;
pub mod routes;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod text;
pub mod validation;
