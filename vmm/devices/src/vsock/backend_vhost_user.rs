//! The vsock device served over vhost-user (QEMU's `vhost-user-vsock-device`).
//!
//! QEMU keeps the event queue to itself and hands the backend only RX and TX, so this
//! backend has two queues. Guest memory arrives as the memfd regions of SET_MEM_TABLE.

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Arc, RwLock};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use super::{Vsock, VsockError, QUEUE_MAX_SIZE, RX_QUEUE, TX_QUEUE};

/// Queues QEMU gives a vhost-user vsock backend: RX and TX.
const NUM_VHOST_QUEUES: usize = 2;
/// Epoll token of the muxer's fd (0..=NUM_VHOST_QUEUES are taken by the queues and exit).
const MUXER_EVENT: u16 = NUM_VHOST_QUEUES as u16 + 1;

type Mem = GuestMemoryAtomic<GuestMemoryMmap>;

#[derive(Debug, thiserror::Error)]
pub enum VhostUserError {
    #[error(transparent)]
    Device(#[from] VsockError),
    #[error("vhost-user daemon: {0}")]
    Daemon(String),
    #[error("cannot watch the host sockets: {0}")]
    Register(io::Error),
}

pub struct VhostUserVsock {
    dev: Vsock,
    mem: Option<Mem>,
}

impl VhostUserVsock {
    pub fn new(dev: Vsock) -> Self {
        VhostUserVsock { dev, mem: None }
    }
}

impl VhostUserBackendMut for VhostUserVsock {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_VHOST_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_MAX_SIZE as usize
    }

    fn features(&self) -> u64 {
        Vsock::features() | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        // CONFIG: QEMU reads the guest CID from us. RESET_DEVICE: a reset drops the
        // streams of the guest that is gone.
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::RESET_DEVICE
    }

    fn reset_device(&mut self) {
        self.dev.reset();
    }

    fn set_event_idx(&mut self, _enabled: bool) {
        // The queues track EVENT_IDX themselves.
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let mut buf = vec![0u8; size.min(256) as usize];
        self.dev.read_config(offset.into(), &mut buf);
        buf
    }

    fn update_memory(&mut self, mem: Mem) -> io::Result<()> {
        self.mem = Some(mem);
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::NONBLOCK).ok()
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        if device_event as usize > NUM_VHOST_QUEUES && device_event != MUXER_EVENT {
            return Err(io::Error::other(format!("unknown event {device_event}")));
        }
        let (Some(mem), Some(rx), Some(tx)) =
            (&self.mem, vrings.get(RX_QUEUE), vrings.get(TX_QUEUE))
        else {
            // No memory table yet: host events wait until the rings exist.
            self.dev.process_host_events();
            return Ok(());
        };
        let mem = mem.memory();
        let notify = {
            let mut rx_state = rx.get_mut();
            let mut tx_state = tx.get_mut();
            match self
                .dev
                .process(&*mem, rx_state.get_queue_mut(), tx_state.get_queue_mut())
            {
                Ok(n) => n,
                Err(e) => {
                    // An error here would end the worker thread for good; a broken ring
                    // only hurts its own guest, so log and keep serving.
                    log::warn!("vsock: {e}");
                    return Ok(());
                }
            }
        };
        if notify.rx {
            rx.signal_used_queue()?;
        }
        if notify.tx {
            tx.signal_used_queue()?;
        }
        Ok(())
    }
}

/// Serves `dev` on the vhost-user socket `socket` until the front-end disconnects.
pub fn serve(dev: Vsock, socket: &Path) -> Result<(), VhostUserError> {
    let muxer_fd = dev.as_raw_fd();
    let backend = Arc::new(RwLock::new(VhostUserVsock::new(dev)));
    let mut daemon = VhostUserDaemon::new(
        "hull-vhost-user-vsock".to_string(),
        backend,
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .map_err(|e| VhostUserError::Daemon(e.to_string()))?;
    let handlers = daemon.get_epoll_handlers();
    let handler = handlers
        .first()
        .ok_or_else(|| VhostUserError::Daemon("no worker thread".into()))?;
    handler
        .register_listener(muxer_fd, EventSet::IN, u64::from(MUXER_EVENT))
        .map_err(VhostUserError::Register)?;
    daemon
        .serve(socket)
        .map_err(|e| VhostUserError::Daemon(e.to_string()))
}
