//! The VM sandbox: a hull-vmm microVM per container, the agent as guest PID 1.
//!
//! Not wired up yet: it needs hull-vmm's vsock and virtio-fs devices and the guest
//! image (kernel + agent initramfs). Until then every entry point fails with one line
//! saying so, before any state is created.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use hull_protocol::{Client, StdioMode};

use super::{LaunchContext, Launched, Sandbox, SandboxKind};
use crate::error::{Error, Result};
use crate::state::Record;

pub struct VmSandbox;

fn unavailable() -> Error {
    Error::Sandbox(
        "the VM sandbox is not available in this build: it needs hull-vmm's vsock and \
         virtio-fs devices and the guest image (kernel + agent initramfs), which are not \
         built yet; use --sandbox os"
            .into(),
    )
}

impl Sandbox for VmSandbox {
    fn kind(&self) -> SandboxKind {
        SandboxKind::Vm
    }

    fn check_available(&self) -> Result<()> {
        Err(unavailable())
    }

    fn launch(&self, _ctx: &LaunchContext) -> Result<Launched> {
        Err(unavailable())
    }

    fn create_stdio(&self, _console_socket: Option<&Path>) -> StdioMode {
        // The VMM pumps its inherited stdio into the guest's streams.
        StdioMode::Streams
    }

    fn exec_console(&self, _console_socket: &Path) -> Result<StdioMode> {
        Err(unavailable())
    }

    fn agent_rootfs(&self, _rootfs: &Path) -> PathBuf {
        // The shared rootfs is the guest's container root.
        PathBuf::from("/run/hull/rootfs")
    }

    fn host_init_pid(&self, _agent_pid: i32, host_pid: i32) -> i32 {
        // Guest pids mean nothing on the host: the VMM stands for the container.
        host_pid
    }

    fn connect(&self, _rec: &Record) -> Result<Client<UnixStream>> {
        Err(unavailable())
    }

    fn destroy(&self, _rec: &Record, _dir: &Path) -> Result<()> {
        // Nothing can have been created.
        Ok(())
    }
}
