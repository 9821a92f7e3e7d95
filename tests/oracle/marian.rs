//! Oracle tests: marian. (Filled in by the work on this architecture.)
