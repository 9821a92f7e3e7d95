//! The HTTP contract: request and response bodies of every endpoint, and the
//! OpenAPI document generated from them. No model code here.

pub mod complete;
pub mod documents;
pub mod error;
pub mod health;
pub mod openai;
pub mod openapi;
pub mod qa;
pub mod translate;
