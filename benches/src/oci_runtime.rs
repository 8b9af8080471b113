//! One OCI runtime CLI (hull with either sandbox, runc, crun) driven the runc way:
//! `<rt> --root R run --bundle B <id>` to exit, or `run --detach` and `delete --force`.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::procs;

/// A runtime call taking longer than this is killed and fails its row.
const CALL_LIMIT: Duration = Duration::from_secs(120);
/// How long a started container's process may take to exec its workload.
const WORKLOAD_LIMIT: Duration = Duration::from_secs(10);

/// Waits for `child`; past `limit` kills it and returns `None`. The wait itself
/// blocks (no polling), so the measured time is not rounded up to a poll interval.
fn wait_or_kill(child: &mut Child, limit: Duration) -> std::io::Result<Option<ExitStatus>> {
    let pid = child.id() as libc::pid_t;
    let (done, watch) = mpsc::channel::<()>();
    let killed = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let killed = killed.clone();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = watch.recv_timeout(limit) {
                killed.store(true, Ordering::SeqCst);
                // SAFETY: kill(2) on our child, still unreaped: the owner is blocked in
                // its wait until the child dies.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        })
    };
    let status = child.wait();
    let _ = done.send(());
    let _ = watchdog.join();
    let status = status?;
    Ok((!killed.load(Ordering::SeqCst)).then_some(status))
}

/// Where the runtime's binary comes from and which flags go before the subcommand.
#[derive(Debug, Clone)]
pub struct OciRuntime {
    pub name: String,
    pub bin: PathBuf,
    pub global_args: Vec<String>,
}

/// What one running container costs on the host.
#[derive(Debug, Clone)]
pub struct Footprint {
    /// Sum of the PSS of every host process of the container.
    pub pss_kib: u64,
    /// RSS of the VMM outside guest RAM, when the container has a VMM.
    pub vmm_rss_kib: Option<u64>,
    /// `comm` of each process measured, for the report.
    pub processes: Vec<String>,
}

