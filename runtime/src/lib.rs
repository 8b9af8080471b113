//! hull's runtime: the runc-compatible CLI's commands, the on-disk container state and
//! the sandboxes containers run in.

pub mod bundle;
pub mod cli;
pub mod console_bridge;
pub mod error;
pub mod logging;
pub mod network;
pub mod sandbox;
pub mod shim;
pub mod signal;
pub mod state;
pub mod stdio;
pub mod supervisor;

pub use error::{Error, Result};
