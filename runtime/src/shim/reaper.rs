//! Reaping every child of the shim and handing each exit status to whoever waits
//! for that pid.
//!
//! The shim is a child subreaper: the container's host process (the supervisor or
//! the VMM, daemonized by `hull create`) is re-parented to it, and so are the
//! `hull exec --detach` processes. One thread reaps all children with `waitpid(-1)`,
//! so `std::process::Child::wait` must never be used here; `wait_for` replaces it.
//! An exit that arrives before anyone asks for it (a container that dies before its
//! pid file is read) is kept until it is claimed.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::{Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// Unclaimed exits older than this belong to processes nobody waits for (orphans
/// re-parented to us); dropping them keeps a reused pid from seeing a stale status.
const UNCLAIMED_TTL: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Reaped {
    exits: HashMap<i32, (i32, Instant)>,
    /// Bumped after every spawn, so a reaper that found no children knows to retry.
    spawned: u64,
}

pub struct Reaper {
    state: Mutex<Reaped>,
    changed: Condvar,
}

/// The process-wide reaper; its thread starts on first use.
pub fn reaper() -> &'static Reaper {
    static REAPER: OnceLock<&'static Reaper> = OnceLock::new();
    REAPER.get_or_init(|| {
        let r: &'static Reaper = Box::leak(Box::new(Reaper {
            state: Mutex::new(Reaped::default()),
            changed: Condvar::new(),
        }));
        thread::Builder::new()
            .name("reaper".into())
            .spawn(move || r.reap_forever())
            .expect("spawning the reaper thread");
        r
    })
}

/// The shell convention containerd uses: the exit code, or 128 + the signal.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

impl Reaper {
    fn reap_forever(&self) {
        loop {
            let generation = self.state.lock().unwrap().spawned;
            match waitpid(Pid::from_raw(-1), None) {
                Ok(st) => {
                    if let (Some(pid), Some(code)) = (st.pid(), exit_code(st)) {
                        let mut s = self.state.lock().unwrap();
                        let now = Instant::now();
                        s.exits.retain(|_, (_, at)| now - *at < UNCLAIMED_TTL);
                        s.exits.insert(pid.as_raw(), (code, now));
                        self.changed.notify_all();
                    }
                }
                Err(Errno::ECHILD) => {
                    let mut s = self.state.lock().unwrap();
                    while s.spawned == generation {
                        s = self.changed.wait(s).unwrap();
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e) => {
                    log::warn!("waitpid: {e}");
                    thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    /// Spawns `cmd`; its status comes from `wait_for`, never from `Child::wait`.
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<Child> {
        let child = cmd.spawn()?;
        self.note_new_child();
        Ok(child)
    }

    /// Tells the reaper a child may exist that it has not seen yet.
    pub fn note_new_child(&self) {
        let mut s = self.state.lock().unwrap();
        s.spawned += 1;
        self.changed.notify_all();
    }

    /// Blocks until `pid` has been reaped; returns its exit code.
    pub fn wait_for(&self, pid: i32) -> i32 {
        let mut s = self.state.lock().unwrap();
        loop {
            if let Some((code, _)) = s.exits.remove(&pid) {
                return code;
            }
            s = self.changed.wait(s).unwrap();
        }
    }

    /// Like `wait_for`, but gives up at `deadline` (None then).
    pub fn wait_until(&self, pid: i32, deadline: Instant) -> Option<i32> {
        let mut s = self.state.lock().unwrap();
        loop {
            if let Some((code, _)) = s.exits.remove(&pid) {
                return Some(code);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            s = self.changed.wait_timeout(s, deadline - now).unwrap().0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHILD_ENV: &str = "HULL_REAPER_TEST_CHILD";

    /// The reaper takes every child of its process, which would break other tests'
    /// `Command::output`, so the real check runs in a copy of this test binary.
    #[test]
    fn statuses_of_spawned_children_reach_their_waiters() {
        if std::env::var_os(CHILD_ENV).is_some() {
            let r = reaper();
            let pid = |cmd: &mut Command| r.spawn(cmd).unwrap().id() as i32;
            let a = pid(Command::new("sh").args(["-c", "exit 7"]));
            let b = pid(Command::new("sh").args(["-c", "kill -9 $$"]));
            assert_eq!(r.wait_for(b), 137);
            assert_eq!(r.wait_for(a), 7);
            // No children left now; a later spawn is still reaped.
            let c = pid(&mut Command::new("true"));
            assert_eq!(r.wait_for(c), 0);
            return;
        }
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "shim::reaper::tests::statuses_of_spawned_children_reach_their_waiters",
                "--nocapture",
            ])
            .env(CHILD_ENV, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("1 passed"), "{text}");
    }
}
