//! virtio-net on a tap device ([`tap`]), independent of the transport that carries its
//! queues. Frames pass through unchanged with their 12-byte virtio-net header: the tap
//! was opened with IFF_VNET_HDR and no offloads, so neither side asks for checksum or
//! segmentation work.
//!
//! The backend is any nonblocking fd where one read or write is one frame: a tap in
//! production, a SOCK_SEQPACKET socket pair in the queue tests.

pub mod tap;
#[cfg(test)]
mod tests;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestMemory};
use vmm_sys_util::epoll::EventSet;

use self::tap::VNET_HDR_LEN;
use crate::model::DeviceModel;
use crate::queue_drain::drain_queue;
use crate::worker::{flagged, rx_tx_queues, QueueHandler, QueueRef};

/// virtio device ID of the network device.
pub const VIRTIO_ID_NET: u32 = 1;
pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
/// QEMU's virtio-mmio lets the driver use 1024 whatever the backend says, so offer that.
pub const QUEUE_MAX_SIZE: u16 = 1024;
/// Largest frame with its header: a 64 KiB IP packet plus Ethernet and VLAN headers.
pub const MAX_FRAME: usize = VNET_HDR_LEN + 65550;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("virtqueue: {0}")]
    Queue(#[from] virtio_queue::Error),
    #[error("backend: {0}")]
    Backend(io::Error),
}

/// A MAC address, parsed from `AA:BB:CC:DD:EE:FF`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacAddr(pub [u8; 6]);

impl std::str::FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad = || format!("invalid MAC address {s:?}: expected AA:BB:CC:DD:EE:FF");
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut mac = [0u8; 6];
        for (b, p) in mac.iter_mut().zip(parts) {
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if mac[0] & 1 != 0 {
            return Err(format!("MAC address {s} is multicast"));
        }
        Ok(MacAddr(mac))
    }
}

pub struct Net {
    backend: OwnedFd,
    mac: MacAddr,
    /// A frame read from the backend that no RX buffer has taken yet.
    pending: Option<usize>,
    rx_buf: Box<[u8]>,
    tx_buf: Box<[u8]>,
}

impl Net {
    /// A device whose frames go to and come from `backend` (nonblocking).
    pub fn new(backend: OwnedFd, mac: MacAddr) -> Self {
        Net {
            backend,
            mac,
            pending: None,
            rx_buf: vec![0u8; MAX_FRAME].into_boxed_slice(),
            tx_buf: vec![0u8; MAX_FRAME].into_boxed_slice(),
        }
    }

    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    pub fn features() -> u64 {
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | (1 << VIRTIO_NET_F_MAC)
    }

    /// Sends what the guest queued on TX, then fills RX buffers with frames from the
    /// backend. Returns (rx used, tx used) notifications. Never blocks.
    pub fn process<M: GuestMemory>(
        &mut self,
        mem: &M,
        rx: Option<&mut Queue>,
        tx: Option<&mut Queue>,
    ) -> Result<(bool, bool), NetError> {
        let mut notify = (false, false);
        if let Some(tx) = tx {
            notify.1 = self.process_tx(mem, tx)?;
        }
        if let Some(rx) = rx.filter(|q| q.ready() && q.is_valid(mem)) {
            notify.0 = self.process_rx(mem, rx)?;
        }
        Ok(notify)
    }

    /// A queue that is not ready or lies outside guest memory is left alone.
    fn process_tx<M: GuestMemory>(&mut self, mem: &M, q: &mut Queue) -> Result<bool, NetError> {
        Ok(drain_queue(mem, q, |chain| {
            let head = chain.head_index();
            let mut len = 0usize;
            let mut ok = true;
            for d in chain {
                let n = d.len() as usize;
                if d.is_write_only() || len + n > MAX_FRAME {
                    ok = false;
                    break;
                }
                if mem
                    .read_slice(&mut self.tx_buf[len..len + n], d.addr())
                    .is_err()
                {
                    ok = false;
                    break;
                }
                len += n;
            }
            if ok && len > VNET_HDR_LEN {
                self.send(len);
            } else {
                log::debug!("virtio-net: TX chain {head} dropped ({len} bytes)");
            }
            0
        })?)
    }

