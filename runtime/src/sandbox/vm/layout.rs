//! Where a VM sandbox keeps its files in the container's state directory.

use std::path::{Path, PathBuf};

/// The guest's vsock context id (2 is the host).
pub const GUEST_CID: u64 = 3;

#[derive(Debug, Clone)]
pub struct Layout {
    /// Hybrid vsock socket: `CONNECT 1024` reaches the agent.
    pub vsock: PathBuf,
    /// vhost-user sockets QEMU connects to (unused with hull-vmm).
    pub vsock_backend: PathBuf,
    pub fs_backend: PathBuf,
    /// The virtio-fs shared directory.
    pub shared: PathBuf,
    /// The guest's serial console.
    pub console_log: PathBuf,
    /// The hypervisor's pid and start time, for cleanup after a supervisor crash.
    pub vmm_pid: PathBuf,
    /// The host cgroup directories the supervisor created.
    pub host_cgroups: PathBuf,
    /// Written by the supervisor once the guest agent serves, networking included.
    pub ready: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Self {
        Layout {
            vsock: dir.join("vsock.sock"),
            vsock_backend: dir.join("vhost-vsock.sock"),
            fs_backend: dir.join("vhost-fs.sock"),
            shared: super::shared_fs::host_dir(dir),
            console_log: dir.join("console.log"),
            vmm_pid: dir.join("vmm.pid"),
            host_cgroups: dir.join("host-cgroups.json"),
            ready: dir.join("vm.ready"),
        }
    }
}
