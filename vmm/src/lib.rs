//! hull-vmm: the microVM monitor, on rust-vmm crates.
//!
//! [`Vm`] is the library entry point: build it from a [`VmConfig`], optionally add
//! virtio devices, then [`Vm::run`] it. The `hull-vmm` binary is a thin CLI over it.

pub mod assets;
pub mod boot;
pub mod config;
pub mod console;
pub mod cpu;
pub mod device_config;
pub mod devices;
pub mod kvm;
pub mod memory;
pub mod seccomp;
pub mod virtio;
pub mod vm;

pub use config::{ConsoleConfig, VmConfig};
pub use device_config::DeviceConfig;
pub use vm::{Vm, VmError, VmExit};
