//! `hull create`: validate the bundle, record the container, launch its sandbox and
//! have the agent create it (held before exec until `start`).

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::SystemTime;

use hull_protocol::{CreateContainer, Request, Response};

use super::{unexpected, GlobalOpts};
use crate::bundle::Bundle;
use crate::error::{Error, Result};
use crate::logging::rfc3339;
use crate::sandbox::{self, LaunchContext, Sandbox, SandboxKind};
use crate::state::{self, process_start_time, validate_id, Record, Store};

#[derive(clap::Args, Debug, Clone)]
pub struct Create {
    /// Path to the root of the bundle directory
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Path to an AF_UNIX socket which will receive the pty master
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Specify the file to write the process id to
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Do not use pivot root to jail the process inside the rootfs
    #[arg(long)]
    pub no_pivot: bool,
    /// Do not create a new session keyring for the container
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass N additional file descriptors to the container (stdio + $LISTEN_FDS + N)
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    pub container_id: String,
}

/// A created container whose host process is this process's child.
pub struct Created {
    pub child: Child,
}

pub fn create(g: &GlobalOpts, args: &Create) -> Result<Created> {
    let id = args.container_id.as_str();
    validate_id(id)?;
    let bundle = Bundle::load(&args.bundle)?;
    let kind = g
        .sandbox
        .or(bundle.sandbox_annotation()?)
        .unwrap_or(SandboxKind::Vm);
    let terminal = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    match (terminal, &args.console_socket) {
        (true, None) => {
            return Err(Error::Usage(
                "cannot allocate a tty for a detached container without --console-socket \
                 (config.json: process.terminal is true)"
                    .into(),
            ))
        }
        (false, Some(_)) => {
            return Err(Error::Usage(
                "--console-socket needs a terminal (config.json: process.terminal is false)".into(),
            ))
        }
        _ => {}
    }
    if kind == SandboxKind::Vm && args.preserve_fds > 0 {
        return Err(Error::Usage(
            "--preserve-fds is not supported by the VM sandbox: host file descriptors \
             cannot cross into the guest (use --sandbox os)"
                .into(),
        ));
    }
    crate::network::check_netns(&bundle.spec)
        .map_err(|e| Error::Bundle(format!("{}: {e}", bundle.dir.join("config.json").display())))?;
    let sandbox = sandbox::for_kind(kind);
    sandbox.check_available(g, &bundle)?;
    if g.systemd_cgroup {
        log::warn!("--systemd-cgroup: there is no systemd here; using cgroupfs");
    }
    let store = g.store();
    let dir = store.create_dir(id)?;
    let mut guard = Guard {
        store: &store,
        sandbox: sandbox.as_ref(),
        dir: &dir,
        id,
        armed: true,
        rec: None,
        child: None,
    };

    state::write_json_atomic(&dir.join(state::SPEC), &bundle.spec)?;
    let mut rec = Record {
        id: id.to_string(),
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        sandbox: kind,
        created: rfc3339(SystemTime::now()),
        owner: owner(),
        annotations: bundle.spec.annotations().clone().unwrap_or_default(),
        host_pid: 0,
        host_start: 0,
        socket: PathBuf::new(),
        init_pid: 0,
        init_start: 0,
        created_ok: false,
    };
    store.write_record(&rec)?;
    guard.rec = Some(rec.clone());

    let stdio = sandbox.create_stdio(args.console_socket.as_deref());
    let launched = sandbox.launch(&LaunchContext {
        id,
        dir: &dir,
        globals: g,
        bundle: &bundle,
        console_socket: args.console_socket.as_deref(),
        inherit_stdio: args.console_socket.is_none(),
    })?;
    let mut client = launched.client;
    rec.host_pid = launched.child.id() as i32;
    rec.host_start = launched.start_time;
    rec.socket = launched.socket;
    guard.child = Some(launched.child);
    guard.rec = Some(rec.clone());
    store.write_record(&rec)?;

    let view = sandbox.guest_view(id, &bundle);
    let req = Request::Create(Box::new(CreateContainer {
        id: id.to_string(),
        bundle: view.bundle.to_string_lossy().into_owned(),
        rootfs: Some(view.rootfs.to_string_lossy().into_owned()),
        spec: view.spec,
        stdio,
        no_pivot: args.no_pivot,
        preserve_fds: args.preserve_fds,
    }));
    let resp = match client.call(&req) {
        Ok(r) => r,
        Err(e) => {
            let mut msg = format!("container \"{id}\": create: {e}");
            // Say why when the host process went away under us.
            if let Some(child) = guard.child.as_mut() {
                std::thread::sleep(std::time::Duration::from_millis(20));
                if let Ok(Some(st)) = child.try_wait() {
                    msg.push_str(&format!(" (its host process exited: {st}"));
                    if let Ok(why) =
                        std::fs::read_to_string(dir.join(crate::supervisor::ERROR_FILE))
                    {
                        msg.push_str(&format!(": {why}"));
                    }
                    msg.push(')');
                }
            }
            return Err(Error::Sandbox(msg));
        }
    };
    let agent_pid = match resp {
        Response::Created { pid } => pid,
        other => return Err(unexpected(id, other)),
    };
    drop(client);
    rec.init_pid = sandbox.host_init_pid(agent_pid, rec.host_pid);
    rec.init_start = process_start_time(rec.init_pid).unwrap_or(0);
    rec.created_ok = true;
    store.write_record(&rec)?;
    guard.rec = Some(rec.clone());

    if let Some(pid_file) = &args.pid_file {
        // The host process, not init: it exits with the container's status, and the
        // runc shim waits on this pid.
        write_pid_file(pid_file, rec.host_pid)?;
    }
    let child = guard.child.take().expect("launched");
    guard.armed = false;
    Ok(Created { child })
}

/// Writes a pid file atomically, without a trailing newline (as runc).
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(Error::io("getting the current directory"))?
            .join(path)
    };
    state::write_atomic(&path, pid.to_string().as_bytes())
}

fn owner() -> String {
    let uid = nix::unistd::geteuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

/// Undoes a create that failed at any step: no host process, state dir, socket, mount
/// or cgroup remains.
struct Guard<'a> {
    store: &'a Store,
    sandbox: &'a dyn Sandbox,
    dir: &'a Path,
    id: &'a str,
    armed: bool,
    rec: Option<Record>,
    child: Option<Child>,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(mut child) = self.child.take() {
            // Still our child, so the pid cannot have been recycled.
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(rec) = &self.rec {
            if let Err(e) = self.sandbox.destroy(rec, self.dir) {
                log::warn!("cleaning up after failed create of {:?}: {e}", self.id);
            }
        }
        if let Err(e) = self.store.remove(self.id) {
            log::warn!("cleaning up after failed create of {:?}: {e}", self.id);
        }
    }
}
