//! virtio: the device interface every device model implements, and the MMIO transport
//! that exposes it to the guest. A new device is a new folder here implementing
//! [`VirtioDevice`].

pub mod from_config;
pub mod hosted;
pub mod mmio;

use std::sync::atomic::{AtomicU32, Ordering};

use thiserror::Error;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

pub use mmio::MmioTransport;

/// Device status bits (virtio 1.x, 2.1).
pub mod status {
    /// Guest noticed the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// Guest has a driver.
    pub const DRIVER: u32 = 2;
    /// Driver is ready.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation done.
    pub const FEATURES_OK: u32 = 8;
    /// Device hit an error.
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    /// Driver gave up.
    pub const FAILED: u32 = 128;
}

/// Feature bit every virtio 1.x device offers.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Interrupt causes (InterruptStatus bits).
pub const INT_VRING: u32 = 1;
/// Configuration change.
pub const INT_CONFIG: u32 = 2;

/// A device's interrupt line: the cause bits the guest reads, and the irqfd.
#[derive(Debug)]
pub struct VirtioInterrupt {
    status: AtomicU32,
    evt: EventFd,
}

impl VirtioInterrupt {
    /// An interrupt signalled through `evt` (registered as an irqfd).
    pub fn new(evt: EventFd) -> Self {
        Self {
            status: AtomicU32::new(0),
            evt,
        }
    }

    /// Sets `cause` and raises the line.
    pub fn trigger(&self, cause: u32) -> std::io::Result<()> {
        self.status.fetch_or(cause, Ordering::SeqCst);
        self.evt.write(1)
    }

    /// Pending causes.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// Clears acknowledged causes.
    pub fn ack(&self, causes: u32) {
        self.status.fetch_and(!causes, Ordering::SeqCst);
    }

    /// The irqfd.
    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}

/// One queue handed to a device at activation.
#[derive(Debug)]
pub struct ActiveQueue {
    /// Queue index.
    pub index: usize,
    /// The configured queue.
    pub queue: Queue,
    /// Signalled when the guest notifies this queue (an ioeventfd).
    pub notify: EventFd,
}

/// Errors a device can report at activation.
#[derive(Debug, Error)]
pub enum ActivateError {
    /// Device-specific failure.
    #[error("virtio device activation failed: {0}")]
    Failed(String),
}

/// A virtio device model, independent of the transport.
///
/// The transport calls these from vCPU threads (register accesses). Queue work runs
/// where the device decides, typically on a worker thread started in `activate` that
/// waits on the queues' `notify` eventfds (Cloud Hypervisor's model); such a device
/// stops and joins that thread in `reset` and on drop, which happens when the VM ends.
pub trait VirtioDevice: Send {
    /// virtio device id (1 net, 2 block, 4 rng, 19 vsock, 26 fs, ...).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Device feature bits (VIRTIO_F_VERSION_1 is added by the transport).
    fn features(&self) -> u64;
    /// The features the driver accepted.
    fn ack_features(&mut self, _features: u64) {}
    /// Reads device configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes device configuration space.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Starts serving: the driver set DRIVER_OK.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: std::sync::Arc<VirtioInterrupt>,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError>;
    /// Stops serving after a driver reset; the transport resets its own state.
    fn reset(&mut self) {}
}
