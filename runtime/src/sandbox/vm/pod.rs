//! Pods: the containers of one Kubernetes pod share the VM of its sandbox container,
//! as in Kata. CRI marks them with annotations; a container that names a sandbox
//! joins that sandbox's VM instead of booting one: its files are bound into the
//! sandbox's shared directory (inside the sandbox supervisor's mount namespace, by
//! `hull __vm-share`), and its own host process is a member supervisor
//! ([`super::member`]) that relays its stdio and exits with its status.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::mount::{umount2, MntFlags};
use nix::sched::{setns, CloneFlags};
use oci_spec::runtime::Spec;

use super::layout::Layout;
use super::shared_fs;
use crate::cli::GlobalOpts;
use crate::error::{Error, Result};
use crate::sandbox::SandboxKind;
use crate::state::{self, process_alive, Record, Store};

/// CRI: `sandbox` for the pod's own (pause) container, `container` for the others.
pub const CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";
/// CRI: the id of the pod's sandbox container.
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";
/// In a member's state directory: the id of the sandbox whose VM it runs in.
pub const POD_SANDBOX_FILE: &str = "pod-sandbox";

/// The sandbox container whose VM this container joins, if it is a pod member.
pub fn sandbox_to_join(spec: &Spec) -> Option<String> {
    let a = spec.annotations().as_ref()?;
    if a.get(CONTAINER_TYPE_ANNOTATION).map(String::as_str) != Some("container") {
        return None;
    }
    a.get(SANDBOX_ID_ANNOTATION)
        .filter(|s| !s.is_empty())
        .cloned()
}

/// The running VM sandbox `sandbox`, checked for container `id` to join.
pub fn running_sandbox(store: &Store, sandbox: &str, id: &str) -> Result<Record> {
    let rec = store.read_record(sandbox).map_err(|_| {
        Error::Sandbox(format!(
            "container \"{id}\": its pod sandbox \"{sandbox}\" (annotation \
             {SANDBOX_ID_ANNOTATION}) does not exist under this --root"
        ))
    })?;
    if rec.sandbox != SandboxKind::Vm {
        return Err(Error::Sandbox(format!(
            "container \"{id}\": its pod sandbox \"{sandbox}\" does not run in a VM"
        )));
    }
    if !rec.created_ok || !process_alive(rec.host_pid, rec.host_start) {
        return Err(Error::Sandbox(format!(
            "container \"{id}\": its pod sandbox \"{sandbox}\" is not running"
        )));
    }
    Ok(rec)
}

/// Binds (or, with `remove`, unbinds) member `id`'s files in `sandbox`'s shared
/// directory, through a fresh single-threaded hull process that enters the sandbox
/// supervisor's mount namespace.
pub fn share(root: &Path, sandbox: &str, id: &str, remove: bool) -> Result<()> {
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg("--root")
        .arg(root)
        .args(["__vm-share", sandbox, id]);
    if remove {
        cmd.arg("--remove");
    }
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .map_err(Error::io("starting hull __vm-share"))?;
    if !out.status.success() {
        return Err(Error::Sandbox(format!(
            "container \"{id}\": sharing its files into pod sandbox \"{sandbox}\": {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct VmShare {
    pub sandbox_id: String,
    pub container_id: String,
    /// Unbind instead
    #[arg(long)]
    pub remove: bool,
}

/// `hull __vm-share`: the body of [`share`]. Must run single-threaded (setns).
pub fn vm_share(g: &GlobalOpts, args: &VmShare) -> Result<()> {
    let store = g.store();
    let srec = store.read_record(&args.sandbox_id)?;
    let shared = Layout::new(&store.dir(&args.sandbox_id)?).shared;
    let dir = store.dir(&args.container_id)?;
    let rec = store.read_record(&args.container_id)?;
    let spec: Spec = state::read_json(&dir.join(state::SPEC))?;
    let plan = shared_fs::plan(&args.container_id, &rec.rootfs, &spec);
    if !process_alive(srec.host_pid, srec.host_start) {
        // Its mount namespace, and every bind in it, is gone already.
        return if args.remove {
            Ok(())
        } else {
            Err(Error::Sandbox(format!(
                "pod sandbox \"{}\" is not running",
                args.sandbox_id
            )))
        };
    }
    let ns = std::fs::File::open(format!("/proc/{}/ns/mnt", srec.host_pid))
        .map_err(Error::io("opening the sandbox's mount namespace"))?;
    setns(ns, CloneFlags::CLONE_NEWNS)
        .map_err(|e| Error::Sandbox(format!("entering the sandbox's mount namespace: {e}")))?;
    if args.remove {
        unbind(&shared, &args.container_id, &plan.binds);
        Ok(())
    } else {
        shared_fs::apply(&shared, &plan.binds)
    }
}

/// Unmounts and removes the mount points, never anything below them: a bind that
/// cannot be unmounted keeps its directory (and the files behind it) untouched.
fn unbind(shared: &Path, id: &str, binds: &[shared_fs::Bind]) {
    for b in binds.iter().rev() {
        let target = shared.join(&b.target);
        if let Err(e) = umount2(&target, MntFlags::MNT_DETACH) {
            log::warn!("unmounting {}: {e}", target.display());
            continue;
        }
        let _ = std::fs::remove_dir(&target).or_else(|_| std::fs::remove_file(&target));
    }
    let top: PathBuf = shared.join(id);
    let _ = std::fs::remove_dir(top.join("mounts"));
    let _ = std::fs::remove_dir(&top);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pod_members_join() {
        let spec = |a: &str| -> Spec {
            serde_json::from_str(&format!(
                r#"{{"ociVersion":"1.0.2","annotations":{{{a}}}}}"#
            ))
            .unwrap()
        };
        assert_eq!(
            sandbox_to_join(&spec(
                r#""io.kubernetes.cri.container-type":"container","io.kubernetes.cri.sandbox-id":"pod1""#
            )),
            Some("pod1".into())
        );
        assert_eq!(
            sandbox_to_join(&spec(
                r#""io.kubernetes.cri.container-type":"sandbox","io.kubernetes.cri.sandbox-id":"pod1""#
            )),
            None
        );
        assert_eq!(sandbox_to_join(&spec("")), None);
    }
}
