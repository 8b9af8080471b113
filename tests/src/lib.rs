//! Fixtures shared by the end-to-end tests.
pub mod bundle;
pub mod hull_cli;
pub mod guest;
pub mod qemu;
