//! Failures end hull-vmm with a non-zero status and one line naming the problem.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(20);

fn assert_fails(args: &[&str], needle: &str) {
    let r = run_vmm(args, LIMIT);
    assert!(!r.status.success(), "{args:?} succeeded");
    let line = r.stderr.trim();
    assert_eq!(line.lines().count(), 1, "{args:?}: not one line: {line:?}");
    assert!(line.starts_with("hull-vmm: "), "{line}");
    assert!(line.contains(needle), "{args:?}: {line:?} lacks {needle:?}");
}

fn hello(dir: &std::path::Path) -> String {
    let code = Asm::new().print("hi\n").reset().finish();
    write_guest(dir, "hello.elf", &code)
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn missing_kernel() {
    assert_fails(
        &["--kernel", "/nonexistent/vmlinux"],
        "/nonexistent/vmlinux",
    );
}

#[test]
fn unsupported_kernel_format() {
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("script");
    std::fs::write(&k, b"#!/bin/sh\necho not a kernel\n").unwrap();
    assert_fails(
        &["--kernel", k.to_str().unwrap()],
        "unsupported kernel image",
    );
}

#[test]
fn missing_initrd() {
    let dir = tempfile::tempdir().unwrap();
    let k = hello(dir.path());
    assert_fails(
        &["--kernel", &k, "--initrd", "/nonexistent/initrd"],
        "/nonexistent/initrd",
    );
}

#[test]
fn bad_memory_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let k = hello(dir.path());
    assert_fails(&["--kernel", &k, "--memory", "0"], "guest memory");
    assert_fails(
        &["--kernel", &k, "--memory", "1073741824"],
        "larger than the host",
    );
}

#[test]
fn bad_vcpu_counts() {
    let dir = tempfile::tempdir().unwrap();
    let k = hello(dir.path());
    assert_fails(&["--kernel", &k, "--vcpus", "0"], "at least one vCPU");
    if should_skip("bad_vcpu_counts (too many)") {
        return;
    }
    assert_fails(
        &["--kernel", &k, "--vcpus", "1000"],
        "are possible (KVM allows",
    );
}

#[test]
fn unwritable_console_file() {
    let dir = tempfile::tempdir().unwrap();
    let k = hello(dir.path());
    if should_skip("unwritable_console_file") {
        return;
    }
    assert_fails(
        &["--kernel", &k, "--console", "file:/nonexistent/dir/console"],
        "/nonexistent/dir/console",
    );
}

#[test]
fn bad_console_spec_is_rejected() {
    let r = run_vmm(&["--kernel", "/x", "--console", "tty"], LIMIT);
    assert!(!r.status.success());
    assert!(
        r.stderr.contains("stdio, file:PATH or none"),
        "{}",
        r.stderr
    );
}

#[test]
fn overlong_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let k = hello(dir.path());
    if should_skip("overlong_command_line") {
        return;
    }
    let long = "x".repeat(4096);
    assert_fails(&["--kernel", &k, "--cmdline", &long], "command line");
}

#[test]
fn kvm_internal_error_names_suberror_and_rip() {
    if should_skip("kvm_internal_error_names_suberror_and_rip") {
        return;
    }
    if !hull_vmm::kvm::is_pvm() {
        // Hardware KVM runs int3 natively; there is no portable way to make its
        // emulator fail from a tiny guest.
        eprintln!(
            "SKIP kvm_internal_error_names_suberror_and_rip: needs PVM (int3 is emulated there)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let code = Asm::new().print("A").bytes(&[0xcc]).finish(); // int3
    let k = write_guest(dir.path(), "int3.elf", &code);
    let entry = 0x10_0000 + code.len() as u64 - 1;
    assert_fails(
        &["--kernel", k.to_str().unwrap(), "--memory", "16"],
        &format!(
            "KVM internal error, suberror 1 (instruction emulation failed) at guest RIP {entry:#x}"
        ),
    );
}
