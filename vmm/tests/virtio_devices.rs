//! Tiny guests drive hull's real devices through the `hull-vmm` binary's flags: they
//! negotiate over virtio-mmio, lay out split rings in guest RAM, post requests, wait for
//! the used ring, and check the answers; the host side checks the effect (a vsock stream
//! reached a listener, a directory appeared in the share, a sector changed in the image).

mod common;

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// The first virtio-mmio slot.
const SLOT0: u32 = 0xd000_0000;
const LIMIT: Duration = Duration::from_secs(60);

/// Descriptor flags.
const NEXT: u32 = 1;
const WRITE: u32 = 2;

/// Split-ring layout of one queue in guest RAM.
#[derive(Clone, Copy)]
struct Ring {
    desc: u32,
    avail: u32,
    used: u32,
}

impl Ring {
    const fn at(base: u32) -> Ring {
        Ring {
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
        }
    }
}

/// Guest-side virtio-mmio driver steps, emitted as tiny-guest code.
trait Driver {
    fn negotiate(&mut self, base: u32) -> &mut Self;
    fn queue(&mut self, base: u32, index: u32, ring: Ring) -> &mut Self;
    fn driver_ok(&mut self, base: u32) -> &mut Self;
    fn desc(&mut self, ring: Ring, i: u32, addr: u32, len: u32, flags: u32, next: u32)
        -> &mut Self;
    fn bytes_at(&mut self, addr: u32, data: &[u8]) -> &mut Self;
    /// Makes `heads` available (in ring order, from slot 0) and notifies.
    fn publish(&mut self, base: u32, index: u32, ring: Ring, heads: &[u16]) -> &mut Self;
    /// Spins until the used ring's idx reaches `n`.
    fn wait_used(&mut self, ring: Ring, n: u16, label: &'static str) -> &mut Self;
    fn expect(&mut self, addr: u32, value: u32) -> &mut Self;
}

impl Driver for Asm {
    fn negotiate(&mut self, base: u32) -> &mut Self {
        self.store(base + 0x070, 1).store(base + 0x070, 3);
        // VERSION_1 only.
        self.store(base + 0x024, 1).store(base + 0x020, 1);
        self.store(base + 0x024, 0).store(base + 0x020, 0);
        self.store(base + 0x070, 0xb)
            .load_eax(base + 0x070)
            .cmp_eax(0xb)
            .jne("fail")
    }

    fn queue(&mut self, base: u32, index: u32, ring: Ring) -> &mut Self {
        self.store(base + 0x030, index).store(base + 0x038, 8);
        self.store(base + 0x080, ring.desc).store(base + 0x084, 0);
        self.store(base + 0x090, ring.avail).store(base + 0x094, 0);
        self.store(base + 0x0a0, ring.used).store(base + 0x0a4, 0);
        self.store(base + 0x044, 1)
    }

    fn driver_ok(&mut self, base: u32) -> &mut Self {
        self.store(base + 0x070, 0xf)
            .load_eax(base + 0x070)
            .cmp_eax(0xf)
            .jne("fail")
    }

    fn desc(
        &mut self,
        ring: Ring,
        i: u32,
        addr: u32,
        len: u32,
        flags: u32,
        next: u32,
    ) -> &mut Self {
        let d = ring.desc + 16 * i;
        self.store(d, addr)
            .store(d + 4, 0)
            .store(d + 8, len)
            .store(d + 12, flags | (next << 16))
    }

    fn bytes_at(&mut self, addr: u32, data: &[u8]) -> &mut Self {
        for (i, chunk) in data.chunks(4).enumerate() {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            self.store(addr + 4 * i as u32, u32::from_le_bytes(w));
        }
        self
    }

    fn publish(&mut self, base: u32, index: u32, ring: Ring, heads: &[u16]) -> &mut Self {
        let mut ring_bytes = Vec::new();
        for h in heads {
            ring_bytes.extend_from_slice(&h.to_le_bytes());
        }
        self.bytes_at(ring.avail + 4, &ring_bytes);
        self.store(ring.avail, (heads.len() as u32) << 16);
        self.store(base + 0x050, index)
    }

    fn wait_used(&mut self, ring: Ring, n: u16, label: &'static str) -> &mut Self {
        self.label(label)
            .load_eax(ring.used)
            .and_eax(0xffff_0000)
            .cmp_eax(u32::from(n) << 16)
            .jne(label)
    }

