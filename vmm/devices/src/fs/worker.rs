//! How the generic [`crate::worker::Worker`] drives virtio-fs in-process (hull-vmm's
//! virtio-mmio): every wake answers what each queue holds, the high-priority queue
//! and the request queues alike.

use vm_memory::GuestMemory;

use super::{Fs, NUM_QUEUES, QUEUE_MAX_SIZE, VIRTIO_ID_FS};
use crate::model::DeviceModel;
use crate::worker::{each_queue, QueueHandler, QueueRef};

impl QueueHandler for Fs {
    fn process<M: GuestMemory>(&mut self, mem: &M, queues: &mut [QueueRef<'_>]) -> Vec<usize> {
        each_queue("virtio-fs", queues, |q| Fs::process(self, mem, q))
    }
}

impl DeviceModel for Fs {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_FS
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_MAX_SIZE; NUM_QUEUES]
    }

    fn features(&self) -> u64 {
        Fs::features()
    }

    fn config_space(&self) -> Vec<u8> {
        let mut cfg = vec![0u8; super::CONFIG_LEN];
        self.read_config(0, &mut cfg);
        cfg
    }

    fn reset(&mut self) {
        if let Err(e) = Fs::reset(self) {
            log::error!("virtio-fs: reset: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;
    use std::sync::mpsc;
    use std::time::Duration;

    use fuse_backend_rs::abi::fuse_abi::{EntryOut, InHeader, OutHeader};
    use vm_memory::{Address, ByteValued, Bytes, GuestAddress};

    use super::*;
    use crate::fs::FsConfig;
    use crate::test_utils::{test_memory, Buf, BufAlloc, TestQueue};
    use crate::worker::{Worker, WorkerQueue};
    use std::io;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    #[test]
    fn worker_answers_kicked_queues() {
        let mem = test_memory(4 << 20);
        let mut hiprio = TestQueue::new(&mem, GuestAddress(0x1000), 16);
        let mut req = TestQueue::new(&mem, GuestAddress(0x4000), 16);
        let mut alloc = BufAlloc::new(GuestAddress(0x10000), GuestAddress(4 << 20));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"abc").unwrap();
        let dev = Fs::new(FsConfig::new(dir.path(), "t")).unwrap();
        let kicks: Vec<EventFd> = (0..2)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        let queues = vec![
            WorkerQueue {
                index: 0,
                queue: hiprio.queue(false),
                kick: kicks[0].try_clone().unwrap(),
            },
            WorkerQueue {
                index: 1,
                queue: req.queue(true),
                kick: kicks[1].try_clone().unwrap(),
            },
        ];
        let (irq_tx, irq) = mpsc::channel();
        let worker = Worker::spawn("hull-virtio-fs", dev, mem.clone(), queues, None, move |q| {
            irq_tx.send(q).map_err(io::Error::other)
        })
        .unwrap();

        let name = b"f\0";
        let hdr = InHeader {
            len: (size_of::<InHeader>() + name.len()) as u32,
            opcode: 1, // LOOKUP
            unique: 7,
            nodeid: 1,
            ..Default::default()
        };
        let ra = alloc.alloc(64);
        mem.write_slice(hdr.as_slice(), ra).unwrap();
        mem.write_slice(name, ra.unchecked_add(size_of::<InHeader>() as u64))
            .unwrap();
        let wa = alloc.alloc(256);
        req.add_chain(&[Buf::readable(ra, hdr.len), Buf::writable(wa, 256)])
            .unwrap();
        kicks[1].write(1).unwrap();
        assert_eq!(irq.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
        let used = req.take_used();
        assert_eq!(used.len(), 1);
        let out: OutHeader = mem.read_obj(wa).unwrap();
        assert_eq!((out.unique, out.error), (7, 0));
        let entry: EntryOut = mem
            .read_obj(wa.unchecked_add(size_of::<OutHeader>() as u64))
            .unwrap();
        assert_eq!(entry.attr.size, 3);

        // FORGET on the high-priority queue: answered with nothing, and signalled.
        let forget = InHeader {
            len: (size_of::<InHeader>() + 8) as u32,
            opcode: 2,
            unique: 8,
            nodeid: entry.nodeid,
            ..Default::default()
        };
        mem.write_slice(forget.as_slice(), ra).unwrap();
        mem.write_obj(1u64, ra.unchecked_add(size_of::<InHeader>() as u64))
            .unwrap();
        hiprio.add_chain(&[Buf::readable(ra, forget.len)]).unwrap();
        kicks[0].write(1).unwrap();
        assert_eq!(irq.recv_timeout(Duration::from_secs(5)).unwrap(), 0);
        assert_eq!(hiprio.take_used(), vec![(0, 0)]);

        let dev = worker.stop().unwrap();
        assert_eq!(dev.tag(), "t");
    }
}
