//! Pure text logic around the models: sentence boundaries, stop sequences
//! and releasing generated text as it becomes final.

pub mod sentences;
pub mod stop;
pub mod stream;
