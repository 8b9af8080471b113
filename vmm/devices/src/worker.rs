//! The one event loop every device runs on for an in-process transport (hull-vmm's
//! virtio-mmio): a thread waits on the queues' notification eventfds and on the device's
//! host fds (sockets, a tap), lets the device do all ready work, and asks the transport
//! to interrupt the driver for the queues the device used. The transport keeps its own
//! types: it passes plain `Queue`s and `EventFd`s and a closure that raises the interrupt.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::thread::JoinHandle;

use virtio_queue::Queue;
use vm_memory::GuestMemory;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// A device the worker can drive.
pub trait QueueHandler: Send + 'static {
    /// Host-side fds that also wake the worker, with the events to wait for. Level
    /// triggered: the device must consume what made them ready, or stop asking for it.
    fn host_fds(&self) -> Vec<(RawFd, EventSet)> {
        Vec::new()
    }

    /// Host-side work while the transport has no guest memory to lend yet (a
    /// vhost-user front-end that has not sent its memory table).
    fn process_host_only(&mut self) {}

    /// Does all ready work on `queues` (the ones the driver set up); returns the
    /// driver's indices of the queues whose used rings need an interrupt. Never blocks.
    fn process<M: GuestMemory>(&mut self, mem: &M, queues: &mut [QueueRef<'_>]) -> Vec<usize>;
}

/// A queue as a transport lends it to the device for one pass.
pub struct QueueRef<'a> {
    /// The driver's index of this queue.
    pub index: usize,
    pub queue: &'a mut Queue,
}

/// One queue the driver set up, configured fully by the transport (including
/// `set_event_idx` when the driver acked VIRTIO_RING_F_EVENT_IDX).
pub struct WorkerQueue {
    /// The driver's index of this queue.
    pub index: usize,
    pub queue: Queue,
    /// Signalled when the driver notifies this queue (an ioeventfd).
    pub kick: EventFd,
}

/// [`QueueHandler::process`] for a device whose queues are all served alike: runs
/// `process` on each queue, returns the indices it says need an interrupt, and logs
/// failures as `{label}: queue {index}: {error}` (the next kick retries).
pub fn each_queue<E, F>(label: &str, queues: &mut [QueueRef<'_>], mut process: F) -> Vec<usize>
where
    E: std::fmt::Display,
    F: FnMut(&mut Queue) -> Result<bool, E>,
{
    let mut used = Vec::new();
    for q in queues.iter_mut() {
        match process(q.queue) {
            Ok(true) => used.push(q.index),
            Ok(false) => {}
            Err(e) => log::error!("{label}: queue {}: {e}", q.index),
        }
    }
    used
}

/// The queues with driver indices `rx` and `tx`, borrowed apart (net and vsock get
/// both in one call).
pub fn rx_tx_queues<'a>(
    queues: &'a mut [QueueRef<'_>],
    rx: usize,
    tx: usize,
) -> (Option<&'a mut Queue>, Option<&'a mut Queue>) {
    let (mut rx_q, mut tx_q) = (None, None);
    for q in queues.iter_mut() {
        if q.index == rx {
            rx_q = Some(&mut *q.queue);
        } else if q.index == tx {
            tx_q = Some(&mut *q.queue);
        }
    }
    (rx_q, tx_q)
}

/// The queue indices whose flag is set, as [`QueueHandler::process`] returns them.
pub fn flagged<const N: usize>(flags: [(bool, usize); N]) -> Vec<usize> {
    flags
        .into_iter()
        .filter_map(|(used, index)| used.then_some(index))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot set up the worker's epoll: {0}")]
    Epoll(io::Error),
    #[error("cannot start the worker thread: {0}")]
    Spawn(io::Error),
    #[error("the worker thread panicked")]
    Panicked,
}

/// Runs on a device thread before it serves anything (e.g. installs a seccomp filter);
/// an error stops the thread before it touches the guest.
pub type ThreadInit = Box<dyn FnOnce() -> Result<(), String> + Send>;

const TOKEN_STOP: u64 = u64::MAX;
const TOKEN_HOST: u64 = u64::MAX - 1;

