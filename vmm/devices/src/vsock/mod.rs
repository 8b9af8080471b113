//! virtio-vsock, independent of the transport that carries its queues.
//!
//! The device owns no queues: a transport (hull-vmm's virtio-mmio, or the vhost-user
//! backend in [`crate::vhost_user`]) hands it the RX and TX queues plus guest memory
//! whenever a queue is kicked or the fd from [`Vsock::as_raw_fd`] is readable, and signals
//! the driver as [`Notify`] says. The event queue is never used: this device has no
//! transport-reset events to send.
//!
//! Layout: [`packet`] parses and writes packets in descriptor chains, [`connection`] is the
//! per-stream state machine with credit flow control, [`muxer`] maps streams to host Unix
//! sockets, [`worker`] runs the device on a thread for an in-process transport.

pub mod connection;
pub mod muxer;
pub mod packet;
#[cfg(test)]
mod tests;
pub mod worker;

use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemory;

use self::muxer::{Muxer, MuxerError};
use self::packet::{Header, RxBuffer, MAX_PKT_DATA};
use crate::model::read_config_bytes;

/// virtio device ID of the socket device.
pub const VIRTIO_ID_VSOCK: u32 = 19;
pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
pub const EVT_QUEUE: usize = 2;
/// Queues the driver sets up (RX, TX, event).
pub const NUM_QUEUES: usize = 3;
/// Largest queue size offered (QEMU sizes vhost-user vsock queues at 1024).
pub const QUEUE_MAX_SIZE: u16 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("guest CID {0} is reserved or out of range")]
    InvalidCid(u64),
    #[error(transparent)]
    Muxer(#[from] MuxerError),
    #[error("virtqueue: {0}")]
    Queue(#[from] virtio_queue::Error),
}

/// Which queues have new used buffers that the driver must be told about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Notify {
    pub rx: bool,
    pub tx: bool,
}

pub struct Vsock {
    guest_cid: u64,
    muxer: Muxer,
    /// Bounce buffer for one packet payload.
    buf: Box<[u8]>,
}

impl Vsock {
    /// A device for guest `guest_cid`, exposed on the host at `uds_path`.
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Self, VsockError> {
        // 0-2 are reserved; CIDs are 32-bit in practice (the upper half is reserved).
        if !(3..u64::from(u32::MAX)).contains(&guest_cid) {
            return Err(VsockError::InvalidCid(guest_cid));
        }
        Ok(Vsock {
            guest_cid,
            muxer: Muxer::new(guest_cid, uds_path)?,
            buf: vec![0u8; MAX_PKT_DATA].into_boxed_slice(),
        })
    }

    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    pub fn uds_path(&self) -> &Path {
        self.muxer.uds_path()
    }

    /// Changes how long the guest has to answer a host-initiated connect (default
    /// [`muxer::CONNECT_TIMEOUT`]); the host client's socket is closed after that.
    pub fn set_connect_timeout(&mut self, timeout: std::time::Duration) {
        self.muxer.set_connect_timeout(timeout);
    }

    /// Live streams, for tests and statistics.
    pub fn connection_count(&self) -> usize {
        self.muxer.connection_count()
    }

    /// Feature bits the device offers.
    pub fn features() -> u64 {
        (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX)
    }

