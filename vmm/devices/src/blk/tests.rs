//! virtio-blk driven through guest memory with chains built here, honest and hostile.

use std::os::unix::fs::MetadataExt;

use virtio_bindings::virtio_blk::*;
use virtio_queue::QueueT;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::test_utils::{test_memory, Buf, BufAlloc, TestQueue, F_NEXT, F_WRITE};

const MEM: usize = 4 << 20;
const IMAGE: u64 = 64 << 10;

struct Rig {
    mem: GuestMemoryMmap,
    tq: TestQueue,
    q: Queue,
    alloc: BufAlloc,
    dev: Block,
    _dir: tempfile::TempDir,
    image: PathBuf,
}

fn rig(readonly: bool) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    let content: Vec<u8> = (0..IMAGE).map(|i| (i / SECTOR_SIZE) as u8).collect();
    std::fs::write(&image, content).unwrap();
    let mem = test_memory(MEM);
    let tq = TestQueue::new(&mem, GuestAddress(0x1000), 16);
    let q = tq.queue(false);
    let dev = Block::new(BlkConfig {
        path: image.clone(),
        readonly,
        id: Some("hull-disk-0".into()),
    })
    .unwrap();
    Rig {
        mem,
        tq,
        q,
        alloc: BufAlloc::new(GuestAddress(0x10000), GuestAddress(MEM as u64)),
        dev,
        _dir: dir,
        image,
    }
}

impl Rig {
    fn header(&mut self, type_: u32, sector: u64) -> GuestAddress {
        let h = self.alloc.alloc(16);
        let mut raw = [0u8; 16];
        raw[0..4].copy_from_slice(&type_.to_le_bytes());
        raw[8..16].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&raw, h).unwrap();
        h
    }

    fn status_buf(&mut self) -> GuestAddress {
        let s = self.alloc.alloc(1);
        self.mem.write_obj(0xffu8, s).unwrap();
        s
    }

    /// Submits `data` between a header and a status byte; returns (used len, status).
    fn submit(&mut self, type_: u32, sector: u64, data: &[Buf]) -> (u32, u8) {
        let h = self.header(type_, sector);
        let s = self.status_buf();
        let mut bufs = vec![Buf::readable(h, 16)];
        bufs.extend_from_slice(data);
        bufs.push(Buf::writable(s, 1));
        self.tq.add_chain(&bufs).unwrap();
        self.dev.process(&self.mem, &mut self.q).unwrap();
        let used = self.tq.take_used();
        assert_eq!(used.len(), 1, "one completion");
        (used[0].1, self.mem.read_obj(s).unwrap())
    }

    fn run(&mut self) -> Vec<(u16, u32)> {
        self.dev.process(&self.mem, &mut self.q).unwrap();
        self.tq.take_used()
    }

    fn image(&self) -> Vec<u8> {
        std::fs::read(&self.image).unwrap()
    }
}

const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;

#[test]
fn reads_sectors_into_guest_buffers() {
    let mut r = rig(false);
    let a = r.alloc.alloc(512);
    let b = r.alloc.alloc(1024);
    let (len, st) = r.submit(
        VIRTIO_BLK_T_IN,
        3,
        &[Buf::writable(a, 512), Buf::writable(b, 1024)],
    );
    assert_eq!((len, st), (1537, OK));
    let mut got = vec![0u8; 1024];
    r.mem.read_slice(&mut got[..512], a).unwrap();
    assert!(got[..512].iter().all(|&x| x == 3));
    r.mem.read_slice(&mut got, b).unwrap();
    assert!(got[..512].iter().all(|&x| x == 4) && got[512..].iter().all(|&x| x == 5));
}

#[test]
fn writes_reach_the_host_file() {
    let mut r = rig(false);
    let a = r.alloc.alloc(1024);
    r.mem.write_slice(&[0xab; 1024], a).unwrap();
    let (len, st) = r.submit(VIRTIO_BLK_T_OUT, 10, &[Buf::readable(a, 1024)]);
    assert_eq!((len, st), (1, OK));
    let img = r.image();
    assert!(img[10 * 512..12 * 512].iter().all(|&x| x == 0xab));
    assert!(img[9 * 512..10 * 512].iter().all(|&x| x == 9));
    assert!(img[12 * 512..13 * 512].iter().all(|&x| x == 12));
    assert_eq!(r.submit(VIRTIO_BLK_T_FLUSH, 0, &[]), (1, OK));
}

