//! The shim binary's commands as containerd runs them: `start` (launch or find the
//! shim process serving this container's group, print its address), `delete`
//! (clean up after a shim that is gone), and serving the Task service.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::util::write_address;
use containerd_shim::{spawn, Config, DeleteResponse, ExitSignal, Flags, StartOpts};

use super::container::{unmount_rootfs, ShimState, SHIM_STATE_FILE};
use super::events::Events;
use super::hull_command::{find_hull_binary, CommandIo, Hull};
use super::pod;
use super::service::{default_root, Service};

/// containerd's name for this runtime: `--runtime io.containerd.hull.v2`.
pub const RUNTIME_ID: &str = "io.containerd.hull.v2";

pub struct HullShim {
    namespace: String,
    id: String,
    bundle: PathBuf,
    exit: Arc<ExitSignal>,
}

/// The shim's entry point (`main` of containerd-shim-hull-v2).
pub fn run() {
    let config = Config {
        // Our own reaper takes every child (see `reaper`); the crate's would race it.
        no_reaper: true,
        ..Default::default()
    };
    containerd_shim::run::<HullShim>(RUNTIME_ID, Some(config));
}

impl containerd_shim::Shim for HullShim {
    type T = Service;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        let bundle = if args.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&args.bundle)
        };
        HullShim {
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            bundle,
            exit: Arc::new(ExitSignal::default()),
        }
    }

    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let annotations =
            pod::read_annotations(&self.bundle).map_err(containerd_shim::Error::InvalidArgument)?;
        let group = pod::shim_group(&opts.id, &annotations);
        // A group whose shim already runs gets that shim's address back: the new
        // process finds the socket taken and exits.
        let (_pid, address) = spawn(opts, &group, Vec::new())?;
        write_address(&address)?;
        Ok(address)
    }

    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        cleanup_after_dead_shim(&self.namespace, &self.id, &self.bundle);
        Ok(DeleteResponse {
            // What runc.v2 reports: killed.
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: Some(Timestamp::now()).into(),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Service {
        let events = Events::start(publisher, self.namespace.clone());
        Service::new(&self.namespace, events, self.exit.clone())
    }
}

/// `-bundle <b> delete`: the container's shim is gone; force-delete what hull still
/// has of it and unmount its rootfs.
fn cleanup_after_dead_shim(namespace: &str, id: &str, bundle: &Path) {
    let state: Option<ShimState> = std::fs::read(bundle.join(SHIM_STATE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let hull = match state {
        Some(s) => Hull {
            binary: s.binary,
            root: s.root,
            sandbox: None,
        },
        None => Hull {
            binary: find_hull_binary(),
            root: default_root(namespace),
            sandbox: None,
        },
    };
    if let Err(e) = hull.run(bundle, &["delete", "--force", id], CommandIo::default()) {
        log::warn!("cleaning up {id:?}: {e}");
    }
    unmount_rootfs(bundle);
    let _ = std::fs::remove_file(bundle.join(SHIM_STATE_FILE));
}
