//! The one place that calls wait(2) in this process.
//!
//! PID 1 must reap every orphan, and a subreaper inherits the container's init when
//! the short-lived helper that created it exits. A single thread therefore reaps
//! every child with `waitpid(-1, __WALL)` and files the statuses here; everybody else
//! asks this table instead of calling wait themselves. Consequence: code in the same
//! process must not use `std::process::Child::wait` (it would get ECHILD).

use std::collections::{HashMap, HashSet};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use hull_protocol::ExitStatus;

/// Unclaimed statuses of pids nobody watches are dropped beyond this many (orphans
/// reaped by PID 1 would otherwise pile up forever).
const MAX_UNWATCHED: usize = 4096;

/// Exit statuses by pid, each stamped with a sequence number so that a status of an
/// earlier process with the same (reused) pid is never taken for a newer one.
pub struct Reaper {
    table: Mutex<Table>,
    exited: Condvar,
    kick: Condvar,
}

#[derive(Default)]
struct Table {
    seq: u64,
    exits: HashMap<i32, (u64, ExitStatus)>,
    watched: HashSet<i32>,
    /// Bumped whenever a child may have appeared (see [`Reaper::kick`]).
    kicks: u64,
}

/// The process-wide reaper; the reaping thread starts on first use.
pub fn global() -> &'static Reaper {
    static REAPER: OnceLock<&'static Reaper> = OnceLock::new();
    REAPER.get_or_init(|| {
        let r: &'static Reaper = Box::leak(Box::new(Reaper {
            table: Mutex::new(Table::default()),
            exited: Condvar::new(),
            kick: Condvar::new(),
        }));
        let spawned = std::thread::Builder::new()
            .name("hull-reaper".into())
            .spawn(move || r.run());
        if let Err(e) = spawned {
            log::error!("cannot start the reaper thread: {e}");
        }
        r
    })
}

impl Reaper {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // A poisoned lock only means a panic elsewhere; the table itself stays valid.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A stamp to take *before* forking: only exits filed after it count for the
    /// process forked afterwards.
    pub fn mark(&self) -> u64 {
        self.kick();
        self.lock().seq
    }

    /// Tells the reaping thread that a child now exists (call after forking).
    pub fn kick(&self) {
        let mut t = self.lock();
        t.kicks += 1;
        self.kick.notify_all();
    }

    /// Keeps `pid`'s status until [`Reaper::forget`].
    pub fn watch(&self, pid: i32) {
        self.lock().watched.insert(pid);
    }

    /// Lets `pid`'s status age out like an orphan's (late waiters may still read it).
    pub fn unwatch(&self, pid: i32) {
        self.lock().watched.remove(&pid);
    }

    pub fn forget(&self, pid: i32) {
        let mut t = self.lock();
        t.watched.remove(&pid);
        t.exits.remove(&pid);
    }

    /// The status of `pid` if it exited after `since`.
    pub fn try_get(&self, pid: i32, since: u64) -> Option<ExitStatus> {
        match self.lock().exits.get(&pid) {
            Some(&(seq, st)) if seq > since => Some(st),
            _ => None,
        }
    }

    /// Blocks until `pid` exited after `since`.
    pub fn wait(&self, pid: i32, since: u64) -> ExitStatus {
        let mut t = self.lock();
        loop {
            if let Some(&(seq, st)) = t.exits.get(&pid) {
                if seq > since {
                    return st;
                }
            }
            t = self.exited.wait(t).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Like [`Reaper::wait`] with a deadline.
    pub fn wait_timeout(&self, pid: i32, since: u64, timeout: Duration) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        let mut t = self.lock();
        loop {
            if let Some(&(seq, st)) = t.exits.get(&pid) {
                if seq > since {
                    return Some(st);
                }
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return None;
            }
            t = self
                .exited
                .wait_timeout(t, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn file(&self, pid: i32, st: ExitStatus) {
        let mut t = self.lock();
        t.seq += 1;
        let seq = t.seq;
        t.exits.insert(pid, (seq, st));
        if t.exits.len() > MAX_UNWATCHED + t.watched.len() {
            let mut old: Vec<(u64, i32)> = t
                .exits
                .iter()
                .filter(|(p, _)| !t.watched.contains(p))
                .map(|(p, (s, _))| (*s, *p))
                .collect();
            old.sort_unstable();
            for (_, p) in old.into_iter().take(MAX_UNWATCHED / 2) {
                t.exits.remove(&p);
            }
        }
        self.exited.notify_all();
    }

    fn run(&self) {
        loop {
            let kicks = self.lock().kicks;
            let mut status = 0;
            // SAFETY: waitpid only writes the int we pass.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
            if pid > 0 {
                let st = if libc::WIFSIGNALED(status) {
                    ExitStatus::Signal(libc::WTERMSIG(status))
                } else {
                    ExitStatus::Code(libc::WEXITSTATUS(status))
                };
                self.file(pid, st);
                continue;
            }
            let errno = std::io::Error::last_os_error().raw_os_error();
            if errno == Some(libc::EINTR) {
                continue;
            }
            // No children: sleep until somebody forks (or a little while, for children
            // that appear otherwise, e.g. orphans reparented to a subreaper).
            let mut t = self.lock();
            while t.kicks == kicks {
                let (g, res) = self
                    .kick
                    .wait_timeout(t, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner());
                t = g;
                if res.timed_out() {
                    break;
                }
            }
        }
    }
}
