//! Device tests: a simulated driver posts descriptor chains through guest memory (with
//! the `test_utils` harness) while real Unix sockets play the host side.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::connection::CONN_BUF_SIZE;
use super::packet::{op, shutdown, Header, HDR_SIZE, HOST_CID, TYPE_STREAM};
use super::{Notify, Vsock};
use crate::test_utils::{Buf, RxTxQueues, TestQueue, F_NEXT, F_WRITE};

const CID: u64 = 3;
const MEM_SIZE: usize = 32 << 20;
/// Linux posts RX buffers of one page of payload plus the header.
const RX_BUF: u32 = 4096 + HDR_SIZE as u32;
/// What this simulated driver advertises as its receive buffer per stream.
const GUEST_BUF_ALLOC: u32 = 64 * 1024;

struct Guest {
    q: RxTxQueues,
    dev: Vsock,
    _dir: tempfile::TempDir,
    uds: PathBuf,
    rx_bufs: HashMap<u16, GuestAddress>,
    tx_bufs: HashMap<u16, Vec<(GuestAddress, u32)>>,
    /// Per guest port: bytes the guest application consumed (its fwd_cnt).
    fwd_cnt: HashMap<u32, u32>,
}

impl Guest {
    fn new() -> Self {
        Self::with_event_idx(false)
    }

    fn with_event_idx(event_idx: bool) -> Self {
        let q = RxTxQueues::new(
            MEM_SIZE,
            256,
            GuestAddress(0x1000),
            GuestAddress(0x10000),
            GuestAddress(0x20000),
            event_idx,
        );
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("vsock");
        let dev = Vsock::new(CID, &uds).unwrap();
        Guest {
            q,
            dev,
            _dir: dir,
            uds,
            rx_bufs: HashMap::new(),
            tx_bufs: HashMap::new(),
            fwd_cnt: HashMap::new(),
        }
    }

    fn process(&mut self) -> Notify {
        self.dev
            .process(&self.q.mem, &mut self.q.rx, &mut self.q.tx)
            .expect("process")
    }

    /// Posts RX buffers until `n` are outstanding.
    fn fill_rx(&mut self, n: usize) {
        while self.rx_bufs.len() < n {
            let a = self.q.alloc.alloc(RX_BUF);
            let head = self.q.rxq.add_chain(&[Buf::writable(a, RX_BUF)]).unwrap();
            self.rx_bufs.insert(head, a);
        }
    }

    fn hdr(&self, src_port: u32, dst_port: u32, op: u16) -> Header {
        Header {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            type_: TYPE_STREAM,
            op,
            buf_alloc: GUEST_BUF_ALLOC,
            fwd_cnt: self.fwd_cnt.get(&src_port).copied().unwrap_or(0),
            ..Header::default()
        }
    }

    /// Queues a TX packet as Linux does: header and payload in separate descriptors.
    fn send(&mut self, mut hdr: Header, data: &[u8]) {
        hdr.len = data.len() as u32;
        let mut bufs = vec![];
        let h = self.q.alloc.alloc(HDR_SIZE as u32);
        self.q.mem.write_slice(&hdr.to_bytes(), h).unwrap();
        bufs.push(Buf::readable(h, HDR_SIZE as u32));
        if !data.is_empty() {
            let d = self.q.alloc.alloc(data.len() as u32);
            self.q.mem.write_slice(data, d).unwrap();
            bufs.push(Buf::readable(d, data.len() as u32));
        }
        self.reclaim_tx();
        let head = self.q.txq.add_chain(&bufs).expect("TX ring full");
        self.tx_bufs
            .insert(head, bufs.iter().map(|b| (b.addr, b.len)).collect());
    }

    fn reclaim_tx(&mut self) {
        for (head, _) in self.q.txq.take_used() {
            for (a, l) in self.tx_bufs.remove(&head).unwrap_or_default() {
                self.q.alloc.free(a, l);
            }
        }
    }

    /// Processes, then returns the packets the device put in RX buffers (and reposts them).
    fn recv(&mut self) -> Vec<(Header, Vec<u8>)> {
        self.fill_rx(64);
        self.process();
        self.reclaim_tx();
        let mut out = vec![];
        for (head, len) in self.q.rxq.take_used() {
            let a = self.rx_bufs.remove(&head).expect("known RX buffer");
            if (len as usize) >= HDR_SIZE {
                let mut raw = [0u8; HDR_SIZE];
                self.q.mem.read_slice(&mut raw, a).unwrap();
                let hdr = Header::from_bytes(&raw);
                assert_eq!(len as usize, HDR_SIZE + hdr.len as usize);
                let mut data = vec![0u8; hdr.len as usize];
                self.q
                    .mem
                    .read_slice(&mut data, GuestAddress(a.0 + HDR_SIZE as u64))
                    .unwrap();
                assert_eq!((hdr.src_cid, hdr.dst_cid), (HOST_CID, CID));
                out.push((hdr, data));
            } else {
                out.push((Header::default(), vec![]));
            }
            self.q.alloc.free(a, RX_BUF);
        }
        out
    }