    fn expect(&mut self, addr: u32, value: u32) -> &mut Self {
        self.load_eax(addr).cmp_eax(value).jne("fail")
    }
}

fn finish(a: &mut Asm, ok: &str) -> Vec<u8> {
    a.print(&format!("{ok}\n")).reset();
    a.label("fail").print("bad\n").reset();
    a.finish()
}

fn tiny_args<'a>(kernel: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--kernel", kernel, "--memory", "16", "--console", "stdio"];
    v.extend_from_slice(extra);
    v
}

/// Writes `code` as guest `name` in `dir` and runs it to the end with `extra` flags.
fn run_guest(dir: &Path, name: &str, code: &[u8], extra: &[&str]) -> Run {
    let kernel = write_guest(dir, name, code);
    run_vmm(&tiny_args(kernel.to_str().unwrap(), extra), LIMIT)
}

/// Starts hull-vmm on `kernel` with its console in the file `console`, and returns once
/// the guest has printed `line` there, so the test can act on a running guest.
fn spawn_until_console(kernel: &Path, console: &Path, extra: &[&str], line: &str) -> Child {
    let console_arg = format!("file:{}", console.display());
    let child = vmm()
        .args(["--kernel", kernel.to_str().unwrap(), "--memory", "16"])
        .args(["--console", &console_arg])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    while std::fs::read_to_string(console).unwrap_or_default() != line {
        assert!(Instant::now() < deadline, "the guest never came up");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

/// A driver that sets up queue 0 on `ring`, hands the device one 64-byte writable
/// buffer at 0x22_0000 and waits (loop `label`) until it is used: one rng request.
fn one_rng_request(ring: Ring, label: &'static str) -> Asm {
    let mut a = Asm::new();
    a.negotiate(SLOT0).queue(SLOT0, 0, ring).driver_ok(SLOT0);
    a.desc(ring, 0, 0x22_0000, 64, WRITE, 0)
        .publish(SLOT0, 0, ring, &[0])
        .wait_used(ring, 1, label);
    a
}

/// A driver with the vsock RX queue (0) on `rx` and TX queue (1) on `tx`.
fn vsock_driver(rx: Ring, tx: Ring) -> Asm {
    let mut a = Asm::new();
    a.negotiate(SLOT0)
        .queue(SLOT0, 0, rx)
        .queue(SLOT0, 1, tx)
        .driver_ok(SLOT0);
    a
}

#[test]
fn vsock_guest_connects_to_a_host_listener() {
    if should_skip("vsock_guest_connects_to_a_host_listener") {
        return;
    }
    const RX: Ring = Ring::at(0x20_0000);
    const TX: Ring = Ring::at(0x21_0000);
    let hdr = |op: u16, len: u32| vsock_hdr(1234, 5000, op, len);
    let mut a = vsock_driver(RX, TX);
    a.desc(RX, 0, 0x22_0000, 4096, WRITE, 0)
        .publish(SLOT0, 0, RX, &[0]);
    // REQUEST to host port 5000.
    a.bytes_at(0x23_0000, &hdr(1, 0))
        .desc(TX, 0, 0x23_0000, 44, 0, 0)
        .publish(SLOT0, 1, TX, &[0]);
    a.wait_used(RX, 1, "rx1");
    // The answer is a stream RESPONSE (type 1, op 2 at offset 28).
    a.expect(0x22_0000 + 28, 1 | (2 << 16));
    // RW "ping": header and data in two descriptors.
    a.bytes_at(0x23_1000, &hdr(5, 4))
        .bytes_at(0x23_2000, b"ping")
        .desc(TX, 1, 0x23_1000, 44, NEXT, 2)
        .desc(TX, 2, 0x23_2000, 4, 0, 0)
        .publish(SLOT0, 1, TX, &[0, 1]);
    a.wait_used(TX, 2, "tx2");
    let code = finish(&mut a, "vsock ok");

    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("vsock.sock");
    let listener = UnixListener::bind(format!("{}_5000", uds.display())).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        tx.send(b).unwrap();
    });
    let vsock = format!("uds={},cid=3", uds.display());
    let run = run_guest(dir.path(), "vsock.elf", &code, &["--vsock", &vsock]);
    assert_eq!(run.stdout, "vsock ok\n", "stderr: {}", run.stderr);
    assert!(run.status.success(), "{:?}: {}", run.status, run.stderr);
    assert_eq!(&rx.recv_timeout(LIMIT).unwrap(), b"ping");
    assert!(!uds.exists(), "the hybrid vsock socket is removed at exit");
}

