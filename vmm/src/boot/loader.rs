//! Kernel, initramfs and command line loading.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{load_cmdline, BzImage, Elf, KernelLoader, PvhBootCapability};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};

use crate::memory::{CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START};

/// Offset of the 64-bit entry (`startup_64`) in a bzImage's protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// `xloadflags` bit: the kernel has a 64-bit entry point.
const XLF_KERNEL_64: u16 = 1;
const ELFCLASS64: u8 = 2;
const EM_X86_64: u16 = 62;
const PAGE_SIZE: u64 = 4096;

/// Errors loading the boot payload.
#[derive(Debug, Error)]
pub enum LoaderError {
    /// The kernel file cannot be opened or read.
    #[error("cannot read kernel {path}: {source}")]
    ReadKernel {
        /// Kernel path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The kernel file is not a format we boot.
    #[error("unsupported kernel image {path}: {reason}")]
    UnsupportedFormat {
        /// Kernel path.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// linux-loader failed (bad headers, does not fit in memory).
    #[error("cannot load kernel {path}: {source}")]
    LoadKernel {
        /// Kernel path.
        path: PathBuf,
        /// Underlying error.
        source: linux_loader::loader::Error,
    },
    /// The initramfs cannot be opened or read.
    #[error("cannot read initramfs {path}: {source}")]
    ReadInitrd {
        /// Initramfs path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The initramfs does not fit between the kernel and the end of low memory.
    #[error("initramfs {path} ({size} bytes) does not fit in guest memory")]
    InitrdTooLarge {
        /// Initramfs path.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The command line is invalid or too long.
    #[error("invalid kernel command line: {0}")]
    Cmdline(linux_loader::cmdline::Error),
    /// Writing the command line to guest memory failed.
    #[error("cannot write the kernel command line: {0}")]
    WriteCmdline(linux_loader::loader::Error),
}

/// Kernel image formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// Uncompressed ELF (vmlinux).
    Elf,
    /// bzImage.
    BzImage,
}

/// How the boot CPU enters the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryPoint {
    /// PVH: 32-bit protected mode, %ebx = `hvm_start_info`.
    Pvh(GuestAddress),
    /// Linux 64-bit boot protocol: long mode, %rsi = zero page.
    Linux64(GuestAddress),
}

/// A kernel placed in guest memory.
#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    /// Format found.
    pub format: KernelFormat,
    /// Entry point and protocol.
    pub entry: EntryPoint,
    /// bzImage setup header, to be copied into the zero page.
    pub setup_header: Option<setup_header>,
    /// First byte after the kernel.
    pub kernel_end: u64,
}

/// Where the initramfs was placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitrdInfo {
    /// Guest physical address.
    pub addr: GuestAddress,
    /// Size in bytes.
    pub size: u64,
}

/// Identifies the format from the first bytes of an image.
pub fn detect_format(head: &[u8]) -> Result<KernelFormat, &'static str> {
    if head.len() >= 20 && head[0..4] == *b"\x7fELF" {
        if head[4] != ELFCLASS64 {
            return Err("ELF image is not 64-bit");
        }
        if u16::from_le_bytes([head[18], head[19]]) != EM_X86_64 {
            return Err("ELF image is not for x86_64");
        }
        return Ok(KernelFormat::Elf);
    }
    if head.len() >= 0x206 && head[0x202..0x206] == *b"HdrS" {
        return Ok(KernelFormat::BzImage);
    }
    Err("neither an ELF vmlinux nor a bzImage")
}

/// Loads the kernel at `path` into `mem`.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, LoaderError> {
    let read_err = |source| LoaderError::ReadKernel {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mut head = vec![0u8; 0x400];
    let n = read_up_to(&mut file, &mut head).map_err(read_err)?;
    head.truncate(n);
    let format = detect_format(&head).map_err(|reason| LoaderError::UnsupportedFormat {
        path: path.to_path_buf(),
        reason,
    })?;
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let load_err = |source| LoaderError::LoadKernel {
        path: path.to_path_buf(),
        source,
    };
    let himem = Some(GuestAddress(HIMEM_START));
    match format {
        KernelFormat::Elf => {
            let r = Elf::load(mem, None, &mut file, himem).map_err(load_err)?;
            let entry = match r.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(addr) => EntryPoint::Pvh(addr),
                _ => EntryPoint::Linux64(r.kernel_load),
            };
            Ok(LoadedKernel {
                format,
                entry,
                setup_header: None,
                kernel_end: r.kernel_end,
            })
        }
        KernelFormat::BzImage => {
            let r = BzImage::load(mem, None, &mut file, himem).map_err(load_err)?;
            let hdr = r.setup_header.unwrap_or_default();
            if hdr.xloadflags & XLF_KERNEL_64 == 0 {
                return Err(LoaderError::UnsupportedFormat {
                    path: path.to_path_buf(),
                    reason: "bzImage has no 64-bit entry point",
                });
            }
            Ok(LoadedKernel {
                format,
                entry: EntryPoint::Linux64(GuestAddress(
                    r.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET,
                )),
                setup_header: r.setup_header,
                kernel_end: r.kernel_end,
            })
        }
    }
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read(&mut buf[done..])? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

