//! `hull __vm-supervise`: the VM sandbox's host process for one container, the pid
//! `--pid-file` gets. It binds the container's files into the shared directory (in a
//! mount namespace of its own), serves hull's devices to QEMU (or leaves them to
//! hull-vmm), starts the hypervisor, relays the container's stdio, and exits with the
//! container's exit status once it has recorded it and powered the VM off.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use hull_protocol::{ExitStatus, Request, Response};
use nix::sys::signal::SigSet;
use oci_spec::runtime::Spec;

use super::assets;
use super::hypervisor::Hypervisor;
use super::launch::{self, GuestSpec};
use super::layout::Layout;
use super::relay;
use super::shared_fs;
use super::sizing;
use crate::cli::GlobalOpts;
use crate::console_bridge::ConsoleBridge;
use crate::error::{Error, Result};
use crate::network;
use crate::state::{self, process_start_time, Store};
use crate::supervisor;

/// How long the guest may take to boot to a serving agent (TCG under load is slow).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the guest gets to power off before the hypervisor is killed.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(clap::Args, Debug, Clone)]
pub struct VmSupervise {
    /// The hypervisor `create` resolved: hull-vmm or qemu
    #[arg(long, value_parser = parse_hypervisor)]
    pub hypervisor: Hypervisor,
    /// runc's console socket: the container's pty master goes there
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    pub container_id: String,
}

fn parse_hypervisor(s: &str) -> std::result::Result<Hypervisor, String> {
    match s {
        "hull-vmm" => Ok(Hypervisor::HullVmm),
        "qemu" => Ok(Hypervisor::Qemu),
        _ => Err(format!("unknown hypervisor {s:?}")),
    }
}

/// Set once the exit status is being recorded, so that exactly one thread does it.
static FINISHING: AtomicBool = AtomicBool::new(false);

/// Runs the supervisor; returns only on a set-up failure (the exit code), otherwise
/// the process exits from [`finish`].
pub fn supervise(g: &GlobalOpts, args: &VmSupervise) -> i32 {
    let id = args.container_id.as_str();
    let _ = nix::unistd::setsid();
    // Before any thread exists, so that all of them inherit the mask.
    let set = relay::block_signals();
    let store = g.store();
    let err = match run(g, &store, args, set) {
        Ok(()) => return 0,
        Err(e) => e,
    };
    supervisor::record_failure(&store, id, &err.to_string());
    255
}