/// A vsock packet header from the guest (CID 3) to the host.
fn vsock_hdr(src_port: u32, dst_port: u32, op: u16, len: u32) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&3u64.to_le_bytes());
    h.extend_from_slice(&2u64.to_le_bytes());
    h.extend_from_slice(&src_port.to_le_bytes());
    h.extend_from_slice(&dst_port.to_le_bytes());
    h.extend_from_slice(&len.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes()); // stream
    h.extend_from_slice(&op.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes()); // flags
    h.extend_from_slice(&65536u32.to_le_bytes()); // buf_alloc
    h.extend_from_slice(&0u32.to_le_bytes()); // fwd_cnt
    h
}

#[test]
fn vsock_host_connects_to_a_guest_port_with_the_hybrid_handshake() {
    if should_skip("vsock_host_connects_to_a_guest_port_with_the_hybrid_handshake") {
        return;
    }
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    const RX: Ring = Ring::at(0x20_0000);
    const TX: Ring = Ring::at(0x21_0000);
    const RX1: u32 = 0x22_0000;
    const RX2: u32 = 0x22_2000;
    const RESP: u32 = 0x23_0000;
    const DATA: u32 = 0x23_1000;
    let mut a = vsock_driver(RX, TX);
    a.desc(RX, 0, RX1, 4096, WRITE, 0)
        .desc(RX, 1, RX2, 4096, WRITE, 0)
        .publish(SLOT0, 0, RX, &[0, 1]);
    a.print("ready\n");
    // The host's CONNECT 1024 arrives as a REQUEST to port 1024.
    a.wait_used(RX, 1, "request")
        .expect(RX1 + 20, 1024)
        .expect(RX1 + 28, 1 | (1 << 16));
    // RESPONSE back to whatever port the host side was given.
    a.bytes_at(RESP, &vsock_hdr(1024, 0, 2, 0))
        .load_eax(RX1 + 16)
        .store_eax(RESP + 20)
        .desc(TX, 0, RESP, 44, 0, 0)
        .publish(SLOT0, 1, TX, &[0]);
    // The host's "hi" arrives as RW with 2 bytes of payload after the header.
    a.wait_used(RX, 2, "data")
        .expect(RX2 + 24, 2)
        .expect(RX2 + 28, 1 | (5 << 16))
        .load_eax(RX2 + 44)
        .and_eax(0xffff)
        .cmp_eax(u32::from_le_bytes(*b"hi\0\0"))
        .jne("fail");
    // Answer "yo".
    a.bytes_at(DATA, &vsock_hdr(1024, 0, 5, 2))
        .bytes_at(DATA + 44, b"yo")
        .load_eax(RX1 + 16)
        .store_eax(DATA + 20)
        .desc(TX, 1, DATA, 46, 0, 0)
        .publish(SLOT0, 1, TX, &[0, 1])
        .wait_used(TX, 2, "sent");
    // Stay up until the host has read the answer (it closes; the guest sees a SHUTDOWN or
    // RST in a third RX buffer).
    a.desc(RX, 2, RX1, 4096, WRITE, 0)
        .publish(SLOT0, 0, RX, &[0, 1, 2])
        .wait_used(RX, 3, "closed");
    let code = finish(&mut a, "vsock host ok");

    let dir = tempfile::tempdir().unwrap();
    let kernel = write_guest(dir.path(), "vsock-host.elf", &code);
    let uds = dir.path().join("vsock.sock");
    let console = dir.path().join("console");
    let vsock = format!("uds={}", uds.display());
    let child = spawn_until_console(&kernel, &console, &["--vsock", &vsock], "ready\n");
    let mut s = UnixStream::connect(&uds).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.write_all(b"CONNECT 1024\n").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    if let Err(e) = r.read_line(&mut line) {
        let run = wait_with_timeout(child, LIMIT);
        panic!("no OK line ({e}); {:?}: {}", run.status, run.stderr);
    }
    assert!(line.starts_with("OK ") && line.ends_with('\n'), "{line:?}");
    line[3..line.len() - 1].parse::<u32>().unwrap();
    s.write_all(b"hi").unwrap();
    let mut yo = [0u8; 2];
    r.read_exact(&mut yo).unwrap();
    assert_eq!(&yo, b"yo");
    drop(r);
    drop(s);
    let run = wait_with_timeout(child, LIMIT);
    let out = std::fs::read_to_string(&console).unwrap();
    assert_eq!(out, "ready\nvsock host ok\n", "stderr: {}", run.stderr);
    assert!(run.status.success(), "{}", run.stderr);
}

