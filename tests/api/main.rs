//! Black-box tests: the real server with the tiny models, over HTTP.

mod complete;
mod documents;
mod engine;
mod errors;
#[allow(dead_code)] // shared with the other test binaries
mod helpers;
mod openai;
mod operations;
mod qa;
mod streaming;
mod translate;
