//! CPUID: what KVM supports, filtered and completed with this VM's topology.

use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_PMU: u32 = 0xa;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_AMD_SIZES: u32 = 0x8000_0008;

const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;

const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// Bits needed to hold ids 0..n-1.
fn id_bits(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// The extended topology subleaves: SMT level (one thread per core), core level
/// (`n` cores), and the terminating invalid level.
fn topology_leaf(function: u32, apic: u32, n: u32) -> [kvm_cpuid_entry2; 3] {
    let entry = |index: u32, eax: u32, ebx: u32, ecx: u32| kvm_cpuid_entry2 {
        function,
        index,
        flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
        eax,
        ebx,
        ecx,
        edx: apic,
        ..Default::default()
    };
    [
        entry(0, 0, 1, LEVEL_TYPE_SMT << 8),
        entry(1, id_bits(n), n, (LEVEL_TYPE_CORE << 8) | 1),
        entry(2, 0, 0, 2),
    ]
}

/// Completes the supported CPUID for vCPU `cpu_id` of `nr_cpus`: one socket, one
/// thread per core, APIC id = vCPU index, hypervisor bit set, no vPMU advertised.
/// KVM may report the topology leaves with no levels at all (PVM does), so they are
/// rebuilt whole where the CPU has them.
pub fn filter(entries: &mut Vec<kvm_cpuid_entry2>, cpu_id: u8, nr_cpus: u8) {
    let apic = u32::from(cpu_id);
    let n = u32::from(nr_cpus).max(1);
    for leaf in [LEAF_TOPOLOGY, LEAF_TOPOLOGY_V2] {
        if entries.iter().any(|e| e.function == leaf) {
            entries.retain(|e| e.function != leaf);
            entries.extend(topology_leaf(leaf, apic, n));
        }
    }
    for e in entries.iter_mut() {
        match e.function {
            LEAF_FEATURES => {
                // EBX: [31:24] initial APIC id, [23:16] logical processors per package.
                e.ebx = (e.ebx & 0x0000_ffff) | (apic << 24) | (n.min(255) << 16);
                e.ecx |= ECX_HYPERVISOR;
                if n > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE_PARAMS => {
                // EAX[31:26]: cores per package - 1; [25:14]: threads sharing the cache - 1.
                let cores = (n - 1).min(63);
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { (n - 1).min(0xfff) } else { 0 };
                e.eax = (e.eax & 0x3fff) | (cores << 26) | (sharing << 14);
            }
            LEAF_PMU => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            LEAF_AMD_SIZES => {
                // ECX[7:0]: cores - 1, [15:12]: APIC id bits.
                e.ecx = (e.ecx & !0xf0ff) | ((n - 1).min(255)) | (id_bits(n) << 12);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: 0xffff_ffff,
            ebx: 0xffff_ffff,
            ecx: 0x0000_0000,
            edx: 0x0000_0000,
            ..Default::default()
        }
    }

    #[test]
    fn id_bits_values() {
        assert_eq!(id_bits(1), 0);
        assert_eq!(id_bits(2), 1);
        assert_eq!(id_bits(3), 2);
        assert_eq!(id_bits(4), 2);
        assert_eq!(id_bits(5), 3);
    }

    #[test]
    fn leaf1_apic_id_count_and_hypervisor_bit() {
        let mut e = vec![entry(1, 0)];
        filter(&mut e, 3, 4);
        assert_eq!(e[0].ebx >> 24, 3);
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
        assert_eq!(e[0].ebx & 0xffff, 0xffff);
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e[0].edx & EDX_HTT, 0);
        filter(&mut e, 0, 1);
        assert_eq!(e[0].edx & EDX_HTT, 0);
    }

    #[test]
    fn topology_leaves_are_rebuilt() {
        // As PVM reports them: subleaf 0 only, no levels.
        let mut zero = entry(0x1f, 0);
        (zero.eax, zero.ebx) = (0, 0);
        let mut e = vec![entry(0xb, 0), entry(0xb, 1), zero, entry(1, 0)];
        filter(&mut e, 2, 3);
        for leaf in [0xb, 0x1f] {
            let l: Vec<_> = e.iter().filter(|x| x.function == leaf).collect();
            assert_eq!(l.len(), 3, "leaf {leaf:#x}");
            assert_eq!((l[0].eax, l[0].ebx, l[0].ecx, l[0].edx), (0, 1, 0x100, 2));
            assert_eq!((l[1].eax, l[1].ebx, l[1].ecx, l[1].edx), (2, 3, 0x201, 2));
            assert_eq!((l[2].eax, l[2].ebx, l[2].ecx, l[2].edx), (0, 0, 2, 2));
            assert!(l.iter().all(|x| x.flags == KVM_CPUID_FLAG_SIGNIFCANT_INDEX));
        }
    }

    #[test]
    fn topology_leaves_not_added_when_absent() {
        let mut e = vec![entry(1, 0)];
        filter(&mut e, 0, 2);
        assert_eq!(e.len(), 1);
    }

    #[test]
    fn cache_leaf_core_count() {
        let mut l1 = entry(4, 0);
        l1.eax = 1 << 5 | 1; // level 1 data cache
        let mut l3 = entry(4, 3);
        l3.eax = 3 << 5 | 3;
        let mut e = vec![l1, l3];
        filter(&mut e, 0, 8);
        assert_eq!(e[0].eax >> 26, 7);
        assert_eq!((e[0].eax >> 14) & 0xfff, 0);
        assert_eq!((e[1].eax >> 14) & 0xfff, 7);
        assert_eq!(e[1].eax & 0x3fff, 3 << 5 | 3);
    }

    #[test]
    fn pmu_hidden_and_others_untouched() {
        let mut e = vec![entry(0xa, 0), entry(0x4000_0000, 0)];
        filter(&mut e, 0, 1);
        assert_eq!((e[0].eax, e[0].ebx), (0, 0));
        assert_eq!(e[1].eax, 0xffff_ffff);
    }
}
