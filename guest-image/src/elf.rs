//! Just enough ELF to tell a static executable from one that needs a dynamic loader:
//! the kernel runs `/init` before any loader or library exists in the initramfs.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

const PT_INTERP: u32 = 3;

/// True when `path` is a 64-bit little-endian ELF without a `PT_INTERP` segment
/// (static, or static-pie as Rust's `+crt-static` makes on glibc).
pub fn is_static_elf(path: &Path) -> io::Result<bool> {
    let mut f = File::open(path)?;
    let mut bytes = Vec::new();
    // Program headers sit near the start; 64 KiB covers any sane layout.
    f.by_ref().take(64 * 1024).read_to_end(&mut bytes)?;
    Ok(static_elf(&bytes))
}

fn static_elf(b: &[u8]) -> bool {
    // e_ident: magic, ELFCLASS64 (2), ELFDATA2LSB (1).
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    if phentsize < 4 {
        return false;
    }
    (0..phnum).all(|i| {
        let o = phoff.saturating_add(i * phentsize);
        match b.get(o..o + 4) {
            Some(t) => u32::from_le_bytes(t.try_into().expect("4 bytes")) != PT_INTERP,
            None => false,
        }
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An ELF64 header followed by program headers of the given types.
    pub(crate) fn elf_with_phdrs(types: &[u32]) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&(types.len() as u16).to_le_bytes());
        for t in types {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&t.to_le_bytes());
            b.extend(ph);
        }
        b
    }

    #[test]
    fn tells_static_from_dynamic() {
        assert!(static_elf(&elf_with_phdrs(&[6, 1, 1])));
        assert!(!static_elf(&elf_with_phdrs(&[6, 3, 1])));
        assert!(!static_elf(b"#!/bin/sh\n"));
        let mut truncated = elf_with_phdrs(&[1, 1]);
        truncated.truncate(100);
        assert!(!static_elf(&truncated));
    }

    #[test]
    fn system_binaries() {
        // /bin/sh is dynamic on every distribution this runs on.
        if Path::new("/bin/sh").exists() {
            assert!(!is_static_elf(Path::new("/bin/sh")).unwrap());
        }
        let bb = Path::new("/usr/bin/busybox");
        if bb.exists() {
            eprintln!("busybox static: {}", is_static_elf(bb).unwrap());
        }
    }
}
