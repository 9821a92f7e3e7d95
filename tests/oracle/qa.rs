//! Oracle tests: qa. (Filled in by the work on this architecture.)
