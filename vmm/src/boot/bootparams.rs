//! The Linux zero page (`boot_params`) for the 64-bit boot protocol.

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_params, setup_header};
use thiserror::Error;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::e820::E820Entry;
use super::InitrdInfo;
use crate::memory::{CMDLINE_START, ZERO_PAGE_START};

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;
/// Number of E820 slots in `boot_params`.
pub const E820_MAX_ENTRIES: usize = 128;

/// Errors building the zero page.
#[derive(Debug, Error)]
pub enum BootParamsError {
    /// More E820 entries than the zero page holds.
    #[error("too many E820 entries ({0})")]
    TooManyE820Entries(usize),
    /// linux-loader refused to write the zero page.
    #[error("cannot write the zero page: {0}")]
    Write(#[from] linux_loader::configurator::Error),
}

/// Builds the zero page: the kernel's own setup header when it has one (bzImage),
/// else a minimal one, completed with command line, initramfs and E820 map.
pub fn build(
    header: Option<setup_header>,
    cmdline_size: usize,
    e820: &[E820Entry],
    initrd: Option<&InitrdInfo>,
) -> Result<boot_params, BootParamsError> {
    let mut params = boot_params::default();
    if let Some(h) = header {
        params.hdr = h;
    } else {
        params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
        params.hdr.header = KERNEL_HDR_MAGIC;
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_size as u32;
    if let Some(rd) = initrd {
        params.hdr.ramdisk_image = rd.addr.0 as u32;
        params.hdr.ramdisk_size = rd.size as u32;
    }
    if e820.len() > E820_MAX_ENTRIES {
        return Err(BootParamsError::TooManyE820Entries(e820.len()));
    }
    for (slot, e) in params.e820_table.iter_mut().zip(e820) {
        slot.addr = e.addr;
        slot.size = e.size;
        slot.type_ = e.kind;
    }
    params.e820_entries = e820.len() as u8;
    Ok(params)
}

/// Writes the zero page; returns its address for %rsi.
pub fn write(mem: &GuestMemoryMmap, params: &boot_params) -> Result<GuestAddress, BootParamsError> {
    let bp = BootParams::new(params, GuestAddress(ZERO_PAGE_START));
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(&bp, mem)?;
    Ok(GuestAddress(ZERO_PAGE_START))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::e820;
    use vm_memory::Bytes;

    #[test]
    fn minimal_header_for_elf_kernels() {
        let map = e820::build(128 << 20);
        let p = build(None, 20, &map, None).unwrap();
        assert_eq!({ p.hdr.boot_flag }, KERNEL_BOOT_FLAG_MAGIC);
        assert_eq!({ p.hdr.header }, KERNEL_HDR_MAGIC);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ p.hdr.cmdline_size }, 20);
        assert_eq!(p.e820_entries, 3);
        assert_eq!({ p.e820_table[2].addr }, 0x10_0000);
        assert_eq!({ p.hdr.ramdisk_image }, 0);
    }

    #[test]
    fn keeps_bzimage_header_and_sets_initrd() {
        let h = setup_header {
            version: 0x20f,
            loadflags: 1,
            ..Default::default()
        };
        let rd = InitrdInfo {
            addr: GuestAddress(0x700_0000),
            size: 4096,
        };
        let p = build(Some(h), 10, &e820::build(128 << 20), Some(&rd)).unwrap();
        assert_eq!({ p.hdr.version }, 0x20f);
        assert_eq!({ p.hdr.ramdisk_image }, 0x700_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 4096);
    }

    #[test]
    fn too_many_entries() {
        let map = vec![e820::build(64 << 20)[0]; 129];
        assert!(matches!(
            build(None, 1, &map, None),
            Err(BootParamsError::TooManyE820Entries(129))
        ));
    }

    #[test]
    fn written_at_zero_page() {
        let mem = crate::memory::create_guest_memory(16 << 20, None).unwrap();
        let p = build(None, 1, &e820::build(16 << 20), None).unwrap();
        let at = write(&mem, &p).unwrap();
        let back: boot_params = mem.read_obj(at).unwrap();
        assert_eq!({ back.hdr.header }, KERNEL_HDR_MAGIC);
    }
}
