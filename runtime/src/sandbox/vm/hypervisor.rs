//! Which hypervisor runs a VM sandbox: hull-vmm where hardware KVM can boot the guest,
//! QEMU (`-M microvm`) elsewhere, e.g. on PVM hosts and cloud VMs without nested
//! virtualization.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Annotation choosing the hypervisor for a container (`hull`, `qemu` or `auto`).
pub const VMM_ANNOTATION: &str = "io.hull.vmm";
/// Overrides the QEMU binary.
pub const QEMU_ENV: &str = "HULL_QEMU";
/// Overrides the hull-vmm binary.
pub const HULL_VMM_ENV: &str = "HULL_VMM";

/// What the user asked for (`--vmm`, the annotation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum VmmChoice {
    /// hull-vmm where it can really boot the guest, else QEMU.
    #[default]
    Auto,
    /// hull-vmm (needs hardware KVM).
    Hull,
    /// qemu-system-x86_64 -M microvm (KVM where hardware KVM is usable, else TCG).
    Qemu,
}

impl std::str::FromStr for VmmChoice {
    type Err = ();
    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        match s {
            "auto" => Ok(VmmChoice::Auto),
            "hull" | "hull-vmm" => Ok(VmmChoice::Hull),
            "qemu" => Ok(VmmChoice::Qemu),
            _ => Err(()),
        }
    }
}

/// The hypervisor a VM sandbox runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hypervisor {
    HullVmm,
    Qemu,
}

impl fmt::Display for Hypervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hypervisor::HullVmm => "hull-vmm",
            Hypervisor::Qemu => "qemu",
        })
    }
}

/// Resolves `choice` on this host; the error says why nothing can run.
pub fn resolve(choice: VmmChoice) -> Result<Hypervisor> {
    let hull = hull_vmm_usable();
    let qemu = qemu_binary().ok_or_else(|| {
        "qemu-system-x86_64 not found on PATH (install it: apt-get install \
         qemu-system-x86, or run `make setup`)"
            .to_string()
    });
    let picked = match choice {
        VmmChoice::Hull => hull
            .map(|_| Hypervisor::HullVmm)
            .map_err(|why| Error::Sandbox(format!("--vmm hull: {why}; use --vmm qemu")))?,
        VmmChoice::Qemu => qemu
            .map(|_| Hypervisor::Qemu)
            .map_err(|why| Error::Sandbox(format!("--vmm qemu: {why}")))?,
        VmmChoice::Auto => match (hull, qemu) {
            (Ok(_), _) => {
                log::debug!("--vmm auto: picked hull-vmm (hardware KVM is usable)");
                Hypervisor::HullVmm
            }
            (Err(why), Ok(_)) => {
                log::debug!("--vmm auto: picked qemu, because hull-vmm cannot run here: {why}");
                Hypervisor::Qemu
            }
            (Err(h), Err(q)) => {
                return Err(Error::Sandbox(format!(
                    "the VM sandbox cannot run here: hull-vmm: {h}; qemu: {q} \
                     (or use --sandbox os)"
                )))
            }
        },
    };
    Ok(picked)
}

/// `Ok(binary)` when hull-vmm can boot the guest here, else why not.
fn hull_vmm_usable() -> std::result::Result<PathBuf, String> {
    hull_vmm::kvm::hardware_kvm_usable()?;
    hull_vmm_binary()
        .ok_or_else(|| "the hull-vmm binary was found neither next to hull nor on PATH".to_string())
}

/// The QEMU binary: `$HULL_QEMU`, else `qemu-system-x86_64` on PATH.
pub fn qemu_binary() -> Option<PathBuf> {
    from_env(QEMU_ENV).or_else(|| on_path("qemu-system-x86_64"))
}

/// The hull-vmm binary: `$HULL_VMM`, else next to this executable, else on PATH.
pub fn hull_vmm_binary() -> Option<PathBuf> {
    from_env(HULL_VMM_ENV)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            let p = exe.parent()?.join("hull-vmm");
            p.is_file().then_some(p)
        })
        .or_else(|| on_path("hull-vmm"))
}

fn from_env(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse() {
        assert_eq!("auto".parse(), Ok(VmmChoice::Auto));
        assert_eq!("hull".parse(), Ok(VmmChoice::Hull));
        assert_eq!("qemu".parse(), Ok(VmmChoice::Qemu));
        assert!("xen".parse::<VmmChoice>().is_err());
    }

    #[test]
    fn explicit_hull_on_a_host_without_hardware_kvm_says_why() {
        if hull_vmm::kvm::hardware_kvm_usable().is_ok() {
            return;
        }
        let e = resolve(VmmChoice::Hull).unwrap_err().to_string();
        assert!(e.contains("--vmm hull"), "{e}");
        assert!(e.contains("--vmm qemu"), "{e}");
    }
}
