//! Guest assets for the tests: the installed kernel and initramfs (with a clear message
//! when they are missing), throwaway busybox images, and hardware-KVM detection.

use hull_guest_image::{cpio, find_static_busybox};
use hull_vmm::assets;
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

/// The installed guest kernel; panics, saying how to build it, when it is missing.
pub fn require_kernel() -> PathBuf {
    let path = assets::kernel_path();
    assert!(
        path.is_file(),
        "guest kernel {} is missing: build it with `make guest-kernel` \
         (guest-kernel-config/build.sh; `make test` does it first)",
        path.display()
    );
    path
}

/// The installed guest initramfs; panics, saying how to build it, when it is missing.
pub fn require_initramfs() -> PathBuf {
    let path = assets::initramfs_path();
    assert!(
        path.is_file(),
        "guest initramfs {} is missing: build it with `make guest-image` \
         (scripts/build-guest-image.sh; `make test` does it first)",
        path.display()
    );
    path
}

/// Writes an initramfs whose `/init` is `script` run by a static busybox (`/bin/sh`),
/// with the usual mount points and `/dev/console`. For kernel tests that must not
/// depend on the agent.
pub fn busybox_initramfs(script: &str, out: &Path) -> io::Result<()> {
    let busybox = find_static_busybox().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "no static busybox (apt-get install busybox-static, or set HULL_BUSYBOX)",
        )
    })?;
    let to_io = |e: cpio::Error| io::Error::other(e.to_string());
    let mut w = cpio::Writer::new(BufWriter::new(File::create(out)?));
    for dir in ["bin", "dev", "proc", "sys", "tmp"] {
        w.dir(dir, 0o755).map_err(to_io)?;
    }
    w.char_device("dev/console", 0o600, 5, 1).map_err(to_io)?;
    let mut bb = File::open(&busybox)?;
    let len = bb.metadata()?.len();
    w.file_from("bin/busybox", 0o755, len, &mut bb)
        .map_err(to_io)?;
    w.symlink("bin/sh", "busybox").map_err(to_io)?;
    let init = format!("#!/bin/busybox sh\n{script}");
    w.file("init", 0o755, init.as_bytes()).map_err(to_io)?;
    w.finish().map_err(to_io)?;
    Ok(())
}

/// `Ok` where `/dev/kvm` is hardware virtualization (kvm_intel / kvm_amd) that can
/// boot a Linux guest; otherwise the reason it cannot, for a printed skip.
pub fn hardware_kvm() -> Result<(), String> {
    let module = |m: &str| Path::new("/sys/module").join(m).exists();
    if !Path::new("/dev/kvm").exists() {
        return Err("no /dev/kvm".into());
    }
    if module("kvm_pvm") {
        return Err("/dev/kvm is PVM (kvm_pvm): it cannot boot a Linux guest".into());
    }
    if !module("kvm_intel") && !module("kvm_amd") {
        return Err("neither kvm_intel nor kvm_amd is loaded".into());
    }
    Ok(())
}

/// The hull-vmm binary of this workspace's debug build (`cargo build -p hull-vmm`).
pub fn hull_vmm_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug").join("hull-vmm")
}
