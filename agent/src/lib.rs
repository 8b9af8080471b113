//! hull's container engine and the agent that serves it: as guest PID 1 over vsock, or
//! on the host (the OS-level sandbox) over a Unix socket.
//!
//! - [`engine`]: the container registry, one method per protocol request; youki's
//!   libcontainer does the setup, each call in a forked helper (`helper`).
//! - [`reaper`]: the only caller of wait(2) in the process (PID 1 reaps orphans).
//! - [`server`]: the protocol on any stream-socket listener.
//! - [`host`]: the OS-level sandbox's per-container supervisor and cleanup.
//! - [`init`], [`selftest`]: guest PID 1 duties and the boot self-test.

pub mod cgroups;
pub mod engine;
pub(crate) mod helper;
pub mod host;
pub mod init;
pub mod logging;
pub mod network;
pub mod procs;
pub mod reaper;
pub(crate) mod seccomp;
pub mod selftest;
pub mod server;
pub(crate) mod stdio;
