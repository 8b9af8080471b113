//! `hull __supervise <id>`: the OS-level sandbox's host process for one container.
//!
//! It runs hull-agent's engine on the host, serving the agent protocol on the socket
//! in the container's state directory, and exits with the container's exit status
//! once init has exited (after recording it, for `state` and `delete`). Its pid is the
//! one `--pid-file` gets, the OS-sandbox twin of the VMM process.

use std::path::Path;

use hull_protocol::ExitStatus;

use crate::cli::GlobalOpts;
use crate::error::{Error, Result};
use crate::sandbox::os::{agent_root, socket_path};
use crate::state::Store;

#[derive(clap::Args, Debug, Clone)]
pub struct Supervise {
    pub container_id: String,
}

/// Where a supervisor that failed leaves its reason.
pub const ERROR_FILE: &str = "supervisor.err";

/// Records `status` as `id`'s exit status and returns the code its host process
/// exits with (the container's, as runc's callers expect of the `--pid-file` pid).
pub fn finish(store: &Store, id: &str, status: ExitStatus) -> i32 {
    if let Err(e) = store.write_exit(id, status) {
        log::error!("container {id:?}: recording exit status: {e}");
    }
    status.as_exit_code()
}

/// Leaves `why` where `create` reads it: not on stderr, which is the container's.
pub fn record_failure(store: &Store, id: &str, why: &str) {
    log::error!("container {id:?}: {why}");
    if let Ok(dir) = store.dir(id) {
        let _ = crate::state::write_atomic(&dir.join(ERROR_FILE), why.as_bytes());
    }
}

/// Runs the supervisor; returns the process exit code.
pub fn supervise(g: &GlobalOpts, args: &Supervise) -> i32 {
    let id = args.container_id.as_str();
    // Our own session: job-control signals for the caller's terminal are not ours
    // (a foreground `hull run` forwards them explicitly).
    let _ = nix::unistd::setsid();
    let store = g.store();
    let res = store
        .dir(id)
        .and_then(|dir| run_engine(&socket_path(&dir), id, &agent_root(&dir)));
    match res {
        Ok(status) => finish(&store, id, status),
        Err(e) => {
            record_failure(&store, id, &e.to_string());
            255
        }
    }
}

/// hull-agent's host-side engine: serves `socket` until the container's init exits.
fn run_engine(socket: &Path, id: &str, state_root: &Path) -> Result<ExitStatus> {
    hull_agent::host::run_supervisor(hull_agent::host::SupervisorOptions {
        socket: socket.to_path_buf(),
        id: id.to_string(),
        state_root: state_root.to_path_buf(),
    })
    .map_err(|e| Error::Sandbox(e.to_string()))
}
