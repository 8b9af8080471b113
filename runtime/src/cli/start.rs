//! `hull start`: release the created container's process.

use hull_protocol::{Request, Status};

use super::{Container, GlobalOpts};
use crate::error::{Error, Result};

#[derive(clap::Args, Debug, Clone)]
pub struct Start {
    pub container_id: String,
}

pub fn start(g: &GlobalOpts, args: &Start) -> Result<()> {
    let store = g.store();
    let c = Container::load(&store, &args.container_id)?;
    match c.status {
        // A short-lived process can exit, and its supervisor with it, before the reply
        // is written: it did start.
        Status::Created => c.call_ok_or_exited(
            &store,
            &Request::Start {
                id: c.id().to_string(),
            },
        ),
        Status::Stopped => Err(Error::InvalidState(format!(
            "cannot start container \"{}\": it has stopped",
            c.id()
        ))),
        Status::Running | Status::Paused => Err(Error::InvalidState(format!(
            "cannot start container \"{}\": it is already {}",
            c.id(),
            c.status
        ))),
        Status::Creating => Err(Error::InvalidState(format!(
            "cannot start container \"{}\": it is still being created",
            c.id()
        ))),
    }
}
