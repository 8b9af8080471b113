//! virtio-net driven through guest memory with chains built here, against a
//! SOCK_SEQPACKET peer (one message per frame, as a tap does), and against a real tap.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::test_utils::{Buf, RxTxQueues, F_NEXT, F_WRITE};

const MEM: usize = 4 << 20;
const MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 1]);

struct Rig {
    q: RxTxQueues,
    dev: Net,
    peer: OwnedFd,
}

fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two fds into the array.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0);
    // SAFETY: both fds are new and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn rig() -> Rig {
    let (ours, peer) = seqpacket_pair();
    Rig {
        q: RxTxQueues::new(
            MEM,
            16,
            GuestAddress(0x1000),
            GuestAddress(0x4000),
            GuestAddress(0x10000),
            false,
        ),
        dev: Net::new(ours, MAC),
        peer,
    }
}

impl Rig {
    fn run(&mut self) -> (bool, bool) {
        self.dev
            .process(&self.q.mem, Some(&mut self.q.rx), Some(&mut self.q.tx))
            .unwrap()
    }

    fn peer_send(&self, frame: &[u8]) {
        // SAFETY: sends our live buffer.
        let n = unsafe { libc::write(self.peer.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        assert_eq!(n, frame.len() as isize);
    }

    fn peer_recv(&self) -> Option<Vec<u8>> {
        let mut b = vec![0u8; MAX_FRAME + 100];
        // SAFETY: reads into our live buffer.
        let n = unsafe { libc::read(self.peer.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
        if n < 0 {
            return None;
        }
        b.truncate(n as usize);
        Some(b)
    }
}

fn frame(tag: u8, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN];
    f.extend((0..len).map(|i| tag.wrapping_add(i as u8)));
    f
}

#[test]
fn tx_frames_reach_the_backend() {
    let mut r = rig();
    let f = frame(1, 60);
    let a = r.q.alloc.alloc(VNET_HDR_LEN as u32);
    let b = r.q.alloc.alloc(60);
    r.q.mem.write_slice(&f[..VNET_HDR_LEN], a).unwrap();
    r.q.mem.write_slice(&f[VNET_HDR_LEN..], b).unwrap();
    r.q.txq
        .add_chain(&[Buf::readable(a, VNET_HDR_LEN as u32), Buf::readable(b, 60)])
        .unwrap();
    assert_eq!(r.run(), (false, true));
    assert_eq!(r.q.txq.take_used(), vec![(0, 0)]);
    assert_eq!(r.peer_recv().unwrap(), f);
    assert!(r.peer_recv().is_none());
}

#[test]
fn rx_frames_fill_guest_buffers_and_wait_for_them() {
    let mut r = rig();
    let f1 = frame(7, 100);
    let f2 = frame(9, 50);
    r.peer_send(&f1);
    r.peer_send(&f2);
    // No buffers yet: the first frame waits, nothing is used.
    assert_eq!(r.run(), (false, false));
    let a = r.q.alloc.alloc(2048);
    r.q.rxq.add_chain(&[Buf::writable(a, 2048)]).unwrap();
    assert_eq!(r.run(), (true, false));
    assert_eq!(r.q.rxq.take_used(), vec![(0, f1.len() as u32)]);
    let mut got = vec![0u8; f1.len()];
    r.q.mem.read_slice(&mut got, a).unwrap();
    assert_eq!(&got[VNET_HDR_LEN..], &f1[VNET_HDR_LEN..]);
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1, "num_buffers");
    // The second frame, split across two buffers.
    let b = r.q.alloc.alloc(20);
    let c = r.q.alloc.alloc(100);
    r.q.rxq
        .add_chain(&[Buf::writable(b, 20), Buf::writable(c, 100)])
        .unwrap();
    r.run();
    assert_eq!(r.q.rxq.take_used(), vec![(0, f2.len() as u32)]);
    let mut got = vec![0u8; f2.len()];
    r.q.mem.read_slice(&mut got[..20], b).unwrap();
    r.q.mem.read_slice(&mut got[20..], c).unwrap();
    assert_eq!(&got[VNET_HDR_LEN..], &f2[VNET_HDR_LEN..]);
}

#[test]
fn hostile_tx_chains_are_dropped() {
    let mut r = rig();
    let a = r.q.alloc.alloc(64);
    // Outside guest memory.
    r.q.txq.write_desc(0, MEM as u64 - 10, 64, 0, 0);
    r.q.txq.publish(0);
    // Writable buffer on TX.
    r.q.txq.write_desc(1, a.0, 64, F_WRITE, 0);
    r.q.txq.publish(1);
    // Loop.
    r.q.txq.write_desc(2, a.0, 64, F_NEXT, 3);
    r.q.txq.write_desc(3, a.0, 64, F_NEXT, 2);
    r.q.txq.publish(2);
    // Huge length.
    r.q.txq.write_desc(4, a.0, u32::MAX, 0, 0);
    r.q.txq.publish(4);
    r.run();
    assert_eq!(r.q.txq.take_used().len(), 4);
    // The loop is cut at the queue size: at most 16 x 64 bytes, an honest frame size,
    // so it may go out; nothing else does.
    let mut sent = 0;
    while let Some(f) = r.peer_recv() {
        assert!(f.len() <= 16 * 64);
        sent += 1;
    }
    assert!(sent <= 1);
}

#[test]
fn hostile_rx_chains_drop_the_frame_not_the_device() {
    let mut r = rig();
    let ro = r.q.alloc.alloc(2048);
    r.q.mem.write_slice(&[0u8; 64], ro).unwrap();
    r.peer_send(&frame(1, 100));
    r.peer_send(&frame(2, 100));
    r.peer_send(&frame(3, 100));
    // Read-only buffer, out-of-memory buffer, then too small a buffer.
    r.q.rxq.write_desc(0, ro.0, 2048, 0, 0);
    r.q.rxq.publish(0);
    r.q.rxq.write_desc(1, MEM as u64 - 16, 2048, F_WRITE, 0);
    r.q.rxq.publish(1);
    let small = r.q.alloc.alloc(16);
    r.q.rxq.write_desc(2, small.0, 16, F_WRITE, 0);
    r.q.rxq.publish(2);
    r.run();
    assert_eq!(r.q.rxq.take_used(), vec![(0, 0), (1, 0), (2, 0)]);
    let mut b = [0u8; 64];
    r.q.mem.read_slice(&mut b, ro).unwrap();
    assert_eq!(b, [0u8; 64], "read-only buffer untouched");
    // The device still works.
    r.peer_send(&frame(4, 30));
    let ok = r.q.alloc.alloc(2048);
    r.q.rxq.add_chain(&[Buf::writable(ok, 2048)]).unwrap();
    r.run();
    let used = r.q.rxq.take_used();
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].1 as usize, VNET_HDR_LEN + 30);
}

