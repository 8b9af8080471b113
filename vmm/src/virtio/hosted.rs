//! Puts a hull-devices model (vsock, fs, blk, net, rng) behind the virtio-mmio transport.
//!
//! Each device gets one thread for the VM's life, started with the device (before any
//! seccomp filter, so it carries only its own): it runs its set-up hook, then serves
//! one driver session per DRIVER_OK until the driver resets the device, and ends when
//! the device is dropped. Register accesses (vCPU threads) only send it commands.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use hull_devices::model::{read_config_bytes, DeviceModel};
use hull_devices::worker::{serve, ThreadInit, WorkerQueue};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::QueueT;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{ActivateError, ActiveQueue, VirtioDevice, VirtioInterrupt, INT_VRING};

/// What a device thread is told to do.
enum Command {
    Activate {
        mem: GuestMemoryMmap,
        queues: Vec<WorkerQueue>,
        interrupt: Arc<VirtioInterrupt>,
    },
    Reset,
}

/// How a device thread starts and what it does at each activation besides serving.
#[derive(Default)]
pub struct ThreadOptions {
    /// Runs first on the device thread (its seccomp filter).
    pub init: Option<ThreadInit>,
    /// Runs on the device thread at every activation, before serving (the seccomp
    /// self-test's forbidden call).
    pub on_activate: Option<fn()>,
}

/// A [`DeviceModel`] served on its own thread.
pub struct HostedDevice {
    name: String,
    device_type: u32,
    queue_sizes: Vec<u16>,
    features: u64,
    acked: u64,
    config: Vec<u8>,
    commands: Option<Sender<Command>>,
    /// One message per finished session and per reset.
    done: Receiver<()>,
    stop: EventFd,
    serving: bool,
    thread: Option<JoinHandle<()>>,
}

impl HostedDevice {
    /// Starts `dev`'s thread, named `name` (at most 15 bytes show in /proc).
    pub fn new<D: DeviceModel>(
        name: impl Into<String>,
        dev: D,
        options: ThreadOptions,
    ) -> std::io::Result<Self> {
        let name = name.into();
        let stop = EventFd::new(EFD_NONBLOCK)?;
        let thread_stop = stop.try_clone()?;
        let (commands, rx) = channel::<Command>();
        let (done_tx, done) = channel();
        let (device_type, queue_sizes, features, config) = (
            dev.device_type(),
            dev.queue_max_sizes(),
            dev.features(),
            dev.config_space(),
        );
        let label = name.clone();
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                if let Some(init) = options.init {
                    if let Err(e) = init() {
                        log::error!("{label}: {e}");
                        return;
                    }
                }
                let mut dev = dev;
                while let Ok(cmd) = rx.recv() {
                    match cmd {
                        Command::Activate {
                            mem,
                            queues,
                            interrupt,
                        } => {
                            if let Some(hook) = options.on_activate {
                                hook();
                            }
                            let irq = |_| interrupt.trigger(INT_VRING);
                            dev = match serve(&label, dev, &mem, queues, &thread_stop, irq) {
                                Ok(d) => d,
                                Err((d, e)) => {
                                    log::error!("{label}: {e}");
                                    d
                                }
                            };
                        }
                        Command::Reset => dev.reset(),
                    }
                    // The receiver may be gone while the VM ends.
                    let _ = done_tx.send(());
                }
            })?;
        Ok(HostedDevice {
            name,
            device_type,
            queue_sizes,
            features,
            acked: 0,
            config,
            commands: Some(commands),
            done,
            stop,
            serving: false,
            thread: Some(thread),
        })
    }

    /// Ends the current session, if any, and waits until the thread is idle.
    fn end_session(&mut self) {
        if !self.serving {
            return;
        }
        self.serving = false;
        if let Err(e) = self.stop.write(1) {
            log::error!("{}: cannot stop: {e}", self.name);
            return;
        }
        // An error means the thread is gone, which ends the session as well.
        let _ = self.done.recv();
    }

    fn send(&self, cmd: Command) -> Result<(), ActivateError> {
        self.commands
            .as_ref()
            .and_then(|c| c.send(cmd).ok())
            .ok_or_else(|| ActivateError::Failed(format!("{}: device thread is gone", self.name)))
    }
}

impl VirtioDevice for HostedDevice {
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
        // A second DRIVER_OK without a reset is a driver bug: start over.
        self.end_session();
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
        self.send(Command::Activate {
            mem,
            queues,
            interrupt,
        })?;
        self.serving = true;
        Ok(())
    }

    fn reset(&mut self) {
        self.end_session();
        if self.send(Command::Reset).is_ok() {
            let _ = self.done.recv();
        }
        self.acked = 0;
    }
}

impl Drop for HostedDevice {
    fn drop(&mut self) {
        self.end_session();
        // Closing the command channel ends the thread.
        self.commands = None;
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("{}: device thread panicked", self.name);
            }
        }
    }
}
