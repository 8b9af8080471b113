//! A VM: KVM setup, guest memory, devices, vCPU threads and the event loop that
//! runs until the guest ends or the VMM is asked to stop.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{IoEventAddress, Kvm, VmFd};
use thiserror::Error;
use vm_memory::{GuestMemory, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::Killable;

use crate::boot::{self, BootError, BootPayload, MmioAnnouncement};
use crate::config::{ConsoleConfig, VmConfig};
use crate::console::{self, ConsoleError, RawModeGuard, StdinInput};
use crate::cpu::vcpu::{kick_signal, register_kick_handler, VcpuContext};
use crate::cpu::{Vcpu, VcpuError, VcpuOutcome};
use crate::devices::boot_timer::{BootTimer, BOOT_TIMER_BASE, BOOT_TIMER_SIZE};
use crate::devices::bus::{Bus, BusError};
use crate::devices::i8042::{I8042, I8042_PORT_BASE, I8042_PORT_SIZE};
use crate::devices::serial::{SerialDevice, SERIAL_IRQ, SERIAL_PORT_BASE, SERIAL_PORT_SIZE};
use crate::memory::{self, MemoryError, VIRTIO_MMIO_SIZE, VIRTIO_MMIO_START};
use crate::virtio::from_config::{build_devices, DeviceBuildError};
use crate::virtio::mmio::reg::QUEUE_NOTIFY;
use crate::virtio::{MmioTransport, VirtioDevice};

/// KVM (VMX) needs three pages below 4 GiB, outside guest RAM, for the real-mode TSS;
/// they sit in the MMIO hole just under the firmware area at the top of 4 GiB.
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;
/// First interrupt line for virtio-mmio devices (0-4 are legacy ISA devices here).
const VIRTIO_FIRST_IRQ: u32 = 5;
/// Last IO-APIC pin.
const LAST_IRQ: u32 = 23;

/// Errors building or running a VM.
#[derive(Debug, Error)]
pub enum VmError {
    /// No vCPUs asked for.
    #[error("the VM needs at least one vCPU")]
    NoVcpus,
    /// More vCPUs than KVM (or the MP table) allows.
    #[error("{asked} vCPUs requested but at most {max} are possible (KVM allows {kvm_max}, the MP table {})", boot::mptable::MAX_CPUS)]
    TooManyVcpus {
        /// Requested.
        asked: u16,
        /// Allowed.
        max: u16,
        /// KVM's own limit.
        kvm_max: usize,
    },
    /// /dev/kvm cannot be opened.
    #[error("cannot open /dev/kvm: {0}")]
    OpenKvm(kvm_ioctls::Error),
    /// A VM-level KVM call failed.
    #[error("KVM {what} failed: {source}")]
    Kvm {
        /// Which call.
        what: &'static str,
        /// Underlying error.
        source: kvm_ioctls::Error,
    },
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Boot payload.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// Console.
    #[error(transparent)]
    Console(#[from] ConsoleError),
    /// Device placement.
    #[error("cannot place device: {0}")]
    Bus(#[from] BusError),
    /// A vCPU failed.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// A virtio device named on the command line cannot be built.
    #[error(transparent)]
    Device(#[from] DeviceBuildError),
    /// A seccomp filter could not be installed.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// No interrupt line left for another device.
    #[error("no interrupt line left for another virtio device")]
    OutOfIrqs,
    /// The event loop failed.
    #[error("event loop: {0}")]
    EventLoop(String),
    /// An OS resource could not be created.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Underlying error.
        source: std::io::Error,
    },
}

fn io_err(what: &'static str) -> impl Fn(std::io::Error) -> VmError {
    move |source| VmError::Io { what, source }
}

fn kvm_err(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// How a VM ended without error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmExit {
    /// The guest powered off.
    PowerOff,
    /// The guest reset (i8042 or KVM reset event); the VMM does not reboot it.
    Reset,
    /// The VMM was asked to stop (see [`Vm::stop_handle`]).
    Stopped,
}

/// What woke the event loop for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wake {
    Stop,
    Reset,
    VcpuExited,
}

/// Watches the VM-level eventfds.
struct Control {
    stop: EventFd,
    reset: EventFd,
    vcpu_exit: EventFd,
    wake: Arc<Mutex<Option<Wake>>>,
}

impl MutEventSubscriber for Control {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let fd = events.fd();
        let wake = if fd == self.stop.as_raw_fd() {
            let _ = self.stop.read();
            Wake::Stop
        } else if fd == self.reset.as_raw_fd() {
            let _ = self.reset.read();
            Wake::Reset
        } else {
            let _ = self.vcpu_exit.read();
            Wake::VcpuExited
        };
        let mut slot = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(wake);
    }

    fn init(&mut self, ops: &mut EventOps) {
        for evt in [&self.stop, &self.reset, &self.vcpu_exit] {
            if let Err(e) = ops.add(Events::new(evt, EventSet::IN)) {
                log::error!("event loop: {e:?}");
            }
        }
    }
}

/// A configured VM, ready to [`run`](Vm::run).
pub struct Vm {
    config: VmConfig,
    // Field order matters for drop: the VM fd goes before the memory it maps.
    vm_fd: VmFd,
    kvm: Kvm,
    mem: GuestMemoryMmap,
    memory_file: Option<File>,
    pio: Bus,
    mmio: Bus,
    serial: Arc<Mutex<SerialDevice>>,
    reset_evt: EventFd,
    stop_evt: EventFd,
    // Tells vCPUs to leave their run loop (set by the VMM and by the i8042 reset).
    stop: Arc<AtomicBool>,
    boot_time: Arc<Mutex<Option<Duration>>>,
    mmio_devices: Vec<MmioAnnouncement>,
    // Keeps irqfds / ioeventfds and their transports alive for the VM's lifetime.
    transports: Vec<Arc<Mutex<MmioTransport>>>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Vm {
    /// Validates `config`, creates the KVM VM, guest memory and legacy devices.
    pub fn new(config: VmConfig) -> Result<Self, VmError> {
        if config.vcpus == 0 {
            return Err(VmError::NoVcpus);
        }
        let mem_size = config.memory_mib.saturating_mul(1 << 20);
        memory::validate_size(mem_size, memory::host_ram_bytes())?;
        // Fail on unreadable boot files before any KVM work.
        File::open(&config.kernel).map_err(|source| {
            BootError::from(boot::loader::LoaderError::ReadKernel {
                path: config.kernel.clone(),
                source,
            })
        })?;
        if let Some(initrd) = &config.initrd {
            File::open(initrd).map_err(|source| {
                BootError::from(boot::loader::LoaderError::ReadInitrd {
                    path: initrd.clone(),
                    source,
                })
            })?;
        }

        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let kvm_max = kvm.get_max_vcpus();
        let max = kvm_max.min(usize::from(boot::mptable::MAX_CPUS)) as u16;
        if config.vcpus > max {
            return Err(VmError::TooManyVcpus {
                asked: config.vcpus,
                max,
                kvm_max,
            });
        }
        let vm_fd = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        let memory_file = if config.memfd {
            Some(memory::create_memfd(mem_size)?)
        } else {
            None
        };
        let mem = memory::create_guest_memory(mem_size, memory_file.as_ref())?;
        for (slot, region) in mem.iter().enumerate() {
            let r = kvm_userspace_memory_region {
                slot: slot as u32,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
                flags: 0,
            };
            // SAFETY: the region is a live mapping owned by `mem`, which the Vm keeps
            // for longer than `vm_fd` (field order), so KVM never sees it unmapped.
            unsafe { vm_fd.set_user_memory_region(r) }
                .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
        }
        vm_fd
            .set_tss_address(KVM_TSS_ADDRESS)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        vm_fd
            .create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm_fd.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;

        let out = console::open_output(&config.console)?;
        let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("eventfd"))?;
        vm_fd
            .register_irqfd(&serial_irq, SERIAL_IRQ)
            .map_err(kvm_err("KVM_IRQFD"))?;
        let serial = Arc::new(Mutex::new(SerialDevice::new(serial_irq, out)));
        let reset_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("eventfd"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let i8042 = I8042::new(
            reset_evt.try_clone().map_err(io_err("eventfd"))?,
            stop.clone(),
        );
        let timer = BootTimer::new(config.start_time);
        let boot_time = timer.result();

        let mut pio = Bus::new();
        pio.insert(SERIAL_PORT_BASE, SERIAL_PORT_SIZE, serial.clone())?;
        pio.insert(
            I8042_PORT_BASE,
            I8042_PORT_SIZE,
            Arc::new(Mutex::new(i8042)),
        )?;
        pio.insert(
            BOOT_TIMER_BASE,
            BOOT_TIMER_SIZE,
            Arc::new(Mutex::new(timer)),
        )?;

        let mut vm = Self {
            config,
            vm_fd,
            kvm,
            mem,
            memory_file,
            pio,
            mmio: Bus::new(),
            serial,
            reset_evt,
            stop_evt: EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("eventfd"))?,
            stop,
            boot_time,
            mmio_devices: Vec::new(),
            transports: Vec::new(),
        };
        // Dropping `vm` on an error closes whatever the earlier devices opened.
        for dev in build_devices(
            &vm.config.devices,
            vm.config.seccomp,
            vm.config.seccomp_selftest,
        )? {
            vm.add_virtio_device(dev)?;
        }
        Ok(vm)
    }

    /// Guest memory, for device models that need it before activation.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The memfd backing guest RAM when [`VmConfig::memfd`] was set; regions are
    /// laid out back to back in it (see [`memory::ram_ranges`]).
    pub fn memory_file(&self) -> Option<&File> {
        self.memory_file.as_ref()
    }

    /// Attaches a virtio device on the next virtio-mmio window; it is announced on
    /// the kernel command line. Returns the window base.
    pub fn add_virtio_device(&mut self, device: Box<dyn VirtioDevice>) -> Result<u64, VmError> {
        let index = self.mmio_devices.len() as u64;
        let irq = VIRTIO_FIRST_IRQ + index as u32;
        if irq > LAST_IRQ {
            return Err(VmError::OutOfIrqs);
        }
        let base = VIRTIO_MMIO_START + index * VIRTIO_MMIO_SIZE;
        let irq_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("eventfd"))?;
        self.vm_fd
            .register_irqfd(&irq_evt, irq)
            .map_err(kvm_err("KVM_IRQFD"))?;
        let transport = MmioTransport::new(device, self.mem.clone(), irq_evt)
            .map_err(io_err("virtio queue"))?;
        for (i, evt) in transport.queue_evts().iter().enumerate() {
            self.vm_fd
                .register_ioevent(evt, &IoEventAddress::Mmio(base + QUEUE_NOTIFY), i as u32)
                .map_err(kvm_err("KVM_IOEVENTFD"))?;
        }
        let transport = Arc::new(Mutex::new(transport));
        self.mmio
            .insert(base, VIRTIO_MMIO_SIZE, transport.clone())?;
        self.transports.push(transport);
        self.mmio_devices.push(MmioAnnouncement {
            base,
            size: VIRTIO_MMIO_SIZE,
            irq,
        });
        Ok(base)
    }

    /// An eventfd that stops the VM when written (e.g. from a signal handler).
    pub fn stop_handle(&self) -> Result<EventFd, VmError> {
        self.stop_evt.try_clone().map_err(io_err("eventfd"))
    }

    /// Time from VMM start to the guest's boot-timer write, once it happened.
    pub fn boot_time(&self) -> Arc<Mutex<Option<Duration>>> {
        self.boot_time.clone()
    }

    /// Loads the kernel, starts the vCPUs and serves the guest until it powers off,
    /// resets, fails, or the stop handle fires. All vCPU threads are joined before
    /// this returns.
    pub fn run(self) -> Result<VmExit, VmError> {
        let payload = BootPayload {
            kernel: &self.config.kernel,
            initrd: self.config.initrd.as_deref(),
            cmdline: &self.config.cmdline,
            mmio_devices: &self.mmio_devices,
            vcpus: self.config.vcpus,
        };
        let entry = boot::prepare(&self.mem, &payload)?;

        let nr = self.config.vcpus as u8;
        let mut vcpus = Vec::with_capacity(usize::from(nr));
        for id in 0..nr {
            let vcpu = Vcpu::new(&self.vm_fd, id)?;
            vcpu.configure(&self.kvm, &self.mem, nr, (id == 0).then_some(&entry))?;
            vcpus.push(vcpu);
        }
        register_kick_handler().map_err(io_err("kick signal handler"))?;

        let interactive =
            self.config.console == ConsoleConfig::Stdio && console::is_tty(console::stdin_fd());
        let _raw_mode = if interactive {
            match RawModeGuard::new(console::stdin_fd()) {
                Ok(g) => Some(g),
                Err(e) => {
                    log::warn!("console: cannot set raw mode: {e}");
                    None
                }
            }
        } else {
            None
        };

        let vcpu_exit = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("eventfd"))?;
        let wake = Arc::new(Mutex::new(None));
        let mut em: EventManager<Box<dyn MutEventSubscriber + Send>> =
            EventManager::new().map_err(|e| VmError::EventLoop(format!("{e:?}")))?;
        em.add_subscriber(Box::new(Control {
            stop: self.stop_evt.try_clone().map_err(io_err("eventfd"))?,
            reset: self.reset_evt.try_clone().map_err(io_err("eventfd"))?,
            vcpu_exit: vcpu_exit.try_clone().map_err(io_err("eventfd"))?,
            wake: wake.clone(),
        }));
        if interactive {
            em.add_subscriber(Box::new(StdinInput::new(self.serial.clone())));
        }

        let stop = self.stop.clone();
        let ctx = VcpuContext {
            pio: Arc::new(self.pio),
            mmio: Arc::new(self.mmio),
            stop: stop.clone(),
            seccomp: self.config.seccomp,
        };
        let mut threads: Vec<(u8, JoinHandle<Result<VcpuOutcome, VcpuError>>)> = Vec::new();
        let mut spawn_err = None;
        for vcpu in vcpus {
            let id = vcpu.id();
            let exited = match vcpu_exit.try_clone() {
                Ok(e) => e,
                Err(e) => {
                    spawn_err = Some(io_err("eventfd")(e));
                    break;
                }
            };
            match vcpu.spawn(ctx.clone(), exited) {
                Ok(h) => threads.push((id, h)),
                Err(e) => {
                    spawn_err = Some(e.into());
                    break;
                }
            }
        }

        let mut loop_err = spawn_err;
        // Everything the main thread sets up is done: from here it only serves events.
        if self.config.seccomp && loop_err.is_none() {
            if let Err(e) = crate::seccomp::install(crate::seccomp::ThreadKind::Main) {
                loop_err = Some(VmError::Seccomp(e));
            }
        }
        while loop_err.is_none() && wake.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
            if let Err(e) = em.run() {
                loop_err = Some(VmError::EventLoop(format!("{e:?}")));
            }
        }
        let woke = *wake.lock().unwrap_or_else(|e| e.into_inner());

        let results = stop_vcpus(&stop, threads);
        if let Some(e) = loop_err {
            return Err(e);
        }
        // A vCPU failure is the answer even if something else woke us first.
        let mut outcome = None;
        for r in results {
            match r {
                Err(e) => return Err(e.into()),
                Ok(VcpuOutcome::Stopped) => {}
                Ok(o) => {
                    outcome.get_or_insert(o);
                }
            }
        }
        Ok(match (woke, outcome) {
            (Some(Wake::Reset), _) => VmExit::Reset,
            (_, Some(VcpuOutcome::PowerOff)) => VmExit::PowerOff,
            (_, Some(VcpuOutcome::Reset)) => VmExit::Reset,
            _ => VmExit::Stopped,
        })
    }
}

/// Tells every vCPU to stop, kicks them out of KVM_RUN until they do, and joins them.
fn stop_vcpus(
    stop: &AtomicBool,
    threads: Vec<(u8, JoinHandle<Result<VcpuOutcome, VcpuError>>)>,
) -> Vec<Result<VcpuOutcome, VcpuError>> {
    stop.store(true, Ordering::Release);
    // A kick that lands just before KVM_RUN is lost, so repeat until all have left.
    while threads.iter().any(|(_, h)| !h.is_finished()) {
        for (_, h) in threads.iter().filter(|(_, h)| !h.is_finished()) {
            let _ = h.kill(kick_signal());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    threads
        .into_iter()
        .map(|(id, h)| {
            h.join().unwrap_or_else(|_| {
                Err(VcpuError::Thread {
                    id,
                    reason: "panicked".to_string(),
                })
            })
        })
        .collect()
}
