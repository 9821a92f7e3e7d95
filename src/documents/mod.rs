//! Documents that questions are answered over: the SQLite store with its
//! full-text index (`store`), how a document is cut into passages
//! (`passages`) and how a question becomes a full-text query (`query`).
//! `/qa` retrieves the best passages here and reads only those.

pub mod passages;
pub mod query;
pub mod store;

pub use store::{DocumentInfo, DocumentStore, Hit, Scope, StoreError, StoreSize};