    /// Reads the config space (`struct virtio_vsock_config { le64 guest_cid; }`); bytes
    /// beyond it read as zero.
    pub fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.guest_cid.to_le_bytes(), offset, data);
    }

    /// Handles host socket events while the queues cannot be used yet (no guest memory).
    pub fn process_host_events(&mut self) {
        self.muxer.process_events();
    }

    /// Drops all streams (the driver reset the device).
    pub fn reset(&mut self) {
        self.muxer.reset();
    }

    /// Does all work that is ready: host socket events, packets the guest queued on TX,
    /// packets for the guest into RX buffers. Never blocks. Queues that are not ready or
    /// whose rings lie outside guest memory are left alone.
    pub fn process<M: GuestMemory>(
        &mut self,
        mem: &M,
        rx: &mut Queue,
        tx: &mut Queue,
    ) -> Result<Notify, VsockError> {
        self.muxer.process_events();
        let rx_ok = rx.ready() && rx.is_valid(mem);
        let tx_ok = tx.ready() && tx.is_valid(mem);
        let mut notify = Notify::default();
        loop {
            let mut progress = false;
            if tx_ok && self.process_tx(mem, tx)? > 0 {
                progress = true;
                notify.tx = true;
            }
            // Replies to TX (RESPONSE, RST, credit) usually go out right away.
            if rx_ok && self.process_rx(mem, rx)? > 0 {
                progress = true;
                notify.rx = true;
            }
            if !progress {
                break;
            }
        }
        notify.rx = notify.rx && rx.needs_notification(mem)?;
        notify.tx = notify.tx && tx.needs_notification(mem)?;
        Ok(notify)
    }

    fn process_tx<M: GuestMemory>(&mut self, mem: &M, q: &mut Queue) -> Result<usize, VsockError> {
        let mut count = 0;
        loop {
            q.disable_notification(mem)?;
            let mut popped = false;
            let mut stalled = false;
            while let Some(chain) = q.pop_descriptor_chain(mem) {
                popped = true;
                if self.muxer.tx_backpressure() {
                    // Resumed once the guest has taken the replies we owe it.
                    q.go_to_previous_position();
                    stalled = true;
                    break;
                }
                let head = chain.head_index();
                match packet::read_tx_chain(mem, chain, &mut self.buf) {
                    Ok(pkt) => self.muxer.send_to_host(&pkt.hdr, &self.buf[..pkt.data_len]),
                    Err((hdr, e)) => {
                        log::debug!("vsock: bad TX chain {head}: {e}");
                        if let Some(hdr) = hdr {
                            self.muxer.reset_peer(&hdr);
                        }
                    }
                }
                q.add_used(mem, head, 0)?;
                count += 1;
            }
            // Notifications go back on whatever happens, or the driver stops kicking.
            // "More available" with nothing poppable means a bogus avail index: stop.
            if !q.enable_notification(mem)? || !popped || stalled {
                return Ok(count);
            }
        }
    }

    fn process_rx<M: GuestMemory>(&mut self, mem: &M, q: &mut Queue) -> Result<usize, VsockError> {
        let mut count = 0;
        loop {
            q.disable_notification(mem)?;
            let mut popped = false;
            let mut stalled = false;
            while self.muxer.has_pending_rx() {
                let Some(chain) = q.pop_descriptor_chain(mem) else {
                    break;
                };
                popped = true;
                let head = chain.head_index();
                let used = match RxBuffer::new(mem, chain) {
                    Ok(rxb) => {
                        let cap = rxb.data_capacity();
                        let mut hdr = Header::default();
                        let Some(len) = self.muxer.recv_from_host(&mut hdr, &mut self.buf[..cap])
                        else {
                            // Nothing was ready after all: give the buffer back.
                            q.go_to_previous_position();
                            stalled = true;
                            break;
                        };
                        rxb.write(&hdr, &self.buf[..len]).unwrap_or(0)
                    }
                    Err(e) => {
                        log::debug!("vsock: bad RX chain {head}: {e}");
                        0
                    }
                };
                q.add_used(mem, head, used)?;
                count += 1;
            }
            // Notifications go back on whatever happens, or the driver stops kicking.
            let more = q.enable_notification(mem)?;
            if stalled || !self.muxer.has_pending_rx() || !more || !popped {
                return Ok(count);
            }
        }
    }
}

impl AsRawFd for Vsock {
    /// Readable when host sockets need attention: call [`Vsock::process`] then.
    fn as_raw_fd(&self) -> RawFd {
        self.muxer.as_raw_fd()
    }
}
