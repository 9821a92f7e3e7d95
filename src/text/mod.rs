//! Pure text logic around the models: sentence boundaries and stop sequences.

pub mod sentences;
pub mod stop;
