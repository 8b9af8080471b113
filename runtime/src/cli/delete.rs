//! `hull delete`: remove a stopped (or created; with --force, any) container and
//! everything it left on the host.

use std::time::Duration;

use hull_protocol::{Request, Status};

use super::{Container, GlobalOpts};
use crate::error::{Error, Result};
use crate::state::Store;

/// How long the host process gets to exit after its container was killed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args, Debug, Clone)]
pub struct Delete {
    /// Forcibly delete the container if it is still running (uses SIGKILL)
    #[arg(short, long)]
    pub force: bool,
    pub container_id: String,
}

pub fn delete(g: &GlobalOpts, args: &Delete) -> Result<()> {
    let store = g.store();
    let id = args.container_id.as_str();
    let c = match Container::load(&store, id) {
        Ok(c) => c,
        Err(Error::NotExist(_)) => {
            // A create killed before it wrote its record leaves a bare directory.
            let dir = store.dir(id)?;
            let existed = dir.exists();
            store.remove(id)?;
            return if existed || args.force {
                Ok(())
            } else {
                Err(Error::NotExist(id.into()))
            };
        }
        Err(e) => return Err(e),
    };
    match c.status {
        Status::Stopped | Status::Created | Status::Creating => {}
        Status::Running | Status::Paused if args.force => {}
        Status::Running | Status::Paused => {
            return Err(Error::InvalidState(format!(
                "cannot delete container \"{id}\" that is not stopped: it is {} (use --force)",
                c.status
            )))
        }
    }
    destroy(&store, &c)
}

/// Kills what is left of the container, waits for its host process and removes all
/// its traces.
pub fn destroy(store: &Store, c: &Container) -> Result<()> {
    if c.host_alive() {
        if c.status == Status::Paused {
            // Frozen tasks do not die until thawed.
            let _ = c.call_ok(&Request::Resume {
                id: c.id().to_string(),
            });
        }
        let _ = c.call_ok(&Request::Signal {
            id: c.id().to_string(),
            exec_id: None,
            signal: libc::SIGKILL,
            all: true,
        });
        if !c.wait_host_exit(EXIT_TIMEOUT) {
            log::warn!(
                "container {:?}: host process {} did not exit; killing it",
                c.id(),
                c.rec.host_pid
            );
            // SAFETY: plain syscall; host_alive() checked pid and start time.
            unsafe { libc::kill(c.rec.host_pid, libc::SIGKILL) };
            c.wait_host_exit(EXIT_TIMEOUT);
        }
    }
    let dir = store.dir(c.id())?;
    c.sandbox.destroy(&c.rec, &dir)?;
    store.remove(c.id())
}
