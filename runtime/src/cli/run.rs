//! `hull run`: create + start, and unless detached wait for the container and delete
//! it, exiting with its exit status.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::Duration;

use hull_protocol::Request;

use super::create::{create, Create};
use super::delete::destroy;
use super::start::{start, Start};
use super::{Container, GlobalOpts};
use crate::bundle::Bundle;
use crate::error::{Error, Result};
use crate::sandbox;
use crate::state::validate_id;
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
    validate_id(&id)?;
    let terminal = Bundle::load(&args.create.bundle)?
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    // In the foreground with a terminal, hull itself takes the pty master, as runc
    // does, and relays it to its own stdio.
    let mut create_args = args.create.clone();
    let console = if terminal && !args.detach && create_args.console_socket.is_none() {
        let c = Console::bind(g, &id)?;
        create_args.console_socket = Some(c.path.clone());
        Some(c)
    } else {
        None
    };
    let mut created = create(g, &create_args)?;
    let store = g.store();
    let master = match console.as_ref().map(|c| c.receive()) {
        Some(Ok(m)) => Some(m),
        Some(Err(e)) => {
            if let Ok(c) = Container::load(&store, &id) {
                let _ = destroy(&store, &c);
            }
            let _ = created.child.wait();
            return Err(e);
        }
        None => None,
    };
    drop(console);
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
        let master_fd = master.as_ref().map(|m| m.as_raw_fd());
        stdio::forward_signals(move |sig| {
            if sig == libc::SIGWINCH {
                if let (Some(fd), Some((rows, cols))) = (master_fd, stdio::window_size(0)) {
                    stdio::set_window_size(fd, rows, cols);
                }
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
    let mut _raw = None;
    let output = match master {
        Some(m) => {
            if stdio::is_tty(0) {
                if let Some((rows, cols)) = stdio::window_size(0) {
                    stdio::set_window_size(m.as_raw_fd(), rows, cols);
                }
                _raw = stdio::RawMode::enter();
            }
            Some(stdio::pump_pty(m).map_err(Error::io("relaying the terminal"))?)
        }
        None => None,
    };
    // The host process exits with the container's status.
    let status = created
        .child
        .wait()
        .map_err(Error::io("waiting for the container"))?;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    if let Some(h) = output {
        let _ = h.join();
    }
    drop(_raw);
    if !args.keep {
        let c = Container::load(&store, &id)?;
        destroy(&store, &c)?;
    }
    Ok(code)
}

/// A console socket of our own for `run` with a terminal. '@' keeps it out of the
/// container ids under --root.
struct Console {
    path: PathBuf,
    listener: UnixListener,
}

impl Console {
    fn bind(g: &GlobalOpts, id: &str) -> Result<Console> {
        std::fs::create_dir_all(&g.root)
            .map_err(Error::io(format!("creating {}", g.root.display())))?;
        let path = g.root.join(format!("@console-{id}.sock"));
        let _ = std::fs::remove_file(&path);
        let listener =
            UnixListener::bind(&path).map_err(Error::io(format!("binding {}", path.display())))?;
        Ok(Console { path, listener })
    }

    fn receive(&self) -> Result<File> {
        stdio::receive_fd(&self.listener, Duration::from_secs(10))
            .map_err(Error::io("receiving the container's pty"))
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
