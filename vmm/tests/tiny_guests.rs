//! KVM tests with hand-made guests booted through the PVH entry point.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn hello_guest_prints_and_resets() {
    if should_skip("hello_guest_prints_and_resets") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let code = Asm::new()
        .print("hello from the hull guest\n")
        .reset()
        .finish();
    let kernel = write_guest(dir.path(), "hello.elf", &code);
    let r = run_vmm(
        &["--kernel", kernel.to_str().unwrap(), "--memory", "16"],
        LIMIT,
    );
    assert!(
        r.status.success(),
        "status {} stderr {}",
        r.status,
        r.stderr
    );
    assert_eq!(
        r.stdout, "hello from the hull guest\n",
        "stderr: {}",
        r.stderr
    );
}

#[test]
fn memfd_backed_guest_runs() {
    if should_skip("memfd_backed_guest_runs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let code = Asm::new().print("memfd\n").reset().finish();
    let kernel = write_guest(dir.path(), "memfd.elf", &code);
    let r = run_vmm(
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--memory",
            "16",
            "--memfd",
        ],
        LIMIT,
    );
    assert!(r.status.success(), "stderr {}", r.stderr);
    assert_eq!(r.stdout, "memfd\n");
}

#[test]
fn console_to_file_and_none() {
    if should_skip("console_to_file_and_none") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let code = Asm::new().print("to a file\n").reset().finish();
    let kernel = write_guest(dir.path(), "file.elf", &code);
    let log = dir.path().join("console.log");
    let console = format!("file:{}", log.display());
    let r = run_vmm(
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--memory",
            "16",
            "--console",
            &console,
        ],
        LIMIT,
    );
    assert!(r.status.success(), "stderr {}", r.stderr);
    assert_eq!(r.stdout, "");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "to a file\n");

    let r = run_vmm(
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--memory",
            "16",
            "--console",
            "none",
        ],
        LIMIT,
    );
    assert!(r.status.success(), "stderr {}", r.stderr);
    assert_eq!(r.stdout, "");
}

#[test]
fn smp_guest_boots_with_several_vcpus() {
    if should_skip("smp_guest_boots_with_several_vcpus") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let code = Asm::new().print("smp\n").reset().finish();
    let kernel = write_guest(dir.path(), "smp.elf", &code);
    let r = run_vmm(
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--memory",
            "32",
            "--vcpus",
            "4",
        ],
        LIMIT,
    );
    assert!(r.status.success(), "stderr {}", r.stderr);
    assert_eq!(r.stdout, "smp\n");
}

#[test]
fn triple_fault_is_a_clear_error() {
    if should_skip("triple_fault_is_a_clear_error") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // ud2 with an IDT that has no valid gate: #UD -> #GP -> #DF -> shutdown.
    let code = Asm::new().print("faulting\n").bytes(&[0x0f, 0x0b]).finish();
    let kernel = write_guest(dir.path(), "fault.elf", &code);
    let r = run_vmm(
        &["--kernel", kernel.to_str().unwrap(), "--memory", "16"],
        LIMIT,
    );
    assert!(!r.status.success());
    assert_eq!(r.stdout, "faulting\n");
    let line = r.stderr.trim();
    assert_eq!(line.lines().count(), 1, "one line: {line:?}");
    assert!(line.contains("triple fault"), "{line}");
}

#[test]
fn sigterm_stops_a_spinning_guest() {
    if should_skip("sigterm_stops_a_spinning_guest") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Print, then spin forever (jmp $).
    let code = Asm::new().print("spinning\n").bytes(&[0xeb, 0xfe]).finish();
    let kernel = write_guest(dir.path(), "spin.elf", &code);
    for (sig, vcpus) in [(libc::SIGTERM, "1"), (libc::SIGINT, "2")] {
        let child = vmm()
            .args([
                "--kernel",
                kernel.to_str().unwrap(),
                "--memory",
                "16",
                "--vcpus",
                vcpus,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(700));
            // SAFETY: signalling our own child by pid.
            unsafe { libc::kill(pid, sig) };
        });
        let r = wait_with_timeout(child, LIMIT);
        killer.join().unwrap();
        assert_eq!(r.status.code(), Some(128 + sig), "stderr {}", r.stderr);
        assert_eq!(r.stdout, "spinning\n");
        assert!(r.elapsed < Duration::from_secs(5), "{:?}", r.elapsed);
    }
}

#[test]
fn terminal_input_reaches_the_guest_and_mode_is_restored() {
    if should_skip("terminal_input_reaches_the_guest_and_mode_is_restored") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut a = Asm::new();
    a.print("ready\n");
    // Enable the receive interrupt source (IER), then poll LSR.DR and echo one byte.
    a.bytes(&[0x66, 0xba, 0xf9, 0x03, 0xb0, 0x01, 0xee]); // mov dx,0x3f9; mov al,1; out
    a.bytes(&[0x66, 0xba, 0xfd, 0x03]); // mov dx, 0x3fd
    a.bytes(&[0xec, 0xa8, 0x01, 0x74, 0xfb]); // in al,dx; test al,1; jz -5
    a.bytes(&[0x66, 0xba, 0xf8, 0x03, 0xec, 0xee]); // mov dx,0x3f8; in al,dx; out dx,al
    a.reset();
    let kernel = write_guest(dir.path(), "echo.elf", &a.finish());

    let (mut master, mut slave): (libc::c_int, libc::c_int) = (0, 0);
    // SAFETY: openpty fills the two descriptors; null name/termios/winsize are allowed.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0);
    let lflag = || {
        // SAFETY: zeroed termios is valid; tcgetattr fills it from a live pty.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and pointer.
        assert_eq!(unsafe { libc::tcgetattr(slave, &mut t) }, 0);
        t.c_lflag
    };
    let before = lflag();
    assert_ne!(before & libc::ICANON, 0);

    use std::os::fd::FromRawFd;
    // SAFETY: `slave` is a descriptor we own; dup it for the child's stdin.
    let stdin = unsafe { std::fs::File::from_raw_fd(libc::dup(slave)) };
    let child = vmm()
        .args(["--kernel", kernel.to_str().unwrap(), "--memory", "16"])
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let writer = std::thread::spawn(move || {
        // Give the VMM time to switch to raw mode and the guest time to start polling.
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: writes one byte from a live buffer to our pty master.
        unsafe { libc::write(master, b"Z".as_ptr().cast(), 1) };
        master
    });
    let r = wait_with_timeout(child, LIMIT);
    let master = writer.join().unwrap();
    assert!(r.status.success(), "stderr {}", r.stderr);
    assert_eq!(r.stdout, "ready\nZ");
    assert_eq!(lflag(), before, "terminal mode restored");
    // SAFETY: closing descriptors we opened.
    unsafe {
        libc::close(master);
        libc::close(slave);
    }
}

#[test]
fn i8042_reset_stops_before_the_next_instruction() {
    if should_skip("i8042_reset_stops_before_the_next_instruction") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Reset, then fault right away as Linux's fallback reboot methods would.
    let code = Asm::new()
        .print("bye\n")
        .bytes(&[0xb0, 0xfe, 0xe6, 0x64, 0x0f, 0x0b])
        .finish();
    let kernel = write_guest(dir.path(), "reset.elf", &code);
    for _ in 0..5 {
        let r = run_vmm(
            &["--kernel", kernel.to_str().unwrap(), "--memory", "16"],
            LIMIT,
        );
        assert!(r.status.success(), "stderr {}", r.stderr);
        assert_eq!(r.stdout, "bye\n");
    }
}