#[test]
fn queue_reset_mid_frame() {
    let mut r = rig();
    r.peer_send(&frame(5, 40));
    r.run();
    // The driver resets; the pending frame is dropped with the session.
    r.dev.reset();
    r.q.rx.reset();
    r.q.rxq.reset();
    assert_eq!(r.run(), (false, false));
    r.q.rxq.configure(&mut r.q.rx);
    let a = r.q.alloc.alloc(2048);
    r.q.rxq.add_chain(&[Buf::writable(a, 2048)]).unwrap();
    r.run();
    assert!(r.q.rxq.take_used().is_empty(), "the old frame is gone");
    r.peer_send(&frame(6, 40));
    r.run();
    assert_eq!(r.q.rxq.take_used(), vec![(0, (VNET_HDR_LEN + 40) as u32)]);
}

#[test]
fn mac_addresses_parse() {
    assert_eq!("02:00:00:00:00:01".parse::<MacAddr>(), Ok(MAC));
    assert!("02:00:00:00:00".parse::<MacAddr>().is_err());
    assert!("02:00:00:00:00:0g".parse::<MacAddr>().is_err());
    assert!("01:00:00:00:00:01".parse::<MacAddr>().is_err(), "multicast");
    let r = rig();
    assert_eq!(r.dev.config_space(), MAC.0.to_vec());
}

#[test]
fn tap_open_and_validation() {
    if !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("SKIP tap_open_and_validation: no /dev/net/tun");
        return;
    }
    let name = format!("hulltst{}", std::process::id() % 100_000);
    let tap = match tap::Tap::open(&name) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("SKIP tap_open_and_validation: {e}");
            return;
        }
    };
    assert_eq!(tap.name(), name);
    // Handing the same fd over validates its flags.
    let fd = tap.into_fd();
    let tap = tap::Tap::from_fd(fd).unwrap();
    drop(tap);
    // A non-tap fd is refused, naming it.
    let (a, _b) = seqpacket_pair();
    let raw = a.as_raw_fd();
    let e = tap::Tap::from_fd(a).unwrap_err();
    assert!(e.to_string().contains(&format!("fd {raw}")), "{e}");
    assert!(tap::Tap::open("").is_err());
    assert!(tap::Tap::open("a-name-much-too-long").is_err());
}
