//! Where the guest kernel and initramfs live. Every piece (runtime, VMM CLI, tests,
//! build scripts) resolves them here so they agree on one location.

use std::path::PathBuf;

/// Environment variable that overrides the assets directory.
pub const ASSETS_ENV: &str = "HULL_ASSETS";
/// Default assets directory.
pub const DEFAULT_ASSETS_DIR: &str = "/var/lib/hull";
/// File name of the uncompressed guest kernel.
pub const KERNEL_FILE: &str = "vmlinux";
/// File name of the guest initramfs (`/init` = hull-agent).
pub const INITRAMFS_FILE: &str = "initramfs.img";

/// The assets directory: `$HULL_ASSETS`, else `/var/lib/hull`.
pub fn assets_dir() -> PathBuf {
    match std::env::var_os(ASSETS_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(DEFAULT_ASSETS_DIR),
    }
}

/// Default guest kernel path.
pub fn kernel_path() -> PathBuf {
    assets_dir().join(KERNEL_FILE)
}

/// Default guest initramfs path.
pub fn initramfs_path() -> PathBuf {
    assets_dir().join(INITRAMFS_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_live_in_the_assets_dir() {
        let dir = assets_dir();
        assert_eq!(kernel_path(), dir.join("vmlinux"));
        assert_eq!(initramfs_path(), dir.join("initramfs.img"));
    }
}
