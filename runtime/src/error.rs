//! The runtime's error type: every message names the container, file or field at fault.

use std::io;

use hull_protocol::ClientError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid container id {id:?}: {why}")]
    InvalidId { id: String, why: &'static str },
    #[error("container \"{0}\" does not exist")]
    NotExist(String),
    #[error("container with id \"{0}\" already exists")]
    Exists(String),
    /// The bundle or its config.json is unusable; the message names file and field.
    #[error("{0}")]
    Bundle(String),
    /// The container is in the wrong lifecycle state for the command.
    #[error("{0}")]
    InvalidState(String),
    /// Bad flags or arguments.
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    /// The sandbox could not be started, reached or torn down.
    #[error("{0}")]
    Sandbox(String),
    #[error("container \"{id}\": {source}")]
    Agent { id: String, source: ClientError },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    pub fn agent(id: &str) -> impl FnOnce(ClientError) -> Error + '_ {
        move |source| Error::Agent {
            id: id.to_string(),
            source,
        }
    }
}
