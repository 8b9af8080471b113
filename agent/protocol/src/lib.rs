//! The hull agent protocol: the contract between the host runtime and hull-agent.
//!
//! Frames are a 4-byte big-endian length followed by that many bytes of JSON. A
//! connection starts with a version handshake; afterwards each request gets exactly one
//! response, except `AttachStream`, which turns the connection into a raw byte stream
//! carrying one stdio stream of one process.

pub mod guest;
