//! hull-vmm: the microVM monitor.
pub mod assets;
