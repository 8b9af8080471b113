//! `hull exec`: run an additional process in a running container.
//!
//! Foreground: the process's stdio is pumped through attached streams and `hull exec`
//! exits with its exit status. `--detach`: a small background `hull` process does the
//! pumping and waiting; its pid goes to `--pid-file` and it exits with the process's
//! status, so a caller (the runc shim) can reap it as the process.

use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use hull_protocol::{ExecProcess, Request, Response, Status, StdioMode, StreamKind};
use oci_spec::runtime::{Capability, Process, Spec};

use super::create::write_pid_file;
use super::{unexpected, Container, GlobalOpts};
use crate::console_bridge::ConsoleBridge;
use crate::error::{Error, Result};
use crate::state::{self, Record};
use crate::stdio;

#[derive(clap::Args, Debug, Clone)]
pub struct Exec {
    /// Path to an AF_UNIX socket which will receive the pty master
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Current working directory in the container
    #[arg(long)]
    pub cwd: Option<String>,
    /// Set environment variables
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// UID (format: <uid>[:<gid>])
    #[arg(short, long)]
    pub user: Option<String>,
    /// Additional gids
    #[arg(short = 'g', long)]
    pub additional_gids: Vec<u32>,
    /// Path to the process.json
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Detach from the container's process
    #[arg(short, long)]
    pub detach: bool,
    /// Specify the file to write the process id to
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Set the asm process label for the process commonly used with selinux
    #[arg(long)]
    pub process_label: Option<String>,
    /// Set the apparmor profile for the process
    #[arg(long)]
    pub apparmor: Option<String>,
    /// Set the no new privileges value for the process
    #[arg(long)]
    pub no_new_privs: bool,
    /// Add a capability to the bounding set for the process
    #[arg(short, long)]
    pub cap: Vec<String>,
    /// Pass N additional file descriptors to the container
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// Allow exec in a paused container
    #[arg(long)]
    pub ignore_paused: bool,
    pub container_id: String,
    /// The command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Returns the exit code `hull exec` exits with.
pub fn exec(g: &GlobalOpts, args: &Exec) -> Result<i32> {
    let store = g.store();
    let c = Container::load(&store, &args.container_id)?;
    match c.status {
        Status::Running => {}
        Status::Paused if args.ignore_paused => {}
        Status::Paused => {
            return Err(Error::InvalidState(format!(
                "cannot exec in container \"{}\": it is paused (use --ignore-paused)",
                c.id()
            )))
        }
        _ => {
            return Err(Error::InvalidState(format!(
                "cannot exec in container \"{}\": it is {}",
                c.id(),
                c.status
            )))
        }
    }
    if args.preserve_fds > 0 {
        return Err(Error::Usage(
            "exec --preserve-fds is not supported: the process is started by the \
             container's agent, not by this command"
                .into(),
        ));
    }
    let spec: Spec = state::read_json(&store.dir(c.id())?.join(state::SPEC))?;
    let process = build_process(&spec, args)?;
    let terminal = process.terminal().unwrap_or(false);
    if args.detach && terminal && args.console_socket.is_none() {
        return Err(Error::Usage(
            "cannot allocate a tty when detached without --console-socket".into(),
        ));
    }
    let stdio = match &args.console_socket {
        Some(p) => c.sandbox.exec_console(p)?,
        None => StdioMode::Streams,
    };
    let streams = stdio == StdioMode::Streams;
    let exec_id = new_exec_id();
    match c.call(&Request::Exec(Box::new(ExecProcess {
        id: c.id().to_string(),
        exec_id: exec_id.clone(),
        process,
        stdio,
    })))? {
        Response::Created { .. } => {}
        other => return Err(unexpected(c.id(), other)),
    }

    if args.detach {
        // A child of ours inherits our stdio, pumps it and exits with the process.
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0("hull")
            .args(g.reexec_args())
            .arg("__exec-attach")
            .arg(c.id())
            .arg(&exec_id);
        if !streams {
            // Only waits: it must not hold the caller's stdio (the runc shim reads
            // this command's output until EOF).
            cmd.arg("--no-streams")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
        } else if terminal {
            cmd.arg("--terminal");
            if let Some(p) = &args.console_socket {
                // The attach process relays a host pty whose master goes there.
                cmd.arg("--console-socket").arg(p);
                cmd.stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null());
            }
        }
        let child = cmd
            .spawn()
            .map_err(Error::io("starting the exec attach process"))?;
        if let Some(pid_file) = &args.pid_file {
            write_pid_file(pid_file, child.id() as i32)?;
        }
        return Ok(0);
    }
    if let Some(pid_file) = &args.pid_file {
        write_pid_file(pid_file, std::process::id() as i32)?;
    }
    let console = args.console_socket.as_deref().filter(|_| streams);
    attach_and_wait(&c.rec, &exec_id, streams, terminal, console)
}

