//! How big a container's VM is: vCPUs from the CPU quota, guest RAM from the memory
//! limit plus a fixed overhead for the guest kernel and agent; annotations override.

use oci_spec::runtime::Spec;

use crate::error::{Error, Result};

/// Overrides the vCPU count.
pub const VCPUS_ANNOTATION: &str = "io.hull.vm.vcpus";
/// Overrides guest RAM, in MiB.
pub const MEMORY_ANNOTATION: &str = "io.hull.vm.memory_mib";

/// Guest RAM when the container has no memory limit.
pub const DEFAULT_MEMORY_MIB: u64 = 256;
/// What the guest kernel, agent and page cache need beside the container's limit.
pub const OVERHEAD_MIB: u64 = 128;
/// Smallest guest that boots the agent comfortably.
pub const MIN_MEMORY_MIB: u64 = 96;
/// Most vCPUs hull-vmm and QEMU microvm are asked for.
pub const MAX_VCPUS: u16 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmSize {
    pub vcpus: u16,
    pub memory_mib: u64,
}

pub fn from_spec(spec: &Spec) -> Result<VmSize> {
    let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
    let cpu = resources.and_then(|r| r.cpu().as_ref());
    let vcpus = match (cpu.and_then(|c| c.quota()), cpu.and_then(|c| c.period())) {
        (Some(q), Some(p)) if q > 0 && p > 0 => {
            let n = (q as u64).div_ceil(p).max(1);
            n.min(u64::from(MAX_VCPUS)) as u16
        }
        _ => 1,
    };
    let limit = resources
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .filter(|l| *l > 0);
    let memory_mib = match limit {
        Some(l) => (l as u64).div_ceil(1 << 20) + OVERHEAD_MIB,
        None => DEFAULT_MEMORY_MIB,
    };
    let mut size = VmSize { vcpus, memory_mib };
    let annotations = spec.annotations().clone().unwrap_or_default();
    if let Some(v) = annotations.get(VCPUS_ANNOTATION) {
        size.vcpus = parse_annotation(VCPUS_ANNOTATION, v, 1, u64::from(MAX_VCPUS))? as u16;
    }
    if let Some(v) = annotations.get(MEMORY_ANNOTATION) {
        size.memory_mib = parse_annotation(MEMORY_ANNOTATION, v, MIN_MEMORY_MIB, 1 << 20)?;
    }
    size.memory_mib = size.memory_mib.max(MIN_MEMORY_MIB);
    Ok(size)
}

fn parse_annotation(name: &str, v: &str, min: u64, max: u64) -> Result<u64> {
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(Error::Bundle(format!(
            "config.json: annotations.\"{name}\": {v:?} is not a number from {min} to {max}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(linux: &str, annotations: &str) -> Spec {
        let json = format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},"linux":{{{linux}}},"annotations":{{{annotations}}}}}"#
        );
        serde_json::from_str(&json).unwrap()
    }

    #[test]
    fn defaults_without_limits() {
        let s = from_spec(&spec("", "")).unwrap();
        assert_eq!(
            s,
            VmSize {
                vcpus: 1,
                memory_mib: DEFAULT_MEMORY_MIB
            }
        );
    }

    #[test]
    fn limits_follow_the_spec() {
        let s = from_spec(&spec(
            r#""resources":{"cpu":{"quota":250000,"period":100000},"memory":{"limit":536870912}}"#,
            "",
        ))
        .unwrap();
        assert_eq!(s.vcpus, 3);
        assert_eq!(s.memory_mib, 512 + OVERHEAD_MIB);
    }

    #[test]
    fn annotations_override_and_are_checked() {
        let s = from_spec(&spec(
            r#""resources":{"memory":{"limit":536870912}}"#,
            r#""io.hull.vm.vcpus":"2","io.hull.vm.memory_mib":"300""#,
        ))
        .unwrap();
        assert_eq!(
            s,
            VmSize {
                vcpus: 2,
                memory_mib: 300
            }
        );
        let e = from_spec(&spec("", r#""io.hull.vm.vcpus":"0""#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("io.hull.vm.vcpus") && e.contains("\"0\""), "{e}");
        let e = from_spec(&spec("", r#""io.hull.vm.memory_mib":"lots""#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("io.hull.vm.memory_mib"), "{e}");
    }
}
