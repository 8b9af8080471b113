//! The OS-level sandbox on the host: one supervisor process per container serves the
//! agent protocol on a Unix socket and is the subreaper of the container's init.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use hull_protocol::{AgentError, ErrorKind, ExitStatus};
use libcontainer::container::Container as LcContainer;

use crate::cgroups;
use crate::engine::{self, Engine, EngineConfig};
use crate::server::{Server, ServerOptions};

/// How long the supervisor lets attached output streams drain after init exited.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// The Unix socket to serve the protocol on (replaced if it exists).
    pub socket: PathBuf,
    /// The one container this supervisor is for.
    pub id: String,
    /// Engine state: libcontainer's `<state_root>/<id>` and the engine's own files.
    pub state_root: PathBuf,
}

/// Serves the protocol on `opts.socket` until the container `opts.id` has been created
/// and its init has exited; returns that exit status (after attached output streams
/// drained, up to a few seconds). The container's cgroups and state stay for
/// [`cleanup`], as after a runc container's exit.
///
/// Returns an error when `Shutdown` arrives before the container's init exited (the
/// container, if any, is killed first). If the create fails, the caller is expected to
/// end this process.
///
/// This process becomes a child subreaper and reaps all its children (see
/// [`crate::reaper`]): do not wait for other children of this process. libcontainer's
/// error details are sent to the `log` crate (nothing is written to stderr, which
/// belongs to the container in Inherit mode).
pub fn run_supervisor(opts: SupervisorOptions) -> Result<ExitStatus, AgentError> {
    crate::logging::init_libcontainer_errors();
    let engine = Engine::new(EngineConfig {
        state_root: opts.state_root.clone(),
        ..Default::default()
    })?;
    let _ = std::fs::remove_file(&opts.socket);
    let listener = UnixListener::bind(&opts.socket).map_err(|e| {
        AgentError::new(
            ErrorKind::Runtime,
            format!("binding socket {}: {e}", opts.socket.display()),
        )
    })?;
    let events = Arc::new(Events::default());
    let ev = events.clone();
    let server = Server::new(
        engine.clone(),
        ServerOptions {
            on_shutdown: Some(Arc::new(move || ev.set(|e| e.shutdown = true))),
            shutdown_when_empty: false,
        },
    );
    let srv = server.clone();
    std::thread::Builder::new()
        .name("hull-serve".into())
        .spawn(move || srv.serve(&listener))
        .map_err(|e| AgentError::new(ErrorKind::Runtime, format!("serve thread: {e}")))?;

    let mut waiting = false;
    let result = loop {
        // Until the container exists, look for it now and then; afterwards a thread
        // blocks in Engine::wait and reports the exit.
        if !waiting && engine.state(&opts.id).is_ok() {
            waiting = true;
            let (eng, id, ev) = (engine.clone(), opts.id.clone(), events.clone());
            std::thread::Builder::new()
                .name("hull-wait".into())
                .spawn(move || {
                    let r = eng.wait(&id, None);
                    ev.set(|e| e.exit = Some(r));
                })
                .map_err(|e| AgentError::new(ErrorKind::Runtime, format!("wait thread: {e}")))?;
        }
        let st = events.wait(if waiting {
            Duration::from_secs(3600)
        } else {
            Duration::from_millis(5)
        });
        if let Some(r) = st.exit {
            if r.is_ok() {
                engine.wait_streams(&opts.id, DRAIN_TIMEOUT);
            }
            break r;
        }
        if st.shutdown {
            let _ = engine.delete(&opts.id, true);
            break Err(AgentError::new(
                ErrorKind::InvalidState,
                format!("supervisor shut down before container {} exited", opts.id),
            ));
        }
    };
    let _ = std::fs::remove_file(&opts.socket);
    result
}

/// What the supervisor's main thread waits for.
#[derive(Default, Clone)]
struct Seen {
    shutdown: bool,
    exit: Option<Result<ExitStatus, AgentError>>,
}

#[derive(Default)]
struct Events {
    seen: Mutex<Seen>,
    cond: Condvar,
}

impl Events {
    fn set(&self, f: impl FnOnce(&mut Seen)) {
        f(&mut self.seen.lock().unwrap_or_else(|e| e.into_inner()));
        self.cond.notify_all();
    }

    /// The current state after at most `timeout` (sooner when something happens).
    fn wait(&self, timeout: Duration) -> Seen {
        let g = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if g.shutdown || g.exit.is_some() {
            return g.clone();
        }
        let (g, _) = self
            .cond
            .wait_timeout(g, timeout)
            .unwrap_or_else(|e| e.into_inner());
        g.clone()
    }
}

/// Removes what a stopped or crashed container left behind, without a supervisor:
/// its processes (killed), cgroups (with the parents its create added) and state.
/// Idempotent: a container that left nothing is fine.
///
/// Runs in the calling process without forking or reaping.
pub fn cleanup(state_root: &Path, id: &str) -> Result<(), AgentError> {
    let own = engine::own_dir(state_root, id);
    let record = engine::read_record(&own).ok();
    if let Some(r) = &record {
        for pid in cgroups::pids(&r.cgroup_path) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        thaw(r);
    }
    let lc_root = state_root.join(id);
    let mut res = Ok(());
    if lc_root.exists() {
        res = LcContainer::load(lc_root.clone())
            .and_then(|mut c| c.delete(true))
            .map_err(|e| {
                AgentError::new(
                    ErrorKind::Runtime,
                    format!("cleanup of container {id}: {e}"),
                )
            });
        if res.is_err() {
            // A broken state file must not keep the rest from going away.
            let _ = std::fs::remove_dir_all(&lc_root);
        }
    }
    if let Some(r) = &record {
        cgroups::remove_dirs(&r.created_cgroup_dirs);
    }
    match std::fs::remove_dir_all(&own) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(AgentError::new(
                ErrorKind::Runtime,
                format!("cleanup of container {id}: {}: {e}", own.display()),
            ))
        }
    }
    res
}

fn thaw(r: &engine::Record) {
    use libcgroups::common::CgroupManager;
    // Only an existing cgroup: the manager would otherwise create it.
    if cgroups::dirs(&r.cgroup_path).is_empty() {
        return;
    }
    if let Ok(m) = libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
        cgroup_path: r.cgroup_path.clone(),
        systemd_cgroup: false,
        container_name: r.id.clone(),
    }) {
        let _ = m.freeze(libcgroups::common::FreezerState::Thawed);
    }
}
