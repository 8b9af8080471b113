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

#[derive(clap::Args, Debug, Clone)]
pub struct Supervise {
    pub container_id: String,
}

/// Where a supervisor that failed leaves its reason.
pub const ERROR_FILE: &str = "supervisor.err";

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
        Ok(status) => {
            if let Err(e) = store.write_exit(id, status) {
                log::error!("container {id:?}: recording exit status: {e}");
            }
            status.as_exit_code()
        }
        Err(e) => {
            // Not on stderr: that is the container's. `create` reads the reason from
            // the state directory.
            let msg = e.to_string();
            log::error!("supervisor of container {id:?}: {msg}");
            if let Ok(dir) = store.dir(id) {
                let _ = crate::state::write_atomic(&dir.join(ERROR_FILE), msg.as_bytes());
            }
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