#[test]
fn get_id_and_config() {
    let mut r = rig(false);
    let a = r.alloc.alloc(20);
    let (len, st) = r.submit(VIRTIO_BLK_T_GET_ID, 0, &[Buf::writable(a, 20)]);
    assert_eq!((len, st), (21, OK));
    let mut id = [0u8; 20];
    r.mem.read_slice(&mut id, a).unwrap();
    assert_eq!(&id[..11], b"hull-disk-0");
    assert!(id[11..].iter().all(|&x| x == 0));
    let cfg = r.dev.config_space();
    assert_eq!(u64::from_le_bytes(cfg[0..8].try_into().unwrap()), 128);
    assert_eq!(r.dev.features() & (1 << VIRTIO_BLK_F_RO), 0);
    assert_ne!(r.dev.features() & (1 << VIRTIO_BLK_F_DISCARD), 0);
}

#[test]
fn discard_punches_a_hole() {
    let mut r = rig(false);
    let d = r.alloc.alloc(16);
    let mut seg = [0u8; 16];
    seg[0..8].copy_from_slice(&8u64.to_le_bytes());
    seg[8..12].copy_from_slice(&16u32.to_le_bytes());
    r.mem.write_slice(&seg, d).unwrap();
    assert_eq!(
        r.submit(VIRTIO_BLK_T_DISCARD, 0, &[Buf::readable(d, 16)]),
        (1, OK)
    );
    let img = r.image();
    assert_eq!(img.len() as u64, IMAGE, "size kept");
    assert!(img[8 * 512..24 * 512].iter().all(|&x| x == 0));
    assert!(img[24 * 512..25 * 512].iter().all(|&x| x == 24));
    // A range past the end changes nothing.
    seg[0..8].copy_from_slice(&120u64.to_le_bytes());
    r.mem.write_slice(&seg, d).unwrap();
    assert_eq!(
        r.submit(VIRTIO_BLK_T_DISCARD, 0, &[Buf::readable(d, 16)]),
        (1, IOERR)
    );
    assert!(r.image()[120 * 512..].iter().all(|&x| x != 0));
}

#[test]
fn readonly_image_refuses_changes() {
    let mut r = rig(true);
    assert_ne!(r.dev.features() & (1 << VIRTIO_BLK_F_RO), 0);
    let before = r.image();
    let a = r.alloc.alloc(512);
    assert_eq!(
        r.submit(VIRTIO_BLK_T_OUT, 0, &[Buf::readable(a, 512)]),
        (1, IOERR)
    );
    assert_eq!(r.image(), before);
    let (_, st) = r.submit(VIRTIO_BLK_T_IN, 0, &[Buf::writable(a, 512)]);
    assert_eq!(st, OK);
    assert_eq!(
        r.submit(VIRTIO_BLK_T_DISCARD, 0, &[Buf::readable(a, 16)]).1,
        IOERR
    );
    assert_eq!(r.submit(99, 0, &[]).1, VIRTIO_BLK_S_UNSUPP as u8);
}

#[test]
fn beyond_the_image_is_an_io_error() {
    let mut r = rig(false);
    let a = r.alloc.alloc(1024);
    // Last sector plus one.
    assert_eq!(
        r.submit(VIRTIO_BLK_T_IN, 127, &[Buf::writable(a, 1024)]).1,
        IOERR
    );
    // Sector numbers whose byte offset overflows.
    assert_eq!(
        r.submit(VIRTIO_BLK_T_OUT, u64::MAX / 2, &[Buf::readable(a, 512)])
            .1,
        IOERR
    );
    // A huge length inside guest memory: refused before any I/O.
    let big = r.alloc.alloc(2 << 20);
    let before = r.image();
    assert_eq!(
        r.submit(VIRTIO_BLK_T_OUT, 0, &[Buf::readable(big, 2 << 20)])
            .1,
        IOERR
    );
    assert_eq!(r.image(), before);
}

