//! What the host's KVM can do: whether it exists, and whether it is hardware
//! virtualization that can boot a stock Linux guest (not PVM).

use std::fs::OpenOptions;
use std::path::Path;

/// The KVM device node.
pub const KVM_DEVICE: &str = "/dev/kvm";

fn module_loaded(name: &str) -> bool {
    if Path::new("/sys/module").join(name).exists() {
        return true;
    }
    std::fs::read_to_string("/proc/modules")
        .map(|m| m.lines().any(|l| l.split(' ').next() == Some(name)))
        .unwrap_or(false)
}

/// `Ok` when `/dev/kvm` can be opened read-write, else why not.
pub fn kvm_usable() -> Result<(), String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(KVM_DEVICE)
        .map(|_| ())
        .map_err(|e| format!("cannot open {KVM_DEVICE}: {e}"))
}

/// True when KVM is provided by the PVM module (guest ring 0 emulated).
pub fn is_pvm() -> bool {
    module_loaded("kvm_pvm")
}

/// `Ok` when KVM is hardware-assisted (kvm_intel or kvm_amd, no kvm_pvm), so that a
/// stock Linux guest boots at full speed; otherwise the reason, for the runtime to
/// pick another hypervisor and for tests to say why they skip.
pub fn hardware_kvm_usable() -> Result<(), String> {
    kvm_usable()?;
    if is_pvm() {
        return Err(
            "KVM here is PVM (kvm_pvm loaded): guest ring-0 code is emulated and a stock kernel does not boot"
                .to_string(),
        );
    }
    if module_loaded("kvm_intel") || module_loaded("kvm_amd") {
        Ok(())
    } else {
        Err("neither kvm_intel nor kvm_amd is loaded".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_is_consistent() {
        // Whatever this host is, the answers must agree with each other.
        if kvm_usable().is_err() {
            assert!(hardware_kvm_usable().is_err());
        }
        if is_pvm() {
            let e = hardware_kvm_usable().unwrap_err();
            assert!(e.contains("PVM") || e.contains(KVM_DEVICE), "{e}");
        }
        assert!(!module_loaded("no_such_module_hopefully"));
    }
}
