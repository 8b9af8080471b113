//! The VM sandbox: a microVM per container, the agent as guest PID 1.
//!
//! `create` resolves the hypervisor (hull-vmm on hardware KVM, QEMU elsewhere) and
//! starts the VM supervisor (`hull __vm-supervise`, [`supervisor`]), which shares the
//! bundle's files into the guest over virtio-fs, boots the guest and relays stdio.
//! Every later command reaches the guest agent through the hybrid vsock socket in
//! the container's state directory.

use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use hull_protocol::guest::AGENT_VSOCK_PORT;
use hull_protocol::{Client, StdioMode};

use super::{GuestView, LaunchContext, Launched, Sandbox, SandboxKind};
use crate::bundle::Bundle;
use crate::cli::GlobalOpts;
use crate::error::{Error, Result};
use crate::state::{process_alive, process_start_time, Record};

pub mod assets;
pub mod backends;
pub mod host_cgroup;
pub mod hybrid_vsock;
pub mod hypervisor;
pub mod launch;
pub mod layout;
pub mod member;
pub mod pod;
pub mod relay;
pub mod shared_fs;
pub mod sizing;
pub mod supervisor;

use hypervisor::{Hypervisor, VmmChoice, VMM_ANNOTATION};
use layout::Layout;

pub struct VmSandbox;

/// The hypervisor for this bundle: `--vmm`, else the annotation, else auto.
pub fn hypervisor_for(g: &GlobalOpts, bundle: &Bundle) -> Result<Hypervisor> {
    let choice = match g.vmm {
        Some(c) => c,
        None => match bundle
            .spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(VMM_ANNOTATION))
        {
            Some(v) => v.parse().map_err(|_| {
                Error::Bundle(format!(
                    "{}: annotations.\"{VMM_ANNOTATION}\": unknown hypervisor {v:?} \
                     (expected \"hull\", \"qemu\" or \"auto\")",
                    bundle.dir.join("config.json").display()
                ))
            })?,
            None => VmmChoice::Auto,
        },
    };
    hypervisor::resolve(choice)
}

impl Sandbox for VmSandbox {
    fn kind(&self) -> SandboxKind {
        SandboxKind::Vm
    }

    fn check_available(&self, g: &GlobalOpts, bundle: &Bundle) -> Result<()> {
        if let Some(sandbox) = pod::sandbox_to_join(&bundle.spec) {
            return pod::running_sandbox(&g.store(), &sandbox, "").map(drop);
        }
        let hv = hypervisor_for(g, bundle)?;
        log::debug!("VM sandbox: hypervisor {hv}");
        sizing::from_spec(&bundle.spec)?;
        assets::locate().map(|_| ())
    }

    fn launch(&self, ctx: &LaunchContext) -> Result<Launched> {
        if let Some(sandbox) = pod::sandbox_to_join(&ctx.bundle.spec) {
            return join(ctx, &sandbox);
        }
        let hv = hypervisor_for(ctx.globals, ctx.bundle)?;
        let layout = Layout::new(ctx.dir);
        let mut child = host_process(ctx, &["__vm-supervise", "--hypervisor", &hv.to_string()])?
            .spawn()
            .map_err(Error::io("starting the VM supervisor"))?;
        let pid = child.id() as i32;
        let start_time = process_start_time(pid).unwrap_or(0);
        let deadline = Instant::now() + supervisor::BOOT_TIMEOUT;
        let mut last = String::new();
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                let why = std::fs::read_to_string(ctx.dir.join(crate::supervisor::ERROR_FILE))
                    .unwrap_or_else(|_| st.to_string());
                return Err(Error::Sandbox(format!(
                    "container \"{}\": VM supervisor failed: {why}",
                    ctx.id
                )));
            }
            // Ready: the agent serves and the guest's network is configured.
            if layout.ready.exists() {
                match hybrid_vsock::connect(&layout.vsock, AGENT_VSOCK_PORT) {
                    Ok(s) => {
                        let client = Client::handshake(s).map_err(Error::agent(ctx.id))?;
                        return Ok(Launched {
                            child,
                            start_time,
                            socket: layout.vsock,
                            client,
                        });
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Sandbox(format!(
                    "container \"{}\": the guest agent did not answer within {:?} ({last}); \
                     see {}",
                    ctx.id,
                    supervisor::BOOT_TIMEOUT,
                    layout.console_log.display()
                )));
            }
            sleep(Duration::from_millis(20));
        }
    }

    fn create_stdio(&self, _console_socket: Option<&Path>) -> StdioMode {
        // The supervisor relays its stdio, or a host pty, to the guest's streams.
        StdioMode::Streams
    }

    fn exec_console(&self, _console_socket: &Path) -> Result<StdioMode> {
        // The exec's attach process relays a host pty to the guest's terminal stream.
        Ok(StdioMode::Streams)
    }

    fn guest_view(&self, id: &str, bundle: &Bundle) -> GuestView {
        let mut spec = shared_fs::plan(id, &bundle.rootfs, &bundle.spec).guest_spec;
        crate::network::guest_spec(&mut spec);
        GuestView {
            bundle: shared_fs::guest_bundle(id),
            rootfs: shared_fs::guest_rootfs(id),
            spec,
        }
    }

    fn host_init_pid(&self, _agent_pid: i32, host_pid: i32) -> i32 {
        // Guest pids mean nothing on the host: the VM supervisor stands for the
        // container.
        host_pid
    }

    fn host_sees_processes(&self) -> bool {
        false
    }

    fn connect(&self, rec: &Record) -> Result<Client<UnixStream>> {
        let s = hybrid_vsock::connect(&rec.socket, AGENT_VSOCK_PORT).map_err(|e| {
            Error::Sandbox(format!(
                "container \"{}\": cannot reach its VM's agent through {}: {e}",
                rec.id,
                rec.socket.display()
            ))
        })?;
        Client::handshake(s).map_err(Error::agent(&rec.id))
    }

    fn destroy(&self, rec: &Record, dir: &Path) -> Result<()> {
        if let Ok(sandbox) = std::fs::read_to_string(dir.join(pod::POD_SANDBOX_FILE)) {
            return leave_pod(rec, dir, &sandbox);
        }
        // Mounts and device backends died with the supervisor; the hypervisor dies
        // with it too (PDEATHSIG), unless it was started in the instant the
        // supervisor was killed: check.
        let layout = Layout::new(dir);
        if let Ok(s) = std::fs::read_to_string(&layout.vmm_pid) {
            let mut it = s.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
            let (pid, start) = (it.next().unwrap_or(0) as i32, it.next().unwrap_or(0));
            if pid > 0 && process_alive(pid, start) {
                // SAFETY: plain syscall; pid and start time were checked just above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let deadline = Instant::now() + Duration::from_secs(5);
                while process_alive(pid, start) && Instant::now() < deadline {
                    sleep(Duration::from_millis(5));
                }
            }
        }
        host_cgroup::remove(&layout.host_cgroups);
        // Taps a killed supervisor could not remove.
        let spec: Option<oci_spec::runtime::Spec> =
            crate::state::read_json(&dir.join(crate::state::SPEC)).ok();
        if let Some(netns) = spec.as_ref().and_then(crate::network::netns_path) {
            crate::network::detach_vm(&netns, &rec.id)
                .map_err(|e| Error::Sandbox(format!("container \"{}\": {e}", rec.id)))?;
        }
        Ok(())
    }
}

