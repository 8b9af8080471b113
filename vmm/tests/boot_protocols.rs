//! The boot protocols, each with a tiny guest that checks what the VMM handed it.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(20);

/// Guest code (valid in 32- and 64-bit mode) that prints `ok` or `bad` after
/// running `checks`, which jump to `fail` on mismatch.
fn checked_guest(checks: impl FnOnce(&mut Asm)) -> Vec<u8> {
    let mut a = Asm::new();
    checks(&mut a);
    a.print("ok\n").reset().label("fail").print("bad\n").reset();
    a.finish()
}

fn boot(image: &[u8], extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("kernel");
    std::fs::write(&kernel, image).unwrap();
    let mut args = vec!["--kernel", kernel.to_str().unwrap(), "--memory", "32"];
    args.extend_from_slice(extra);
    run_vmm(&args, LIMIT)
}

/// cmp dword [rsi + 0x202], "HdrS"; jne fail  (zero page setup header magic)
fn check_zero_page(a: &mut Asm) {
    a.bytes(&[0x81, 0xbe, 0x02, 0x02, 0x00, 0x00])
        .bytes(b"HdrS")
        .jne("fail");
    // cmp byte [rsi + 0x1e8], 3  (three E820 entries for 32 MiB)
    a.bytes(&[0x80, 0xbe, 0xe8, 0x01, 0x00, 0x00, 0x03])
        .jne("fail");
}

#[test]
fn elf_without_pvh_note_boots_in_long_mode() {
    if should_skip("elf_without_pvh_note_boots_in_long_mode") {
        return;
    }
    let r = boot(&plain_elf(&checked_guest(check_zero_page)), &[]);
    assert!(r.status.success(), "stderr {}", r.stderr);
    assert_eq!(r.stdout, "ok\n");
}

#[test]
fn bzimage_boots_through_the_64bit_entry() {
    if should_skip("bzimage_boots_through_the_64bit_entry") {
        return;
    }
    let r = boot(&bzimage(&checked_guest(check_zero_page)), &[]);
    assert!(r.status.success(), "stderr {}", r.stderr);
    assert_eq!(r.stdout, "ok\n");
}

#[test]
fn pvh_start_info_carries_cmdline_initrd_and_memmap() {
    if should_skip("pvh_start_info_carries_cmdline_initrd_and_memmap") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd");
    std::fs::write(&initrd, b"HULLinitrd").unwrap();
    let code = checked_guest(|a| {
        // cmp dword [ebx], XEN_HVM_START_MAGIC
        a.bytes(&[0x81, 0x3b])
            .bytes(&0x336e_c578u32.to_le_bytes())
            .jne("fail");
        // cmp dword [ebx + 12], 1      (nr_modules)
        a.bytes(&[0x83, 0x7b, 0x0c, 0x01]).jne("fail");
        // mov eax, [ebx + 16]; mov eax, [eax]; mov eax, [eax]  (initrd's first bytes)
        a.bytes(&[0x8b, 0x43, 0x10, 0x8b, 0x00, 0x8b, 0x00]);
        a.cmp_eax(u32::from_le_bytes(*b"HULL")).jne("fail");
        // mov eax, [ebx + 24]; mov eax, [eax]  (command line's first bytes)
        a.bytes(&[0x8b, 0x43, 0x18, 0x8b, 0x00]);
        a.cmp_eax(u32::from_le_bytes(*b"abc=")).jne("fail");
        // cmp dword [ebx + 48], 3      (memmap entries)
        a.bytes(&[0x83, 0x7b, 0x30, 0x03]).jne("fail");
    });
    let r = boot(
        &pvh_elf(&code),
        &[
            "--initrd",
            initrd.to_str().unwrap(),
            "--cmdline",
            "abc=1 console=ttyS0",
        ],
    );
    assert!(r.status.success(), "stderr {}", r.stderr);
    assert_eq!(r.stdout, "ok\n");
}

#[test]
fn boot_timer_write_is_logged() {
    if should_skip("boot_timer_write_is_logged") {
        return;
    }
    let port = hull_protocol::guest::BOOT_TIMER_PORT;
    let mut a = Asm::new();
    // mov dx, port; mov al, magic; out dx, al
    a.bytes(&[0x66, 0xba]).bytes(&port.to_le_bytes()).bytes(&[
        0xb0,
        hull_protocol::guest::BOOT_TIMER_MAGIC,
        0xee,
    ]);
    a.reset();
    let r = boot(&pvh_elf(&a.finish()), &[]);
    assert!(r.status.success(), "stderr {}", r.stderr);
    assert!(
        r.stderr.contains("boot-timer: guest ready") && r.stderr.contains("ms after VMM start"),
        "{}",
        r.stderr
    );
}
