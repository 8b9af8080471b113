//! Tiny test guests: hand-assembled 32-bit code wrapped in a minimal PVH ELF, and
//! helpers to run hull-vmm on them.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Where the guest code is loaded and entered.
pub const LOAD_ADDR: u32 = 0x10_0000;

/// `None` when KVM can run tiny guests here; else why the test skips.
pub fn skip_reason() -> Option<String> {
    hull_vmm::kvm::kvm_usable().err()
}

/// Prints why a test skips and returns true when it should.
pub fn should_skip(test: &str) -> bool {
    match skip_reason() {
        Some(r) => {
            eprintln!("SKIP {test}: {r}");
            true
        }
        None => false,
    }
}

/// A minimal assembler for 32-bit protected-mode code with forward jumps.
#[derive(Default)]
pub struct Asm {
    pub code: Vec<u8>,
    labels: Vec<(&'static str, usize)>,
    fixups: Vec<(&'static str, usize)>,
}

impl Asm {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.code.extend_from_slice(b);
        self
    }

    /// Writes `s` to COM1, one `mov al, c; out dx, al` per byte.
    pub fn print(&mut self, s: &str) -> &mut Self {
        self.bytes(&[0x66, 0xba, 0xf8, 0x03]); // mov dx, 0x3f8
        for c in s.bytes() {
            self.bytes(&[0xb0, c, 0xee]); // mov al, c; out dx, al
        }
        self
    }

    /// Asks the i8042 to reset the CPU, then halts forever.
    pub fn reset(&mut self) -> &mut Self {
        // mov al, 0xfe; out 0x64, al; hlt; jmp $-1
        self.bytes(&[0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd])
    }

    /// mov eax, [addr]
    pub fn load_eax(&mut self, addr: u32) -> &mut Self {
        self.bytes(&[0xa1]).bytes(&addr.to_le_bytes())
    }

    /// mov [addr], eax
    pub fn store_eax(&mut self, addr: u32) -> &mut Self {
        self.bytes(&[0xa3]).bytes(&addr.to_le_bytes())
    }

    /// mov dword [addr], imm
    pub fn store(&mut self, addr: u32, imm: u32) -> &mut Self {
        self.bytes(&[0xc7, 0x05])
            .bytes(&addr.to_le_bytes())
            .bytes(&imm.to_le_bytes())
    }

    /// and eax, imm
    pub fn and_eax(&mut self, imm: u32) -> &mut Self {
        self.bytes(&[0x25]).bytes(&imm.to_le_bytes())
    }

    /// cmp eax, imm
    pub fn cmp_eax(&mut self, imm: u32) -> &mut Self {
        self.bytes(&[0x3d]).bytes(&imm.to_le_bytes())
    }

    /// jne label (rel32)
    pub fn jne(&mut self, label: &'static str) -> &mut Self {
        self.bytes(&[0x0f, 0x85]);
        self.fixups.push((label, self.code.len()));
        self.bytes(&[0; 4])
    }

    pub fn label(&mut self, name: &'static str) -> &mut Self {
        self.labels.push((name, self.code.len()));
        self
    }

    /// Resolves jumps.
    pub fn finish(&mut self) -> Vec<u8> {
        for (name, at) in &self.fixups {
            let target = self
                .labels
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("no label {name}"))
                .1;
            let rel = target as i64 - (*at as i64 + 4);
            self.code[*at..*at + 4].copy_from_slice(&(rel as i32).to_le_bytes());
        }
        self.code.clone()
    }
}