/// `hull <globals> <subcommand...> [--console-socket P] <id>`: the host process
/// whose pid the caller's `--pid-file` gets.
fn host_process(ctx: &LaunchContext, subcommand: &[&str]) -> Result<Command> {
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("hull")
        .args(ctx.globals.reexec_args())
        .args(subcommand);
    if let Some(p) = ctx.console_socket {
        cmd.arg("--console-socket").arg(absolute(p)?);
    }
    cmd.arg(ctx.id);
    if !ctx.inherit_stdio {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    }
    Ok(cmd)
}

/// Launches a pod member in its sandbox's VM: binds its files into the shared
/// directory and starts its member supervisor.
fn join(ctx: &LaunchContext, sandbox: &str) -> Result<Launched> {
    let root = &ctx.globals.root;
    let srec = pod::running_sandbox(&ctx.globals.store(), sandbox, ctx.id)?;
    crate::state::write_atomic(&ctx.dir.join(pod::POD_SANDBOX_FILE), sandbox.as_bytes())?;
    pod::share(root, sandbox, ctx.id, false)?;
    let child = host_process(ctx, &["__vm-member", "--pod-sandbox", sandbox])?
        .spawn()
        .map_err(Error::io("starting the pod member supervisor"))?;
    let start_time = process_start_time(child.id() as i32).unwrap_or(0);
    let s = hybrid_vsock::connect(&srec.socket, AGENT_VSOCK_PORT).map_err(|e| {
        Error::Sandbox(format!(
            "container \"{}\": cannot reach pod sandbox \"{sandbox}\"'s agent: {e}",
            ctx.id
        ))
    })?;
    let client = Client::handshake(s).map_err(Error::agent(ctx.id))?;
    Ok(Launched {
        child,
        start_time,
        socket: srec.socket,
        client,
    })
}

/// Removes a pod member from its sandbox's VM (the agent's record and cgroup, the
/// binds); nothing is left to do once the sandbox itself is gone.
fn leave_pod(rec: &Record, dir: &Path, sandbox: &str) -> Result<()> {
    let Some(root) = dir.parent() else {
        return Ok(());
    };
    let store = crate::state::Store::new(root);
    let Ok(srec) = pod::running_sandbox(&store, sandbox, &rec.id) else {
        return Ok(());
    };
    if let Ok(s) = hybrid_vsock::connect(&srec.socket, AGENT_VSOCK_PORT) {
        if let Ok(mut c) = Client::handshake(s) {
            let _ = c.call(&hull_protocol::Request::Delete {
                id: rec.id.clone(),
                force: true,
            });
        }
    }
    pod::share(root, sandbox, &rec.id, true)
}

fn absolute(p: &Path) -> Result<std::path::PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    Ok(std::env::current_dir()
        .map_err(Error::io("getting the current directory"))?
        .join(p))
}