    /// Receives until `pred` holds for a packet, with host sockets given time to act.
    fn recv_until(&mut self, mut pred: impl FnMut(&Header) -> bool) -> Vec<(Header, Vec<u8>)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut all = vec![];
        loop {
            let got = self.recv();
            let done = got.iter().any(|(h, _)| pred(h));
            all.extend(got);
            if done {
                return all;
            }
            assert!(Instant::now() < deadline, "timed out; got {all:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Host-initiated handshake: returns the host stream and the device's host port.
    fn host_connect(&mut self, guest_port: u32) -> (UnixStream, u32) {
        let mut s = UnixStream::connect(&self.uds).unwrap();
        writeln!(s, "CONNECT {guest_port}").unwrap();
        let pkts = self.recv_until(|h| h.op == op::REQUEST);
        let req = pkts.iter().find(|(h, _)| h.op == op::REQUEST).unwrap().0;
        assert_eq!(req.dst_port, guest_port);
        let mut resp = self.hdr(guest_port, req.src_port, op::RESPONSE);
        resp.dst_port = req.src_port;
        self.send(resp, &[]);
        self.process();
        let line = read_line(&mut s);
        assert_eq!(line, format!("OK {}", req.src_port));
        (s, req.src_port)
    }

    /// Guest-initiated connection to host `port` from guest port `gport`; returns the
    /// accepted host stream.
    fn guest_connect(&mut self, l: &UnixListener, gport: u32, port: u32) -> UnixStream {
        self.send(self.hdr(gport, port, op::REQUEST), &[]);
        let pkts = self.recv_until(|h| h.dst_port == gport);
        assert!(pkts
            .iter()
            .any(|(h, _)| h.op == op::RESPONSE && h.dst_port == gport && h.src_port == port));
        let (s, _) = l.accept().unwrap();
        s
    }

    /// The guest application read `n` bytes on `port`: tell the device, as Linux does.
    fn consume(&mut self, gport: u32, host_port: u32, n: usize) {
        let c = self.fwd_cnt.entry(gport).or_insert(0);
        *c = c.wrapping_add(n as u32);
        self.send(self.hdr(gport, host_port, op::CREDIT_UPDATE), &[]);
    }

    /// The driver resets the RX queue and brings it back with no buffers posted.
    fn fresh_rx(&mut self) {
        let event_idx = self.q.rx.event_idx_enabled();
        self.q.rx.reset();
        self.q.rxq.reset();
        self.rx_bufs.clear();
        self.q.rxq.configure(&mut self.q.rx);
        self.q.rx.set_event_idx(event_idx);
    }

    fn listen(&self, port: u32) -> UnixListener {
        UnixListener::bind(format!("{}_{port}", self.uds.display())).unwrap()
    }
}

fn read_line(s: &mut UnixStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut line = vec![];
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

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

#[test]
fn config_space_holds_the_guest_cid() {
    let g = Guest::new();
    let mut b = [0xffu8; 12];
    g.dev.read_config(0, &mut b);
    assert_eq!(&b[..8], &CID.to_le_bytes());
    assert_eq!(&b[8..], &[0; 4]);
    let mut b = [0u8; 4];
    g.dev.read_config(u64::MAX, &mut b);
    assert_eq!(b, [0; 4]);
    assert!(Vsock::new(2, &g.uds.with_extension("x")).is_err());
}

#[test]
fn host_initiated_stream_both_directions() {
    let mut g = Guest::new();
    let (mut s, hport) = g.host_connect(1024);
    // Host to guest.
    s.write_all(b"ping").unwrap();
    let pkts = g.recv_until(|h| h.op == op::RW);
    let (h, d) = pkts.iter().find(|(h, _)| h.op == op::RW).unwrap();
    assert_eq!(
        (h.src_port, h.dst_port, d.as_slice()),
        (hport, 1024, &b"ping"[..])
    );
    assert_eq!(h.buf_alloc, CONN_BUF_SIZE);
    // Guest to host.
    g.send(g.hdr(1024, hport, op::RW), b"pong");
    g.process();
    let mut r = [0u8; 4];
    s.read_exact(&mut r).unwrap();
    assert_eq!(&r, b"pong");
}

#[test]
fn data_sent_right_after_connect_line_is_kept() {
    let mut g = Guest::new();
    let mut s = UnixStream::connect(&g.uds).unwrap();
    s.write_all(b"CONNECT 77\nearly bytes").unwrap();
    let pkts = g.recv_until(|h| h.op == op::REQUEST);
    let hport = pkts[0].0.src_port;
    g.send(g.hdr(77, hport, op::RESPONSE), &[]);
    let pkts = g.recv_until(|h| h.op == op::RW);
    let data: Vec<u8> = pkts.into_iter().flat_map(|(_, d)| d).collect();
    assert_eq!(data, b"early bytes");
    assert_eq!(read_line(&mut s), format!("OK {hport}"));
}

#[test]
fn bad_connect_lines_and_refusals_close_the_host_socket() {
    let mut g = Guest::new();
    for line in [&b"HELLO\n"[..], b"CONNECT x\n", &[b'A'; 100][..]] {
        let mut s = UnixStream::connect(&g.uds).unwrap();
        s.write_all(line).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        g.recv();
        let mut b = [0u8; 8];
        // Closed with the rest of an over-long line unread, the socket reads as reset.
        match s.read(&mut b) {
            Ok(n) => assert_eq!(n, 0, "{line:?}"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }
    }
    // The guest has no listener: it answers RST, the host sees EOF and no OK.
    let mut s = UnixStream::connect(&g.uds).unwrap();
    s.write_all(b"CONNECT 5\n").unwrap();
    let pkts = g.recv_until(|h| h.op == op::REQUEST);
    g.send(g.hdr(5, pkts[0].0.src_port, op::RST), &[]);
    g.recv();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 8];
    assert_eq!(s.read(&mut b).unwrap(), 0);
    assert_eq!(g.dev.connection_count(), 0);
}

#[test]
fn guest_initiated_stream_reaches_uds_port_listener() {
    let mut g = Guest::new();
    let l = g.listen(5000);
    let mut s = g.guest_connect(&l, 40000, 5000);
    g.send(g.hdr(40000, 5000, op::RW), b"hello host");
    g.process();
    let mut r = [0u8; 10];
    s.read_exact(&mut r).unwrap();
    assert_eq!(&r, b"hello host");
    s.write_all(b"hello guest").unwrap();
    let pkts = g.recv_until(|h| h.op == op::RW);
    assert_eq!(pkts.last().unwrap().1, b"hello guest");
}

#[test]
fn guest_connect_without_listener_gets_rst() {
    let mut g = Guest::new();
    g.send(g.hdr(1, 6000, op::REQUEST), &[]);
    let pkts = g.recv();
    assert_eq!(pkts.len(), 1);
    let h = pkts[0].0;
    assert_eq!((h.op, h.src_port, h.dst_port), (op::RST, 6000, 1));
    // Packets for unknown streams get RST too, but an RST is never answered.
    g.send(g.hdr(2, 6000, op::RW), b"x");
    g.send(g.hdr(3, 6000, op::RST), &[]);
    let pkts = g.recv();
    assert_eq!(pkts.len(), 1);
    assert_eq!((pkts[0].0.op, pkts[0].0.dst_port), (op::RST, 2));
}

#[test]
fn wrong_addressing_is_dropped_or_reset() {
    let mut g = Guest::new();
    let l = g.listen(5000);
    // Spoofed source CID: silently dropped.
    let mut h = g.hdr(1, 5000, op::REQUEST);
    h.src_cid = 9;
    g.send(h, &[]);
    assert!(g.recv().is_empty());
    // Another destination CID or a non-stream type: refused.
    let mut h = g.hdr(1, 5000, op::REQUEST);
    h.dst_cid = 7;
    g.send(h, &[]);
    let mut h = g.hdr(2, 5000, op::REQUEST);
    h.type_ = 2;
    g.send(h, &[]);
    let pkts = g.recv();
    assert_eq!(pkts.iter().filter(|(h, _)| h.op == op::RST).count(), 2);
    l.set_nonblocking(true).unwrap();
    assert!(l.accept().is_err());
}

#[test]
fn host_half_close_reaches_guest_as_shutdown_after_data() {
    let mut g = Guest::new();
    let (mut s, hport) = g.host_connect(1024);
    s.write_all(b"last words").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let pkts = g.recv_until(|h| h.op == op::SHUTDOWN);
    let ops: Vec<u16> = pkts.iter().map(|(h, _)| h.op).collect();
    assert_eq!(ops, [op::RW, op::SHUTDOWN]);
    assert_eq!(pkts[0].1, b"last words");
    assert_eq!(pkts[1].0.flags, shutdown::SEND);
    // The other direction still flows.
    g.send(g.hdr(1024, hport, op::RW), b"reply");
    g.process();
    let mut r = [0u8; 5];
    s.read_exact(&mut r).unwrap();
    assert_eq!(&r, b"reply");
    // The guest closes: the host gets EOF and the guest its RST.
    g.send(
        g.hdr(1024, hport, op::SHUTDOWN)
            .with_flags(shutdown::SEND | shutdown::RCV),
        &[],
    );
    let pkts = g.recv();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].0.op, op::RST);
    let mut b = [0u8; 1];
    assert_eq!(s.read(&mut b).unwrap(), 0);
    assert_eq!(g.dev.connection_count(), 0);
}

impl Header {
    fn with_flags(mut self, flags: u32) -> Self {
        self.flags = flags;
        self
    }
}

#[test]
fn guest_half_close_reaches_host_as_eof() {
    let mut g = Guest::new();
    let l = g.listen(5000);
    let mut s = g.guest_connect(&l, 40000, 5000);
    g.send(g.hdr(40000, 5000, op::RW), b"request");
    g.send(
        g.hdr(40000, 5000, op::SHUTDOWN).with_flags(shutdown::SEND),
        &[],
    );
    g.process();
    let mut got = vec![];
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"request");
    // The host answers after EOF; the guest still receives.
    s.write_all(b"response").unwrap();
    drop(s);
    let pkts = g.recv_until(|h| h.op == op::SHUTDOWN);
    let data: Vec<u8> = pkts
        .iter()
        .filter(|(h, _)| h.op == op::RW)
        .flat_map(|(_, d)| d.clone())
        .collect();
    assert_eq!(data, b"response");
}

