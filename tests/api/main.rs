//! Black-box tests: the real server with the tiny models, over HTTP.

mod complete;
mod engine;
mod errors;
mod helpers;
mod operations;
mod qa;
mod streaming;
mod translate;
