//! Boot CPU register state: segments, control registers, page tables, GPRs and FPU.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::boot::BootEntry;
use crate::memory::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDE_START, PDPTE_START, PML4_START,
};

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

// Access/flags words of the GDT descriptors (bits 40..56 of a descriptor).
const CODE64: u16 = 0xa09b; // present, code, read/exec, accessed, L
const CODE32: u16 = 0xc09b; // present, code, read/exec, accessed, D/B, 4K granularity
const DATA: u16 = 0xc093; // present, data, read/write, accessed, D/B, 4K granularity
const TSS32: u16 = 0x008b; // present, busy 32-bit TSS, byte granularity

/// GDT slots: null, code, data, TSS.
pub const GDT_CODE: u16 = 1;
/// Data segment slot.
pub const GDT_DATA: u16 = 2;
/// TSS slot.
pub const GDT_TSS: u16 = 3;

/// A GDT descriptor from flags, base and limit.
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (base, limit, flags) = (u64::from(base), u64::from(limit), u64::from(flags));
    ((base & 0xff00_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
        | ((limit & 0xf_0000) << 32)
        | ((flags & 0xf0ff) << 40)
}

/// The KVM view of a GDT descriptor at slot `index`.
pub fn segment_from_gdt(entry: u64, index: u16) -> kvm_segment {
    let access = ((entry >> 40) & 0xff) as u8;
    let flags = ((entry >> 52) & 0xf) as u8;
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let g = (flags >> 3) & 1;
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: index * 8,
        type_: access & 0xf,
        present: (access >> 7) & 1,
        dpl: (access >> 5) & 3,
        db: (flags >> 2) & 1,
        s: (access >> 4) & 1,
        l: (flags >> 1) & 1,
        g,
        avl: flags & 1,
        unusable: u8::from((access >> 7) & 1 == 0),
        padding: 0,
    }
}

/// The boot GDT for an entry mode.
pub fn gdt(entry: &BootEntry) -> [u64; 4] {
    let code = match entry {
        BootEntry::Pvh { .. } => CODE32,
        BootEntry::Linux64 { .. } => CODE64,
    };
    [
        0,
        gdt_entry(code, 0, 0xfffff),
        gdt_entry(DATA, 0, 0xfffff),
        gdt_entry(TSS32, 0, 0x67),
    ]
}

/// Writes the GDT, an empty IDT and (for long mode) identity page tables, and fills
/// `sregs` for the entry mode.
pub fn setup_sregs(
    mem: &GuestMemoryMmap,
    entry: &BootEntry,
    sregs: &mut kvm_sregs,
) -> Result<(), vm_memory::GuestMemoryError> {
    let table = gdt(entry);
    for (i, e) in table.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(BOOT_GDT_START + 8 * i as u64))?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))?;
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (table.len() * 8 - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;

    let code = segment_from_gdt(table[GDT_CODE as usize], GDT_CODE);
    let data = segment_from_gdt(table[GDT_DATA as usize], GDT_DATA);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment_from_gdt(table[GDT_TSS as usize], GDT_TSS);

    match entry {
        BootEntry::Pvh { .. } => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
        BootEntry::Linux64 { .. } => {
            write_identity_page_tables(mem)?;
            sregs.cr3 = PML4_START;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.cr0 |= X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
    }
    Ok(())
}

/// Identity-maps the first GiB with 2 MiB pages.
pub fn write_identity_page_tables(
    mem: &GuestMemoryMmap,
) -> Result<(), vm_memory::GuestMemoryError> {
    mem.write_obj(PDPTE_START | 0x03, GuestAddress(PML4_START))?;
    mem.write_obj(PDE_START | 0x03, GuestAddress(PDPTE_START))?;
    for i in 0..512u64 {
        // present, writable, page size (2 MiB)
        mem.write_obj((i << 21) | 0x83, GuestAddress(PDE_START + i * 8))?;
    }
    Ok(())
}

/// General purpose registers for the entry mode.
pub fn boot_regs(entry: &BootEntry) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2,
        ..Default::default()
    };
    match *entry {
        BootEntry::Pvh { entry, start_info } => {
            regs.rip = entry.0;
            regs.rbx = start_info.0;
        }
        BootEntry::Linux64 { entry, zero_page } => {
            regs.rip = entry.0;
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = zero_page.0;
        }
    }
    regs
}

/// FPU state after reset: x87 control word and SSE control/status defaults.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entry_roundtrip() {
        let e = gdt_entry(CODE64, 0, 0xfffff);
        assert_eq!(e, 0x00af_9b00_0000_ffff);
        let s = segment_from_gdt(e, 1);
        assert_eq!(
            (s.selector, s.type_, s.l, s.db, s.g, s.present),
            (8, 0xb, 1, 0, 1, 1)
        );
        assert_eq!(s.limit, 0xffff_ffff);
        let d = segment_from_gdt(gdt_entry(DATA, 0, 0xfffff), 2);
        assert_eq!((d.type_, d.db, d.s), (3, 1, 1));
        let t = segment_from_gdt(gdt_entry(TSS32, 0, 0x67), 3);
        assert_eq!((t.type_, t.s, t.limit, t.g), (0xb, 0, 0x67, 0));
    }

    #[test]
    fn pvh_starts_in_flat_protected_mode() {
        let mem = crate::memory::create_guest_memory(16 << 20, None).unwrap();
        let entry = BootEntry::Pvh {
            entry: GuestAddress(0x10_0000),
            start_info: GuestAddress(0x6000),
        };
        let mut sregs = kvm_sregs::default();
        setup_sregs(&mem, &entry, &mut sregs).unwrap();
        assert_eq!(sregs.cr0 & X86_CR0_PG, 0);
        assert_eq!(sregs.cr0 & X86_CR0_PE, 1);
        assert_eq!((sregs.cs.l, sregs.cs.db), (0, 1));
        let regs = boot_regs(&entry);
        assert_eq!((regs.rip, regs.rbx), (0x10_0000, 0x6000));
    }

    #[test]
    fn linux64_starts_in_long_mode_with_identity_map() {
        let mem = crate::memory::create_guest_memory(16 << 20, None).unwrap();
        let entry = BootEntry::Linux64 {
            entry: GuestAddress(0x100_0000),
            zero_page: GuestAddress(0x7000),
        };
        let mut sregs = kvm_sregs::default();
        setup_sregs(&mem, &entry, &mut sregs).unwrap();
        assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(sregs.cr3, PML4_START);
        assert_eq!(sregs.cs.l, 1);
        let pde: u64 = mem.read_obj(GuestAddress(PDE_START + 8)).unwrap();
        assert_eq!(pde, (1 << 21) | 0x83);
        assert_eq!(boot_regs(&entry).rsi, 0x7000);
    }
}
