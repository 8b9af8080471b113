//! /init of the vsock end-to-end test guest (built by tests/vsock_qemu.rs with plain
//! `rustc` for a static target; std only, the few socket calls declared by hand).
//!
//! - Listens on vsock port 1024. A host stream starting with `E` is echoed back until the
//!   host half-closes, then closed. One starting with `Q` gets the report of the
//!   guest-initiated streams, after which the guest reboots (QEMU exits).
//! - Opens `hull_streams` streams to CID 2 port 5000 (kernel command line `name=value`
//!   parameters arrive as environment variables). Each sends its index (4 bytes LE) and
//!   `hull_size` bytes of pattern(index), half-closes, then reads until EOF and checks
//!   that it got `hull_size` bytes of pattern(1000 + index).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const AF_VSOCK: i32 = 40;
const SOCK_STREAM: i32 = 1;
const SHUT_WR: i32 = 1;
const VMADDR_CID_ANY: u32 = u32::MAX;
const HOST_CID: u32 = 2;
const RB_AUTOBOOT: i32 = 0x0123_4567;

#[repr(C)]
struct SockaddrVm {
    family: u16,
    reserved1: u16,
    port: u32,
    cid: u32,
    flags: u8,
    zero: [u8; 3],
}

extern "C" {
    fn socket(domain: i32, ty: i32, proto: i32) -> i32;
    fn bind(fd: i32, addr: *const SockaddrVm, len: u32) -> i32;
    fn listen(fd: i32, backlog: i32) -> i32;
    fn accept(fd: i32, addr: *mut SockaddrVm, len: *mut u32) -> i32;
    fn connect(fd: i32, addr: *const SockaddrVm, len: u32) -> i32;
    fn shutdown(fd: i32, how: i32) -> i32;
    fn reboot(cmd: i32) -> i32;
    fn sync();
}

fn addr(cid: u32, port: u32) -> SockaddrVm {
    SockaddrVm {
        family: AF_VSOCK as u16,
        reserved1: 0,
        port,
        cid,
        flags: 0,
        zero: [0; 3],
    }
}

const ADDR_LEN: u32 = std::mem::size_of::<SockaddrVm>() as u32;

fn vsock_socket() -> File {
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { socket(AF_VSOCK, SOCK_STREAM, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd owned by nobody else.
    unsafe { File::from_raw_fd(fd) }
}

fn half_close(f: &File) {
    // SAFETY: plain syscall on a valid fd.
    unsafe { shutdown(f.as_raw_fd(), SHUT_WR) };
}

/// Same generator as the host side of the test.
fn pattern(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn the_end() -> ! {
    // SAFETY: plain syscalls; PID 1 ends the VM (reboot=t and QEMU -no-reboot).
    unsafe {
        sync();
        reboot(RB_AUTOBOOT);
    }
    loop {
        thread::sleep(Duration::from_secs(1));
    }
}

/// One guest-initiated stream; returns an error string on any mismatch.
fn client(index: u32, size: usize) -> Result<(), String> {
    let mut s = vsock_socket();
    let a = addr(HOST_CID, 5000);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // SAFETY: `a` is a valid sockaddr_vm of ADDR_LEN bytes.
        if unsafe { connect(s.as_raw_fd(), &a, ADDR_LEN) } == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if Instant::now() > deadline {
            return Err(format!("stream {index}: connect: {e}"));
        }
        thread::sleep(Duration::from_millis(50));
        s = vsock_socket();
    }
    s.write_all(&index.to_le_bytes())
        .and_then(|_| s.write_all(&pattern(index, size)))
        .map_err(|e| format!("stream {index}: write: {e}"))?;
    half_close(&s);
    let mut got = Vec::with_capacity(size);
    s.read_to_end(&mut got)
        .map_err(|e| format!("stream {index}: read: {e}"))?;
    if got != pattern(1000 + index, size) {
        let first = got
            .iter()
            .zip(pattern(1000 + index, size))
            .position(|(a, b)| *a != b);
        return Err(format!(
            "stream {index}: got {} bytes, first difference at {first:?}",
            got.len()
        ));
    }
    Ok(())
}

fn echo(mut s: File) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
    // Dropping closes: the host must still get every echoed byte, then EOF.
}

fn main() {
    let streams = env_usize("hull_streams", 4);
    let size = env_usize("hull_size", 1 << 20);
    println!("vsock-guest: {streams} streams of {size} bytes");

    // Give up eventually so that a broken device cannot hang the test forever.
    thread::spawn(|| {
        thread::sleep(Duration::from_secs(env_usize("hull_timeout", 300) as u64));
        println!("vsock-guest: timeout");
        the_end();
    });

    let l = vsock_socket();
    let a = addr(VMADDR_CID_ANY, 1024);
    // SAFETY: `a` is a valid sockaddr_vm; fd checked by vsock_socket.
    let ok = unsafe { bind(l.as_raw_fd(), &a, ADDR_LEN) == 0 && listen(l.as_raw_fd(), 64) == 0 };
    if !ok {
        println!("vsock-guest: listen: {}", std::io::Error::last_os_error());
        the_end();
    }
    println!("vsock-guest: listening on port 1024");

    let (tx, rx) = mpsc::channel();
    for i in 0..streams as u32 {
        let tx = tx.clone();
        thread::spawn(move || {
            let _ = tx.send(client(i, size));
        });
    }
    drop(tx);

    loop {
        // SAFETY: NULL address arguments are allowed; the fd is checked below.
        let fd = unsafe { accept(l.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut()) };
        if fd < 0 {
            continue;
        }
        // SAFETY: a fresh fd from accept.
        let mut s = unsafe { File::from_raw_fd(fd) };
        let mut cmd = [0u8; 1];
        if s.read_exact(&mut cmd).is_err() {
            continue;
        }
        match cmd[0] {
            b'E' => {
                thread::spawn(move || echo(s));
            }
            b'Q' => {
                let results: Vec<Result<(), String>> = rx.iter().collect();
                let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
                let mut report = format!(
                    "guest: {} of {} streams ok\n",
                    results.len() - failed.len(),
                    streams
                );
                for f in failed {
                    report.push_str(&format!("guest: {f}\n"));
                }
                print!("{report}");
                let _ = s.write_all(report.as_bytes());
                half_close(&s);
                // Wait for the host to read it all and close.
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
                the_end();
            }
            _ => {}
        }
    }
}