#[test]
fn hostile_chains_complete_without_harm() {
    let mut r = rig(false);
    let before = r.image();
    let a = r.alloc.alloc(512);
    let h = r.header(VIRTIO_BLK_T_OUT, 0);
    let s = r.status_buf();
    // Data outside guest memory.
    r.tq.write_desc(0, h.0, 16, F_NEXT, 1);
    r.tq.write_desc(1, MEM as u64 - 256, 512, F_NEXT, 2);
    r.tq.write_desc(2, s.0, 1, F_WRITE, 0);
    r.tq.publish(0);
    // Data whose address wraps around.
    r.tq.write_desc(3, h.0, 16, F_NEXT, 4);
    r.tq.write_desc(4, u64::MAX - 8, 512, F_NEXT, 5);
    r.tq.write_desc(5, s.0, 1, F_WRITE, 0);
    r.tq.publish(3);
    // Wrong direction: a read whose data buffer is device-readable.
    let hi = r.header(VIRTIO_BLK_T_IN, 0);
    r.tq.write_desc(6, hi.0, 16, F_NEXT, 7);
    r.tq.write_desc(7, a.0, 512, F_NEXT, 8);
    r.tq.write_desc(8, s.0, 1, F_WRITE, 0);
    r.tq.publish(6);
    // Status byte read-only.
    r.tq.write_desc(9, h.0, 16, F_NEXT, 10);
    r.tq.write_desc(10, s.0, 1, 0, 0);
    r.tq.publish(9);
    // A loop 11 -> 12 -> 11.
    r.tq.write_desc(11, h.0, 16, F_NEXT, 12);
    r.tq.write_desc(12, a.0, 512, F_NEXT, 11);
    r.tq.publish(11);
    // Header writable and too short.
    r.tq.write_desc(13, h.0, 8, F_WRITE | F_NEXT, 14);
    r.tq.write_desc(14, s.0, 1, F_WRITE, 0);
    r.tq.publish(13);
    // A lone header.
    r.tq.write_desc(15, h.0, 16, 0, 0);
    r.tq.publish(15);
    let used = r.run();
    assert_eq!(used.len(), 7, "every chain completes: {used:?}");
    assert!(used.iter().all(|&(_, len)| len == 0), "{used:?}");
    assert_eq!(r.image(), before);
    let mut data = [0u8; 512];
    r.mem.read_slice(&mut data, a).unwrap();
    assert!(
        data.iter().all(|&x| x == 0),
        "nothing read into a read-only buffer"
    );
}

#[test]
fn bogus_avail_index_and_queue_reset() {
    let mut r = rig(false);
    r.tq.set_avail_idx(5000);
    let _ = r.dev.process(&r.mem, &mut r.q);
    assert!(r.tq.used_idx() <= 16);
    // Reset mid-request: the transport resets the queue, the device leaves it alone.
    r.tq.reset();
    let a = r.alloc.alloc(512);
    let h = r.header(VIRTIO_BLK_T_IN, 0);
    let s = r.status_buf();
    r.tq.add_chain(&[
        Buf::readable(h, 16),
        Buf::writable(a, 512),
        Buf::writable(s, 1),
    ])
    .unwrap();
    r.q.reset();
    assert!(!r.dev.process(&r.mem, &mut r.q).unwrap());
    assert_eq!(r.tq.used_idx(), 0);
    r.tq.configure(&mut r.q);
    assert!(r.dev.process(&r.mem, &mut r.q).unwrap());
    assert_eq!(r.tq.take_used(), vec![(0, 513)]);
}

#[test]
fn header_and_data_in_one_descriptor() {
    let mut r = rig(false);
    let buf = r.alloc.alloc(16 + 512);
    let mut raw = vec![0u8; 16 + 512];
    raw[0..4].copy_from_slice(&VIRTIO_BLK_T_OUT.to_le_bytes());
    raw[8..16].copy_from_slice(&2u64.to_le_bytes());
    raw[16..].fill(0x5a);
    r.mem.write_slice(&raw, buf).unwrap();
    let s = r.status_buf();
    r.tq.add_chain(&[Buf::readable(buf, 528), Buf::writable(s, 1)])
        .unwrap();
    assert_eq!(r.run(), vec![(0, 1)]);
    assert_eq!(r.mem.read_obj::<u8>(s).unwrap(), OK);
    assert!(r.image()[1024..1536].iter().all(|&x| x == 0x5a));
    let _ = buf.unchecked_add(0);
}

#[test]
fn bad_images_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.img");
    let e = Block::new(BlkConfig {
        path: missing.clone(),
        readonly: false,
        id: None,
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("nope.img"), "{e}");
    let e = Block::new(BlkConfig {
        path: dir.path().to_path_buf(),
        readonly: true,
        id: None,
    })
    .err()
    .unwrap();
    assert!(matches!(e, BlkError::NotAFile(_)), "{e}");
    let img = dir.path().join("ok.img");
    std::fs::write(&img, [0u8; 1000]).unwrap();
    let e = Block::new(BlkConfig {
        path: img.clone(),
        readonly: false,
        id: Some("x".repeat(21)),
    })
    .err()
    .unwrap();
    assert!(matches!(e, BlkError::IdTooLong(_)), "{e}");
    // A partial last sector is not exposed.
    let b = Block::new(BlkConfig {
        path: img.clone(),
        readonly: true,
        id: None,
    })
    .unwrap();
    assert_eq!(b.capacity(), 1);
    assert_eq!(std::fs::metadata(&img).unwrap().size(), 1000);
}