#[test]
fn fs_guest_makes_a_directory_in_the_share() {
    if should_skip("fs_guest_makes_a_directory_in_the_share") {
        return;
    }
    const REQ: Ring = Ring::at(0x20_0000);
    // FUSE_INIT 7.31, then MKDIR "made" under the root (nodeid 1).
    let in_header = |len: u32, opcode: u32, unique: u64, nodeid: u64| {
        let mut h = Vec::new();
        h.extend_from_slice(&len.to_le_bytes());
        h.extend_from_slice(&opcode.to_le_bytes());
        h.extend_from_slice(&unique.to_le_bytes());
        h.extend_from_slice(&nodeid.to_le_bytes());
        h.extend_from_slice(&[0u8; 16]); // uid, gid, pid, extlen, padding
        h
    };
    let mut init = in_header(56, 26, 1, 0);
    for v in [7u32, 31, 0, 0] {
        init.extend_from_slice(&v.to_le_bytes());
    }
    let mut mkdir = in_header(40 + 8 + 5, 9, 2, 1);
    mkdir.extend_from_slice(&0o755u32.to_le_bytes());
    mkdir.extend_from_slice(&0u32.to_le_bytes());
    mkdir.extend_from_slice(b"made\0");

    // INIT then MKDIR; OutHeader.error of INIT (if `check_init`) and of MKDIR is checked.
    let init_mkdir = |check_init: bool, mkdir_error: u32, ok: &str| {
        let mut a = Asm::new();
        a.negotiate(SLOT0).queue(SLOT0, 1, REQ).driver_ok(SLOT0);
        a.bytes_at(0x22_0000, &init)
            .desc(REQ, 0, 0x22_0000, init.len() as u32, NEXT, 1)
            .desc(REQ, 1, 0x23_0000, 256, WRITE, 0)
            .publish(SLOT0, 1, REQ, &[0])
            .wait_used(REQ, 1, "init");
        if check_init {
            a.expect(0x23_0004, 0);
        }
        a.bytes_at(0x22_1000, &mkdir)
            .desc(REQ, 2, 0x22_1000, mkdir.len() as u32, NEXT, 3)
            .desc(REQ, 3, 0x23_1000, 256, WRITE, 0)
            .publish(SLOT0, 1, REQ, &[0, 2])
            .wait_used(REQ, 2, "mkdir")
            .expect(0x23_1004, mkdir_error);
        finish(&mut a, ok)
    };
    let code = init_mkdir(true, 0, "fs ok");

    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let fs = format!("tag=rootfs,dir={}", share.display());
    let run = run_guest(dir.path(), "fs.elf", &code, &["--fs", &fs]);
    assert_eq!(run.stdout, "fs ok\n", "stderr: {}", run.stderr);
    assert!(run.status.success());
    assert!(share.join("made").is_dir());

    // Read-only: the same MKDIR is refused (EROFS) and nothing appears.
    std::fs::remove_dir(share.join("made")).unwrap();
    let code = init_mkdir(false, (-libc::EROFS) as u32, "fs ro ok");
    let fs = format!("tag=rootfs,dir={},readonly", share.display());
    let run = run_guest(dir.path(), "fs-ro.elf", &code, &["--fs", &fs]);
    assert_eq!(run.stdout, "fs ro ok\n", "stderr: {}", run.stderr);
    assert!(!share.join("made").exists());
}

/// FUSE requests a tiny guest sends one after another on a virtio-fs request queue of
/// 64 entries; each reply's OutHeader.error can be checked, and dwords of earlier
/// replies (node ids, file handles) copied into later requests.
struct FuseGuest {
    a: Asm,
    n: u32,
    heads: Vec<u16>,
}

const FUSE_Q: Ring = Ring::at(0x20_0000);
const FUSE_REQ: u32 = 0x30_0000;
const FUSE_REP: u32 = 0x50_0000;

impl FuseGuest {
    fn new() -> Self {
        let mut a = Asm::new();
        a.negotiate(SLOT0);
        // Request queue 1 with 64 entries.
        a.store(SLOT0 + 0x030, 1).store(SLOT0 + 0x038, 64);
        a.store(SLOT0 + 0x080, FUSE_Q.desc).store(SLOT0 + 0x084, 0);
        a.store(SLOT0 + 0x090, FUSE_Q.avail).store(SLOT0 + 0x094, 0);
        a.store(SLOT0 + 0x0a0, FUSE_Q.used).store(SLOT0 + 0x0a4, 0);
        a.store(SLOT0 + 0x044, 1);
        a.driver_ok(SLOT0);
        FuseGuest {
            a,
            n: 0,
            heads: Vec::new(),
        }
    }

