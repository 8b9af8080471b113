//! What every container's host process does with its guest container, whether it
//! owns the VM or joined a pod's: wait until `create` made it, relay its stdio (or a
//! host pty sent to the console socket), and wait for its exit status.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hull_protocol::guest::AGENT_VSOCK_PORT;
use hull_protocol::{Client, ExitStatus, Request, Response, StreamKind};
use nix::sys::signal::{SigSet, Signal};

use super::hybrid_vsock;
use crate::console_bridge::ConsoleBridge;
use crate::error::{Error, Result};
use crate::stdio;

/// How long `hull create` may take to create the container once the agent serves.
const CREATE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long output may keep draining after the container exited.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits for container `id` to be created, relays its stdio and returns its exit
/// status once it exited and its output drained (up to a few seconds).
pub fn until_exit(
    agent: &mut Client<UnixStream>,
    uds: &Path,
    id: &str,
    console: Option<ConsoleBridge>,
    signals: SigSet,
) -> Result<ExitStatus> {
    wait_created(agent, id)?;
    let outputs = attach_stdio(uds, id, console, signals)?;
    let status = match agent.call(&Request::Wait {
        id: id.to_string(),
        exec_id: None,
    }) {
        Ok(Response::Exited(st)) => st,
        Ok(other) => return Err(Error::Sandbox(format!("wait: unexpected {other:?}"))),
        Err(e) => return Err(Error::Sandbox(format!("wait: {e}"))),
    };
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    for h in outputs {
        while !h.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(status)
}

/// Blocks SIGWINCH (read by the console relay) and SIGHUP (sent when the caller
/// closes the pty master) in this thread; call it before any thread exists.
pub fn block_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGWINCH);
    set.add(Signal::SIGHUP);
    let _ = set.thread_block();
    set
}

/// A protocol connection to the guest agent, retried until it serves.
pub fn connect_agent(uds: &Path, timeout: Duration) -> Result<Client<UnixStream>> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("not tried");
    while Instant::now() < deadline {
        match hybrid_vsock::connect(uds, AGENT_VSOCK_PORT) {
            Ok(s) => match Client::handshake(s) {
                Ok(c) => return Ok(c),
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(Error::Sandbox(format!(
        "the guest agent did not answer on {} within {timeout:?}: {last}",
        uds.display()
    )))
}

/// Waits until `hull create` has had the agent create the container.
fn wait_created(agent: &mut Client<UnixStream>, id: &str) -> Result<()> {
    let deadline = Instant::now() + CREATE_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Response::State(_)) = agent.call(&Request::State { id: id.into() }) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(10));
    }
    Err(Error::Sandbox(format!(
        "container {id:?} was not created within {CREATE_TIMEOUT:?}"
    )))
}

/// Relays the container's stdio: our own stdio to its streams, or its terminal to the
/// pty whose master went to the console socket. Returns the output relays.
fn attach_stdio(
    uds: &Path,
    id: &str,
    console: Option<ConsoleBridge>,
    signals: SigSet,
) -> Result<Vec<JoinHandle<()>>> {
    let attach = |kind: StreamKind| -> Result<UnixStream> {
        connect_agent(uds, Duration::from_secs(10))?
            .into_stream(&Request::AttachStream {
                id: id.to_string(),
                exec_id: None,
                stream: kind,
            })
            .map_err(Error::agent(id))
    };
    let Some(console) = console else {
        let stdin = attach(StreamKind::Stdin)?;
        let stdout = attach(StreamKind::Stdout)?;
        let stderr = attach(StreamKind::Stderr)?;
        stdio::pump_stdin(stdin);
        return Ok(vec![stdio::pump_out(stdout, 1), stdio::pump_out(stderr, 2)]);
    };
    let terminal = attach(StreamKind::Terminal)?;
    console.take_as_controlling_terminal();
    let resize = {
        let uds = uds.to_path_buf();
        let id = id.to_string();
        move |size: Option<(u16, u16)>| {
            let Some((rows, cols)) = size else {
                return;
            };
            if let Ok(mut c) = connect_agent(&uds, Duration::from_secs(5)) {
                let _ = c.call(&Request::ResizeTerminal {
                    id: id.clone(),
                    exec_id: None,
                    rows,
                    cols,
                });
            }
        }
    };
    resize(console.window_size());
    let output = console
        .relay(terminal)
        .map_err(Error::io("relaying the terminal"))?;
    thread::spawn(move || loop {
        if let Ok(Signal::SIGWINCH) = signals.wait() {
            resize(console.window_size());
        }
    });
    Ok(vec![output])
}
