//! How the generic [`crate::worker::Worker`] drives virtio-vsock in-process (hull-vmm's
//! virtio-mmio): every wake processes both RX and TX, and the muxer's epoll fd wakes it
//! when host sockets need attention.

use std::os::fd::{AsRawFd, RawFd};

use vm_memory::GuestMemory;
use vmm_sys_util::epoll::EventSet;

use super::{Vsock, NUM_QUEUES, QUEUE_MAX_SIZE, RX_QUEUE, TX_QUEUE, VIRTIO_ID_VSOCK};
use crate::model::DeviceModel;
use crate::worker::{flagged, rx_tx_queues, QueueHandler, QueueRef};

impl QueueHandler for Vsock {
    fn host_fds(&self) -> Vec<(RawFd, EventSet)> {
        vec![(self.as_raw_fd(), EventSet::IN)]
    }

    fn process_host_only(&mut self) {
        self.process_host_events();
    }

    fn process<M: GuestMemory>(&mut self, mem: &M, queues: &mut [QueueRef<'_>]) -> Vec<usize> {
        let (Some(rx), Some(tx)) = rx_tx_queues(queues, RX_QUEUE, TX_QUEUE) else {
            // Without both queues only host sockets can be served.
            self.process_host_events();
            return Vec::new();
        };
        match Vsock::process(self, mem, rx, tx) {
            Ok(n) => flagged([(n.rx, RX_QUEUE), (n.tx, TX_QUEUE)]),
            Err(e) => {
                log::error!("vsock: {e}");
                Vec::new()
            }
        }
    }
}

impl DeviceModel for Vsock {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_MAX_SIZE; NUM_QUEUES]
    }

    fn features(&self) -> u64 {
        Vsock::features()
    }

    fn config_space(&self) -> Vec<u8> {
        self.guest_cid().to_le_bytes().to_vec()
    }

    fn reset(&mut self) {
        Vsock::reset(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{test_memory, Buf, BufAlloc, TestQueue};
    use crate::vsock::packet::{op, Header, HDR_SIZE, HOST_CID, TYPE_STREAM};
    use crate::worker::{Worker, WorkerQueue};
    use std::io;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::sync::mpsc;
    use std::time::Duration;
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    #[test]
    fn worker_serves_kicks_and_host_events() {
        let mem = test_memory(4 << 20);
        let mut rxq = TestQueue::new(&mem, GuestAddress(0x1000), 64);
        let mut txq = TestQueue::new(&mem, GuestAddress(0x4000), 64);
        let mut alloc = BufAlloc::new(GuestAddress(0x10000), GuestAddress(4 << 20));
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v");
        let l = UnixListener::bind(format!("{}_5000", uds.display())).unwrap();
        let dev = Vsock::new(3, &uds).unwrap();
        let rx_kick = EventFd::new(EFD_NONBLOCK).unwrap();
        let tx_kick = EventFd::new(EFD_NONBLOCK).unwrap();
        let (rx_k, tx_k) = (rx_kick.try_clone().unwrap(), tx_kick.try_clone().unwrap());
        let (irq_tx, irq) = mpsc::channel();
        let queues = vec![
            WorkerQueue {
                index: RX_QUEUE,
                queue: rxq.queue(false),
                kick: rx_kick,
            },
            WorkerQueue {
                index: TX_QUEUE,
                queue: txq.queue(false),
                kick: tx_kick,
            },
        ];
        let worker = Worker::spawn("hull-vsock", dev, mem.clone(), queues, None, move |q| {
            irq_tx.send(q).map_err(io::Error::other)
        })
        .unwrap();

        let rx_buf = alloc.alloc(4096);
        rxq.add_chain(&[Buf::writable(rx_buf, 4096)]).unwrap();
        rx_k.write(1).unwrap();
        let hdr = Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 99,
            dst_port: 5000,
            type_: TYPE_STREAM,
            op: op::REQUEST,
            buf_alloc: 65536,
            ..Header::default()
        };
        let h = alloc.alloc(HDR_SIZE as u32);
        mem.write_slice(&hdr.to_bytes(), h).unwrap();
        txq.add_chain(&[Buf::readable(h, HDR_SIZE as u32)]).unwrap();
        tx_k.write(1).unwrap();

        let (mut host, _) = l.accept().unwrap();
        let wait_irq = |q: usize| loop {
            if irq.recv_timeout(Duration::from_secs(5)).unwrap() == q {
                break;
            }
        };
        wait_irq(RX_QUEUE);
        let used = rxq.take_used();
        assert_eq!(used.len(), 1);
        let mut raw = [0u8; HDR_SIZE];
        mem.read_slice(&mut raw, rx_buf).unwrap();
        assert_eq!(Header::from_bytes(&raw).op, op::RESPONSE);

        // Host data wakes the worker through the device fd, without any kick.
        rxq.add_chain(&[Buf::writable(rx_buf, 4096)]).unwrap();
        host.write_all(b"hi").unwrap();
        wait_irq(RX_QUEUE);
        mem.read_slice(&mut raw, rx_buf).unwrap();
        let got = Header::from_bytes(&raw);
        assert_eq!((got.op, got.len), (op::RW, 2));

        let dev = worker.stop().unwrap();
        assert_eq!(dev.connection_count(), 1);
        drop(dev);
        let mut b = [0u8; 1];
        assert_eq!(host.read(&mut b).unwrap(), 0);
    }
}
