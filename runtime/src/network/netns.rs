//! Running code inside a network namespace named by a path (a bind-mounted
//! `/proc/<pid>/ns/net`, e.g. `/var/run/netns/<name>`), without moving the process.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use nix::sched::{setns, CloneFlags};

use super::error::{Error, Result};

/// Runs `f` on a thread of its own that has joined `netns`; processes it spawns (`ip`,
/// `tc`) and sockets or taps it opens live in that namespace too.
pub(crate) fn run_in<T: Send>(netns: &Path, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let ns = File::open(netns).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NetnsMissing(netns.to_path_buf()),
        _ => Error::NotNetns {
            path: netns.to_path_buf(),
            source: e,
        },
    })?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // The thread's namespace ends with the thread; the caller's is untouched.
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| Error::NotNetns {
                path: netns.to_path_buf(),
                source: e.into(),
            })?;
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
