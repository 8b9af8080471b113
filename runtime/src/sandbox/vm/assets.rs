//! The guest kernel and initramfs a VM sandbox boots, from `${HULL_ASSETS:-/var/lib/hull}`.
//! A missing initramfs is built on first use from the static agent installed beside it.

use std::path::{Path, PathBuf};

use hull_vmm::assets;

use crate::error::{Error, Result};

/// Environment variable naming a static hull-agent to pack on first use.
pub const AGENT_ENV: &str = "HULL_AGENT";
/// The static agent `make guest-image` installs next to the image.
pub const AGENT_FILE: &str = "hull-agent";

#[derive(Debug, Clone)]
pub struct GuestAssets {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

/// Finds the kernel and the initramfs, building the initramfs when it is missing and
/// a static agent is at hand; the error names the missing file and how to build it.
pub fn locate() -> Result<GuestAssets> {
    let kernel = assets::kernel_path();
    if !kernel.is_file() {
        return Err(missing("guest kernel", &kernel));
    }
    let initramfs = assets::initramfs_path();
    if !initramfs.is_file() {
        let Some(agent) = static_agent() else {
            return Err(missing("guest image", &initramfs));
        };
        log::info!(
            "building the guest image {} from {} (first use)",
            initramfs.display(),
            agent.display()
        );
        hull_guest_image::ensure_initramfs(&agent, &initramfs).map_err(|e| {
            Error::Sandbox(format!(
                "building the guest image {} from {}: {e}",
                initramfs.display(),
                agent.display()
            ))
        })?;
    }
    Ok(GuestAssets { kernel, initramfs })
}

fn missing(what: &str, path: &Path) -> Error {
    Error::Sandbox(format!(
        "{what} {} is missing: build it with `make guest` (or point HULL_ASSETS at a \
         directory holding vmlinux and initramfs.img)",
        path.display()
    ))
}

/// `$HULL_AGENT`, else the agent installed in the assets directory.
fn static_agent() -> Option<PathBuf> {
    std::env::var_os(AGENT_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| Some(assets::assets_dir().join(AGENT_FILE)))
        .filter(|p| p.is_file())
}