fn run(g: &GlobalOpts, store: &Store, args: &VmSupervise, signals: SigSet) -> Result<()> {
    let id = args.container_id.clone();
    let dir = store.dir(&id)?;
    let rec = store.read_record(&id)?;
    let spec: Spec = state::read_json(&dir.join(state::SPEC))?;
    let layout = Layout::new(&dir);

    if let Some(cg) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
    {
        super::host_cgroup::join(cg, &layout.host_cgroups)?;
    }
    let plan = shared_fs::plan(&id, &rec.rootfs, &spec);
    shared_fs::enter_private_mount_namespace()?;
    shared_fs::apply(&layout.shared, &plan.binds)?;
    let console = match &args.console_socket {
        Some(p) => Some(ConsoleBridge::send_master(p)?),
        None => None,
    };
    let netns = network::netns_path(&spec);
    let nics = match &netns {
        Some(ns) => network::attach_vm(ns, &id).map_err(|e| Error::Sandbox(e.to_string()))?,
        None => Vec::new(),
    };
    // However this process ends from here on, the taps go (destroy() covers SIGKILL).
    let _taps = Taps {
        netns: netns.clone(),
        id: id.clone(),
    };
    let nic_args: Vec<(RawFd, String)> = nics
        .iter()
        .map(|n| (n.tap.as_raw_fd(), n.guest.mac.clone()))
        .collect();
    let guest = GuestSpec {
        assets: &assets::locate()?,
        size: sizing::from_spec(&spec)?,
        hostname: spec.hostname().as_deref().unwrap_or(""),
        layout: &layout,
        debug: g.debug,
        nics: &nic_args,
    };
    // Threads serving QEMU until it disconnects.
    let _backends = match args.hypervisor {
        Hypervisor::Qemu => Some(super::backends::start(&layout)?),
        Hypervisor::HullVmm => None,
    };
    let mut cmd = launch::command(&guest, args.hypervisor)?;
    let vmm_log = std::fs::File::create(dir.join("vmm.log")).map_err(Error::io(format!(
        "creating {}",
        dir.join("vmm.log").display()
    )))?;
    cmd.stdin(Stdio::null())
        .stdout(
            vmm_log
                .try_clone()
                .map_err(Error::io("duplicating the VMM log"))?,
        )
        .stderr(vmm_log);
    let inherited: Vec<RawFd> = nic_args.iter().map(|(fd, _)| *fd).collect();
    die_with_parent(&mut cmd, inherited);
    log::debug!("container {id:?}: starting {:?}", cmd);
    let vmm = cmd
        .spawn()
        .map_err(Error::io(format!("starting {}", args.hypervisor)))?;
    let vmm_pid = vmm.id() as i32;
    let _ = state::write_atomic(
        &layout.vmm_pid,
        format!("{vmm_pid} {}", process_start_time(vmm_pid).unwrap_or(0)).as_bytes(),
    );
    let (vmm_gone_tx, vmm_gone) = mpsc::channel();
    watch_vmm(
        vmm,
        args.hypervisor,
        store.clone(),
        id.clone(),
        dir.clone(),
        vmm_gone_tx,
    );

    let mut agent = relay::connect_agent(&layout.vsock, BOOT_TIMEOUT)?;
    if !nics.is_empty() {
        let interfaces = nics.iter().map(|n| n.guest.clone()).collect();
        match agent.call(&Request::ConfigureNetwork { interfaces }) {
            Ok(Response::Ok) => {}
            Ok(other) => return Err(Error::Sandbox(format!("network: unexpected {other:?}"))),
            Err(e) => {
                return Err(Error::Sandbox(format!(
                    "configuring the guest's network: {e}"
                )))
            }
        }
    }
    drop(nics);
    state::write_atomic(&layout.ready, b"")?;
    let status = relay::until_exit(&mut agent, &layout.vsock, &id, console, signals)?;
    if FINISHING.swap(true, Ordering::SeqCst) {
        // The VMM died at the same moment; its watcher is ending the process.
        loop {
            thread::park();
        }
    }
    let code = supervisor::finish(store, &id, status);
    let _ = agent.call(&Request::Shutdown);
    if vmm_gone.recv_timeout(POWEROFF_TIMEOUT).is_err() {
        log::warn!("container {id:?}: the VM did not power off; killing it");
        // SAFETY: plain syscall; the watcher has not reaped the pid, so it is ours.
        unsafe { libc::kill(vmm_pid, libc::SIGKILL) };
        let _ = vmm_gone.recv_timeout(POWEROFF_TIMEOUT);
    }
    drop(_taps);
    std::process::exit(code)
}

/// Removes the container's taps when dropped.
struct Taps {
    netns: Option<PathBuf>,
    id: String,
}

impl Drop for Taps {
    fn drop(&mut self) {
        if let Some(ns) = &self.netns {
            if let Err(e) = network::detach_vm(ns, &self.id) {
                log::warn!("container {:?}: {e}", self.id);
            }
        }
    }
}

/// The hypervisor must not outlive the supervisor (a `kill -9` of the pid in the pid
/// file ends the whole VM). `inherit`: fds (taps) the hypervisor keeps across exec.
fn die_with_parent(cmd: &mut Command, inherit: Vec<RawFd>) {
    let parent = std::process::id() as i32;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // syscalls.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            for fd in &inherit {
                if libc::fcntl(*fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // The parent may have died before the prctl.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Reaps the hypervisor. If the VM ends before the container's exit was recorded (it
/// crashed, or was killed from outside), records the container as killed and ends
/// this process, saying why for a `create` still waiting.
fn watch_vmm(
    mut vmm: Child,
    hv: Hypervisor,
    store: Store,
    id: String,
    dir: PathBuf,
    gone: mpsc::Sender<()>,
) {
    thread::spawn(move || {
        let st = vmm.wait();
        if FINISHING.swap(true, Ordering::SeqCst) {
            let _ = gone.send(());
            return;
        }
        let why = format!(
            "{hv} exited ({}) before the container did{}",
            st.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
            log_tail(&dir)
        );
        supervisor::record_failure(&store, &id, &why);
        let killed = ExitStatus::Signal(libc::SIGKILL);
        if store.read_record(&id).is_ok_and(|r| r.created_ok) {
            let _ = store.write_exit(&id, killed);
        }
        std::process::exit(killed.as_exit_code());
    });
}

/// The last lines of the hypervisor's and the guest console's output.
fn log_tail(dir: &Path) -> String {
    let mut out = String::new();
    for f in ["vmm.log", "console.log"] {
        let Ok(text) = std::fs::read_to_string(dir.join(f)) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
        if !tail.is_empty() {
            out.push_str(&format!("; {f}: {tail}"));
        }
    }
    out
}
