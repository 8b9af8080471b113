//! Intel MultiProcessor Specification 1.4 tables: how a PVH/ACPI-less Linux finds the
//! CPUs, the IO-APIC and the ISA interrupt routing.

use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::memory::{APIC_START, IOAPIC_START};

/// Where the tables go: the BIOS area, one of the places Linux scans.
pub const MPTABLE_START: u64 = 0xf_0000;
/// Room for the tables (up to the end of the BIOS area).
const MPTABLE_MAX_SIZE: usize = 0x1_0000;
/// Processor entries carry 8-bit APIC ids and the IO-APIC takes the next id.
pub const MAX_CPUS: u8 = 254;
/// IO-APIC inputs (KVM's in-kernel IO-APIC has 24 pins).
pub const IOAPIC_PINS: u8 = 24;

const SPEC_REV: u8 = 4;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
// Family 6 signature and FPU|APIC features, what the spec's default configs use.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = 0x201;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IOINTSRC: u8 = 3;
const ENTRY_LINTSRC: u8 = 4;

const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;

/// Errors building the MP table.
#[derive(Debug, Error)]
pub enum MpTableError {
    /// Zero or too many CPUs.
    #[error("the MP table describes 1 to {MAX_CPUS} vCPUs, not {0}")]
    CpuCount(u16),
    /// Guest memory write failed.
    #[error("cannot write the MP table to guest memory: {0}")]
    Write(#[from] vm_memory::GuestMemoryError),
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |s, b| s.wrapping_add(*b))
        .wrapping_neg()
}

/// Builds the floating pointer followed by the configuration table, as located at
/// `base`. Returned bytes are written at `base` verbatim.
pub fn build(num_cpus: u16, base: u64) -> Result<Vec<u8>, MpTableError> {
    if num_cpus == 0 || num_cpus > u16::from(MAX_CPUS) {
        return Err(MpTableError::CpuCount(num_cpus));
    }
    let ioapic_id = num_cpus as u8;
    let table_addr = base + 16;

    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..num_cpus {
        entries.extend_from_slice(&[ENTRY_PROCESSOR, cpu as u8, APIC_VERSION]);
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOTPROCESSOR } else { 0 };
        entries.push(flags);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    count += 1;
    for irq in 0..IOAPIC_PINS {
        // type, irq type, flags (conforming), bus 0, bus irq, ioapic id, pin
        entries.extend_from_slice(&[ENTRY_IOINTSRC, INT_TYPE_INT, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    // LINT0 is the 8259's ExtINT, LINT1 is NMI, on every local APIC (0xff).
    entries.extend_from_slice(&[ENTRY_LINTSRC, INT_TYPE_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[ENTRY_LINTSRC, INT_TYPE_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let mut table = Vec::with_capacity(44 + entries.len());
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    table.push(SPEC_REV);
    table.push(0); // checksum, below
    table.extend_from_slice(b"HULL    ");
    table.extend_from_slice(b"HULL-VMM    ");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table
    table.extend_from_slice(&0u16.to_le_bytes());
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&(APIC_START as u32).to_le_bytes());
    table.extend_from_slice(&[0, 0, 0, 0]); // extended table length, checksum, reserved
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut fp = Vec::with_capacity(16 + table.len());
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&(table_addr as u32).to_le_bytes());
    fp.extend_from_slice(&[1, SPEC_REV, 0, 0, 0, 0, 0, 0]);
    fp[10] = checksum(&fp);
    fp.extend_from_slice(&table);
    debug_assert!(fp.len() <= MPTABLE_MAX_SIZE);
    Ok(fp)
}

/// Writes the MP table for `num_cpus` CPUs at [`MPTABLE_START`].
pub fn write(mem: &GuestMemoryMmap, num_cpus: u16) -> Result<(), MpTableError> {
    let bytes = build(num_cpus, MPTABLE_START)?;
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |s, x| s.wrapping_add(*x))
    }

    #[test]
    fn floating_pointer_is_valid() {
        let t = build(2, MPTABLE_START).unwrap();
        assert_eq!(&t[0..4], b"_MP_");
        assert_eq!(u32::from_le_bytes(t[4..8].try_into().unwrap()), 0xf_0010);
        assert_eq!(t[8], 1);
        assert_eq!(sum(&t[0..16]), 0);
    }

    #[test]
    fn config_table_checksums_and_counts() {
        for cpus in [1u16, 4, 254] {
            let t = build(cpus, MPTABLE_START).unwrap();
            let table = &t[16..];
            assert_eq!(&table[0..4], b"PCMP");
            let len = u16::from_le_bytes([table[4], table[5]]) as usize;
            assert_eq!(len, table.len());
            assert_eq!(sum(table), 0);
            let count = u16::from_le_bytes([table[34], table[35]]);
            assert_eq!(count, cpus + 1 + 1 + u16::from(IOAPIC_PINS) + 2);
            assert_eq!(
                u32::from_le_bytes(table[36..40].try_into().unwrap()),
                APIC_START as u32
            );
        }
    }

    #[test]
    fn processors_then_ioapic_with_next_id() {
        let t = build(3, MPTABLE_START).unwrap();
        let e = &t[16 + 44..];
        for cpu in 0..3 {
            let p = &e[cpu * 20..];
            assert_eq!(p[0], ENTRY_PROCESSOR);
            assert_eq!(p[1], cpu as u8);
            assert_eq!(p[3] & CPU_BOOTPROCESSOR != 0, cpu == 0);
        }
        let ioapic = &e[3 * 20 + 8..];
        assert_eq!(ioapic[0], ENTRY_IOAPIC);
        assert_eq!(ioapic[1], 3);
        assert_eq!(
            u32::from_le_bytes(ioapic[4..8].try_into().unwrap()),
            IOAPIC_START as u32
        );
    }

    #[test]
    fn rejects_bad_cpu_counts() {
        assert!(matches!(build(0, 0), Err(MpTableError::CpuCount(0))));
        assert!(matches!(build(255, 0), Err(MpTableError::CpuCount(255))));
    }
}
