//! `hull run`: create + start, and unless detached wait for the container and delete
//! it, exiting with its exit status.

use std::os::unix::process::ExitStatusExt;

use hull_protocol::Request;

use super::create::{create, Create};
use super::delete::destroy;
use super::start::{start, Start};
use super::{Container, GlobalOpts};
use crate::error::{Error, Result};
use crate::sandbox;
use crate::stdio;

#[derive(clap::Args, Debug, Clone)]
pub struct Run {
    #[command(flatten)]
    pub create: Create,
    /// Detach from the container's process
    #[arg(short, long)]
    pub detach: bool,
    /// Do not delete the container after it exits
    #[arg(long)]
    pub keep: bool,
    /// Disable the use of the subreaper used to reap reparented processes
    #[arg(long)]
    pub no_subreaper: bool,
}

/// Returns the exit code `hull run` exits with.
pub fn run(g: &GlobalOpts, args: &Run) -> Result<i32> {
    let id = args.create.container_id.clone();
    let mut created = create(g, &args.create)?;
    let store = g.store();
    if let Err(e) = start(
        g,
        &Start {
            container_id: id.clone(),
        },
    ) {
        if let Ok(c) = Container::load(&store, &id) {
            let _ = destroy(&store, &c);
        }
        let _ = created.child.wait();
        return Err(e);
    }
    if args.detach {
        return Ok(0);
    }
    {
        let store = store.clone();
        let id = id.clone();
        stdio::forward_signals(move |sig| {
            if sig == libc::SIGWINCH {
                return;
            }
            let Ok(rec) = store.read_record(&id) else {
                return;
            };
            if let Ok(mut c) = sandbox::for_kind(rec.sandbox).connect(&rec) {
                let _ = c.call(&Request::Signal {
                    id: id.clone(),
                    exec_id: None,
                    signal: sig,
                    all: false,
                });
            }
        });
    }
    // The host process exits with the container's status.
    let status = created
        .child
        .wait()
        .map_err(Error::io("waiting for the container"))?;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    if !args.keep {
        let c = Container::load(&store, &id)?;
        destroy(&store, &c)?;
    }
    Ok(code)
}