/// Wraps `code` in an ELF64 executable with one PT_LOAD at [`LOAD_ADDR`] and a
/// Xen PVH entry note pointing at it.
pub fn pvh_elf(code: &[u8]) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let note_off = EHDR + 2 * PHDR;
    let mut note = Vec::new();
    note.extend_from_slice(&4u32.to_le_bytes()); // namesz
    note.extend_from_slice(&4u32.to_le_bytes()); // descsz
    note.extend_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&LOAD_ADDR.to_le_bytes());
    let code_off = 0x200usize;

    let mut f = vec![0u8; code_off];
    f[0..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // 64-bit
    f[5] = 1; // little endian
    f[6] = 1; // version
    let w16 = |f: &mut Vec<u8>, at: usize, v: u16| f[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let w32 = |f: &mut Vec<u8>, at: usize, v: u32| f[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let w64 = |f: &mut Vec<u8>, at: usize, v: u64| f[at..at + 8].copy_from_slice(&v.to_le_bytes());
    w16(&mut f, 16, 2); // ET_EXEC
    w16(&mut f, 18, 62); // EM_X86_64
    w32(&mut f, 20, 1);
    w64(&mut f, 24, u64::from(LOAD_ADDR)); // e_entry
    w64(&mut f, 32, EHDR as u64); // e_phoff
    w16(&mut f, 52, EHDR as u16);
    w16(&mut f, 54, PHDR as u16);
    w16(&mut f, 56, 2); // e_phnum

    let p = EHDR; // PT_LOAD
    w32(&mut f, p, 1);
    w32(&mut f, p + 4, 7);
    w64(&mut f, p + 8, code_off as u64);
    w64(&mut f, p + 16, u64::from(LOAD_ADDR));
    w64(&mut f, p + 24, u64::from(LOAD_ADDR));
    w64(&mut f, p + 32, code.len() as u64);
    w64(&mut f, p + 40, code.len() as u64);
    w64(&mut f, p + 48, 0x1000);

    let p = EHDR + PHDR; // PT_NOTE
    w32(&mut f, p, 4);
    w32(&mut f, p + 4, 4);
    w64(&mut f, p + 8, note_off as u64);
    w64(&mut f, p + 32, note.len() as u64);
    w64(&mut f, p + 40, note.len() as u64);
    w64(&mut f, p + 48, 4);

    f[note_off..note_off + note.len()].copy_from_slice(&note);
    f.extend_from_slice(code);
    f
}

/// Wraps `code` in an ELF64 with no PVH note, so hull-vmm uses the 64-bit Linux boot
/// protocol (long mode, %rsi = zero page).
pub fn plain_elf(code: &[u8]) -> Vec<u8> {
    let mut f = pvh_elf(code);
    // Turn the PT_NOTE into PT_NULL.
    f[64 + 56..64 + 60].copy_from_slice(&0u32.to_le_bytes());
    f
}

/// A bzImage whose protected-mode part holds `code64` at the 64-bit entry (+0x200).
pub fn bzimage(code64: &[u8]) -> Vec<u8> {
    let setup_sects = 1u8;
    let mut f = vec![0u8; (usize::from(setup_sects) + 1) * 512];
    f[0x1f1] = setup_sects;
    f[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    f[0x202..0x206].copy_from_slice(b"HdrS");
    f[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes()); // version 2.15
    f[0x211] = 1; // LOADED_HIGH
    f[0x214..0x218].copy_from_slice(&LOAD_ADDR.to_le_bytes()); // code32_start
    f[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
    f[0x236..0x238].copy_from_slice(&1u16.to_le_bytes()); // XLF_KERNEL_64
    let mut pm = vec![0xf4u8; 0x200]; // 32-bit entry: never used
    pm.extend_from_slice(code64);
    f.extend_from_slice(&pm);
    f
}

/// Writes a guest image into `dir`.
pub fn write_guest(dir: &Path, name: &str, code: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, pvh_elf(code)).unwrap();
    p
}

/// The hull-vmm binary built for these tests.
pub fn vmm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hull-vmm"))
}

/// Result of one hull-vmm run.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Waits for `child` up to `limit`, killing it after; collects its output.
pub fn wait_with_timeout(mut child: Child, limit: Duration) -> Run {
    let start = Instant::now();
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = out_pipe.as_mut() {
            let _ = p.read_to_string(&mut s);
        }
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = err_pipe.as_mut() {
            let _ = p.read_to_string(&mut s);
        }
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let s = child.wait().unwrap();
            let out = out_t.join().unwrap();
            let err = err_t.join().unwrap();
            panic!("hull-vmm did not finish in {limit:?} ({s}); stdout: {out:?} stderr: {err:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
        elapsed: start.elapsed(),
    }
}

/// Runs hull-vmm with `args`, stdio captured, stdin closed.
pub fn run_vmm(args: &[&str], limit: Duration) -> Run {
    let child = vmm()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_with_timeout(child, limit)
}