    /// Sends one request; returns where its reply lands. `copies` are (offset in the
    /// request, guest address) pairs of dwords filled in by the guest before sending.
    fn request(
        &mut self,
        opcode: u32,
        nodeid: u64,
        body: &[u8],
        copies: &[(u32, u32)],
        check: bool,
    ) -> u32 {
        let k = self.n;
        self.n += 1;
        let (req, rep) = (FUSE_REQ + k * 0x1000, FUSE_REP + k * 0x1000);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(40 + body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&opcode.to_le_bytes());
        bytes.extend_from_slice(&u64::from(k + 1).to_le_bytes());
        bytes.extend_from_slice(&nodeid.to_le_bytes());
        bytes.extend_from_slice(&[0u8; 16]);
        bytes.extend_from_slice(body);
        self.a.bytes_at(req, &bytes);
        for &(off, src) in copies {
            self.a.load_eax(src).store_eax(req + off);
        }
        let (d0, d1) = (2 * k, 2 * k + 1);
        self.a
            .desc(FUSE_Q, d0, req, bytes.len() as u32, NEXT, d1)
            .desc(FUSE_Q, d1, rep, 4096, WRITE, 0);
        self.heads.push(d0 as u16);
        let heads = self.heads.clone();
        let label: &'static str = Box::leak(format!("fuse{k}").into_boxed_str());
        self.a
            .publish(SLOT0, 1, FUSE_Q, &heads)
            .wait_used(FUSE_Q, heads.len() as u16, label);
        if check {
            self.a.expect(rep + 4, 0);
        }
        rep
    }
}

fn cstr(parts: &[&str]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in parts {
        v.extend_from_slice(p.as_bytes());
        v.push(0);
    }
    v
}

fn le(fields: &[u64], sizes: &[usize]) -> Vec<u8> {
    let mut v = Vec::new();
    for (f, s) in fields.iter().zip(sizes) {
        v.extend_from_slice(&f.to_le_bytes()[..*s]);
    }
    v
}

#[test]
fn fs_guest_works_a_file_through_its_life_under_seccomp() {
    if should_skip("fs_guest_works_a_file_through_its_life_under_seccomp") {
        return;
    }
    let mut g = FuseGuest::new();
    // INIT 7.31.
    g.request(26, 0, &le(&[7, 31, 0, 0], &[4; 4]), &[], true);
    // MKDIR d, then RMDIR d.
    g.request(
        9,
        1,
        &[le(&[0o755, 0], &[4, 4]), cstr(&["d"])].concat(),
        &[],
        true,
    );
    g.request(11, 1, &cstr(&["d"]), &[], true);
    // CREATE f (O_RDWR | O_CREAT), mode 0644: EntryOut.nodeid at +16, OpenOut.fh at +144.
    let create = g.request(
        35,
        1,
        &[le(&[0x42, 0o100644, 0, 0], &[4; 4]), cstr(&["f"])].concat(),
        &[],
        true,
    );
    let (node, fh) = (create + 16, create + 144);
    let with_node = [(16, node), (20, node + 4)];
    let with_node_fh = [(16, node), (20, node + 4), (40, fh), (44, fh + 4)];
    // WRITE "hello" at 0, FSYNC, READ it back.
    let write_in = [
        le(&[0, 0, 5, 0, 0, 0, 0], &[8, 8, 4, 4, 8, 4, 4]),
        b"hello".to_vec(),
    ]
    .concat();
    g.request(16, 0, &write_in, &with_node_fh, true);
    g.request(20, 0, &le(&[0, 0, 0], &[8, 4, 4]), &with_node_fh, true);
    let read = g.request(
        15,
        0,
        &le(&[0, 0, 5, 0, 0, 0, 0], &[8, 8, 4, 4, 8, 4, 4]),
        &with_node_fh,
        true,
    );
    g.a.expect(read + 16, u32::from_le_bytes(*b"hell"));
    g.request(
        18,
        0,
        &le(&[0, 0, 0, 0], &[8, 4, 4, 8]),
        &with_node_fh,
        true,
    );
    // SETATTR mode 0640, owner 1234:5678.
    let mut setattr = vec![0u8; 88];
    setattr[0..4].copy_from_slice(&7u32.to_le_bytes());
    setattr[68..72].copy_from_slice(&0o100640u32.to_le_bytes());
    setattr[76..80].copy_from_slice(&1234u32.to_le_bytes());
    setattr[80..84].copy_from_slice(&5678u32.to_le_bytes());
    g.request(4, 0, &setattr, &with_node, true);
    // GETATTR, GETXATTR, LISTXATTR (their answers are not checked: xattrs may be absent).
    g.request(3, 0, &[0u8; 16], &with_node, true);
    g.request(
        22,
        0,
        &[le(&[64, 0], &[4, 4]), cstr(&["user.x"])].concat(),
        &with_node,
        false,
    );
    g.request(23, 0, &le(&[64, 0], &[4, 4]), &with_node, false);
    // RENAME f -> g, LINK h -> g, UNLINK h.
    g.request(
        12,
        1,
        &[le(&[1], &[8]), cstr(&["f", "g"])].concat(),
        &[],
        true,
    );
    let old_node = [(40, node), (44, node + 4)];
    g.request(
        13,
        1,
        &[le(&[0], &[8]), cstr(&["h"])].concat(),
        &old_node,
        true,
    );
    g.request(10, 1, &cstr(&["h"]), &[], true);
    // SYMLINK s -> g, READLINK it.
    let sym = g.request(6, 1, &cstr(&["s", "g"]), &[], true);
    let readlink = g.request(5, 0, &[], &[(16, sym + 16), (20, sym + 20)], true);
    g.a.load_eax(readlink + 16)
        .and_eax(0xff)
        .cmp_eax(u32::from(b'g'))
        .jne("fail");
    // OPENDIR /, READDIRPLUS, RELEASEDIR, STATFS.
    let dir = g.request(27, 1, &le(&[0x1_0000, 0], &[4, 4]), &[], true);
    let dir_fh = [(40, dir + 16), (44, dir + 20)];
    g.request(
        44,
        1,
        &le(&[0, 0, 4096, 0, 0, 0, 0], &[8, 8, 4, 4, 8, 4, 4]),
        &dir_fh,
        true,
    );
    g.request(29, 1, &le(&[0, 0, 0, 0], &[8, 4, 4, 8]), &dir_fh, true);
    g.request(17, 1, &[], &[], true);
    let code = finish(&mut g.a, "fs ops ok");

    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let fs = format!("tag=rootfs,dir={}", share.display());
    let run = run_guest(dir.path(), "fs-ops.elf", &code, &["--fs", &fs]);
    assert_eq!(run.stdout, "fs ops ok\n", "stderr: {}", run.stderr);
    assert!(run.status.success(), "{}", run.stderr);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::read_to_string(share.join("g")).unwrap(), "hello");
    let md = std::fs::metadata(share.join("g")).unwrap();
    assert_eq!(
        (md.mode() & 0o7777, md.uid(), md.gid()),
        (0o640, 1234, 5678)
    );
    assert_eq!(std::fs::read_link(share.join("s")).unwrap(), Path::new("g"));
    for gone in ["d", "f", "h"] {
        assert!(!share.join(gone).exists(), "{gone} is still there");
    }
}