/// Pumps the exec'd process's streams through our stdio (unless it has none to
/// attach), forwards signals, and returns its exit code once it has exited and its
/// output is drained.
/// With `console` (a terminal process in a sandbox whose agent cannot reach the
/// caller's console socket), a host pty stands in for the caller's stdio.
pub fn attach_and_wait(
    rec: &Record,
    exec_id: &str,
    streams: bool,
    terminal: bool,
    console: Option<&Path>,
) -> Result<i32> {
    let sandbox = crate::sandbox::for_kind(rec.sandbox);
    let id = rec.id.clone();
    let bridge = match console {
        Some(p) if streams && terminal => Some(ConsoleBridge::send_master(p)?),
        _ => None,
    };
    let size_of_bridge = match &bridge {
        Some(b) => Some(b.try_clone().map_err(Error::io("cloning the pty"))?),
        None => None,
    };
    {
        let rec = rec.clone();
        let exec_id = exec_id.to_string();
        // Before any other thread starts, so that all of them block these signals.
        stdio::forward_signals(move |sig| {
            let sandbox = crate::sandbox::for_kind(rec.sandbox);
            let req = if sig == libc::SIGWINCH {
                let size = match &size_of_bridge {
                    Some(b) => b.window_size(),
                    None => stdio::window_size(0),
                };
                match size {
                    Some((rows, cols)) if terminal => Request::ResizeTerminal {
                        id: rec.id.clone(),
                        exec_id: Some(exec_id.clone()),
                        rows,
                        cols,
                    },
                    _ => return,
                }
            } else {
                Request::Signal {
                    id: rec.id.clone(),
                    exec_id: Some(exec_id.clone()),
                    signal: sig,
                    all: false,
                }
            };
            if let Ok(mut c) = sandbox.connect(&rec) {
                let _ = c.call(&req);
            }
        });
    }
    let attach = |kind: StreamKind| -> Result<UnixStream> {
        sandbox
            .connect(rec)?
            .into_stream(&Request::AttachStream {
                id: id.clone(),
                exec_id: Some(exec_id.to_string()),
                stream: kind,
            })
            .map_err(Error::agent(&id))
    };
    let mut outputs = Vec::new();
    let mut _raw = None;
    if let (true, Some(bridge)) = (streams && terminal, &bridge) {
        let t = attach(StreamKind::Terminal)?;
        bridge.take_as_controlling_terminal();
        if let Some((rows, cols)) = bridge.window_size() {
            let _ = sandbox.connect(rec)?.call(&Request::ResizeTerminal {
                id: id.clone(),
                exec_id: Some(exec_id.to_string()),
                rows,
                cols,
            });
        }
        outputs.push(
            bridge
                .relay(t)
                .map_err(Error::io("relaying the terminal"))?,
        );
    } else if streams && terminal {
        let t = attach(StreamKind::Terminal)?;
        if stdio::is_tty(0) {
            if let Some((rows, cols)) = stdio::window_size(0) {
                let _ = sandbox.connect(rec)?.call(&Request::ResizeTerminal {
                    id: id.clone(),
                    exec_id: Some(exec_id.to_string()),
                    rows,
                    cols,
                });
            }
            _raw = stdio::RawMode::enter();
        }
        let input = t
            .try_clone()
            .map_err(Error::io("cloning the terminal stream"))?;
        // The pty stays open until the process exits: no half-close on stdin EOF.
        std::thread::spawn(move || {
            let mut input = input;
            let mut stdin = std::io::stdin();
            let _ = std::io::copy(&mut stdin, &mut input);
        });
        outputs.push(stdio::pump_out(t, 1));
    } else if streams {
        let stdin = attach(StreamKind::Stdin)?;
        let stdout = attach(StreamKind::Stdout)?;
        let stderr = attach(StreamKind::Stderr)?;
        stdio::pump_stdin(stdin);
        outputs.push(stdio::pump_out(stdout, 1));
        outputs.push(stdio::pump_out(stderr, 2));
    }
    let status = match sandbox
        .connect(rec)?
        .call(&Request::Wait {
            id: id.clone(),
            exec_id: Some(exec_id.to_string()),
        })
        .map_err(Error::agent(&id))?
    {
        Response::Exited(st) => st,
        other => return Err(unexpected(&id, other)),
    };
    for h in outputs {
        let _ = h.join();
    }
    Ok(status.as_exit_code())
}

