//! transformers is the oracle: the server loads the tiny checkpoints that
//! transformers itself saved (`make oracle-fixtures`, in build/oracle) and
//! must give transformers' own outputs on them, token for token, at fp32.
//! Each architecture's tests live in their own module.

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

mod causal;
mod fixtures;
mod marian;
mod qa;
