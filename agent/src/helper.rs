//! Runs libcontainer operations in a short-lived forked child.
//!
//! libcontainer is written for a one-shot CLI: it marks the calling process
//! non-dumpable, writes the container's oom_score_adj into `/proc/self`, changes the
//! process-wide cwd, clones without fork handlers, and may panic. A forked helper keeps
//! all of that away from the agent (which as PID 1 must never die), and lets the helper
//! close every fd the container must not inherit. The container's init is the helper's
//! child; when the helper exits it is reparented to this process, which is PID 1 or a
//! child subreaper.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use hull_protocol::{AgentError, ErrorKind, ExitStatus};
use serde::{de::DeserializeOwned, Serialize};

use crate::reaper;

/// Forks, runs `f` in the child with only `keep` (and 0, 1, 2) open, and returns its
/// result. Fds owned by `f` are closed in this process once the child runs.
pub fn run<T, F>(what: &str, keep: &[RawFd], f: F) -> Result<T, AgentError>
where
    F: FnOnce() -> Result<T, AgentError>,
    T: Serialize + DeserializeOwned,
{
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| rt(format!("{what}: pipe: {e}")))?;
    let reaper = reaper::global();
    let since = reaper.mark();
    // SAFETY: the child runs only `child_main`, which never returns; glibc's fork keeps
    // malloc usable in the child of a multithreaded parent.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(rt(format!(
            "{what}: fork: {}",
            std::io::Error::last_os_error()
        )));
    }
    if pid == 0 {
        drop(r);
        child_main(w, keep, f);
    }
    reaper.kick();
    drop(w);
    drop(f);
    let (out, status) = collect(r, pid, since);
    reaper.forget(pid);
    let out = out.map_err(|e| rt(format!("{what}: reading the helper's answer: {e}")))?;
    if out.is_empty() {
        return Err(rt(format!(
            "{what}: helper process died without an answer ({})",
            describe(status)
        )));
    }
    serde_json::from_slice::<Result<T, AgentError>>(&out)
        .map_err(|e| rt(format!("{what}: malformed helper answer: {e}")))?
}

/// Reads the helper's length-prefixed answer. EOF cannot be relied on: a container
/// init held before exec still holds the helper's copy of the write end.
fn collect(r: OwnedFd, pid: i32, since: u64) -> (std::io::Result<Vec<u8>>, ExitStatus) {
    let reaper = reaper::global();
    let mut file = std::fs::File::from(r);
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut exited: Option<ExitStatus> = None;
    let res = loop {
        let want = (buf.len() >= 4)
            .then(|| 4 + u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize);
        if want.is_some_and(|w| buf.len() >= w) {
            break Ok(buf.split_off(4));
        }
        let mut pfd = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&file),
            nix::poll::PollFlags::POLLIN,
        )];
        let ready = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(50u16));
        match ready {
            Ok(n) if n > 0 => match file.read(&mut chunk) {
                Ok(0) => break Ok(Vec::new()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            },
            Ok(_) | Err(nix::errno::Errno::EINTR) => {
                // All the helper wrote is readable once it has exited.
                if exited.is_some() {
                    break Ok(Vec::new());
                }
                exited = reaper.try_get(pid, since);
            }
            Err(e) => break Err(e.into()),
        }
    };
    let status = exited.unwrap_or_else(|| reaper.wait(pid, since));
    (res, status)
}

fn child_main<T: Serialize, F: FnOnce() -> Result<T, AgentError>>(
    w: OwnedFd,
    keep: &[RawFd],
    f: F,
) -> ! {
    let wfd = w.as_raw_fd();
    let mut keep: Vec<RawFd> = keep.iter().copied().chain([wfd]).collect();
    close_all_but(&mut keep);
    reset_signals();
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(AgentError::new(
            ErrorKind::Runtime,
            "container setup panicked (see the agent log)",
        ))
    });
    let body = serde_json::to_vec(&res).unwrap_or_default();
    let mut framed = (body.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&body);
    // SAFETY: `wfd` is the pipe's write end, owned by `w`, which is never dropped here.
    let mut file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(wfd) });
    let _ = file.write_all(&framed);
    // SAFETY: _exit skips atexit handlers and destructors inherited from the parent.
    unsafe { libc::_exit(0) }
}

/// Closes every fd above 2 that is not in `keep`.
fn close_all_but(keep: &mut [RawFd]) {
    keep.sort_unstable();
    let mut lo: u32 = 3;
    for &k in keep.iter() {
        if k < 3 {
            continue;
        }
        let k = k as u32;
        if k > lo {
            close_range(lo, k - 1);
        }
        lo = lo.max(k + 1);
    }
    close_range(lo, u32::MAX);
}

fn close_range(first: u32, last: u32) {
    // SAFETY: close_range only closes fds; nothing in this child refers to them after.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if rc != 0 {
        // Kernels before 5.9: close one by one up to the fd limit.
        let max = nix::unistd::sysconf(nix::unistd::SysconfVar::OPEN_MAX)
            .ok()
            .flatten()
            .unwrap_or(1024)
            .min(1 << 20) as u32;
        for fd in first..=last.min(max) {
            // SAFETY: as above.
            unsafe { libc::close(fd as i32) };
        }
    }
}

/// Signal dispositions survive exec: give the container defaults, not the agent's
/// (Rust ignores SIGPIPE, PID 1 may ignore more).
fn reset_signals() {
    for sig in 1..32 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL is always valid.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // SAFETY: an empty set unblocks everything; the old mask is not needed.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

pub(crate) fn describe(st: ExitStatus) -> String {
    match st {
        ExitStatus::Code(c) => format!("exit code {c}"),
        ExitStatus::Signal(s) => format!("killed by signal {s}"),
    }
}

fn rt(msg: String) -> AgentError {
    AgentError::new(ErrorKind::Runtime, msg)
}
