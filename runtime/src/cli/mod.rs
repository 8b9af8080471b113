//! The commands. Each file holds one command's flags (clap, mirroring runc) and its
//! implementation; `bin/hull.rs` only dispatches.

use std::ffi::OsString;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

use hull_protocol::{Client, ExitStatus, Request, Response, Status};

use crate::error::{Error, Result};
use crate::logging::LogFormat;
use crate::sandbox::vm::hypervisor::VmmChoice;
use crate::sandbox::{self, Sandbox, SandboxKind};
use crate::state::{process_alive, Record, Store};

pub mod create;
pub mod delete;
pub mod events;
pub mod exec;
pub mod features;
pub mod kill;
pub mod list;
pub mod pause;
pub mod ps;
pub mod run;
pub mod spec;
pub mod start;
pub mod state;
pub mod update;

/// runc's global flags (plus `--sandbox`).
#[derive(Debug, Clone)]
pub struct GlobalOpts {
    pub root: PathBuf,
    pub log: Option<PathBuf>,
    pub log_format: LogFormat,
    pub debug: bool,
    /// Accepted for runc compatibility; there is no systemd to talk to.
    pub systemd_cgroup: bool,
    /// `None`: the config's `io.hull.sandbox` annotation, else the VM sandbox.
    pub sandbox: Option<SandboxKind>,
    /// `None`: the config's `io.hull.vmm` annotation, else auto.
    pub vmm: Option<VmmChoice>,
}

impl GlobalOpts {
    /// The global flags a re-executed hull needs to see the same state and log.
    pub fn reexec_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec!["--root".into(), self.root.clone().into()];
        if let Some(log) = &self.log {
            a.push("--log".into());
            a.push(log.clone().into());
        }
        a.push("--log-format".into());
        a.push(
            match self.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            }
            .into(),
        );
        if self.debug {
            a.push("--debug".into());
        }
        a
    }

    pub fn store(&self) -> Store {
        Store::new(&self.root)
    }
}

/// A container from the store with its live status.
pub struct Container {
    pub rec: Record,
    pub status: Status,
    /// Init's pid as the host sees it; 0 once stopped.
    pub pid: i32,
    pub exit: Option<ExitStatus>,
    pub sandbox: Box<dyn Sandbox>,
}

impl Container {
    /// Loads `id` and works out its status: from the recorded exit status, from
    /// whether its host process still lives, else from its agent.
    pub fn load(store: &Store, id: &str) -> Result<Container> {
        let rec = store.read_record(id)?;
        let sandbox = sandbox::for_kind(rec.sandbox);
        let mut c = Container {
            status: Status::Stopped,
            pid: 0,
            exit: None,
            sandbox,
            rec,
        };
        c.refresh(store);
        Ok(c)
    }

    fn refresh(&mut self, store: &Store) {
        let (status, pid, exit) = self.live_status(store);
        self.status = status;
        self.pid = pid;
        self.exit = exit;
    }

    fn live_status(&self, store: &Store) -> (Status, i32, Option<ExitStatus>) {
        let stopped = |exit| (Status::Stopped, 0, exit);
        if let Some(exit) = store.read_exit(&self.rec.id) {
            return stopped(Some(exit));
        }
        if self.rec.host_pid == 0 {
            // `create` has not launched the sandbox yet.
            return (Status::Creating, 0, None);
        }
        if !self.host_alive() {
            // It may have recorded the exit just before going.
            return stopped(store.read_exit(&self.rec.id));
        }
        if !self.rec.created_ok {
            return (Status::Creating, 0, None);
        }
        // The supervisor is briefly unreachable between init's exit and its own.
        for _ in 0..50 {
            match self.agent_state() {
                Ok(Status::Stopped) => return stopped(store.read_exit(&self.rec.id)),
                Ok(st) => return (st, self.rec.init_pid, None),
                Err(e) => {
                    if let Some(exit) = store.read_exit(&self.rec.id) {
                        return stopped(Some(exit));
                    }
                    if !self.host_alive() {
                        return stopped(None);
                    }
                    log::debug!("container {:?}: state: {e}", self.rec.id);
                }
            }
            sleep(Duration::from_millis(10));
        }
        log::warn!(
            "container {:?}: host process {} is alive but does not answer; reporting stopped",
            self.rec.id,
            self.rec.host_pid
        );
        stopped(None)
    }

    fn agent_state(&self) -> Result<Status> {
        match self.call(&Request::State {
            id: self.rec.id.clone(),
        })? {
            Response::State(s) => Ok(s.status),
            other => Err(unexpected(&self.rec.id, other)),
        }
    }

    /// Whether the sandbox's host process (supervisor / VMM) still runs.
    pub fn host_alive(&self) -> bool {
        process_alive(self.rec.host_pid, self.rec.host_start)
    }

    pub fn id(&self) -> &str {
        &self.rec.id
    }

    pub fn client(&self) -> Result<Client<UnixStream>> {
        self.sandbox.connect(&self.rec)
    }

    /// One request on a fresh connection.
    pub fn call(&self, req: &Request) -> Result<Response> {
        self.client()?.call(req).map_err(Error::agent(&self.rec.id))
    }

    /// A request answered by `Ok`.
    pub fn call_ok(&self, req: &Request) -> Result<()> {
        match self.call(req)? {
            Response::Ok => Ok(()),
            other => Err(unexpected(&self.rec.id, other)),
        }
    }

    /// Like `call_ok`, but a connection lost because the container exited (and its
    /// host process with it) counts as success: the request did its job.
    pub fn call_ok_or_exited(&self, store: &Store, req: &Request) -> Result<()> {
        match self.call_ok(req) {
            Err(Error::Agent { source, .. })
                if !matches!(source, hull_protocol::ClientError::Agent(_))
                    && self.wait_host_exit(Duration::from_secs(2))
                    && store.read_exit(&self.rec.id).is_some() =>
            {
                Ok(())
            }
            res => res,
        }
    }

    /// Waits up to `timeout` for the host process to exit.
    pub fn wait_host_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.host_alive() {
            if Instant::now() > deadline {
                return false;
            }
            sleep(Duration::from_millis(2));
        }
        true
    }

    /// Fails unless the container is in one of `ok`; the message says what it is.
    pub fn require(&self, ok: &[Status], doing: &str) -> Result<()> {
        if ok.contains(&self.status) {
            return Ok(());
        }
        Err(Error::InvalidState(format!(
            "cannot {doing} container \"{}\": it is {}",
            self.rec.id, self.status
        )))
    }
}

pub fn unexpected(id: &str, r: Response) -> Error {
    Error::Agent {
        id: id.to_string(),
        source: hull_protocol::ClientError::Unexpected(format!("{r:?}")),
    }
}
