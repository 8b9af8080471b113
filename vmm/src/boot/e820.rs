//! The E820 memory map the guest sees, shared by the PVH memmap table and the zero page.

use crate::memory::{
    ram_ranges, EBDA_START, HIGH_RAM_START, HIMEM_START, LOW_MEM_END, MMIO_GAP_START,
};

/// Usable RAM.
pub const E820_RAM: u32 = 1;
/// Reserved (firmware tables, holes).
pub const E820_RESERVED: u32 = 2;

/// One E820 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// `E820_RAM` or `E820_RESERVED`.
    pub kind: u32,
}

/// The map for `mem_size` bytes of guest RAM: conventional memory up to the EBDA, the
/// EBDA (MP table) reserved, RAM from 1 MiB to the MMIO hole and above 4 GiB.
pub fn build(mem_size: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        E820Entry {
            addr: EBDA_START,
            size: LOW_MEM_END - EBDA_START,
            kind: E820_RESERVED,
        },
    ];
    for (start, len) in ram_ranges(mem_size) {
        let start = start.0;
        let end = start + len;
        let from = start.max(HIMEM_START);
        if end > from {
            map.push(E820Entry {
                addr: from,
                size: end - from,
                kind: E820_RAM,
            });
        }
    }
    debug_assert!(map
        .iter()
        .all(|e| e.addr + e.size <= MMIO_GAP_START || e.addr >= HIGH_RAM_START));
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest() {
        let m = build(128 << 20);
        assert_eq!(
            m,
            vec![
                E820Entry {
                    addr: 0,
                    size: 0x9fc00,
                    kind: E820_RAM
                },
                E820Entry {
                    addr: 0x9fc00,
                    size: 0x400,
                    kind: E820_RESERVED
                },
                E820Entry {
                    addr: 0x10_0000,
                    size: (128 << 20) - 0x10_0000,
                    kind: E820_RAM
                },
            ]
        );
    }

    #[test]
    fn large_guest_has_ram_above_4g() {
        let m = build(6 << 30);
        assert_eq!(m.len(), 4);
        assert_eq!(m[2].addr + m[2].size, MMIO_GAP_START);
        assert_eq!(m[3].addr, HIGH_RAM_START);
        let ram: u64 = m
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        // Everything but the VGA/BIOS hole and the EBDA is RAM.
        assert_eq!(ram, (6 << 30) - (HIMEM_START - EBDA_START));
    }

    #[test]
    fn entries_are_sorted_and_disjoint() {
        for size in [2u64 << 20, 256 << 20, MMIO_GAP_START, 5 << 30] {
            let m = build(size);
            for w in m.windows(2) {
                assert!(w[0].addr + w[0].size <= w[1].addr, "{m:?}");
            }
        }
    }
}