#[test]
fn host_to_guest_respects_guest_credit() {
    let mut g = Guest::new();
    let (s, hport) = g.host_connect(1024);
    let data = pattern(1, 200_000);
    let writer = {
        let data = data.clone();
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || s.write_all(&data).unwrap())
    };
    let mut got = vec![];
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < data.len() {
        assert!(Instant::now() < deadline);
        let mut unread = 0usize;
        for (h, d) in g.recv() {
            if h.op == op::RW {
                unread += d.len();
                got.extend(d);
                let in_flight = got.len() as u32 - g.fwd_cnt.get(&1024).copied().unwrap_or(0);
                assert!(in_flight <= GUEST_BUF_ALLOC, "device overran guest credit");
            }
        }
        // The application reads in batches, so credit runs out at times.
        if got.len() as u32 - g.fwd_cnt.get(&1024).copied().unwrap_or(0) >= GUEST_BUF_ALLOC {
            let pending = got.len() as u32 - g.fwd_cnt.get(&1024).copied().unwrap_or(0);
            g.consume(1024, hport, pending as usize);
        }
        let _ = unread;
        std::thread::sleep(Duration::from_millis(1));
    }
    writer.join().unwrap();
    assert!(got == data);
    s.shutdown(Shutdown::Both).unwrap();
}

