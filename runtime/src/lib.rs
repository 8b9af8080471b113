//! hull runtime library.
