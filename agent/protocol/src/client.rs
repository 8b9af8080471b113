//! The client side of a connection: handshake, then request/response calls.

use std::io::{Read, Write};

use crate::frame::{read_frame, write_frame, FrameError};
use crate::messages::{AgentError, Request, Response};
use crate::PROTOCOL_VERSION;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("agent closed the connection")]
    Closed,
    #[error("agent: {0}")]
    Agent(#[from] AgentError),
    #[error("unexpected response from agent: {0}")]
    Unexpected(String),
}

/// One connection to an agent.
pub struct Client<S> {
    stream: S,
    version: u32,
}

impl<S: Read + Write> Client<S> {
    /// Performs the version handshake on a fresh connection.
    pub fn handshake(mut stream: S) -> Result<Self, ClientError> {
        write_frame(
            &mut stream,
            &Request::Hello {
                version: PROTOCOL_VERSION,
            },
        )?;
        match read_frame(&mut stream)?.ok_or(ClientError::Closed)? {
            Response::Hello { version } => Ok(Client { stream, version }),
            Response::Error(e) => Err(e.into()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The version agreed in the handshake.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Sends one request and returns its response; an agent error becomes `Err`.
    pub fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        write_frame(&mut self.stream, req)?;
        match read_frame(&mut self.stream)?.ok_or(ClientError::Closed)? {
            Response::Error(e) => Err(e.into()),
            r => Ok(r),
        }
    }

    /// Sends `AttachStream` (or any request answered by `StreamAttached`) and hands
    /// back the raw stream.
    pub fn into_stream(mut self, req: &Request) -> Result<S, ClientError> {
        match self.call(req)? {
            Response::StreamAttached => Ok(self.stream),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The underlying stream (e.g. to set timeouts).
    pub fn get_ref(&self) -> &S {
        &self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{ErrorKind, Status};
    use std::os::unix::net::UnixStream;
    use std::thread;

    /// A minimal in-test server speaking the protocol.
    fn serve(mut s: UnixStream, accept_version: bool) {
        while let Ok(Some(req)) = read_frame::<_, Request>(&mut s) {
            let resp = match req {
                Request::Hello { version } if accept_version => Response::Hello { version },
                Request::Hello { version } => Response::Error(AgentError::new(
                    ErrorKind::VersionMismatch,
                    format!("version {version} not supported"),
                )),
                Request::State { id } if id == "x" => {
                    Response::Error(AgentError::new(ErrorKind::NotFound, "container x"))
                }
                Request::State { id } => Response::State(crate::ContainerState {
                    id,
                    status: Status::Running,
                    pid: 7,
                    bundle: "/b".into(),
                    annotations: Default::default(),
                    exit: None,
                }),
                _ => Response::Ok,
            };
            write_frame(&mut s, &resp).unwrap();
        }
    }

    #[test]
    fn handshake_and_calls() {
        let (a, b) = UnixStream::pair().unwrap();
        let t = thread::spawn(move || serve(b, true));
        let mut c = Client::handshake(a).unwrap();
        assert_eq!(c.version(), PROTOCOL_VERSION);
        match c.call(&Request::State { id: "c".into() }).unwrap() {
            Response::State(s) => assert_eq!((s.pid, s.status), (7, Status::Running)),
            other => panic!("{other:?}"),
        }
        let err = c.call(&Request::State { id: "x".into() }).unwrap_err();
        assert!(matches!(err, ClientError::Agent(e) if e.kind == ErrorKind::NotFound));
        drop(c);
        t.join().unwrap();
    }

    #[test]
    fn unknown_version_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let t = thread::spawn(move || serve(b, false));
        let err = Client::handshake(a).err().unwrap();
        assert!(matches!(err, ClientError::Agent(e) if e.kind == ErrorKind::VersionMismatch));
        t.join().unwrap();
    }
}