/// Highest page-aligned address at which `size` bytes end below `limit`, if that is
/// above `floor`.
pub fn initrd_address(size: u64, floor: u64, limit: u64) -> Option<u64> {
    let addr = limit.checked_sub(size)? & !(PAGE_SIZE - 1);
    (addr >= floor).then_some(addr)
}

/// Loads the initramfs as high as possible below `limit` (end of low RAM, or the
/// kernel's `initrd_addr_max`) and above the kernel.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
    limit: u64,
) -> Result<InitrdInfo, LoaderError> {
    let read_err = |source| LoaderError::ReadInitrd {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    let addr = initrd_address(size, kernel_end, limit).ok_or(LoaderError::InitrdTooLarge {
        path: path.to_path_buf(),
        size,
    })?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|e| read_err(std::io::Error::other(e.to_string())))?;
    Ok(InitrdInfo {
        addr: GuestAddress(addr),
        size,
    })
}

/// One virtio-mmio device to announce on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioAnnouncement {
    /// Window base.
    pub base: u64,
    /// Window size.
    pub size: u64,
    /// Interrupt line.
    pub irq: u32,
}

/// The user's command line with `virtio_mmio.device=` entries appended.
pub fn build_cmdline(user: &str, devices: &[MmioAnnouncement]) -> Result<Cmdline, LoaderError> {
    let mut cmdline = Cmdline::try_from(user, CMDLINE_MAX_SIZE).map_err(LoaderError::Cmdline)?;
    for d in devices {
        cmdline
            .add_virtio_mmio_device(d.size, GuestAddress(d.base), d.irq, None)
            .map_err(LoaderError::Cmdline)?;
    }
    Ok(cmdline)
}

/// Writes the command line at [`CMDLINE_START`]; returns its length with the NUL.
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &Cmdline) -> Result<usize, LoaderError> {
    load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline).map_err(LoaderError::WriteCmdline)?;
    let len = cmdline
        .as_cstring()
        .map_err(LoaderError::Cmdline)?
        .as_bytes_with_nul()
        .len();
    debug_assert!(mem.address_in_range(GuestAddress(CMDLINE_START + len as u64)));
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats() {
        let mut elf = vec![0u8; 64];
        elf[0..4].copy_from_slice(b"\x7fELF");
        elf[4] = ELFCLASS64;
        elf[18] = EM_X86_64 as u8;
        assert_eq!(detect_format(&elf), Ok(KernelFormat::Elf));
        elf[4] = 1;
        assert!(detect_format(&elf).is_err());

        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(detect_format(&bz), Ok(KernelFormat::BzImage));
        assert!(detect_format(b"#!/bin/sh\n").is_err());
        assert!(detect_format(&[]).is_err());
    }

    #[test]
    fn initrd_goes_high_and_aligned() {
        assert_eq!(
            initrd_address(0x1800, 0x20_0000, 0x800_0000),
            Some(0x7ff_e000)
        );
        assert_eq!(initrd_address(0x800_0000, 0x20_0000, 0x800_0000), None);
        assert_eq!(initrd_address(u64::MAX, 0, 0x800_0000), None);
    }

    #[test]
    fn cmdline_gets_virtio_devices() {
        let c = build_cmdline(
            "console=ttyS0",
            &[MmioAnnouncement {
                base: 0xd000_0000,
                size: 0x1000,
                irq: 5,
            }],
        )
        .unwrap();
        assert_eq!(
            c.as_cstring().unwrap().to_str().unwrap(),
            "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5"
        );
    }

    #[test]
    fn cmdline_too_long_is_an_error() {
        let long = "a".repeat(CMDLINE_MAX_SIZE + 1);
        assert!(matches!(
            build_cmdline(&long, &[]),
            Err(LoaderError::Cmdline(_))
        ));
    }

    #[test]
    fn missing_kernel_names_the_file() {
        let mem = crate::memory::create_guest_memory(16 << 20, None).unwrap();
        let e = load_kernel(&mem, Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/vmlinux"), "{e}");
    }

    #[test]
    fn garbage_kernel_is_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, b"not a kernel").unwrap();
        let mem = crate::memory::create_guest_memory(16 << 20, None).unwrap();
        assert!(matches!(
            load_kernel(&mem, &p),
            Err(LoaderError::UnsupportedFormat { .. })
        ));
    }
}