#[test]
fn blk_guest_writes_and_reads_sectors() {
    if should_skip("blk_guest_writes_and_reads_sectors") {
        return;
    }
    const Q: Ring = Ring::at(0x20_0000);
    let header = |type_: u32, sector: u64| {
        let mut h = Vec::new();
        h.extend_from_slice(&type_.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&sector.to_le_bytes());
        h
    };
    let mut a = Asm::new();
    a.negotiate(SLOT0).queue(SLOT0, 0, Q).driver_ok(SLOT0);
    // Capacity in the config space: 8 sectors.
    a.expect(SLOT0 + 0x100, 8);
    // OUT: sector 2 gets "HULLDISK" then zeros.
    a.bytes_at(0x22_0000, &header(1, 2))
        .bytes_at(0x23_0000, b"HULLDISK")
        .store(0x24_0000, 0xff)
        .desc(Q, 0, 0x22_0000, 16, NEXT, 1)
        .desc(Q, 1, 0x23_0000, 512, NEXT, 2)
        .desc(Q, 2, 0x24_0000, 1, WRITE, 0)
        .publish(SLOT0, 0, Q, &[0])
        .wait_used(Q, 1, "out")
        .load_eax(0x24_0000)
        .cmp_eax(0)
        .jne("fail");
    // IN: sector 5, which the host filled with 0x55.
    a.bytes_at(0x22_1000, &header(0, 5))
        .store(0x24_1000, 0xff)
        .desc(Q, 3, 0x22_1000, 16, NEXT, 4)
        .desc(Q, 4, 0x23_1000, 512, WRITE | NEXT, 5)
        .desc(Q, 5, 0x24_1000, 1, WRITE, 0)
        .publish(SLOT0, 0, Q, &[0, 3])
        .wait_used(Q, 2, "in")
        .expect(0x24_1000, 0)
        .expect(0x23_1000 + 508, 0x5555_5555);
    // FLUSH.
    a.bytes_at(0x22_2000, &header(4, 0))
        .store(0x24_2000, 0xff)
        .desc(Q, 6, 0x22_2000, 16, NEXT, 7)
        .desc(Q, 7, 0x24_2000, 1, WRITE, 0)
        .publish(SLOT0, 0, Q, &[0, 3, 6])
        .wait_used(Q, 3, "flush")
        .expect(0x24_2000, 0);
    let code = finish(&mut a, "blk ok");

    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    let mut content = vec![0u8; 8 * 512];
    content[5 * 512..6 * 512].fill(0x55);
    std::fs::write(&image, &content).unwrap();
    let blk = format!("path={},id=disk0", image.display());
    let run = run_guest(dir.path(), "blk.elf", &code, &["--blk", &blk]);
    assert_eq!(run.stdout, "blk ok\n", "stderr: {}", run.stderr);
    assert!(run.status.success());
    let after = std::fs::read(&image).unwrap();
    assert_eq!(&after[1024..1032], b"HULLDISK");
    assert_eq!(after[5 * 512..6 * 512], content[5 * 512..6 * 512]);
}

