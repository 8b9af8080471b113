//! Puts a hull-devices model (vsock, fs, blk, net, rng) behind the virtio-mmio transport:
//! at DRIVER_OK the device moves onto its own worker thread with the queues; a driver
//! reset stops the thread and takes the device back.

use std::sync::Arc;

use hull_devices::model::{read_config_bytes, DeviceModel};
use hull_devices::worker::{ThreadInit, Worker, WorkerQueue};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::QueueT;
use vm_memory::GuestMemoryMmap;

use super::{ActivateError, ActiveQueue, VirtioDevice, VirtioInterrupt, INT_VRING};

/// Makes the set-up hook each worker thread runs first (e.g. its seccomp filter).
pub type ThreadInitFactory = Arc<dyn Fn() -> ThreadInit + Send + Sync>;

enum State<D: DeviceModel> {
    Idle(D),
    Running(Worker<D>),
    /// The worker thread died; the device needs a VMM restart.
    Lost,
}

/// A [`DeviceModel`] served on a worker thread.
pub struct HostedDevice<D: DeviceModel> {
    thread_name: String,
    device_type: u32,
    queue_sizes: Vec<u16>,
    features: u64,
    acked: u64,
    config: Vec<u8>,
    state: State<D>,
    thread_init: Option<ThreadInitFactory>,
}

impl<D: DeviceModel> HostedDevice<D> {
    /// Wraps `dev`; its worker thread is named `thread_name` (at most 15 bytes show).
    pub fn new(thread_name: impl Into<String>, dev: D) -> Self {
        HostedDevice {
            thread_name: thread_name.into(),
            device_type: dev.device_type(),
            queue_sizes: dev.queue_max_sizes(),
            features: dev.features(),
            acked: 0,
            config: dev.config_space(),
            state: State::Idle(dev),
            thread_init: None,
        }
    }

    /// Runs `init()`'s hook first on every worker thread this device starts.
    pub fn with_thread_init(mut self, init: ThreadInitFactory) -> Self {
        self.thread_init = Some(init);
        self
    }

    fn stop_worker(&mut self) {
        if !matches!(self.state, State::Running(_)) {
            return;
        }
        if let State::Running(w) = std::mem::replace(&mut self.state, State::Lost) {
            match w.stop() {
                Ok(dev) => self.state = State::Idle(dev),
                Err(e) => log::error!("{}: {e}", self.thread_name),
            }
        }
    }
}

impl<D: DeviceModel> VirtioDevice for HostedDevice<D> {
    fn device_type(&self) -> u32 {
        self.device_type
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features;
        if let State::Idle(dev) = &mut self.state {
            dev.ack_features(features);
        }
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<VirtioInterrupt>,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        // A second DRIVER_OK without reset is a driver bug; restart from a clean device.
        self.stop_worker();
        let dev = match std::mem::replace(&mut self.state, State::Lost) {
            State::Idle(dev) => dev,
            _ => {
                return Err(ActivateError::Failed(format!(
                    "{}: device lost by an earlier failure",
                    self.thread_name
                )))
            }
        };
        let event_idx = self.acked & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        let queues = queues
            .into_iter()
            .map(|mut q| {
                q.queue.set_event_idx(event_idx);
                WorkerQueue {
                    index: q.index,
                    queue: q.queue,
                    kick: q.notify,
                }
            })
            .collect();
        let init = self.thread_init.as_ref().map(|f| f());
        let worker = Worker::spawn(&self.thread_name, dev, mem, queues, init, move |_| {
            interrupt.trigger(INT_VRING)
        })
        .map_err(|e| ActivateError::Failed(format!("{}: {e}", self.thread_name)))?;
        self.state = State::Running(worker);
        Ok(())
    }

    fn reset(&mut self) {
        self.stop_worker();
        if let State::Idle(dev) = &mut self.state {
            dev.reset();
        }
        self.acked = 0;
    }
}

impl<D: DeviceModel> Drop for HostedDevice<D> {
    fn drop(&mut self) {
        self.stop_worker();
    }
}
