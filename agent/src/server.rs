//! Serves the agent protocol on any stream-socket listener (a Unix socket on the host,
//! vsock in the guest): one thread per connection, the `Hello` handshake first, then
//! one response per request, except `AttachStream`, which turns the connection into a
//! raw byte stream.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use hull_protocol::{
    read_frame, write_frame, AgentError, ErrorKind, FrameError, Request, Response,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use nix::sys::socket::{accept4, SockFlag};

use crate::engine::{Engine, StreamEndpoint};

/// Called once a `Shutdown` has been answered (guest: power off).
pub type ShutdownHook = Arc<dyn Fn() + Send + Sync>;

#[derive(Clone, Default)]
pub struct ServerOptions {
    pub on_shutdown: Option<ShutdownHook>,
    /// Also run `on_shutdown` after the last container has been deleted (guest).
    pub shutdown_when_empty: bool,
}

pub struct Server {
    engine: Engine,
    opts: ServerOptions,
}

/// What to do after a response has been written.
enum After {
    Nothing,
    Shutdown,
    Attach(crate::engine::AttachedStream),
}

fn invalid(msg: impl Into<String>) -> AgentError {
    AgentError::new(ErrorKind::InvalidRequest, msg)
}

impl Server {
    pub fn new(engine: Engine, opts: ServerOptions) -> Arc<Server> {
        // A client that hangs up mid-stream must cost a write error, not the agent.
        // SAFETY: setting SIGPIPE to ignored has no memory effects.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        Arc::new(Server { engine, opts })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Accepts connections forever. Accept errors (e.g. out of fds) are logged and
    /// retried: the agent never stops serving.
    pub fn serve<L: AsFd>(self: &Arc<Self>, listener: &L) -> ! {
        loop {
            match accept4(listener.as_fd().as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                Ok(fd) => {
                    // SAFETY: accept4 returned a new fd that nothing else owns.
                    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                    self.spawn_connection(fd);
                }
                Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::ECONNABORTED) => {}
                Err(e) => {
                    log::warn!("accept: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Serves one already-accepted connection on its own thread.
    pub fn spawn_connection(self: &Arc<Self>, fd: OwnedFd) {
        let me = self.clone();
        let res = std::thread::Builder::new()
            .name("hull-conn".into())
            // Any connected stream socket (Unix or vsock) reads, writes and shuts
            // down alike; UnixStream is only the wrapper.
            .spawn(move || me.handle(UnixStream::from(fd)));
        if let Err(e) = res {
            log::warn!("cannot start a connection thread: {e}");
        }
    }

    /// The handshake, then requests until the client hangs up.
    pub fn handle(&self, mut conn: UnixStream) {
        match read_frame::<_, Request>(&mut conn) {
            Ok(Some(Request::Hello { version })) => {
                if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
                    let e = AgentError::new(
                        ErrorKind::VersionMismatch,
                        format!(
                            "protocol version {version} is not supported (this agent speaks {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION})"
                        ),
                    );
                    let _ = write_frame(&mut conn, &Response::Error(e));
                    return;
                }
                if write_frame(&mut conn, &Response::Hello { version }).is_err() {
                    return;
                }
            }
            Ok(Some(other)) => {
                let e = invalid(format!(
                    "the first request must be Hello, got {}",
                    req_name(&other)
                ));
                let _ = write_frame(&mut conn, &Response::Error(e));
                return;
            }
            Ok(None) => return,
            Err(e) => {
                let _ = write_frame(&mut conn, &Response::Error(invalid(e.to_string())));
                return;
            }
        }
        loop {
            let req = match read_frame::<_, Request>(&mut conn) {
                Ok(Some(r)) => r,
                Ok(None) => return,
                // The frame was read whole, so the stream is still in step.
                Err(FrameError::Json(e)) => {
                    let e = invalid(format!("malformed request: {e}"));
                    if write_frame(&mut conn, &Response::Error(e)).is_err() {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    let _ = write_frame(&mut conn, &Response::Error(invalid(e.to_string())));
                    return;
                }
            };
            let (resp, after) = self.dispatch(req);
            if write_frame(&mut conn, &resp).is_err() {
                return;
            }
            match after {
                After::Nothing => {}
                After::Shutdown => {
                    if let Some(h) = &self.opts.on_shutdown {
                        h();
                    }
                }
                After::Attach(stream) => {
                    pump(conn, stream);
                    return;
                }
            }
        }
    }

    fn dispatch(&self, req: Request) -> (Response, After) {
        match self.dispatch_inner(req) {
            Ok(r) => r,
            Err(e) => (Response::Error(e), After::Nothing),
        }
    }

    fn dispatch_inner(&self, req: Request) -> Result<(Response, After), AgentError> {
        let e = &self.engine;
        let ok = |()| (Response::Ok, After::Nothing);
        Ok(match req {
            Request::Hello { .. } => {
                return Err(invalid("Hello was already done on this connection"))
            }
            Request::Create(c) => (Response::Created { pid: e.create(*c)? }, After::Nothing),
            Request::Start { id } => ok(e.start(&id)?),
            Request::Exec(x) => (Response::Created { pid: e.exec(*x)? }, After::Nothing),
            Request::Signal {
                id,
                exec_id,
                signal,
                all,
            } => ok(e.signal(&id, exec_id.as_deref(), signal, all)?),
            Request::Wait { id, exec_id } => (
                Response::Exited(e.wait(&id, exec_id.as_deref())?),
                After::Nothing,
            ),
            Request::State { id } => (Response::State(e.state(&id)?), After::Nothing),
            Request::List => (Response::List(e.list()), After::Nothing),
            Request::Ps { id } => (Response::Pids(e.ps(&id)?), After::Nothing),
            Request::ProcessList { id } => {
                let procs = e.ps(&id)?.into_iter().filter_map(crate::procs::info);
                (Response::Processes(procs.collect()), After::Nothing)
            }
            Request::Pause { id } => ok(e.pause(&id)?),
            Request::Resume { id } => ok(e.resume(&id)?),
            Request::Update { id, resources } => ok(e.update(&id, &resources)?),
            Request::Stats { id } => (Response::Stats(e.stats(&id)?), After::Nothing),
            Request::ResizeTerminal {
                id,
                exec_id,
                rows,
                cols,
            } => ok(e.resize(&id, exec_id.as_deref(), rows, cols)?),
            Request::CloseStdin { id, exec_id } => ok(e.close_stdin(&id, exec_id.as_deref())?),
            Request::Delete { id, force } => {
                e.delete(&id, force)?;
                let after = if self.opts.shutdown_when_empty && e.is_empty() {
                    After::Shutdown
                } else {
                    After::Nothing
                };
                (Response::Ok, after)
            }
            Request::AttachStream {
                id,
                exec_id,
                stream,
            } => {
                let a = e.attach(&id, exec_id.as_deref(), stream)?;
                (Response::StreamAttached, After::Attach(a))
            }
            Request::Shutdown => (Response::Ok, After::Shutdown),
            // Guest-only: on the host the container's netns already is its network.
            Request::ConfigureNetwork { interfaces } if crate::init::is_pid1() => {
                ok(crate::network::configure(&interfaces)?)
            }
            Request::ConfigureNetwork { .. } => {
                return Err(AgentError::new(
                    ErrorKind::Unsupported,
                    "ConfigureNetwork is for the guest agent only: the OS-level sandbox's container uses its network namespace as it is",
                ))
            }
        })
    }
}

fn req_name(r: &Request) -> String {
    let s = format!("{r:?}");
    s.split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("")
        .to_string()
}

/// Moves bytes between the connection and one stdio stream until either side ends.
fn pump(conn: UnixStream, stream: crate::engine::AttachedStream) {
    match &stream.endpoint {
        StreamEndpoint::Output(f) => {
            let _ = copy(&mut &*f, &mut &conn);
            // EOF of the pipe: every writer is gone, the last bytes are sent.
            let _ = conn.shutdown(Shutdown::Both);
        }
        StreamEndpoint::Input(h) => {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = match (&conn).read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let mut g = h.lock().unwrap_or_else(|e| e.into_inner());
                let Some(f) = g.as_mut() else { break };
                if f.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            // The client's half-close is the process's stdin EOF.
            *h.lock().unwrap_or_else(|e| e.into_inner()) = None;
            let _ = conn.shutdown(Shutdown::Both);
        }
        StreamEndpoint::Terminal(pty) => {
            let input = conn.try_clone().ok().map(|c| {
                let pty = pty.clone();
                std::thread::spawn(move || {
                    let _ = copy(&mut &c, &mut &*pty);
                })
            });
            let _ = copy(&mut &**pty, &mut &conn);
            let _ = conn.shutdown(Shutdown::Both);
            if let Some(t) = input {
                let _ = t.join();
            }
        }
    }
    drop(stream);
}

/// Like io::copy, but a pty's EIO (its other side closed) counts as EOF.
fn copy<R: Read, W: Write>(r: &mut R, w: &mut W) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(libc::EIO) => return Ok(total),
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}