#[test]
fn rng_guest_gets_random_bytes() {
    if should_skip("rng_guest_gets_random_bytes") {
        return;
    }
    const Q: Ring = Ring::at(0x20_0000);
    let mut a = one_rng_request(Q, "rng");
    // Used element 0: id 0, len 64.
    a.expect(Q.used + 4, 0).expect(Q.used + 8, 64);
    // 16 bytes of zeros from a CSPRNG would be a 2^-128 event.
    a.load_eax(0x22_0000).cmp_eax(0).jne("random");
    a.load_eax(0x22_0004).cmp_eax(0).jne("random");
    a.load_eax(0x22_0008).cmp_eax(0).jne("random");
    a.load_eax(0x22_000c).cmp_eax(0).jne("random");
    a.print("zeros\n").reset();
    a.label("random");
    let code = finish(&mut a, "rng ok");

    let dir = tempfile::tempdir().unwrap();
    let run = run_guest(dir.path(), "rng.elf", &code, &["--rng"]);
    assert_eq!(run.stdout, "rng ok\n", "stderr: {}", run.stderr);
    assert!(run.status.success());
}

#[test]
fn devices_are_announced_in_slot_order() {
    if should_skip("devices_are_announced_in_slot_order") {
        return;
    }
    // Reads each slot's DeviceID and prints one letter per device.
    let mut a = Asm::new();
    for (i, (id, letter)) in [(19u32, "v"), (26, "f"), (2, "b"), (4, "r")]
        .into_iter()
        .enumerate()
    {
        a.expect(SLOT0 + 0x1000 * i as u32 + 0x008, id)
            .print(letter);
    }
    a.expect(SLOT0 + 0x4000, 0xffff_ffff); // nothing in the fifth slot
    let code = finish(&mut a, "");

    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("d.img");
    std::fs::write(&image, [0u8; 4096]).unwrap();
    let uds = dir.path().join("v.sock");
    let (vsock, fs, blk) = (
        format!("uds={}", uds.display()),
        format!("tag=t,dir={}", dir.path().display()),
        format!("path={},readonly", image.display()),
    );
    let run = run_guest(
        dir.path(),
        "slots.elf",
        &code,
        &["--vsock", &vsock, "--fs", &fs, "--blk", &blk, "--rng"],
    );
    assert_eq!(run.stdout, "vfbr\n", "stderr: {}", run.stderr);
    assert!(run.status.success());
}

#[test]
fn bad_device_options_fail_cleanly() {
    // Some options are only checked once the VM exists.
    if should_skip("bad_device_options_fail_cleanly") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = write_guest(dir.path(), "k.elf", &finish(&mut Asm::new(), "never"));
    let k = kernel.to_str().unwrap();
    let uds = dir.path().join("v.sock");
    let vsock = format!("uds={}", uds.display());
    let missing = dir.path().join("missing.img");
    let blk = format!("path={}", missing.display());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--vsock", "cid=4"], "\"uds\" is required"),
        (vec!["--fs", "tag=t"], "\"dir\" is required"),
        (vec!["--blk", "path=/x,rw"], "unknown field \"rw\""),
        (vec!["--net", "tap=t0,mac=01:00:00:00:00:01"], "multicast"),
        (vec!["--net", "fd=99,mac=02:00:00:00:00:01"], "--net fd=99"),
        (
            vec!["--vsock", &vsock, "--fs", "tag=t,dir=/nonexistent/dir"],
            "/nonexistent/dir",
        ),
        (vec!["--vsock", &vsock, "--blk", &blk], "missing.img"),
    ];
    for (extra, want) in cases {
        let run = run_vmm(&tiny_args(k, &extra), LIMIT);
        assert!(!run.status.success(), "{extra:?} succeeded");
        assert!(run.stderr.contains(want), "{extra:?}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{extra:?}: the guest never ran");
        assert!(!uds.exists(), "{extra:?} left the vsock socket behind");
    }
}

