//! The sandbox abstraction: where a container's processes run and how the runtime
//! reaches the agent that manages them. One implementation per kind of isolation.

use std::fmt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::str::FromStr;

use hull_protocol::{Client, StdioMode};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::bundle::Bundle;
use crate::cli::GlobalOpts;
use crate::error::Result;
use crate::state::Record;

pub mod os;
pub mod vm;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SandboxKind {
    /// A KVM microVM per container.
    Vm,
    /// Namespaces and cgroups on the host only.
    Os,
}

impl FromStr for SandboxKind {
    type Err = ();
    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        match s {
            "vm" => Ok(SandboxKind::Vm),
            "os" => Ok(SandboxKind::Os),
            _ => Err(()),
        }
    }
}

impl fmt::Display for SandboxKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SandboxKind::Vm => "vm",
            SandboxKind::Os => "os",
        })
    }
}

/// What a sandbox needs to start its host process.
pub struct LaunchContext<'a> {
    pub id: &'a str,
    /// The container's state directory (everything the sandbox creates lives here).
    pub dir: &'a Path,
    /// Passed on to re-executed hull processes (log file, format, root).
    pub globals: &'a GlobalOpts,
    pub bundle: &'a Bundle,
    /// runc's `--console-socket`, for sandboxes whose host process relays the pty.
    pub console_socket: Option<&'a Path>,
    /// Whether the host process keeps the caller's stdio (for the container). When
    /// not (a console socket), it must not hold them: the runc shim reads the
    /// command's output until EOF.
    pub inherit_stdio: bool,
}

/// A started sandbox host process, already serving the agent protocol.
pub struct Launched {
    /// The process the caller waits on: it exits with the container's exit status.
    pub child: Child,
    pub start_time: u64,
    pub socket: PathBuf,
    pub client: Client<UnixStream>,
}

/// Paths and spec of a bundle as the agent sees them.
pub struct GuestView {
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub spec: Spec,
}

pub trait Sandbox {
    fn kind(&self) -> SandboxKind;

    /// Fails with a one-line reason when this sandbox cannot run this bundle on this
    /// build or host; called before any state is created.
    fn check_available(&self, g: &GlobalOpts, bundle: &Bundle) -> Result<()>;

    /// Starts the sandbox's host process (which inherits the caller's stdio) and
    /// returns once its agent answers.
    fn launch(&self, ctx: &LaunchContext) -> Result<Launched>;

    /// How the container's init gets its stdio (`console_socket`: runc's flag).
    fn create_stdio(&self, console_socket: Option<&Path>) -> StdioMode;

    /// How an exec'd process with a console socket gets its pty.
    fn exec_console(&self, console_socket: &Path) -> Result<StdioMode>;

    /// The bundle as the agent sees it.
    fn guest_view(&self, id: &str, bundle: &Bundle) -> GuestView;

    /// The pid the host reports for the container's init, from the agent's answer and
    /// the host process.
    fn host_init_pid(&self, agent_pid: i32, host_pid: i32) -> i32;

    /// Whether the host's `ps` sees the container's processes (its agent's pids are
    /// host pids).
    fn host_sees_processes(&self) -> bool;

    /// A fresh protocol connection to the container's agent.
    fn connect(&self, rec: &Record) -> Result<Client<UnixStream>>;

    /// Removes whatever the container left on the host once the host process is gone
    /// (processes, cgroups, mounts). Idempotent.
    fn destroy(&self, rec: &Record, dir: &Path) -> Result<()>;
}

/// The implementation for `kind`.
pub fn for_kind(kind: SandboxKind) -> Box<dyn Sandbox> {
    match kind {
        SandboxKind::Os => Box::new(os::OsSandbox),
        SandboxKind::Vm => Box::new(vm::VmSandbox),
    }
}
