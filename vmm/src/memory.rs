//! Guest physical memory: the fixed x86_64 layout and the one place that allocates
//! guest RAM (so a memfd backing for vhost-user only has to change here).

use std::fs::File;

use thiserror::Error;
use vm_memory::{FileOffset, GuestAddress, GuestMemory, GuestMemoryMmap, GuestMemoryRegion};

/// GDT used for the boot CPU's flat segments.
pub const BOOT_GDT_START: u64 = 0x500;
/// IDT (empty) loaded at boot.
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH module list (the initramfs).
pub const PVH_MODLIST_START: u64 = 0x6040;
/// PVH memory map table.
pub const PVH_MEMMAP_START: u64 = 0x6100;
/// Linux zero page (`boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer for the 64-bit boot protocol.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity-mapping page tables for the 64-bit boot protocol.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory (2 MiB pages covering the first GiB).
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Longest command line the x86 kernel accepts (COMMAND_LINE_SIZE).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the Extended BIOS Data Area; the MP table lives here.
pub const EBDA_START: u64 = 0x9fc00;
/// End of conventional memory (VGA hole and BIOS area follow).
pub const LOW_MEM_END: u64 = 0xa0000;
/// Kernels load at or above 1 MiB.
pub const HIMEM_START: u64 = 0x10_0000;
/// The 32-bit MMIO hole for devices: [3.25 GiB, 4 GiB).
pub const MMIO_GAP_START: u64 = 0xd000_0000;
/// Size of the 32-bit MMIO hole.
pub const MMIO_GAP_SIZE: u64 = (4 << 30) - MMIO_GAP_START;
/// Where RAM continues above the hole.
pub const HIGH_RAM_START: u64 = 4 << 30;
/// IO-APIC registers (inside the MMIO hole, fixed by KVM's in-kernel irqchip).
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Local APIC registers.
pub const APIC_START: u64 = 0xfee0_0000;
/// First virtio-mmio device window.
pub const VIRTIO_MMIO_START: u64 = MMIO_GAP_START;
/// Size of one virtio-mmio window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// Smallest guest RAM we accept: the fixed boot structures sit below 1 MiB and the
/// kernel loads above it.
pub const MIN_MEMORY: u64 = 2 << 20;

// The fixed boot structures must not overlap; checked at compile time.
const _: () = {
    assert!(BOOT_IDT_START >= BOOT_GDT_START + 4 * 8);
    assert!(PVH_MODLIST_START >= PVH_INFO_START + 0x38);
    assert!(PVH_MEMMAP_START >= PVH_MODLIST_START + 0x20);
    assert!(ZERO_PAGE_START > PVH_MEMMAP_START);
    assert!(PML4_START > BOOT_STACK_POINTER);
    assert!(CMDLINE_START >= PDE_START + 0x1000);
    assert!(CMDLINE_START + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
    assert!(IOAPIC_START > VIRTIO_MMIO_START);
};

/// Errors of guest memory setup.
#[derive(Debug, Error)]
pub enum MemoryError {
    /// Zero or too small a size was asked for.
    #[error("guest memory must be at least {} MiB", MIN_MEMORY >> 20)]
    TooSmall,
    /// The size exceeds what the host has.
    #[error("guest memory of {asked_mib} MiB is larger than the host's {host_mib} MiB of RAM")]
    TooLarge {
        /// Requested MiB.
        asked_mib: u64,
        /// Host RAM in MiB.
        host_mib: u64,
    },
    /// The memory backing file could not be shared.
    #[error("cannot use the guest memory backing file: {0}")]
    Backing(std::io::Error),
    /// mmap of guest RAM failed.
    #[error("cannot allocate {mib} MiB of guest memory: {source}")]
    Allocate {
        /// Requested MiB.
        mib: u64,
        /// Underlying error.
        source: vm_memory::mmap::FromRangesError,
    },
}

/// Guest RAM ranges for `size` bytes: everything below the MMIO hole, the rest from
/// 4 GiB up.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, u64)> {
    if size <= MMIO_GAP_START {
        vec![(GuestAddress(0), size)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START),
            (GuestAddress(HIGH_RAM_START), size - MMIO_GAP_START),
        ]
    }
}

/// End (exclusive) of RAM below the MMIO hole.
pub fn low_ram_end(size: u64) -> u64 {
    size.min(MMIO_GAP_START)
}

