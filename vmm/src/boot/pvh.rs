//! PVH boot: the `hvm_start_info` block a PVH entry point finds in %ebx.

use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
use thiserror::Error;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::e820::E820Entry;
use super::InitrdInfo;
use crate::memory::{CMDLINE_START, PVH_INFO_START, PVH_MEMMAP_START, PVH_MODLIST_START};

/// `hvm_start_info.magic` ("xEn3" with bit 0 set).
pub const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

/// Errors writing PVH boot data.
#[derive(Debug, Error)]
pub enum PvhError {
    /// linux-loader refused to write the structures.
    #[error("cannot write PVH start info: {0}")]
    Write(#[from] linux_loader::configurator::Error),
}

/// Builds the start info (without writing it) for tests and for `write`.
pub fn start_info(e820: &[E820Entry], initrd: Option<&InitrdInfo>) -> hvm_start_info {
    hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: e820.len() as u32,
        nr_modules: u32::from(initrd.is_some()),
        modlist_paddr: if initrd.is_some() {
            PVH_MODLIST_START
        } else {
            0
        },
        ..Default::default()
    }
}

/// Memmap table entries in PVH form.
pub fn memmap(e820: &[E820Entry]) -> Vec<hvm_memmap_table_entry> {
    e820.iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        })
        .collect()
}

/// Writes start info, memmap table and module list into guest memory; returns the
/// start info address for %ebx.
pub fn write(
    mem: &GuestMemoryMmap,
    e820: &[E820Entry],
    initrd: Option<&InitrdInfo>,
) -> Result<GuestAddress, PvhError> {
    let info = start_info(e820, initrd);
    let mut params = BootParams::new(&info, GuestAddress(PVH_INFO_START));
    params.set_sections(&memmap(e820), GuestAddress(PVH_MEMMAP_START));
    if let Some(rd) = initrd {
        let module = hvm_modlist_entry {
            paddr: rd.addr.0,
            size: rd.size,
            ..Default::default()
        };
        params.set_modules(&[module], GuestAddress(PVH_MODLIST_START));
    }
    PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)?;
    Ok(GuestAddress(PVH_INFO_START))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::e820;
    use vm_memory::Bytes;

    #[test]
    fn start_info_points_at_tables() {
        let map = e820::build(64 << 20);
        let info = start_info(&map, None);
        assert_eq!(info.magic, XEN_HVM_START_MAGIC);
        assert_eq!(info.memmap_entries, 3);
        assert_eq!(info.nr_modules, 0);
        assert_eq!(info.cmdline_paddr, CMDLINE_START);
    }

    #[test]
    fn writes_tables_and_module() {
        let mem = crate::memory::create_guest_memory(16 << 20, None).unwrap();
        let map = e820::build(16 << 20);
        let rd = InitrdInfo {
            addr: GuestAddress(0x80_0000),
            size: 0x1234,
        };
        let at = write(&mem, &map, Some(&rd)).unwrap();
        let info: hvm_start_info = mem.read_obj(at).unwrap();
        assert_eq!(info.nr_modules, 1);
        let module: hvm_modlist_entry = mem.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
        assert_eq!((module.paddr, module.size), (0x80_0000, 0x1234));
        let last: hvm_memmap_table_entry = mem
            .read_obj(GuestAddress(info.memmap_paddr + 2 * 24))
            .unwrap();
        assert_eq!(last.addr, 0x10_0000);
        assert_eq!(last.type_, e820::E820_RAM);
    }
}
