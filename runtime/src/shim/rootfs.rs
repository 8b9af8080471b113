//! Mounting the rootfs containerd's snapshotter describes (overlay, bind, ...) at
//! `<bundle>/rootfs`, and unmounting it on delete.
//!
//! Done in-process: the containerd-shim crate's `mount_rootfs` forks and waits
//! through the crate's own reaper, which this shim replaces (see `reaper`).

use std::path::{Path, PathBuf};

use containerd_shim_protos::types::mount::Mount;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

pub fn rootfs_of(bundle: &Path) -> PathBuf {
    bundle.join("rootfs")
}

/// Splits mount(8)-style options into flags and the filesystem's data string.
pub fn parse_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        let (set, clear) = match o.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "defaults" | "async" | "atime" => (MsFlags::empty(), MsFlags::empty()),
            other => {
                data.push(other.to_string());
                continue;
            }
        };
        flags.insert(set);
        flags.remove(clear);
    }
    (flags, data.join(","))
}

/// Mounts each of `mounts` at `<bundle>/rootfs`; on failure nothing stays mounted.
pub fn mount_rootfs(mounts: &[Mount], bundle: &Path) -> Result<(), String> {
    let target = rootfs_of(bundle);
    for m in mounts {
        let (flags, data) = parse_options(&m.options);
        let fstype =
            (!m.type_.is_empty() && !flags.contains(MsFlags::MS_BIND)).then_some(m.type_.as_str());
        let res = mount(
            Some(m.source.as_str()),
            &target,
            fstype,
            // A bind mount ignores MS_RDONLY; the remount below applies it.
            flags,
            (!data.is_empty()).then_some(data.as_str()),
        )
        .and_then(|()| {
            // A bind mount takes ro only on a remount.
            if flags.contains(MsFlags::MS_BIND) && flags.contains(MsFlags::MS_RDONLY) {
                mount(
                    None::<&str>,
                    &target,
                    None::<&str>,
                    MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
                    None::<&str>,
                )
            } else {
                Ok(())
            }
        });
        if let Err(e) = res {
            unmount_rootfs(bundle);
            return Err(format!(
                "mounting the rootfs ({} {} at {}): {e}",
                m.type_,
                m.source,
                target.display()
            ));
        }
    }
    Ok(())
}

/// Unmounts everything stacked at `<bundle>/rootfs`.
pub fn unmount_rootfs(bundle: &Path) {
    let target = rootfs_of(bundle);
    // Each call takes one layer off; EINVAL: nothing (more) is mounted there.
    for _ in 0..16 {
        if let Err(e) = umount2(&target, MntFlags::MNT_DETACH) {
            if e != nix::errno::Errno::EINVAL && e != nix::errno::Errno::ENOENT {
                log::warn!("unmounting {}: {e}", target.display());
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let opts: Vec<String> = ["ro", "rbind", "nosuid", "lowerdir=/a", "upperdir=/b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (flags, data) = parse_options(&opts);
        assert!(flags.contains(MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REC));
        assert!(flags.contains(MsFlags::MS_NOSUID));
        assert_eq!(data, "lowerdir=/a,upperdir=/b");
        let (flags, _) = parse_options(&["ro".to_string(), "rw".to_string()]);
        assert!(!flags.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn a_bind_rootfs_is_mounted_and_unmounted() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipping: mounting needs root");
            return;
        }
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("marker"), "x").unwrap();
        let bundle = tempfile::tempdir().unwrap();
        std::fs::create_dir(rootfs_of(bundle.path())).unwrap();
        let m = Mount {
            type_: "bind".into(),
            source: src.path().display().to_string(),
            options: vec!["rbind".into(), "ro".into()],
            ..Default::default()
        };
        mount_rootfs(&[m], bundle.path()).unwrap();
        assert!(rootfs_of(bundle.path()).join("marker").exists());
        assert!(std::fs::write(rootfs_of(bundle.path()).join("new"), "y").is_err());
        unmount_rootfs(bundle.path());
        assert!(!rootfs_of(bundle.path()).join("marker").exists());
        let bad = Mount {
            type_: "nosuchfs".into(),
            source: "none".into(),
            ..Default::default()
        };
        let e = mount_rootfs(&[bad], bundle.path()).unwrap_err();
        assert!(e.contains("nosuchfs"), "{e}");
    }
}