    /// Hands one frame to the backend; a full backend drops it, as a busy link would.
    fn send(&mut self, len: usize) {
        // SAFETY: writes `len` initialized bytes of our buffer to an fd we own.
        let r = unsafe { libc::write(self.backend.as_raw_fd(), self.tx_buf.as_ptr().cast(), len) };
        if r < 0 {
            log::debug!("virtio-net: TX: {}", io::Error::last_os_error());
        }
    }

    /// Reads one frame into `rx_buf`; `None` when the backend has none.
    fn recv(&mut self) -> Result<Option<usize>, NetError> {
        loop {
            // SAFETY: reads at most `rx_buf.len()` bytes into our buffer.
            let r = unsafe {
                libc::read(
                    self.backend.as_raw_fd(),
                    self.rx_buf.as_mut_ptr().cast(),
                    self.rx_buf.len(),
                )
            };
            if r >= 0 {
                return Ok(Some(r as usize));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(None),
                _ => return Err(NetError::Backend(e)),
            }
        }
    }

    fn process_rx<M: GuestMemory>(&mut self, mem: &M, q: &mut Queue) -> Result<bool, NetError> {
        let mut used = false;
        loop {
            q.disable_notification(mem)?;
            let mut popped = false;
            loop {
                let len = match self.pending.take() {
                    Some(len) => len,
                    None => match self.recv()? {
                        Some(len) if len > VNET_HDR_LEN => len,
                        Some(_) => continue,
                        None => break,
                    },
                };
                let Some(chain) = q.pop_descriptor_chain(mem) else {
                    // Kept until the driver adds buffers (it kicks RX then).
                    self.pending = Some(len);
                    break;
                };
                popped = true;
                let head = chain.head_index();
                // Without MRG_RXBUF every frame takes exactly one buffer.
                self.rx_buf[10..12].copy_from_slice(&1u16.to_le_bytes());
                let mut done = 0usize;
                let mut ok = true;
                for d in chain {
                    if done == len {
                        break;
                    }
                    let n = (d.len() as usize).min(len - done);
                    if !d.is_write_only()
                        || mem
                            .write_slice(&self.rx_buf[done..done + n], d.addr())
                            .is_err()
                    {
                        ok = false;
                        break;
                    }
                    done += n;
                }
                if !(ok && done == len) {
                    // A bad or too small buffer: the frame is dropped, the chain returned.
                    log::debug!("virtio-net: RX chain {head} cannot take a {len}-byte frame");
                    done = 0;
                }
                q.add_used(mem, head, done as u32)?;
                used = true;
            }
            if self.pending.is_none() || !q.enable_notification(mem)? || !popped {
                break;
            }
        }
        Ok(used && q.needs_notification(mem)?)
    }
}

impl QueueHandler for Net {
    /// Edge triggered: a frame that no RX buffer can take yet stays in the tap until the
    /// driver kicks RX, without waking the worker over and over.
    fn host_fds(&self) -> Vec<(RawFd, EventSet)> {
        vec![(
            self.backend.as_raw_fd(),
            EventSet::IN | EventSet::EDGE_TRIGGERED,
        )]
    }

    fn process<M: GuestMemory>(&mut self, mem: &M, queues: &mut [QueueRef<'_>]) -> Vec<usize> {
        let (rx, tx) = rx_tx_queues(queues, RX_QUEUE, TX_QUEUE);
        match Net::process(self, mem, rx, tx) {
            Ok((r, t)) => flagged([(r, RX_QUEUE), (t, TX_QUEUE)]),
            Err(e) => {
                log::error!("virtio-net: {e}");
                Vec::new()
            }
        }
    }
}

impl DeviceModel for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_MAX_SIZE; 2]
    }

    fn features(&self) -> u64 {
        Net::features()
    }

    /// `struct virtio_net_config`: the MAC (status and the rest are not offered).
    fn config_space(&self) -> Vec<u8> {
        self.mac.0.to_vec()
    }

    fn reset(&mut self) {
        self.pending = None;
    }
}
