//! virtio-rng (entropy device): fills the driver's writable buffers from the host
//! kernel's CSPRNG (getrandom(2)).

use std::io;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestMemory};

use crate::model::DeviceModel;
use crate::queue_drain::drain_queue;
use crate::worker::{each_queue, QueueHandler, QueueRef};

/// virtio device ID of the entropy device.
pub const VIRTIO_ID_RNG: u32 = 4;
/// QEMU's virtio-mmio lets the driver use 1024 whatever the backend says, so offer that.
pub const QUEUE_MAX_SIZE: u16 = 1024;
/// Most bytes handed out per request, however large the guest's buffers claim to be.
pub const MAX_BYTES_PER_REQUEST: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum RngError {
    #[error("virtqueue: {0}")]
    Queue(#[from] virtio_queue::Error),
}

pub struct Rng {
    buf: Box<[u8]>,
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

impl Rng {
    pub fn new() -> Self {
        Rng {
            buf: vec![0u8; MAX_BYTES_PER_REQUEST].into_boxed_slice(),
        }
    }

    /// Fills every chain available on `q`; returns whether the driver must be notified.
    pub fn process<M: GuestMemory>(&mut self, mem: &M, q: &mut Queue) -> Result<bool, RngError> {
        Ok(drain_queue(mem, q, |chain| {
            let head = chain.head_index();
            let mut written = 0usize;
            for d in chain {
                if written == MAX_BYTES_PER_REQUEST {
                    break;
                }
                if !d.is_write_only() {
                    // Nothing to read from the driver; a read-only buffer is skipped.
                    log::debug!("virtio-rng: chain {head}: read-only descriptor skipped");
                    continue;
                }
                let n = (d.len() as usize).min(MAX_BYTES_PER_REQUEST - written);
                if !mem.check_range(d.addr(), n) {
                    log::debug!("virtio-rng: chain {head}: buffer outside guest memory");
                    break;
                }
                if let Err(e) = fill_random(&mut self.buf[..n]) {
                    log::error!("virtio-rng: getrandom: {e}");
                    break;
                }
                if mem.write_slice(&self.buf[..n], d.addr()).is_err() {
                    break;
                }
                written += n;
            }
            written as u32
        })?)
    }
}

fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into the live slice.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

impl QueueHandler for Rng {
    fn process<M: GuestMemory>(&mut self, mem: &M, queues: &mut [QueueRef<'_>]) -> Vec<usize> {
        each_queue("virtio-rng", queues, |q| Rng::process(self, mem, q))
    }
}

impl DeviceModel for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_MAX_SIZE]
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
    }

    fn config_space(&self) -> Vec<u8> {
        Vec::new()
    }

    fn reset(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{test_memory, Buf, BufAlloc, TestQueue, F_NEXT, F_WRITE};
    use virtio_queue::QueueT;
    use vm_memory::GuestAddress;

    const MEM: usize = 1 << 20;

    fn setup() -> (vm_memory::GuestMemoryMmap, TestQueue, BufAlloc) {
        let mem = test_memory(MEM);
        let tq = TestQueue::new(&mem, GuestAddress(0x1000), 16);
        let alloc = BufAlloc::new(GuestAddress(0x10000), GuestAddress(MEM as u64));
        (mem, tq, alloc)
    }

    #[test]
    fn fills_writable_buffers_with_random_bytes() {
        let (mem, mut tq, mut alloc) = setup();
        let a = alloc.alloc(64);
        let b = alloc.alloc(64);
        tq.add_chain(&[Buf::writable(a, 64), Buf::writable(b, 64)])
            .unwrap();
        let mut q = tq.queue(false);
        let mut rng = Rng::new();
        assert!(rng.process(&mem, &mut q).unwrap());
        assert_eq!(tq.take_used(), vec![(0, 128)]);
        let mut got = [0u8; 128];
        mem.read_slice(&mut got[..64], a).unwrap();
        mem.read_slice(&mut got[64..], b).unwrap();
        // 128 zero bytes from a CSPRNG would be a 2^-1024 event.
        assert!(got.iter().any(|&x| x != 0));
        assert_ne!(got[..64], got[64..]);
    }

    #[test]
    fn huge_lengths_are_capped() {
        let (mem, mut tq, _) = setup();
        // Claims 4 GiB at the start of a 1 MiB memory: only the cap is written, and
        // only because it lies inside memory.
        tq.write_desc(0, 0x20000, u32::MAX, F_WRITE, 0);
        tq.publish(0);
        let mut q = tq.queue(false);
        Rng::new().process(&mem, &mut q).unwrap();
        assert_eq!(tq.take_used(), vec![(0, MAX_BYTES_PER_REQUEST as u32)]);
    }

    #[test]
    fn hostile_chains_complete_without_touching_outside_memory() {
        let (mem, mut tq, mut alloc) = setup();
        let mut rng = Rng::new();
        let mut q = tq.queue(false);
        // Outside guest memory.
        tq.write_desc(0, MEM as u64 - 8, 64, F_WRITE, 0);
        tq.publish(0);
        // Read-only buffer: nothing is written into it.
        let ro = alloc.alloc(32);
        mem.write_slice(&[0u8; 32], ro).unwrap();
        tq.write_desc(1, ro.0, 32, 0, 0);
        tq.publish(1);
        // A descriptor loop 2 -> 3 -> 2.
        let l = alloc.alloc(16);
        tq.write_desc(2, l.0, 16, F_WRITE | F_NEXT, 3);
        tq.write_desc(3, l.0, 16, F_WRITE | F_NEXT, 2);
        tq.publish(2);
        // Next index out of the table.
        tq.write_desc(4, l.0, 16, F_WRITE | F_NEXT, 999);
        tq.publish(4);
        rng.process(&mem, &mut q).unwrap();
        let used = tq.take_used();
        assert_eq!(used.len(), 4, "every chain completes: {used:?}");
        assert_eq!(used[0], (0, 0));
        assert_eq!(used[1], (1, 0));
        let mut ro_now = [0u8; 32];
        mem.read_slice(&mut ro_now, ro).unwrap();
        assert_eq!(ro_now, [0u8; 32]);
        // The loop is cut after at most queue-size descriptors.
        assert!(used[2].1 <= 16 * 16);
    }

    #[test]
    fn bogus_avail_index_does_not_hang() {
        let (mem, tq, _) = setup();
        let mut q = tq.queue(false);
        // The driver claims 40000 buffers in a 16-entry ring.
        tq.set_avail_idx(40000);
        let r = Rng::new().process(&mem, &mut q);
        assert!(r.is_err() || tq.used_idx() <= 16);
    }

    #[test]
    fn queue_reset_mid_request_then_reuse() {
        let (mem, mut tq, mut alloc) = setup();
        let mut rng = Rng::new();
        let a = alloc.alloc(16);
        tq.add_chain(&[Buf::writable(a, 16)]).unwrap();
        let mut q = tq.queue(false);
        // The driver resets the queue before the device ran: the device sees a queue that
        // is not ready and leaves it alone.
        q.reset();
        assert!(!rng.process(&mem, &mut q).unwrap());
        tq.reset();
        tq.configure(&mut q);
        tq.add_chain(&[Buf::writable(a, 16)]).unwrap();
        assert!(rng.process(&mem, &mut q).unwrap());
        assert_eq!(tq.take_used(), vec![(0, 16)]);
    }
}