#[test]
fn forbidden_syscall_from_a_device_thread_kills_the_vmm() {
    if should_skip("forbidden_syscall_from_a_device_thread_kills_the_vmm") {
        return;
    }
    // The guest activates the rng device; with the hidden self-test flag its thread
    // then calls personality(2), which no filter allows.
    const Q: Ring = Ring::at(0x20_0000);
    let code = finish(&mut one_rng_request(Q, "never"), "still alive");
    let dir = tempfile::tempdir().unwrap();
    let run = run_guest(
        dir.path(),
        "selftest.elf",
        &code,
        &["--rng", "--seccomp-selftest"],
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        run.status.code(),
        Some(hull_vmm::seccomp::SECCOMP_EXIT_STATUS),
        "{:?}: {}",
        run.status.signal(),
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "hull-vmm: seccomp: thread 'hull-rng' made the forbidden system call personality (135)"
        ),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("still alive"));

    // Without filters the same call is harmless: the guest gets its bytes.
    let code = finish(&mut one_rng_request(Q, "rng"), "rng ok");
    let run = run_guest(
        dir.path(),
        "noseccomp.elf",
        &code,
        &["--rng", "--seccomp-selftest", "--no-seccomp"],
    );
    assert_eq!(run.stdout, "rng ok\n", "{}", run.stderr);
    assert!(run.status.success());
}

#[test]
fn every_thread_runs_under_its_filter_and_sigterm_still_stops_the_vmm() {
    if should_skip("every_thread_runs_under_its_filter_and_sigterm_still_stops_the_vmm") {
        return;
    }
    // The guest says it is up, then spins; the test looks at each thread's seccomp state.
    let mut a = Asm::new();
    a.print("up\n")
        .label("spin")
        .load_eax(SLOT0)
        .cmp_eax(0)
        .jne("spin");
    let code = finish(&mut a, "");
    let dir = tempfile::tempdir().unwrap();
    let kernel = write_guest(dir.path(), "spin.elf", &code);
    let console = dir.path().join("console");
    let child = spawn_until_console(&kernel, &console, &["--rng", "--vcpus", "2"], "up\n");
    let pid = child.id();
    let mut seen = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap();
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let mode = status
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .map(str::trim)
            .unwrap_or("?")
            .to_string();
        seen.push((comm.trim().to_string(), mode));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let run = wait_with_timeout(child, LIMIT);
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    for want in ["hull-vmm", "vcpu0", "vcpu1", "hull-rng"] {
        assert!(names.contains(&want), "{want} missing from {seen:?}");
    }
    assert!(
        seen.iter().all(|(_, mode)| mode == "2"),
        "unfiltered thread: {seen:?}"
    );
    assert_eq!(run.status.code(), Some(143), "{}", run.stderr);
}

#[test]
fn device_reset_and_reactivation_by_the_driver() {
    if should_skip("device_reset_and_reactivation_by_the_driver") {
        return;
    }
    const A: Ring = Ring::at(0x20_0000);
    const B: Ring = Ring::at(0x28_0000);
    let mut a = one_rng_request(A, "first");
    // A second request is made available but not notified, then the driver resets.
    a.desc(A, 1, 0x22_1000, 64, WRITE, 0);
    a.bytes_at(A.avail + 4, &[0, 0, 1, 0])
        .store(A.avail, 2 << 16);
    a.store(SLOT0 + 0x070, 0).expect(SLOT0 + 0x070, 0);
    // The queue registers are free again: a new session on other rings.
    a.negotiate(SLOT0).queue(SLOT0, 0, B).driver_ok(SLOT0);
    a.desc(B, 0, 0x23_0000, 32, WRITE, 0)
        .publish(SLOT0, 0, B, &[0])
        .wait_used(B, 1, "second")
        .expect(B.used + 8, 32);
    let code = finish(&mut a, "reset ok");
    let dir = tempfile::tempdir().unwrap();
    let run = run_guest(dir.path(), "reset.elf", &code, &["--rng"]);
    assert_eq!(run.stdout, "reset ok\n", "stderr: {}", run.stderr);
    assert!(run.status.success());
}
