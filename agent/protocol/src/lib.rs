//! The hull agent protocol: the contract between the host runtime and hull-agent.
//!
//! Frames are a 4-byte big-endian length followed by that many bytes of JSON. A
//! connection starts with a version handshake (`Request::Hello`); afterwards each
//! request gets exactly one response, except `AttachStream`, which (after its
//! `Response::StreamAttached`) turns the connection into a raw byte stream carrying one
//! stdio stream of one process.

pub mod client;
pub mod frame;
pub mod guest;
pub mod messages;

pub use client::{Client, ClientError};
pub use frame::{read_frame, write_frame, FrameError, MAX_FRAME_LEN};
pub use messages::*;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The oldest version this build still accepts.
pub const MIN_PROTOCOL_VERSION: u32 = 1;
