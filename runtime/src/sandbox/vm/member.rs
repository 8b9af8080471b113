//! `hull __vm-member`: the host process of a container that joined its pod's VM (see
//! [`super::pod`]). The pid `--pid-file` gets: it relays the container's stdio and
//! exits with its exit status; the VM belongs to the pod's sandbox container.

use std::path::PathBuf;
use std::time::Duration;

use hull_protocol::ExitStatus;

use super::relay;
use crate::cli::GlobalOpts;
use crate::console_bridge::ConsoleBridge;
use crate::error::Result;
use crate::state::Store;
use crate::supervisor;

#[derive(clap::Args, Debug, Clone)]
pub struct VmMember {
    /// The pod's sandbox container, whose VM runs this container
    #[arg(long)]
    pub pod_sandbox: String,
    /// runc's console socket: the container's pty master goes there
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    pub container_id: String,
}

pub fn supervise(g: &GlobalOpts, args: &VmMember) -> i32 {
    let _ = nix::unistd::setsid();
    let signals = relay::block_signals();
    let store = g.store();
    let id = args.container_id.as_str();
    match run(&store, args, signals) {
        Ok(status) => supervisor::finish(&store, id, status),
        Err(e) => {
            supervisor::record_failure(&store, id, &e.to_string());
            // The VM went away under a created container: it was killed with it.
            let killed = ExitStatus::Signal(libc::SIGKILL);
            if store.read_record(id).is_ok_and(|r| r.created_ok) {
                let _ = store.write_exit(id, killed);
                return killed.as_exit_code();
            }
            255
        }
    }
}

fn run(store: &Store, args: &VmMember, signals: nix::sys::signal::SigSet) -> Result<ExitStatus> {
    let sandbox = store.read_record(&args.pod_sandbox)?;
    let console = match &args.console_socket {
        Some(p) => Some(ConsoleBridge::send_master(p)?),
        None => None,
    };
    let mut agent = relay::connect_agent(&sandbox.socket, Duration::from_secs(30))?;
    relay::until_exit(
        &mut agent,
        &sandbox.socket,
        &args.container_id,
        console,
        signals,
    )
}
