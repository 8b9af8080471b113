//! `containerd-shim-hull-v2`: containerd's runtime v2 shim for hull.
//!
//! It follows the runc.v2 shim's model: the shim is a child subreaper and drives
//! the `hull` binary (`create`, `start`, `exec --detach`, `kill`, ...) with the
//! bundle's `log.json`; the pid hull writes to `--pid-file` is the process that
//! exits with the container's (or exec's) status, which the shim reaps and
//! reports as TaskExit. Which sandbox a container gets is hull's choice: the
//! `io.hull.sandbox` annotation, else the shim options' `sandbox`.

pub mod container;
pub mod error;
pub mod events;
pub mod hull_command;
pub mod lifecycle;
pub mod options;
pub mod pod;
pub mod process;
pub mod process_io;
pub mod reaper;
pub mod rootfs;
pub mod service;
pub mod stats;

pub use lifecycle::run;
