//! Runs the device on its own thread for an in-process transport (hull-vmm's
//! virtio-mmio): waits on the queues' notification eventfds, answers what the kicked
//! queues hold, and asks the transport to interrupt the driver. The transport keeps its
//! own types: it passes plain `Queue`s and `EventFd`s and a closure that raises the
//! interrupt.

use std::io;
use std::os::fd::AsRawFd;
use std::thread::JoinHandle;

use virtio_queue::Queue;
use vm_memory::GuestMemory;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{Fs, NUM_QUEUES};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{0} queues given, the device has 1 to {NUM_QUEUES}")]
    QueueCount(usize),
    #[error("cannot set up the worker's epoll: {0}")]
    Epoll(io::Error),
    #[error("cannot start the worker thread: {0}")]
    Spawn(io::Error),
    #[error("the worker thread panicked")]
    Panicked,
}

/// One queue the driver set up, configured fully by the transport (including
/// `set_event_idx` when the driver acked VIRTIO_RING_F_EVENT_IDX), and its notification
/// eventfd (an ioeventfd).
pub struct QueueKick {
    pub queue: Queue,
    pub kick: EventFd,
}

/// A running device; [`Worker::stop`] gives it back (for a reset, or to reactivate).
pub struct Worker {
    stop: EventFd,
    thread: JoinHandle<Fs>,
}

impl Worker {
    /// Starts serving `queues` (index 0 is the high-priority queue). `interrupt(index)`
    /// must raise the used-buffer interrupt for that queue.
    pub fn spawn<M, F>(
        dev: Fs,
        mem: M,
        queues: Vec<QueueKick>,
        mut interrupt: F,
    ) -> Result<Worker, WorkerError>
    where
        M: GuestMemory + Send + 'static,
        F: FnMut(usize) -> io::Result<()> + Send + 'static,
    {
        if queues.is_empty() || queues.len() > NUM_QUEUES {
            return Err(WorkerError::QueueCount(queues.len()));
        }
        let epoll = Epoll::new().map_err(WorkerError::Epoll)?;
        let stop = EventFd::new(EFD_NONBLOCK).map_err(WorkerError::Epoll)?;
        let stop_token = queues.len() as u64;
        let fds = queues
            .iter()
            .map(|q| q.kick.as_raw_fd())
            .chain([stop.as_raw_fd()]);
        for (token, fd) in fds.enumerate() {
            epoll
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, token as u64),
                )
                .map_err(WorkerError::Epoll)?;
        }
        let thread = std::thread::Builder::new()
            .name("hull-virtio-fs".into())
            .spawn(move || {
                let mut queues = queues;
                let dev = dev;
                let mut events = [EpollEvent::default(); NUM_QUEUES + 1];
                loop {
                    let n = match epoll.wait(-1, &mut events) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            log::error!("virtio-fs worker: epoll_wait: {e}");
                            return dev;
                        }
                    };
                    for ev in &events[..n] {
                        let token = ev.data();
                        if token == stop_token {
                            return dev;
                        }
                        let Some(q) = queues.get_mut(token as usize) else {
                            continue;
                        };
                        // Drain the counter; the work itself is found in the queue.
                        let _ = q.kick.read();
                        match dev.process(&mem, &mut q.queue) {
                            Ok(true) => {
                                if let Err(e) = interrupt(token as usize) {
                                    log::error!("virtio-fs worker: interrupt: {e}");
                                }
                            }
                            Ok(false) => {}
                            Err(e) => log::error!("virtio-fs worker: queue {token}: {e}"),
                        }
                    }
                }
            })
            .map_err(WorkerError::Spawn)?;
        Ok(Worker { stop, thread })
    }

    /// Stops the thread and returns the device (its FUSE session intact; call
    /// [`Fs::reset`] when the driver reset the device).
    pub fn stop(self) -> Result<Fs, WorkerError> {
        let _ = self.stop.write(1);
        self.thread.join().map_err(|_| WorkerError::Panicked)
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
            QueueKick {
                queue: hiprio.queue(false),
                kick: kicks[0].try_clone().unwrap(),
            },
            QueueKick {
                queue: req.queue(true),
                kick: kicks[1].try_clone().unwrap(),
            },
        ];
        let (irq_tx, irq) = mpsc::channel();
        let worker = Worker::spawn(dev, mem.clone(), queues, move |q| {
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
        assert!(matches!(
            Worker::spawn(dev, mem, vec![], |_| Ok(())),
            Err(WorkerError::QueueCount(0))
        ));
    }
}
