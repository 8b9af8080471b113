//! Network namespaces named by a path (a bind-mounted `/proc/<pid>/ns/net`, e.g.
//! `/var/run/netns/<name>`): checking one, and running code inside it without moving
//! the process.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use nix::sched::{setns, CloneFlags};

use super::error::{Error, Result};

/// ioctl(NS_GET_NSTYPE) of linux/nsfs.h: which kind of namespace an nsfs file is.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Opens `path` and checks that it is a network namespace.
pub(crate) fn open(path: &Path) -> Result<File> {
    let not = |why: String| Error::NotNetns {
        path: path.to_path_buf(),
        why,
    };
    let f = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NetnsMissing(path.to_path_buf()),
        _ => not(e.to_string()),
    })?;
    // SAFETY: NS_GET_NSTYPE takes no argument and only returns a value.
    let kind = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_NSTYPE) };
    if kind < 0 {
        return Err(not(format!(
            "not a namespace file ({})",
            std::io::Error::last_os_error()
        )));
    }
    if kind != libc::CLONE_NEWNET {
        return Err(not(format!(
            "a namespace of another kind (CLONE flag {kind:#x})"
        )));
    }
    Ok(f)
}

/// Runs `f` on a thread of its own that has joined `netns`; processes it spawns (`ip`,
/// `tc`) and sockets or taps it opens live in that namespace too.
pub(crate) fn run_in<T: Send>(netns: &Path, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let ns = open(netns)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // The thread's namespace ends with the thread; the caller's is untouched.
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| Error::NotNetns {
                path: netns.to_path_buf(),
                why: format!("setns: {e}"),
            })?;
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
