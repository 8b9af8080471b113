//! `hull kill`: send a signal to the container's init (or, with --all, to all of its
//! processes).

use hull_protocol::{Request, Status};

use super::{Container, GlobalOpts};
use crate::error::Result;
use crate::signal;

#[derive(clap::Args, Debug, Clone)]
pub struct Kill {
    /// Send the specified signal to all processes inside the container
    #[arg(short, long)]
    pub all: bool,
    pub container_id: String,
    /// Signal name (KILL, SIGKILL) or number; default SIGTERM
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

pub fn kill(g: &GlobalOpts, args: &Kill) -> Result<()> {
    let sig = signal::parse(&args.signal)?;
    let store = g.store();
    let c = Container::load(&store, &args.container_id)?;
    c.require(
        &[Status::Created, Status::Running, Status::Paused],
        "signal",
    )?;
    // The signal may end the container, and its supervisor, before the reply.
    c.call_ok_or_exited(
        &store,
        &Request::Signal {
            id: c.id().to_string(),
            exec_id: None,
            signal: sig,
            all: args.all,
        },
    )
}
