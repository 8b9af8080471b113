//! hull's own vsock and virtio-fs devices served to QEMU as vhost-user backends, on
//! threads of the VM supervisor: they die with it, so nothing can be left behind.

use std::path::Path;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hull_devices::fs::{raise_fd_limit, Fs, FsConfig};
use hull_devices::vhost_user::serve;
use hull_devices::vsock::Vsock;
use vhost::vhost_user::message::VhostUserProtocolFeatures as Protocol;

use super::layout::{Layout, GUEST_CID};
use super::shared_fs::SHARE_TAG;
use crate::error::{Error, Result};

/// How long a backend may take to listen on its socket.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Backends {
    threads: Vec<(&'static str, JoinHandle<std::result::Result<(), String>>)>,
}

/// Starts both backends and returns once QEMU can connect to their sockets.
pub fn start(layout: &Layout) -> Result<Backends> {
    let vsock = Vsock::new(GUEST_CID, &layout.vsock)
        .map_err(|e| Error::Sandbox(format!("vsock device on {}: {e}", layout.vsock.display())))?;
    let fs = Fs::new(FsConfig::new(layout.shared.clone(), SHARE_TAG)).map_err(|e| {
        Error::Sandbox(format!(
            "virtio-fs device for {}: {e}",
            layout.shared.display()
        ))
    })?;
    let mut b = Backends {
        threads: Vec::new(),
    };
    let sock = layout.vsock_backend.clone();
    b.spawn("vsock", move || {
        // The backend owns the config space (the guest CID).
        let protocol = Protocol::CONFIG | Protocol::RESET_DEVICE;
        serve("hull-vsock", vsock, protocol, &sock).map_err(|e| e.to_string())
    })?;
    let sock = layout.fs_backend.clone();
    // Every inode the guest looks up holds an fd.
    raise_fd_limit();
    b.spawn("virtio-fs", move || {
        // QEMU owns the config space (its `tag=`); MQ: it asks how many queues we serve.
        serve("hull-fs", fs, Protocol::MQ, &sock).map_err(|e| e.to_string())
    })?;
    let deadline = Instant::now() + LISTEN_TIMEOUT;
    for sock in [&layout.vsock_backend, &layout.fs_backend] {
        while !is_listening(sock) {
            if let Some(why) = b.failed() {
                return Err(Error::Sandbox(why));
            }
            if Instant::now() > deadline {
                return Err(Error::Sandbox(format!(
                    "vhost-user backend did not listen on {} within {LISTEN_TIMEOUT:?}",
                    sock.display()
                )));
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(b)
}

impl Backends {
    fn spawn(
        &mut self,
        name: &'static str,
        f: impl FnOnce() -> std::result::Result<(), String> + Send + 'static,
    ) -> Result<()> {
        let h = thread::Builder::new()
            .name(format!("hull-{name}"))
            .spawn(f)
            .map_err(Error::io(format!("starting the {name} backend thread")))?;
        self.threads.push((name, h));
        Ok(())
    }

    /// Why a backend ended early, if one did.
    pub fn failed(&mut self) -> Option<String> {
        let done = self.threads.iter().position(|(_, h)| h.is_finished())?;
        let (name, h) = self.threads.remove(done);
        Some(match h.join() {
            Ok(Ok(())) => format!("{name} backend: QEMU disconnected"),
            Ok(Err(e)) => format!("{name} backend: {e}"),
            Err(_) => format!("{name} backend panicked"),
        })
    }
}

/// Whether a Unix socket at `path` is listening, without connecting (the backends
/// accept exactly one connection, which must be QEMU's).
fn is_listening(path: &Path) -> bool {
    // /proc/net/unix: "Num RefCount Protocol Flags Type St Inode Path"; flag
    // __SO_ACCEPTCON (0x10000) marks a listening socket.
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return path.exists();
    };
    let want = path.as_os_str().to_string_lossy();
    table.lines().skip(1).any(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols.len() >= 8
            && cols[7] == want
            && u32::from_str_radix(cols[3], 16).is_ok_and(|f| f & 0x10000 != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn listening_sockets_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.sock");
        assert!(!is_listening(&p));
        let _l = UnixListener::bind(&p).unwrap();
        assert!(is_listening(&p));
    }
}
