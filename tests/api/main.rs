//! Black-box tests: the real server with the tiny models, over HTTP.

mod complete;
mod errors;
mod helpers;
mod operations;
mod qa;
mod translate;
