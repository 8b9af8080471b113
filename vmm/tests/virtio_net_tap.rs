//! A tiny guest drives hull-vmm's virtio-net on a real tap handed over as `--net fd=N`
//! (the way the runtime passes it): the frame it sends appears on the tap, seen by an
//! AF_PACKET socket on the host, and a frame the host sends out of the tap lands in the
//! guest's receive buffer. Runs under the seccomp filters.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use hull_devices::net::tap::Tap;

const SLOT0: u32 = 0xd000_0000;
const ETHERTYPE: u16 = 0x88b5; // local experimental
const GUEST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x42];
const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

fn reg(off: u32) -> u32 {
    SLOT0 + off
}

/// Lays out a ring of 8 at `base` for queue `index` and makes it ready.
fn queue(a: &mut Asm, index: u32, base: u32) {
    a.store(reg(0x030), index).store(reg(0x038), 8);
    a.store(reg(0x080), base).store(reg(0x084), 0);
    a.store(reg(0x090), base + 0x1000).store(reg(0x094), 0);
    a.store(reg(0x0a0), base + 0x2000).store(reg(0x0a4), 0);
    a.store(reg(0x044), 1);
}

fn bytes_at(a: &mut Asm, addr: u32, data: &[u8]) {
    for (i, chunk) in data.chunks(4).enumerate() {
        let mut w = [0u8; 4];
        w[..chunk.len()].copy_from_slice(chunk);
        a.store(addr + 4 * i as u32, u32::from_le_bytes(w));
    }
}

fn frame(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE.to_be_bytes());
    f.extend_from_slice(payload);
    f.resize(60, 0);
    f
}

fn guest() -> Vec<u8> {
    const RX: u32 = 0x20_0000;
    const TX: u32 = 0x21_0000;
    const RXBUF: u32 = 0x22_0000;
    const TXBUF: u32 = 0x23_0000;
    let mut a = Asm::new();
    a.store(reg(0x070), 1).store(reg(0x070), 3);
    a.store(reg(0x024), 1).store(reg(0x020), 1); // VERSION_1
    a.store(reg(0x024), 0).store(reg(0x020), 1 << 5); // MAC
    a.store(reg(0x070), 0xb)
        .load_eax(reg(0x070))
        .cmp_eax(0xb)
        .jne("fail");
    // The MAC in the config space.
    a.load_eax(reg(0x100))
        .cmp_eax(u32::from_le_bytes([2, 0, 0, 0]))
        .jne("fail");
    queue(&mut a, 0, RX);
    queue(&mut a, 1, TX);
    a.store(reg(0x070), 0xf);
    // One RX buffer: desc 0.
    a.store(RX, RXBUF)
        .store(RX + 4, 0)
        .store(RX + 8, 2048)
        .store(RX + 12, 2);
    a.store(RX + 0x1000 + 4, 0).store(RX + 0x1000, 1 << 16);
    a.store(reg(0x050), 0);
    // TX: header and frame in one descriptor.
    let mut tx = vec![0u8; 12];
    tx.extend(frame([0xff; 6], GUEST_MAC, b"from-the-guest"));
    bytes_at(&mut a, TXBUF, &tx);
    a.store(TX, TXBUF)
        .store(TX + 4, 0)
        .store(TX + 8, tx.len() as u32)
        .store(TX + 12, 0);
    a.store(TX + 0x1000 + 4, 0).store(TX + 0x1000, 1 << 16);
    a.store(reg(0x050), 1);
    a.print("sent\n");
    // Wait for the host's frame, then check its payload (after 12 + 14 bytes).
    a.label("rx")
        .load_eax(RX + 0x2000)
        .and_eax(0xffff_0000)
        .cmp_eax(1 << 16)
        .jne("rx");
    a.load_eax(RXBUF + 26)
        .cmp_eax(u32::from_le_bytes(*b"from"))
        .jne("fail");
    a.load_eax(RXBUF + 30)
        .cmp_eax(u32::from_le_bytes(*b"-hos"))
        .jne("fail");
    a.print("net ok\n").reset();
    a.label("fail").print("bad\n").reset();
    a.finish()
}

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn set_up(name: &str) -> std::io::Result<()> {
    // Nothing of the host's own (IPv6 autoconfiguration) may go out of the tap.
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
    // SAFETY: a plain socket call.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `s` is ours.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    let mut req = IfReq {
        name: [0; 16],
        flags: 0,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    req.flags = (libc::IFF_UP | libc::IFF_NOARP) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads one ifreq, which `req` is laid out as.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &req as *const IfReq) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A raw packet socket on interface `name` for our ethertype.
fn packet_socket(name: &str) -> (OwnedFd, libc::sockaddr_ll) {
    let proto = ETHERTYPE.to_be();
    // SAFETY: a plain socket call.
    let s = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    };
    assert!(s >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: `s` is ours.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    let cname = std::ffi::CString::new(name).unwrap();
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    assert!(ifindex > 0);
    // SAFETY: sockaddr_ll is plain data; zero is a valid start.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&GUEST_MAC);
    // SAFETY: binds to a live sockaddr_ll of the right size.
    let r = unsafe {
        libc::bind(
            s.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    (s, addr)
}

#[test]
fn guest_frames_cross_a_real_tap_both_ways() {
    if should_skip("guest_frames_cross_a_real_tap_both_ways") {
        return;
    }
    let name = format!("hullnet{}", std::process::id() % 100_000);
    let tap = match Tap::open(&name) {
        Ok(t) => t,
        Err(e) => return eprintln!("SKIP guest_frames_cross_a_real_tap_both_ways: {e}"),
    };
    set_up(&name).unwrap();
    let (sock, addr) = packet_socket(&name);
    let tv = libc::timeval {
        tv_sec: 60,
        tv_usec: 0,
    };
    // SAFETY: SO_RCVTIMEO reads one timeval from a live local.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };

    let dir = tempfile::tempdir().unwrap();
    let kernel = write_guest(dir.path(), "net.elf", &guest());
    let console = dir.path().join("console");
    let tap_fd = tap.into_fd();
    let raw = tap_fd.as_raw_fd();
    let mut cmd = vmm();
    cmd.args(["--kernel", kernel.to_str().unwrap(), "--memory", "16"])
        .arg("--console")
        .arg(format!("file:{}", console.display()))
        .args(["--net", "fd=3,mac=02:00:00:00:00:42"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: dup2 is async-signal-safe; it puts the tap at fd 3 in the child only.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep O_CLOEXEC: go through a spare number.
            let fd = if raw == 3 { libc::dup(raw) } else { raw };
            if fd < 0 || libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(tap_fd);

    // The guest's frame, seen on the tap.
    let mut buf = [0u8; 2048];
    // SAFETY: reads into a live buffer.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    assert!(
        n >= 60,
        "no frame from the guest: {}",
        std::io::Error::last_os_error()
    );
    assert_eq!(
        &buf[..60],
        &frame([0xff; 6], GUEST_MAC, b"from-the-guest")[..]
    );

    // A frame for the guest, out of the tap.
    let f = frame(GUEST_MAC, HOST_MAC, b"from-host");
    // SAFETY: sends a live buffer to a live sockaddr_ll.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            f.as_ptr().cast(),
            f.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(
        sent,
        f.len() as isize,
        "{}",
        std::io::Error::last_os_error()
    );
    let run = wait_with_timeout(child, Duration::from_secs(60));
    let out = std::fs::read_to_string(&console).unwrap();
    assert_eq!(out, "sent\nnet ok\n", "stderr: {}", run.stderr);
    assert!(run.status.success(), "{}", run.stderr);
}
