//! hull's container engine and the agent that serves it: as guest PID 1 over vsock, or
//! on the host (the OS-level sandbox) over a Unix socket.

pub mod cgroups;
pub mod engine;
pub(crate) mod helper;
pub mod host;
pub mod init;
pub mod logging;
pub mod reaper;
pub(crate) mod seccomp;
pub mod selftest;
pub mod server;
pub(crate) mod stdio;
