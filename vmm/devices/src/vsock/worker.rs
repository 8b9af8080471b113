//! Runs the device on its own thread for an in-process transport (hull-vmm's
//! virtio-mmio): waits on the queue notification eventfds and the host sockets, processes,
//! and asks the transport to interrupt the driver. The transport keeps its own types: it
//! passes plain `Queue`s and `EventFd`s and a closure that raises the interrupt.

use std::io;
use std::os::fd::AsRawFd;
use std::thread::JoinHandle;

use virtio_queue::Queue;
use vm_memory::GuestMemory;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{Vsock, RX_QUEUE, TX_QUEUE};

const TOKEN_RX: u64 = 0;
const TOKEN_TX: u64 = 1;
const TOKEN_DEVICE: u64 = 2;
const TOKEN_STOP: u64 = 3;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot set up the worker's epoll: {0}")]
    Epoll(io::Error),
    #[error("cannot start the worker thread: {0}")]
    Spawn(io::Error),
    #[error("the worker thread panicked")]
    Panicked,
}

/// The queues and notifications the driver set up. The transport configures the queues
/// fully, including `set_event_idx` when the driver acked VIRTIO_RING_F_EVENT_IDX (which
/// [`Vsock::features`] offers).
pub struct Queues {
    pub rx: Queue,
    pub tx: Queue,
    /// Signalled by the transport when the driver notifies RX (an ioeventfd).
    pub rx_kick: EventFd,
    pub tx_kick: EventFd,
}

/// A running device; [`Worker::stop`] gives it back (for a reset, or to reactivate).
pub struct Worker {
    stop: EventFd,
    thread: JoinHandle<Vsock>,
}

impl Worker {
    /// Starts serving. `interrupt(queue_index)` must raise the used-buffer interrupt.
    pub fn spawn<M, F>(
        dev: Vsock,
        mem: M,
        queues: Queues,
        mut interrupt: F,
    ) -> Result<Worker, WorkerError>
    where
        M: GuestMemory + Send + 'static,
        F: FnMut(usize) -> io::Result<()> + Send + 'static,
    {
        let epoll = Epoll::new().map_err(WorkerError::Epoll)?;
        let stop = EventFd::new(EFD_NONBLOCK).map_err(WorkerError::Epoll)?;
        for (fd, token) in [
            (queues.rx_kick.as_raw_fd(), TOKEN_RX),
            (queues.tx_kick.as_raw_fd(), TOKEN_TX),
            (dev.as_raw_fd(), TOKEN_DEVICE),
            (stop.as_raw_fd(), TOKEN_STOP),
        ] {
            epoll
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, token),
                )
                .map_err(WorkerError::Epoll)?;
        }
        let thread = std::thread::Builder::new()
            .name("hull-vsock".into())
            .spawn(move || {
                let Queues {
                    mut rx,
                    mut tx,
                    rx_kick,
                    tx_kick,
                } = queues;
                let mut dev = dev;
                let mut events = [EpollEvent::default(); 8];
                loop {
                    let n = match epoll.wait(-1, &mut events) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            log::error!("vsock worker: epoll_wait: {e}");
                            return dev;
                        }
                    };
                    for ev in &events[..n] {
                        // Drain the counters; the work itself is found in the queues.
                        let _ = match ev.data() {
                            TOKEN_RX => rx_kick.read(),
                            TOKEN_TX => tx_kick.read(),
                            TOKEN_STOP => return dev,
                            _ => Ok(0),
                        };
                    }
                    match dev.process(&mem, &mut rx, &mut tx) {
                        Ok(notify) => {
                            for (used, q) in [(notify.rx, RX_QUEUE), (notify.tx, TX_QUEUE)] {
                                if used {
                                    if let Err(e) = interrupt(q) {
                                        log::error!("vsock worker: interrupt: {e}");
                                    }
                                }
                            }
                        }
                        Err(e) => log::error!("vsock worker: {e}"),
                    }
                }
            })
            .map_err(WorkerError::Spawn)?;
        Ok(Worker { stop, thread })
    }

    /// Stops the thread and returns the device (streams intact; call
    /// [`Vsock::reset`] when the driver reset the device).
    pub fn stop(self) -> Result<Vsock, WorkerError> {
        let _ = self.stop.write(1);
        self.thread.join().map_err(|_| WorkerError::Panicked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{test_memory, Buf, BufAlloc, TestQueue};
    use crate::vsock::packet::{op, Header, HDR_SIZE, HOST_CID, TYPE_STREAM};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::sync::mpsc;
    use std::time::Duration;
    use vm_memory::{Bytes, GuestAddress};

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
        let worker = Worker::spawn(
            dev,
            mem.clone(),
            Queues {
                rx: rxq.queue(false),
                tx: txq.queue(false),
                rx_kick,
                tx_kick,
            },
            move |q| irq_tx.send(q).map_err(io::Error::other),
        )
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