#[test]
fn guest_to_host_large_transfer_with_credit_updates() {
    let mut g = Guest::new();
    let l = g.listen(5000);
    let s = g.guest_connect(&l, 40000, 5000);
    let data = pattern(2, 3 << 20);
    let reader = std::thread::spawn(move || {
        let mut s = s;
        let mut got = vec![];
        s.read_to_end(&mut got).unwrap();
        got
    });
    // Send as a driver bound by the device's credit would.
    let (mut sent, mut peer_fwd, mut peer_alloc) = (0usize, 0u32, CONN_BUF_SIZE);
    let deadline = Instant::now() + Duration::from_secs(20);
    while sent < data.len() {
        assert!(Instant::now() < deadline, "stalled at {sent}");
        let free = peer_alloc - (sent as u32 - peer_fwd);
        let n = (free as usize).min(60_000).min(data.len() - sent);
        if n > 0 {
            g.send(g.hdr(40000, 5000, op::RW), &data[sent..sent + n]);
            sent += n;
        }
        for (h, _) in g.recv() {
            assert_ne!(h.op, op::RST);
            peer_fwd = h.fwd_cnt;
            peer_alloc = h.buf_alloc;
        }
        if n == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    g.send(
        g.hdr(40000, 5000, op::SHUTDOWN)
            .with_flags(shutdown::SEND | shutdown::RCV),
        &[],
    );
    // The RST arrives only after the device flushed everything to the host.
    g.recv_until(|h| h.op == op::RST);
    let got = reader.join().unwrap();
    assert!(got == data, "{} vs {}", got.len(), data.len());
}

#[test]
fn guest_overrunning_credit_is_reset() {
    let mut g = Guest::new();
    let l = g.listen(5000);
    let _s = g.guest_connect(&l, 40000, 5000);
    let chunk = vec![0u8; 65536];
    // Nobody reads the host end: the socket buffer fills, then the device's buffer.
    for _ in 0..16 {
        g.send(g.hdr(40000, 5000, op::RW), &chunk);
        g.process();
    }
    let pkts = g.recv();
    assert!(pkts
        .iter()
        .any(|(h, _)| h.op == op::RST && h.dst_port == 40000));
}

#[test]
fn guest_rst_still_flushes_buffered_data_to_host() {
    let mut g = Guest::new();
    let l = g.listen(5000);
    let s = g.guest_connect(&l, 40000, 5000);
    let data = pattern(3, 300_000);
    for c in data.chunks(50_000) {
        g.send(g.hdr(40000, 5000, op::RW), c);
    }
    g.send(g.hdr(40000, 5000, op::RST), &[]);
    g.process();
    // The guest may reuse the ports at once.
    let s2 = g.guest_connect(&l, 40000, 5000);
    let reader = std::thread::spawn(move || {
        let mut s = s;
        let mut got = vec![];
        s.read_to_end(&mut got).unwrap();
        got
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() {
        assert!(Instant::now() < deadline);
        g.recv();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(reader.join().unwrap() == data);
    drop(s2);
}

#[test]
fn many_concurrent_streams_keep_their_bytes_apart() {
    let mut g = Guest::new();
    let l = g.listen(5000);
    const N: u32 = 32;
    let mut hosts = vec![];
    for i in 0..N {
        hosts.push(g.guest_connect(&l, 50000 + i, 5000));
    }
    for (i, s) in hosts.iter_mut().enumerate() {
        s.write_all(&pattern(100 + i as u32, 3000)).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
    }
    for i in 0..N {
        g.send(g.hdr(50000 + i, 5000, op::RW), &pattern(200 + i, 5000));
        g.send(
            g.hdr(50000 + i, 5000, op::SHUTDOWN)
                .with_flags(shutdown::SEND),
            &[],
        );
    }
    let mut per_port: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut eof = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while eof < N {
        assert!(Instant::now() < deadline);
        for (h, d) in g.recv() {
            match h.op {
                op::RW => per_port.entry(h.dst_port).or_default().extend(d),
                op::SHUTDOWN => eof += 1,
                op => panic!("unexpected op {op}"),
            }
        }
    }
    for i in 0..N {
        assert!(per_port[&(50000 + i)] == pattern(100 + i, 3000));
        let mut got = vec![];
        hosts[i as usize].read_to_end(&mut got).unwrap();
        assert!(got == pattern(200 + i, 5000));
    }
}

#[test]
fn unanswered_host_connect_times_out() {
    let mut g = Guest::new();
    g.dev.set_connect_timeout(Duration::from_millis(50));
    let mut s = UnixStream::connect(&g.uds).unwrap();
    writeln!(s, "CONNECT 1024").unwrap();
    let pkts = g.recv_until(|h| h.op == op::REQUEST);
    let hport = pkts[0].0.src_port;
    // The guest never answers: after the timeout it gets RST and the host EOF.
    let pkts = g.recv_until(|h| h.op == op::RST);
    assert_eq!(pkts.last().unwrap().0.src_port, hport);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 4];
    assert_eq!(s.read(&mut b).unwrap(), 0);
    assert_eq!(g.dev.connection_count(), 0);
    // Answered connects are not affected.
    let (mut s, hport) = g.host_connect(1024);
    std::thread::sleep(Duration::from_millis(100));
    g.recv();
    g.send(g.hdr(1024, hport, op::RW), b"still here");
    g.process();
    let mut r = [0u8; 10];
    s.read_exact(&mut r).unwrap();
    assert_eq!(&r, b"still here");
}

#[test]
fn credit_request_is_answered() {
    let mut g = Guest::new();
    let (_s, hport) = g.host_connect(1024);
    g.send(g.hdr(1024, hport, op::CREDIT_REQUEST), &[]);
    let pkts = g.recv();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].0.op, op::CREDIT_UPDATE);
    assert_eq!(pkts[0].0.buf_alloc, CONN_BUF_SIZE);
}

#[test]
fn reset_drops_all_streams() {
    let mut g = Guest::new();
    let (mut s, _) = g.host_connect(1024);
    g.dev.reset();
    assert_eq!(g.dev.connection_count(), 0);
    let mut b = [0u8; 1];
    assert_eq!(s.read(&mut b).unwrap(), 0);
    // The device keeps listening.
    let _ = g.host_connect(1025);
}

#[test]
fn event_idx_rx_waits_for_buffers_then_resumes() {
    let mut g = Guest::with_event_idx(true);
    let l = g.listen(5000);
    let mut s = g.guest_connect(&l, 40000, 5000);
    let data = pattern(5, 20_000);
    s.write_all(&data).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    // Two buffers only: the device uses them, then asks to be kicked for the next one.
    g.fresh_rx();
    for _ in 0..2 {
        let a = g.q.alloc.alloc(RX_BUF);
        g.q.rxq.add_chain(&[Buf::writable(a, RX_BUF)]).unwrap();
    }
    g.process();
    assert_eq!(g.q.rxq.take_used().len(), 2);
    assert_eq!(g.q.rxq.avail_event(), 2);
    // More buffers: the rest arrives.
    let mut got = vec![];
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < data.len() - 4096 * 2 {
        assert!(Instant::now() < deadline);
        for (h, d) in g.recv() {
            if h.op == op::RW {
                got.extend(d);
            }
        }
    }
    assert!(data.ends_with(&got));
}

// --- a hostile driver --------------------------------------------------------------

/// Posts a raw one-descriptor TX chain.
fn raw_tx(g: &mut Guest, addr: u64, len: u32, flags: u16) {
    g.reclaim_tx();
    let head =
        g.q.txq
            .add_chain(&[Buf::readable(GuestAddress(0), 0)])
            .unwrap();
    g.q.txq.write_desc(head, addr, len, flags, 0);
}

#[test]
fn hostile_tx_chains_are_consumed_without_harm() {
    let mut g = Guest::new();
    let l = g.listen(5000);
    let mem_end = MEM_SIZE as u64;
    // Outside guest memory, straddling its end, huge lengths, wrapping addresses.
    raw_tx(&mut g, mem_end + 0x1000, 44, 0);
    raw_tx(&mut g, mem_end - 10, 44, 0);
    raw_tx(&mut g, 0x20000, u32::MAX, 0);
    raw_tx(&mut g, u64::MAX - 8, 44, 0);
    // Too short for a header; device-writable instead of readable.
    raw_tx(&mut g, 0x20000, 10, 0);
    raw_tx(&mut g, 0x20000, 44, F_WRITE);
    g.process();
    assert_eq!(g.q.txq.take_used().len(), 6);
    assert!(g.recv().is_empty());

    // A header announcing a huge payload, and one whose payload is not there.
    let mut h = g.hdr(1, 5000, op::RW);
    h.len = u32::MAX;
    let a = g.q.alloc.alloc(HDR_SIZE as u32);
    g.q.mem.write_slice(&h.to_bytes(), a).unwrap();
    g.q.txq
        .add_chain(&[Buf::readable(a, HDR_SIZE as u32)])
        .unwrap();
    let mut h = g.hdr(2, 5000, op::RW);
    h.len = 1000;
    let a = g.q.alloc.alloc(HDR_SIZE as u32 + 10);
    g.q.mem.write_slice(&h.to_bytes(), a).unwrap();
    g.q.txq
        .add_chain(&[Buf::readable(a, HDR_SIZE as u32 + 10)])
        .unwrap();
    let pkts = g.recv();
    let rst: Vec<u32> = pkts
        .iter()
        .filter(|(h, _)| h.op == op::RST)
        .map(|(h, _)| h.dst_port)
        .collect();
    assert_eq!(rst, [1, 2]);

    // Everything still works afterwards.
    let mut s = g.guest_connect(&l, 7, 5000);
    g.send(g.hdr(7, 5000, op::RW), b"fine");
    g.process();
    let mut r = [0u8; 4];
    s.read_exact(&mut r).unwrap();
    assert_eq!(&r, b"fine");
}

#[test]
fn descriptor_loops_terminate() {
    let mut g = Guest::new();
    // A chain that points back to itself, and a two-descriptor cycle.
    let a = g.q.alloc.alloc(64);
    let mut h = g.hdr(1, 5000, op::RW);
    h.len = 20;
    g.q.mem.write_slice(&h.to_bytes(), a).unwrap();
    let head = g.q.txq.add_chain(&[Buf::readable(a, 44)]).unwrap();
    g.q.txq.write_desc(head, a.0, 44, F_NEXT, head);
    let x =
        g.q.txq
            .add_chain(&[Buf::readable(a, 44), Buf::readable(a, 44)])
            .unwrap();
    g.q.txq.write_desc(x, a.0, 44, F_NEXT, x + 1);
    g.q.txq.write_desc(x + 1, a.0, 44, F_NEXT, x);
    // Same on RX: the device may write only within the (bounded) chain.
    let b = g.q.alloc.alloc(RX_BUF);
    let r = g.q.rxq.add_chain(&[Buf::writable(b, RX_BUF)]).unwrap();
    g.q.rxq.write_desc(r, b.0, RX_BUF, F_WRITE | F_NEXT, r);
    let t0 = Instant::now();
    g.process();
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(g.q.txq.take_used().len(), 2);
}

#[test]
fn hostile_rx_chains_are_returned_empty_and_never_written_read_only() {
    let mut g = Guest::new();
    let l = g.listen(5000);
    // A stream with something to say, so the device wants RX buffers.
    g.send(g.hdr(40000, 5000, op::REQUEST), &[]);
    // Read-only buffer (wrong direction), outside memory, too small, huge length.
    let ro = g.q.alloc.alloc(RX_BUF);
    g.q.mem
        .write_slice(&vec![0xAA; RX_BUF as usize], ro)
        .unwrap();
    let h1 = g.q.rxq.add_chain(&[Buf::readable(ro, RX_BUF)]).unwrap();
    let h2 =
        g.q.rxq
            .add_chain(&[Buf::writable(GuestAddress(MEM_SIZE as u64 + 4096), RX_BUF)])
            .unwrap();
    let small = g.q.alloc.alloc(16);
    let h3 = g.q.rxq.add_chain(&[Buf::writable(small, 16)]).unwrap();
    let h4 =
        g.q.rxq
            .add_chain(&[Buf::writable(GuestAddress(0x20000), u32::MAX)])
            .unwrap();
    g.process();
    let used = g.q.rxq.take_used();
    assert_eq!(used, vec![(h1, 0), (h2, 0), (h3, 0), (h4, 0)]);
    let mut back = vec![0u8; RX_BUF as usize];
    g.q.mem.read_slice(&mut back, ro).unwrap();
    assert!(
        back.iter().all(|&b| b == 0xAA),
        "read-only buffer was written"
    );
    // A mixed chain: the readable head is skipped, the writable rest takes the packet.
    let w = g.q.alloc.alloc(RX_BUF);
    let mixed =
        g.q.rxq
            .add_chain(&[Buf::readable(ro, 64), Buf::writable(w, RX_BUF)])
            .unwrap();
    g.process();
    assert_eq!(g.q.rxq.take_used(), vec![(mixed, HDR_SIZE as u32)]);
    g.q.mem.read_slice(&mut back, ro).unwrap();
    assert!(back.iter().all(|&b| b == 0xAA));
    let mut raw = [0u8; HDR_SIZE];
    g.q.mem.read_slice(&mut raw, w).unwrap();
    assert_eq!(Header::from_bytes(&raw).op, op::RESPONSE);
    drop(l);
}

#[test]
fn split_headers_and_payloads_are_reassembled() {
    let mut g = Guest::new();
    let l = g.listen(5000);
    let mut s = g.guest_connect(&l, 40000, 5000);
    // Header split 10 + 34 bytes, payload over three descriptors, all in one chain.
    let mut h = g.hdr(40000, 5000, op::RW);
    h.len = 9;
    let raw = h.to_bytes();
    let mut bufs = vec![];
    for part in [&raw[..10], &raw[10..], b"abc", b"def", b"ghi"] {
        let a = g.q.alloc.alloc(part.len() as u32);
        g.q.mem.write_slice(part, a).unwrap();
        bufs.push(Buf::readable(a, part.len() as u32));
    }
    g.q.txq.add_chain(&bufs).unwrap();
    g.process();
    let mut r = [0u8; 9];
    s.read_exact(&mut r).unwrap();
    assert_eq!(&r, b"abcdefghi");
    // RX into a chain of small writable pieces.
    g.fresh_rx();
    s.write_all(b"0123456789").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let pieces: Vec<GuestAddress> = (0..4).map(|_| g.q.alloc.alloc(20)).collect();
    let bufs: Vec<Buf> = pieces.iter().map(|&a| Buf::writable(a, 20)).collect();
    let head = g.q.rxq.add_chain(&bufs).unwrap();
    g.process();
    assert_eq!(g.q.rxq.take_used(), vec![(head, HDR_SIZE as u32 + 10)]);
    let mut all = vec![];
    for a in pieces {
        let mut b = [0u8; 20];
        g.q.mem.read_slice(&mut b, a).unwrap();
        all.extend(b);
    }
    assert_eq!(&all[HDR_SIZE..HDR_SIZE + 10], b"0123456789");
}

#[test]
fn avail_index_jumps_and_bad_rings_are_survived() {
    let mut g = Guest::new();
    // The driver claims far more available entries than the ring holds.
    g.q.txq.set_avail_idx(1000);
    g.process();
    assert_eq!(g.q.txq.used_idx(), 0);
    // Rings outside guest memory: the queue is not valid, nothing is touched.
    let mut bad = Queue::new(256).unwrap();
    bad.set_size(256);
    bad.set_desc_table_address(Some(0xffff_f000), Some(0xffff));
    bad.set_avail_ring_address(Some(0), Some(0x10));
    bad.set_used_ring_address(Some(0), Some(0x20));
    bad.set_ready(true);
    let mut rx = g.q.rxq.queue(false);
    assert_eq!(
        g.dev.process(&g.q.mem, &mut rx, &mut bad).unwrap(),
        Notify::default()
    );
    // A queue that is not ready is ignored too.
    let mut not_ready = Queue::new(256).unwrap();
    g.dev.process(&g.q.mem, &mut rx, &mut not_ready).unwrap();
}

#[test]
fn queue_reset_mid_request_recovers() {
    let mut g = Guest::new();
    let l = g.listen(5000);
    let mut s = g.guest_connect(&l, 40000, 5000);
    // The driver posts packets, then resets the queues before the device ran.
    g.send(g.hdr(40000, 5000, op::RW), b"lost");
    g.q.tx.reset();
    g.q.txq.reset();
    g.q.rx.reset();
    g.q.rxq.reset();
    g.rx_bufs.clear();
    g.tx_bufs.clear();
    g.process();
    // Host data arrives while the queues are down.
    s.write_all(b"while down").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    g.process();
    // The driver brings the queues back up: the device carries on.
    g.q.txq.configure(&mut g.q.tx);
    g.q.rxq.configure(&mut g.q.rx);
    let pkts = g.recv_until(|h| h.op == op::RW);
    let data: Vec<u8> = pkts.into_iter().flat_map(|(_, d)| d).collect();
    assert_eq!(data, b"while down");
    g.send(g.hdr(40000, 5000, op::RW), b"again");
    g.process();
    let mut r = [0u8; 5];
    s.read_exact(&mut r).unwrap();
    assert_eq!(&r, b"again");
}

#[test]
fn a_flood_of_refused_requests_does_not_grow_without_bound() {
    let mut g = Guest::new();
    // No RX buffers at all: replies pile up until the device stops taking TX.
    for i in 0..255 {
        g.send(g.hdr(i, 6000, op::REQUEST), &[]);
    }
    g.process();
    for i in 255..600 {
        g.reclaim_tx();
        if g.q.txq.free_descriptors() == 0 {
            break;
        }
        g.send(g.hdr(i, 6000, op::REQUEST), &[]);
        g.process();
    }
    let consumed = g.q.txq.used_idx();
    assert!(consumed <= 257, "consumed {consumed} without RX room");
    // Once the guest posts RX buffers, everything drains.
    let mut rst = 0;
    for _ in 0..50 {
        rst += g.recv().iter().filter(|(h, _)| h.op == op::RST).count();
    }
    assert_eq!(rst as u16, g.q.txq.used_idx());
}

#[test]
fn notifications_are_enabled_again_after_every_pass() {
    // Without EVENT_IDX the used ring's flags tell the driver whether to kick; a pass
    // that ends with nothing to deliver must not leave NO_NOTIFY set, or a driver that
    // refills RX without kicking would stall the device.
    let mut g = Guest::new();
    g.fill_rx(4);
    g.process();
    let flags =
        |q: &TestQueue, mem: &GuestMemoryMmap| -> u16 { mem.read_obj(q.used_addr()).unwrap() };
    assert_eq!(flags(&g.q.rxq, &g.q.mem), 0, "RX left with NO_NOTIFY");
    assert_eq!(flags(&g.q.txq, &g.q.mem), 0, "TX left with NO_NOTIFY");
    let l = UnixListener::bind(format!("{}_7000", g.uds.display())).unwrap();
    let _host = g.guest_connect(&l, 1000, 7000);
    g.process();
    assert_eq!(flags(&g.q.rxq, &g.q.mem), 0, "RX left with NO_NOTIFY");
    assert_eq!(flags(&g.q.txq, &g.q.mem), 0, "TX left with NO_NOTIFY");
}