impl OciRuntime {
    pub fn new(name: &str, bin: PathBuf, global_args: &[&str]) -> Self {
        OciRuntime {
            name: name.to_string(),
            bin,
            global_args: global_args.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn command(&self, root: &Path) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(root).args(&self.global_args);
        c.stdin(Stdio::null()).stdout(Stdio::null());
        c
    }

    /// Runs `c` to completion; a non-zero exit is an error carrying the runtime's
    /// last stderr line. stderr goes to a file, not a pipe: a detached container's
    /// processes inherit it and would hold a pipe open for as long as they run.
    fn call(&self, mut c: Command, what: &str) -> Result<(), String> {
        let mut log = tempfile::tempfile().map_err(|e| format!("temp file: {e}"))?;
        let err = log.try_clone().map_err(|e| format!("temp file: {e}"))?;
        let mut child = c
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        let status = wait_or_kill(&mut child, CALL_LIMIT)
            .map_err(|e| format!("waiting for {}: {e}", self.name))?;
        let Some(status) = status else {
            return Err(format!(
                "{} {what} did not finish within {CALL_LIMIT:?}",
                self.name
            ));
        };
        if status.success() {
            return Ok(());
        }
        let mut stderr = String::new();
        let _ = log.seek(SeekFrom::Start(0));
        let _ = log.read_to_string(&mut stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("(no output)");
        Err(format!(
            "{} {what} failed ({status}): {}",
            self.name,
            last.trim()
        ))
    }

    /// Wall time in ms of `run` of the bundle to the container's exit (runc and hull
    /// also delete the container before returning).
    pub fn run_to_exit(&self, root: &Path, bundle: &Path, id: &str) -> Result<f64, String> {
        let mut c = self.command(root);
        c.args(["run", "--bundle"]).arg(bundle).arg(id);
        let t = Instant::now();
        let r = self.call(c, "run");
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let leftover = cleanup(self, root, id);
        r?;
        leftover?;
        Ok(ms)
    }

    /// Starts the bundle detached, measures what it costs while it runs, deletes it.
    /// `host_workload`: the comm of the container's process where it runs on the host
    /// (not in a guest); the measurement waits until it has exec'd, since `run
    /// --detach` may return while the runtime's init is still in its place.
    pub fn footprint(
        &self,
        root: &Path,
        bundle: &Path,
        id: &str,
        host_workload: Option<&str>,
    ) -> Result<Footprint, String> {
        let mut c = self.command(root);
        c.args(["run", "--detach", "--bundle"]).arg(bundle).arg(id);
        let started = self.call(c, "run --detach");
        let measured = started
            .and_then(|()| match host_workload {
                Some(w) => wait_for_workload(w),
                None => Ok(()),
            })
            .and_then(|()| measure_descendants());
        let leftover = cleanup(self, root, id);
        let fp = measured?;
        leftover?;
        Ok(fp)
    }
}

/// Waits until one of the bench's descendants is named `comm` and sleeps: exec'd and
/// settled in its wait, with the pages it runs on faulted in.
fn wait_for_workload(comm: &str) -> Result<(), String> {
    let deadline = Instant::now() + WORKLOAD_LIMIT;
    let me = std::process::id();
    let settled = |p: u32| procs::comm(p) == comm && procs::state(p) == Some('S');
    while !procs::descendants(me).into_iter().any(settled) {
        if Instant::now() > deadline {
            return Err(format!("the container's {comm} never ran on the host"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// The bench's descendants now: the container's host processes.
fn measure_descendants() -> Result<Footprint, String> {
    let pids = procs::descendants(std::process::id());
    if pids.is_empty() {
        return Err("no host process runs the detached container".into());
    }
    let mut fp = Footprint {
        pss_kib: 0,
        vmm_rss_kib: None,
        processes: Vec::new(),
    };
    for &p in &pids {
        let Some(pss) = procs::pss_kib(p) else {
            continue;
        };
        fp.pss_kib += pss;
        let comm = procs::comm(p);
        let args = procs::cmdline(p);
        fp.processes.push(describe(&comm, &args));
        if is_vmm(&comm) {
            let guest = procs::guest_mib_from_cmdline(&args)
                .ok_or_else(|| format!("cannot tell the guest RAM size of {comm} ({p})"))?;
            let rss = procs::rss_excluding_guest_kib(p, guest)
                .ok_or_else(|| format!("cannot read /proc/{p}/smaps"))?;
            *fp.vmm_rss_kib.get_or_insert(0) += rss;
        }
    }
    Ok(fp)
}

/// A process's program name, plus hull's internal subcommand (`__supervise`) where
/// it re-executed itself (its comm is then "exe").
fn describe(comm: &str, args: &[String]) -> String {
    let prog = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| comm.to_string());
    match args.iter().find(|a| a.starts_with("__")) {
        Some(sub) => format!("{prog} {sub}"),
        None => prog,
    }
}

fn is_vmm(comm: &str) -> bool {
    // comm is cut at 15 bytes: "qemu-system-x86".
    comm.starts_with("qemu-system") || comm == "hull-vmm"
}

/// `delete --force` (harmless when `run` already deleted it), then makes sure nothing
/// of the container is left: a leftover process is killed and reported.
fn cleanup(rt: &OciRuntime, root: &Path, id: &str) -> Result<(), String> {
    let mut c = rt.command(root);
    c.args(["delete", "--force", id]).stderr(Stdio::null());
    let _ = c.status();
    procs::reap_orphans();
    let left = procs::descendants(std::process::id());
    if left.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = left
        .iter()
        .map(|&p| format!("{} ({p})", procs::comm(p)))
        .collect();
    procs::kill_all(&left);
    // SIGKILLed processes are gone once reaped; the runtime's children are ours now.
    std::thread::sleep(std::time::Duration::from_millis(100));
    procs::reap_orphans();
    Err(format!(
        "{} left processes behind after delete: {}",
        rt.name,
        names.join(", ")
    ))
}