/// Total host RAM in bytes (sysinfo), the ceiling for guest memory.
pub fn host_ram_bytes() -> u64 {
    // SAFETY: sysinfo only writes into the zeroed struct we own.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a sysinfo struct.
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return u64::MAX;
    }
    (info.totalram as u64).saturating_mul(info.mem_unit as u64)
}

/// Checks a requested guest memory size against the layout and the host.
pub fn validate_size(size: u64, host_ram: u64) -> Result<(), MemoryError> {
    if size < MIN_MEMORY {
        return Err(MemoryError::TooSmall);
    }
    if size > host_ram {
        return Err(MemoryError::TooLarge {
            asked_mib: size >> 20,
            host_mib: host_ram >> 20,
        });
    }
    Ok(())
}

/// Allocates guest RAM of `size` bytes, anonymous private memory, or shared memory
/// from `backing` (a memfd sized by the caller) when given.
pub fn create_guest_memory(
    size: u64,
    backing: Option<&File>,
) -> Result<GuestMemoryMmap, MemoryError> {
    validate_size(size, host_ram_bytes())?;
    let ranges = ram_ranges(size);
    let mem = match backing {
        None => {
            let r: Vec<(GuestAddress, usize)> =
                ranges.iter().map(|(a, l)| (*a, *l as usize)).collect();
            GuestMemoryMmap::from_ranges(&r)
        }
        Some(file) => {
            let mut offset = 0u64;
            let mut r = Vec::new();
            for (a, l) in &ranges {
                let f = file.try_clone().map_err(MemoryError::Backing)?;
                r.push((*a, *l as usize, Some(FileOffset::new(f, offset))));
                offset += l;
            }
            GuestMemoryMmap::from_ranges_with_files(r)
        }
    };
    mem.map_err(|source| MemoryError::Allocate {
        mib: size >> 20,
        source,
    })
}

/// An unlinked memfd of `size` bytes to back guest RAM with shared memory (what
/// vhost-user backends map).
pub fn create_memfd(size: u64) -> Result<File, MemoryError> {
    use std::os::fd::FromRawFd;
    // SAFETY: the name is a NUL-terminated literal; flags are valid.
    let fd = unsafe { libc::memfd_create(c"hull-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(MemoryError::Backing(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a new descriptor nobody else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size).map_err(MemoryError::Backing)?;
    Ok(file)
}

/// Sum of the sizes of all regions.
pub fn total_size(mem: &GuestMemoryMmap) -> u64 {
    mem.iter().map(|r| r.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_range() {
        assert_eq!(ram_ranges(128 << 20), vec![(GuestAddress(0), 128 << 20)]);
        assert_eq!(low_ram_end(128 << 20), 128 << 20);
    }

    #[test]
    fn large_memory_skips_the_mmio_hole() {
        let size = 5u64 << 30;
        let r = ram_ranges(size);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], (GuestAddress(0), MMIO_GAP_START));
        assert_eq!(r[1].0, GuestAddress(HIGH_RAM_START));
        assert_eq!(r[0].1 + r[1].1, size);
        assert_eq!(low_ram_end(size), MMIO_GAP_START);
    }

    #[test]
    fn size_validation() {
        assert!(matches!(
            validate_size(0, 1 << 30),
            Err(MemoryError::TooSmall)
        ));
        assert!(matches!(
            validate_size(2 << 30, 1 << 30),
            Err(MemoryError::TooLarge {
                asked_mib: 2048,
                host_mib: 1024
            })
        ));
        assert!(validate_size(64 << 20, 1 << 30).is_ok());
    }

    #[test]
    fn memfd_backing_is_shared_with_the_file() {
        use std::os::unix::fs::FileExt;
        use vm_memory::Bytes;
        let size = 8u64 << 20;
        let file = create_memfd(size).unwrap();
        let mem = create_guest_memory(size, Some(&file)).unwrap();
        mem.write_slice(b"shared", GuestAddress(0x1234)).unwrap();
        let mut buf = [0u8; 6];
        file.read_exact_at(&mut buf, 0x1234).unwrap();
        assert_eq!(&buf, b"shared");
    }

    #[test]
    fn allocates_and_sums() {
        let mem = create_guest_memory(16 << 20, None).unwrap();
        assert_eq!(total_size(&mem), 16 << 20);
    }
}
