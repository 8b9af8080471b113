//! What the host shares with a VM over virtio-fs: one directory per sandbox,
//! `<state dir>/shared`, holding `<id>/rootfs` (a bind of the bundle's rootfs) and
//! `<id>/mounts/<n>` (binds of the spec's bind-mount sources). The binds live in the
//! VM supervisor's own mount namespace, so they vanish with it: a crash cannot leak
//! a mount, and the host's view of the state dir stays a few empty directories.

use std::fs;
use std::path::{Path, PathBuf};

use hull_protocol::guest::GUEST_SHARED_DIR;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use oci_spec::runtime::Spec;

use crate::error::{Error, Result};

/// The virtio-fs tag of the shared directory.
pub const SHARE_TAG: &str = "hullshared";

/// Host sources that are not files to share: the guest has its own.
const GUEST_OWN: [&str; 3] = ["/proc", "/sys", "/dev"];

/// The shared directory of a sandbox whose state lives in `state_dir`.
pub fn host_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("shared")
}

/// One host path bound into the shared directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    /// Relative to the shared directory.
    pub target: PathBuf,
    pub readonly: bool,
}

/// The binds a container needs and its spec as the guest must see it.
#[derive(Debug, Clone)]
pub struct Plan {
    pub binds: Vec<Bind>,
    pub guest_spec: Spec,
}

/// The container's rootfs inside the guest.
pub fn guest_rootfs(id: &str) -> PathBuf {
    Path::new(GUEST_SHARED_DIR).join(id).join("rootfs")
}

/// The container's bundle directory inside the guest.
pub fn guest_bundle(id: &str) -> PathBuf {
    Path::new(GUEST_SHARED_DIR).join(id)
}

/// Works out the binds for container `id`; deterministic, so the runtime (which sends
/// the spec) and the supervisor (which makes the binds) agree.
pub fn plan(id: &str, rootfs: &Path, spec: &Spec) -> Plan {
    let mut binds = vec![Bind {
        source: rootfs.to_path_buf(),
        target: Path::new(id).join("rootfs"),
        readonly: false,
    }];
    let mut guest_spec = spec.clone();
    if let Some(mounts) = spec.mounts() {
        let mut rewritten = mounts.clone();
        for (n, m) in rewritten.iter_mut().enumerate() {
            let opts = m.options().clone().unwrap_or_default();
            let is_bind = m.typ().as_deref() == Some("bind")
                || opts.iter().any(|o| o == "bind" || o == "rbind");
            let Some(source) = m.source().clone() else {
                continue;
            };
            if !is_bind || !source.is_absolute() || GUEST_OWN.iter().any(|p| source.starts_with(p))
            {
                continue;
            }
            let target = Path::new(id).join("mounts").join(n.to_string());
            m.set_source(Some(Path::new(GUEST_SHARED_DIR).join(&target)));
            binds.push(Bind {
                source,
                target,
                readonly: opts.iter().any(|o| o == "ro"),
            });
        }
        guest_spec.set_mounts(Some(rewritten));
    }
    Plan { binds, guest_spec }
}

/// Moves this (still single-threaded) process into a mount namespace of its own whose
/// mounts do not propagate back to the host.
pub fn enter_private_mount_namespace() -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| Error::Sandbox(format!("unshare(CLONE_NEWNS): {e}")))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| Error::Sandbox(format!("making / a slave mount: {e}")))
}

/// Makes `binds` under `shared` (in this process's mount namespace).
pub fn apply(shared: &Path, binds: &[Bind]) -> Result<()> {
    for b in binds {
        let target = shared.join(&b.target);
        let meta = fs::metadata(&b.source)
            .map_err(|e| Error::Bundle(format!("bind mount source {}: {e}", b.source.display())))?;
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .map_err(Error::io(format!("creating {}", parent.display())))?;
        }
        if meta.is_dir() {
            fs::create_dir_all(&target)
        } else {
            fs::File::create(&target).map(|_| ())
        }
        .map_err(Error::io(format!("creating {}", target.display())))?;
        mount(
            Some(&b.source),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| {
            Error::Sandbox(format!(
                "binding {} to {}: {e}",
                b.source.display(),
                target.display()
            ))
        })?;
        if b.readonly {
            mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(|e| Error::Sandbox(format!("making {} read-only: {e}", target.display())))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_are_planned_and_the_spec_rewritten() {
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"mounts":[
                {"destination":"/proc","type":"proc","source":"proc"},
                {"destination":"/data","type":"bind","source":"/srv/data","options":["rbind","ro"]},
                {"destination":"/dev/fuse","type":"bind","source":"/dev/fuse","options":["bind"]},
                {"destination":"/etc/hosts","source":"/etc/hosts","options":["bind"]}
            ]}"#,
        )
        .unwrap();
        let p = plan("c1", Path::new("/b/rootfs"), &spec);
        assert_eq!(
            p.binds,
            vec![
                Bind {
                    source: "/b/rootfs".into(),
                    target: "c1/rootfs".into(),
                    readonly: false
                },
                Bind {
                    source: "/srv/data".into(),
                    target: "c1/mounts/1".into(),
                    readonly: true
                },
                Bind {
                    source: "/etc/hosts".into(),
                    target: "c1/mounts/3".into(),
                    readonly: false
                },
            ]
        );
        let m = p.guest_spec.mounts().clone().unwrap();
        assert_eq!(m[0].source().as_deref(), Some(Path::new("proc")));
        assert_eq!(
            m[1].source().as_deref(),
            Some(Path::new("/run/hull/shared/c1/mounts/1"))
        );
        assert_eq!(m[2].source().as_deref(), Some(Path::new("/dev/fuse")));
        assert_eq!(
            m[3].source().as_deref(),
            Some(Path::new("/run/hull/shared/c1/mounts/3"))
        );
        assert_eq!(guest_rootfs("c1"), Path::new("/run/hull/shared/c1/rootfs"));
    }
}
