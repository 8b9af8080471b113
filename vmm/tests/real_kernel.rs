//! Boots a real Linux vmlinux (`HULL_TEST_KERNEL`, else the assets dir). On PVM the
//! guest only gets as far as its banner and command line; on hardware KVM it must
//! reach init, and the boot time is printed.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

fn kernel() -> Option<PathBuf> {
    let p = std::env::var_os("HULL_TEST_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(hull_vmm::assets::kernel_path);
    p.exists().then_some(p)
}

#[test]
fn real_kernel_prints_banner_and_command_line() {
    if should_skip("real_kernel_prints_banner_and_command_line") {
        return;
    }
    let Some(kernel) = kernel() else {
        eprintln!(
            "SKIP real_kernel_prints_banner_and_command_line: no kernel at $HULL_TEST_KERNEL or {}",
            hull_vmm::assets::kernel_path().display()
        );
        return;
    };
    let hardware = hull_vmm::kvm::hardware_kvm_usable();
    let initrd = hull_vmm::assets::initramfs_path();
    let cmdline = format!(
        "earlyprintk=serial console=ttyS0 reboot=k panic=1 hull.test={}",
        std::process::id()
    );
    let mut args = vec![
        "--kernel".to_string(),
        kernel.display().to_string(),
        "--memory".into(),
        "256".into(),
        "--cmdline".into(),
        cmdline.clone(),
    ];
    if hardware.is_ok() && initrd.exists() {
        args.extend(["--initrd".into(), initrd.display().to_string()]);
    }
    let start = Instant::now();
    let mut child = vmm()
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((start.elapsed(), line)).is_err() {
                break;
            }
        }
    });

    let limit = Duration::from_secs(if hardware.is_ok() { 30 } else { 90 });
    let want_cmdline = format!("Command line: {cmdline}");
    let (mut banner, mut cmd, mut init) = (false, false, None);
    let mut log = Vec::new();
    while start.elapsed() < limit {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok((t, line)) => {
                banner |= line.contains("Linux version");
                cmd |= line.contains(&want_cmdline);
                if line.contains("Run /init as init process")
                    || line.contains("No working init found")
                    || line.contains("Unable to mount root fs")
                {
                    init.get_or_insert(t);
                }
                log.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let done = banner && cmd && (hardware.is_err() || init.is_some());
        if done {
            break;
        }
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let tail = log[log.len().saturating_sub(15)..].join("\n");
    assert!(banner, "no 'Linux version' line; serial tail:\n{tail}");
    assert!(cmd, "no '{want_cmdline}' line; serial tail:\n{tail}");
    match hardware {
        Ok(()) => {
            let t = init.unwrap_or_else(|| panic!("kernel did not reach init; tail:\n{tail}"));
            eprintln!(
                "real kernel reached init {:.1} ms after VMM start",
                t.as_secs_f64() * 1000.0
            );
        }
        Err(why) => eprintln!(
            "real kernel printed its banner and command line; not waiting for init: {why}"
        ),
    }
}

#[test]
fn real_kernel_sees_every_vcpu_in_one_package() {
    if should_skip("real_kernel_sees_every_vcpu_in_one_package") {
        return;
    }
    let Some(kernel) = kernel() else {
        eprintln!(
            "SKIP real_kernel_sees_every_vcpu_in_one_package: no kernel at $HULL_TEST_KERNEL or {}",
            hull_vmm::assets::kernel_path().display()
        );
        return;
    };
    let start = Instant::now();
    let mut child = vmm()
        .args([
            "--kernel",
            kernel.to_str().unwrap(),
            "--memory",
            "128",
            "--vcpus",
            "3",
        ])
        .args([
            "--cmdline",
            "earlyprintk=serial console=ttyS0 reboot=k panic=1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // MP table: three processors; CPUID topology: one package of three cores.
    let (mut processors, mut cores) = (false, false);
    let mut log = Vec::new();
    while !(processors && cores) && start.elapsed() < Duration::from_secs(60) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                processors |= line.ends_with("Processors: 3");
                cores |= line.contains("Num. cores per package:") && line.ends_with(" 3");
                log.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let tail = log[log.len().saturating_sub(15)..].join("\n");
    assert!(processors, "MP table processors not seen; tail:\n{tail}");
    assert!(
        cores,
        "CPU topology not one package of 3 cores; tail:\n{tail}"
    );
}

/// Rewrites the type of the kernel's Xen PVH entry note so that hull-vmm falls back
/// to the 64-bit Linux boot protocol (zero page) for the same vmlinux.
fn without_pvh_note(image: &mut [u8]) -> bool {
    let mut found = false;
    let mut i = 12;
    while i + 4 <= image.len() {
        if &image[i..i + 4] == b"Xen\0" {
            let word = |at: usize| u32::from_le_bytes(image[at..at + 4].try_into().unwrap());
            if word(i - 12) == 4 && word(i - 4) == 18 {
                image[i - 4..i].copy_from_slice(&0x7777u32.to_le_bytes());
                found = true;
            }
        }
        i += 4;
    }
    found
}

#[test]
fn real_kernel_boots_through_the_64bit_protocol() {
    if should_skip("real_kernel_boots_through_the_64bit_protocol") {
        return;
    }
    let Some(kernel) = kernel() else {
        eprintln!(
            "SKIP real_kernel_boots_through_the_64bit_protocol: no kernel at $HULL_TEST_KERNEL or {}",
            hull_vmm::assets::kernel_path().display()
        );
        return;
    };
    let mut image = std::fs::read(&kernel).unwrap();
    if !without_pvh_note(&mut image) {
        eprintln!("SKIP real_kernel_boots_through_the_64bit_protocol: kernel has no PVH note");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("vmlinux-no-pvh");
    std::fs::write(&copy, &image).unwrap();
    drop(image);
    let cmdline = "earlyprintk=serial console=ttyS0 reboot=k hull.proto=linux64";
    let start = Instant::now();
    let mut child = vmm()
        .args([
            "--kernel",
            copy.to_str().unwrap(),
            "--memory",
            "128",
            "--cmdline",
            cmdline,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let want = format!("Command line: {cmdline}");
    let (mut cmd, mut e820) = (false, false);
    let mut log = Vec::new();
    while !(cmd && e820) && start.elapsed() < Duration::from_secs(60) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                cmd |= line.contains(&want);
                // The E820 map came through the zero page.
                e820 |=
                    line.contains("BIOS-e820: [mem 0x0000000000100000-0x0000000007ffffff] usable");
                log.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let tail = log[log.len().saturating_sub(15)..].join("\n");
    assert!(cmd, "no '{want}'; tail:\n{tail}");
    assert!(e820, "no E820 RAM line; tail:\n{tail}");
}
