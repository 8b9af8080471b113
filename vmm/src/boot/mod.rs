//! Putting the boot payload and firmware-like tables into guest memory.

pub mod bootparams;
pub mod e820;
pub mod loader;
pub mod mptable;
pub mod pvh;

use std::path::Path;

use thiserror::Error;
use vm_memory::{GuestAddress, GuestMemoryMmap};

pub use loader::{EntryPoint, InitrdInfo, KernelFormat, LoadedKernel, MmioAnnouncement};

use crate::memory::{low_ram_end, total_size};

/// Errors preparing the guest for boot.
#[derive(Debug, Error)]
pub enum BootError {
    /// Loading kernel, initramfs or command line failed.
    #[error(transparent)]
    Loader(#[from] loader::LoaderError),
    /// PVH structures.
    #[error(transparent)]
    Pvh(#[from] pvh::PvhError),
    /// Zero page.
    #[error(transparent)]
    BootParams(#[from] bootparams::BootParamsError),
    /// MP table.
    #[error(transparent)]
    MpTable(#[from] mptable::MpTableError),
}

/// Register state the boot CPU starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootEntry {
    /// 32-bit protected mode at `entry`, `start_info` in %ebx.
    Pvh {
        /// Entry point.
        entry: GuestAddress,
        /// `hvm_start_info` address.
        start_info: GuestAddress,
    },
    /// 64-bit long mode at `entry`, `zero_page` in %rsi.
    Linux64 {
        /// Entry point.
        entry: GuestAddress,
        /// `boot_params` address.
        zero_page: GuestAddress,
    },
}

/// What to boot.
#[derive(Debug)]
pub struct BootPayload<'a> {
    /// Kernel image.
    pub kernel: &'a Path,
    /// Optional initramfs.
    pub initrd: Option<&'a Path>,
    /// Command line as given.
    pub cmdline: &'a str,
    /// virtio-mmio devices to announce.
    pub mmio_devices: &'a [MmioAnnouncement],
    /// Number of vCPUs for the MP table.
    pub vcpus: u16,
}

/// Loads everything and writes the boot tables; returns the boot CPU's entry state.
pub fn prepare(mem: &GuestMemoryMmap, payload: &BootPayload) -> Result<BootEntry, BootError> {
    let kernel = loader::load_kernel(mem, payload.kernel)?;
    let mem_size = total_size(mem);
    let initrd = match payload.initrd {
        Some(path) => {
            let mut limit = low_ram_end(mem_size);
            if let Some(h) = kernel.setup_header {
                if h.initrd_addr_max != 0 {
                    limit = limit.min(u64::from(h.initrd_addr_max) + 1);
                }
            }
            Some(loader::load_initrd(mem, path, kernel.kernel_end, limit)?)
        }
        None => None,
    };
    let cmdline = loader::build_cmdline(payload.cmdline, payload.mmio_devices)?;
    let cmdline_len = loader::write_cmdline(mem, &cmdline)?;
    let map = e820::build(mem_size);
    mptable::write(mem, payload.vcpus)?;
    Ok(match kernel.entry {
        EntryPoint::Pvh(entry) => BootEntry::Pvh {
            entry,
            start_info: pvh::write(mem, &map, initrd.as_ref())?,
        },
        EntryPoint::Linux64(entry) => {
            let params =
                bootparams::build(kernel.setup_header, cmdline_len, &map, initrd.as_ref())?;
            BootEntry::Linux64 {
                entry,
                zero_page: bootparams::write(mem, &params)?,
            }
        }
    })
}