fn new_exec_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("exec-{}-{nanos:x}", std::process::id())
}

/// The process to run: `--process`, or the container's own process with the command,
/// environment, cwd, user and terminal from the flags, as runc builds it.
fn build_process(spec: &Spec, args: &Exec) -> Result<Process> {
    if let Some(path) = &args.process {
        let b = std::fs::read(path).map_err(Error::io(format!("reading {}", path.display())))?;
        let p: Process = serde_json::from_slice(&b)
            .map_err(|e| Error::Usage(format!("{}: invalid process JSON: {e}", path.display())))?;
        if p.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(Error::Usage(format!(
                "{}: args: must not be empty",
                path.display()
            )));
        }
        return Ok(p);
    }
    if args.command.is_empty() {
        return Err(Error::Usage(
            "exec: no command given (hull exec [options] <container-id> <command> [args...])"
                .into(),
        ));
    }
    let mut p = spec.process().clone().unwrap_or_default();
    p.set_args(Some(args.command.clone()));
    p.set_command_line(None);
    let mut env = p.env().clone().unwrap_or_default();
    for kv in &args.env {
        let key = kv.split('=').next().unwrap_or(kv);
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    p.set_env(Some(env));
    if let Some(cwd) = &args.cwd {
        p.set_cwd(cwd.into());
    }
    p.set_terminal(Some(args.tty || args.console_socket.is_some()));
    if let Some(u) = &args.user {
        let (uid, gid) = match u.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (u.as_str(), None),
        };
        let num = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| Error::Usage(format!("--user {u:?}: expected <uid>[:<gid>] numbers")))
        };
        let mut user = p.user().clone();
        user.set_uid(num(uid)?);
        if let Some(g) = gid {
            user.set_gid(num(g)?);
        }
        p.set_user(user);
    }
    if !args.additional_gids.is_empty() {
        let mut user = p.user().clone();
        user.set_additional_gids(Some(args.additional_gids.clone()));
        p.set_user(user);
    }
    if args.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if let Some(label) = &args.process_label {
        p.set_selinux_label(Some(label.clone()));
    }
    if let Some(profile) = &args.apparmor {
        p.set_apparmor_profile(Some(profile.clone()));
    }
    if !args.cap.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for name in &args.cap {
            let full = name.to_ascii_uppercase();
            let full = if full.starts_with("CAP_") {
                full
            } else {
                format!("CAP_{full}")
            };
            let cap: Capability = serde_json::from_value(serde_json::Value::String(full))
                .map_err(|_| Error::Usage(format!("unknown capability {name:?}")))?;
            let add = |s: &Option<std::collections::HashSet<Capability>>| {
                let mut s = s.clone().unwrap_or_default();
                s.insert(cap);
                Some(s)
            };
            caps.set_bounding(add(caps.bounding()));
            caps.set_effective(add(caps.effective()));
            caps.set_permitted(add(caps.permitted()));
        }
        p.set_capabilities(Some(caps));
    }
    Ok(p)
}

#[derive(clap::Args, Debug, Clone)]
pub struct ExecAttach {
    pub container_id: String,
    pub exec_id: String,
    /// The process has a pty stream instead of stdin/stdout/stderr
    #[arg(long)]
    pub terminal: bool,
    /// The process's stdio went elsewhere (console socket): only wait
    #[arg(long)]
    pub no_streams: bool,
    /// Relay the terminal through a host pty whose master goes to this socket
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
}

/// The background half of `exec --detach`.
pub fn exec_attach(g: &GlobalOpts, args: &ExecAttach) -> Result<i32> {
    let rec = g.store().read_record(&args.container_id)?;
    if args.console_socket.is_some() {
        // A session of our own, so that the relayed pty can be its controlling
        // terminal and window-size changes reach us.
        let _ = nix::unistd::setsid();
    }
    attach_and_wait(
        &rec,
        &args.exec_id,
        !args.no_streams,
        args.terminal,
        args.console_socket.as_deref(),
    )
}