/// Serves `queues` on the calling thread until `stop` is signalled (its counter is
/// drained, so the same eventfd can stop a later session), then gives the device back.
/// `interrupt(queue_index)` must raise the used-buffer interrupt; `label` names the
/// device in log lines.
pub fn serve<H, M, F>(
    label: &str,
    mut dev: H,
    mem: &M,
    mut queues: Vec<WorkerQueue>,
    stop: &EventFd,
    mut interrupt: F,
) -> Result<H, (H, WorkerError)>
where
    H: QueueHandler,
    M: GuestMemory,
    F: FnMut(usize) -> io::Result<()>,
{
    let epoll = match Epoll::new() {
        Ok(e) => e,
        Err(e) => return Err((dev, WorkerError::Epoll(e))),
    };
    let mut fds: Vec<(RawFd, EventSet, u64)> = queues
        .iter()
        .enumerate()
        .map(|(i, q)| (q.kick.as_raw_fd(), EventSet::IN, i as u64))
        .collect();
    fds.push((stop.as_raw_fd(), EventSet::IN, TOKEN_STOP));
    fds.extend(
        dev.host_fds()
            .into_iter()
            .map(|(fd, ev)| (fd, ev, TOKEN_HOST)),
    );
    for (fd, ev, token) in fds {
        if let Err(e) = epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(ev, token)) {
            return Err((dev, WorkerError::Epoll(e)));
        }
    }
    let mut events = vec![EpollEvent::default(); queues.len() + 8];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("{label}: epoll_wait: {e}");
                return Ok(dev);
            }
        };
        for ev in &events[..n] {
            match ev.data() {
                TOKEN_STOP => {
                    let _ = stop.read();
                    return Ok(dev);
                }
                TOKEN_HOST => {}
                // Drain the counter; the work itself is found in the queue.
                i => {
                    if let Some(q) = queues.get(i as usize) {
                        let _ = q.kick.read();
                    }
                }
            }
        }
        let mut refs: Vec<QueueRef<'_>> = queues
            .iter_mut()
            .map(|q| QueueRef {
                index: q.index,
                queue: &mut q.queue,
            })
            .collect();
        for index in dev.process(mem, &mut refs) {
            if let Err(e) = interrupt(index) {
                log::error!("{label}: interrupt for queue {index}: {e}");
            }
        }
    }
}

/// A device served by [`serve`] on a thread of its own, for one driver session;
/// [`Worker::stop`] gives it back (for a reset, or to reactivate).
pub struct Worker<H: QueueHandler> {
    stop: EventFd,
    thread: JoinHandle<H>,
}

impl<H: QueueHandler> Worker<H> {
    /// Starts serving on a thread named `name`; `init` runs there first.
    pub fn spawn<M, F>(
        name: &str,
        dev: H,
        mem: M,
        queues: Vec<WorkerQueue>,
        init: Option<ThreadInit>,
        interrupt: F,
    ) -> Result<Self, WorkerError>
    where
        M: GuestMemory + Send + 'static,
        F: FnMut(usize) -> io::Result<()> + Send + 'static,
    {
        let stop = EventFd::new(EFD_NONBLOCK).map_err(WorkerError::Epoll)?;
        let thread_stop = stop.try_clone().map_err(WorkerError::Epoll)?;
        let label = name.to_string();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                if let Some(init) = init {
                    if let Err(e) = init() {
                        log::error!("{label}: {e}");
                        return dev;
                    }
                }
                match serve(&label, dev, &mem, queues, &thread_stop, interrupt) {
                    Ok(dev) => dev,
                    Err((dev, e)) => {
                        log::error!("{label}: {e}");
                        dev
                    }
                }
            })
            .map_err(WorkerError::Spawn)?;
        Ok(Worker { stop, thread })
    }

    /// Stops the thread and returns the device.
    pub fn stop(self) -> Result<H, WorkerError> {
        let _ = self.stop.write(1);
        self.thread.join().map_err(|_| WorkerError::Panicked)
    }
}
