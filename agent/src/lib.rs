//! hull container engine and agent server.
