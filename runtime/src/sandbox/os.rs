//! The OS-level sandbox: the container runs on the host under namespaces and cgroups.
//!
//! Its host process is a supervisor (`hull __supervise`, see `crate::supervisor`) that
//! runs hull-agent's engine on the host and serves the agent protocol on a Unix socket
//! in the container's state directory, exactly as the agent does inside a VM.

use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use hull_protocol::{Client, StdioMode};

use super::{GuestView, LaunchContext, Launched, Sandbox, SandboxKind};
use crate::bundle::Bundle;
use crate::cli::GlobalOpts;
use crate::error::{Error, Result};
use crate::state::{process_alive, process_start_time, Record};

/// How long the supervisor may take to serve its socket.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct OsSandbox;

/// The supervisor's socket in the container's state directory.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join("agent.sock")
}

/// Where the host-side engine keeps its own per-container state.
pub fn agent_root(dir: &Path) -> PathBuf {
    dir.join("agent")
}

impl Sandbox for OsSandbox {
    fn kind(&self) -> SandboxKind {
        SandboxKind::Os
    }

    fn check_available(&self, _g: &GlobalOpts, _bundle: &Bundle) -> Result<()> {
        Ok(())
    }

    fn launch(&self, ctx: &LaunchContext) -> Result<Launched> {
        let socket = socket_path(ctx.dir);
        // Same binary, hidden subcommand; stdio and --preserve-fds fds are inherited.
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0("hull")
            .args(ctx.globals.reexec_args())
            .arg("__supervise")
            .arg(ctx.id);
        if !ctx.inherit_stdio {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        }
        let mut child = cmd.spawn().map_err(Error::io("starting the supervisor"))?;
        let pid = child.id() as i32;
        let start_time = process_start_time(pid).unwrap_or(0);
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pause = Duration::from_micros(200);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                let why = std::fs::read_to_string(ctx.dir.join(crate::supervisor::ERROR_FILE))
                    .unwrap_or_else(|_| st.to_string());
                return Err(Error::Sandbox(format!(
                    "container \"{}\": supervisor failed: {why}",
                    ctx.id
                )));
            }
            if let Ok(s) = UnixStream::connect(&socket) {
                let client = Client::handshake(s).map_err(Error::agent(ctx.id))?;
                return Ok(Launched {
                    child,
                    start_time,
                    socket,
                    client,
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Sandbox(format!(
                    "supervisor for container \"{}\" did not serve {} within {:?}",
                    ctx.id,
                    socket.display(),
                    READY_TIMEOUT
                )));
            }
            sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    fn create_stdio(&self, console_socket: Option<&Path>) -> StdioMode {
        match console_socket {
            Some(p) => StdioMode::ConsoleSocket(p.to_string_lossy().into_owned()),
            None => StdioMode::Inherit,
        }
    }

    fn exec_console(&self, console_socket: &Path) -> Result<StdioMode> {
        Ok(StdioMode::ConsoleSocket(
            console_socket.to_string_lossy().into_owned(),
        ))
    }

    fn guest_view(&self, _id: &str, bundle: &Bundle) -> GuestView {
        GuestView {
            bundle: bundle.dir.clone(),
            rootfs: bundle.rootfs.clone(),
            spec: bundle.spec.clone(),
        }
    }

    fn host_init_pid(&self, agent_pid: i32, _host_pid: i32) -> i32 {
        agent_pid
    }

    fn host_sees_processes(&self) -> bool {
        true
    }

    fn connect(&self, rec: &Record) -> Result<Client<UnixStream>> {
        let s = UnixStream::connect(&rec.socket).map_err(|e| {
            Error::Sandbox(format!(
                "container \"{}\": cannot reach its supervisor at {}: {e}",
                rec.id,
                rec.socket.display()
            ))
        })?;
        Client::handshake(s).map_err(Error::agent(&rec.id))
    }

    fn destroy(&self, rec: &Record, dir: &Path) -> Result<()> {
        // A supervisor killed from outside leaves its container running: end it first
        // (init is the pid namespace's init, so the rest goes with it).
        if rec.init_pid > 0 && process_alive(rec.init_pid, rec.init_start) {
            // SAFETY: plain syscall; pid and start time were checked just above.
            unsafe { libc::kill(rec.init_pid, libc::SIGKILL) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while process_alive(rec.init_pid, rec.init_start) && Instant::now() < deadline {
                sleep(Duration::from_millis(5));
            }
        }
        cleanup(&agent_root(dir), &rec.id)
    }
}

/// hull-agent's host-side cleanup of a stopped or crashed container: its processes,
/// cgroups and libcontainer state.
fn cleanup(agent_root: &Path, id: &str) -> Result<()> {
    if !agent_root.exists() {
        return Ok(());
    }
    hull_agent::host::cleanup(agent_root, id)
        .map_err(|e| Error::Sandbox(format!("container \"{id}\": {e}")))
}
