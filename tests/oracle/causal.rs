//! Oracle tests: causal. (Filled in by the work on this architecture.)
