//! One vCPU: configuration before boot and the KVM_RUN loop on its own thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use kvm_bindings::{CpuId, Msrs, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use thiserror::Error;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::{cpuid, lapic, msrs, regs};
use crate::boot::BootEntry;
use crate::devices::bus::Bus;

/// KVM_INTERNAL_ERROR_EMULATION: the instruction emulator gave up.
const KVM_INTERNAL_ERROR_EMULATION: u32 = 1;

/// Errors of a vCPU.
#[derive(Debug, Error)]
pub enum VcpuError {
    /// A KVM call failed while configuring the vCPU.
    #[error("vCPU {id}: KVM {what} failed: {source}")]
    Setup {
        /// vCPU index.
        id: u8,
        /// Which call.
        what: &'static str,
        /// Underlying error.
        source: kvm_ioctls::Error,
    },
    /// Writing boot tables for this vCPU failed.
    #[error("vCPU {id}: cannot write boot CPU tables: {source}")]
    SetupMemory {
        /// vCPU index.
        id: u8,
        /// Underlying error.
        source: vm_memory::GuestMemoryError,
    },
    /// KVM_RUN failed.
    #[error("vCPU {id}: KVM_RUN failed: {source}")]
    Run {
        /// vCPU index.
        id: u8,
        /// Underlying error.
        source: kvm_ioctls::Error,
    },
    /// KVM_EXIT_INTERNAL_ERROR.
    #[error("vCPU {id}: KVM internal error, suberror {suberror}{} at guest RIP {rip:#x}", if *.suberror == KVM_INTERNAL_ERROR_EMULATION { " (instruction emulation failed)" } else { "" })]
    Internal {
        /// vCPU index.
        id: u8,
        /// `kvm_run.internal.suberror`.
        suberror: u32,
        /// Guest RIP when it happened.
        rip: u64,
    },
    /// KVM_EXIT_SHUTDOWN: the guest triple-faulted.
    #[error("vCPU {id}: guest triple fault (KVM_EXIT_SHUTDOWN) at guest RIP {rip:#x}")]
    TripleFault {
        /// vCPU index.
        id: u8,
        /// Guest RIP when it happened.
        rip: u64,
    },
    /// KVM_EXIT_FAIL_ENTRY.
    #[error("vCPU {id}: VM entry failed, hardware reason {reason:#x}")]
    FailEntry {
        /// vCPU index.
        id: u8,
        /// Hardware entry failure reason.
        reason: u64,
    },
    /// Any other exit we do not handle.
    #[error("vCPU {id}: unexpected KVM exit {exit} at guest RIP {rip:#x}")]
    UnexpectedExit {
        /// vCPU index.
        id: u8,
        /// Exit, as debug text.
        exit: String,
        /// Guest RIP.
        rip: u64,
    },
    /// The vCPU thread could not be started or panicked.
    #[error("vCPU {id}: thread failed: {reason}")]
    Thread {
        /// vCPU index.
        id: u8,
        /// What happened.
        reason: String,
    },
}

/// How a vCPU's run loop ended without error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuOutcome {
    /// Asked to stop by the VMM.
    Stopped,
    /// The guest powered off (KVM system event).
    PowerOff,
    /// The guest reset (KVM system event).
    Reset,
}

/// What a running vCPU needs from the VM.
#[derive(Clone, Debug)]
pub struct VcpuContext {
    /// Port I/O devices.
    pub pio: Arc<Bus>,
    /// MMIO devices.
    pub mmio: Arc<Bus>,
    /// Set by the VMM to end the loop (followed by a kick signal).
    pub stop: Arc<AtomicBool>,
    /// Install the vCPU seccomp filter before entering the guest.
    pub seccomp: bool,
}

/// A vCPU file descriptor and its index.
#[derive(Debug)]
pub struct Vcpu {
    id: u8,
    fd: VcpuFd,
}

/// The signal used to kick vCPU threads out of KVM_RUN.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn noop_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) handler for the kick signal: its only job is to make
/// KVM_RUN return EINTR.
pub fn register_kick_handler() -> std::io::Result<()> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), noop_handler)
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
}

impl Vcpu {
    /// Creates vCPU `id` in `vm`.
    pub fn new(vm: &VmFd, id: u8) -> Result<Self, VcpuError> {
        let fd = vm
            .create_vcpu(u64::from(id))
            .map_err(|source| VcpuError::Setup {
                id,
                what: "KVM_CREATE_VCPU",
                source,
            })?;
        Ok(Self { id, fd })
    }

    /// vCPU index (= APIC id).
    pub fn id(&self) -> u8 {
        self.id
    }

    fn setup_err(&self, what: &'static str) -> impl Fn(kvm_ioctls::Error) -> VcpuError {
        let id = self.id;
        move |source| VcpuError::Setup { id, what, source }
    }

    /// Sets CPUID, MSRs, FPU and LAPIC; for the boot CPU also its entry registers.
    pub fn configure(
        &self,
        kvm: &Kvm,
        mem: &GuestMemoryMmap,
        nr_cpus: u8,
        boot: Option<&BootEntry>,
    ) -> Result<(), VcpuError> {
        let supported = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(self.setup_err("KVM_GET_SUPPORTED_CPUID"))?;
        let mut entries = supported.as_slice().to_vec();
        cpuid::filter(&mut entries, self.id, nr_cpus);
        let cpuid = CpuId::from_entries(&entries).map_err(|_| VcpuError::Setup {
            id: self.id,
            what: "CPUID list",
            source: kvm_ioctls::Error::new(libc::E2BIG),
        })?;
        self.fd
            .set_cpuid2(&cpuid)
            .map_err(self.setup_err("KVM_SET_CPUID2"))?;

        let supported = kvm
            .get_msr_index_list()
            .map_err(self.setup_err("KVM_GET_MSR_INDEX_LIST"))?;
        let entries = msrs::boot_msrs(supported.as_slice());
        let list = Msrs::from_entries(&entries).map_err(|_| VcpuError::Setup {
            id: self.id,
            what: "MSR list",
            source: kvm_ioctls::Error::new(libc::E2BIG),
        })?;
        let written = self
            .fd
            .set_msrs(&list)
            .map_err(self.setup_err("KVM_SET_MSRS"))?;
        if written != entries.len() {
            // PVM accepts fewer MSRs than it lists; the kernel copes, so only note it.
            log::debug!(
                "vCPU {}: KVM took {written} of {} boot MSRs (stopped at {:#x})",
                self.id,
                entries.len(),
                entries[written].index
            );
        }

        self.fd
            .set_fpu(&regs::boot_fpu())
            .map_err(self.setup_err("KVM_SET_FPU"))?;

        let mut lapic_state = self
            .fd
            .get_lapic()
            .map_err(self.setup_err("KVM_GET_LAPIC"))?;
        lapic::set_lint(&mut lapic_state);
        self.fd
            .set_lapic(&lapic_state)
            .map_err(self.setup_err("KVM_SET_LAPIC"))?;

        if let Some(entry) = boot {
            let mut sregs = self
                .fd
                .get_sregs()
                .map_err(self.setup_err("KVM_GET_SREGS"))?;
            regs::setup_sregs(mem, entry, &mut sregs).map_err(|source| VcpuError::SetupMemory {
                id: self.id,
                source,
            })?;
            self.fd
                .set_sregs(&sregs)
                .map_err(self.setup_err("KVM_SET_SREGS"))?;
            self.fd
                .set_regs(&regs::boot_regs(entry))
                .map_err(self.setup_err("KVM_SET_REGS"))?;
        }
        Ok(())
    }

    fn rip(&self) -> u64 {
        self.fd.get_regs().map(|r| r.rip).unwrap_or(u64::MAX)
    }

    /// Runs the guest until it stops, powers off, resets or fails.
    pub fn run(&mut self, ctx: &VcpuContext) -> Result<VcpuOutcome, VcpuError> {
        let id = self.id;
        loop {
            if ctx.stop.load(Ordering::Acquire) {
                return Ok(VcpuOutcome::Stopped);
            }
            // Exits that need the fd again (for RIP) are turned into this first.
            enum Next {
                Continue,
                Done(VcpuOutcome),
                Internal,
                TripleFault,
                FailEntry(u64),
                Unexpected(String),
            }
            let next = match self.fd.run() {
                Ok(exit) => match exit {
                    VcpuExit::IoOut(port, data) => {
                        if !ctx.pio.write(u64::from(port), data) {
                            log::trace!("vCPU {id}: unhandled out {port:#x}");
                        }
                        Next::Continue
                    }
                    VcpuExit::IoIn(port, data) => {
                        if !ctx.pio.read(u64::from(port), data) {
                            data.fill(0xff);
                        }
                        Next::Continue
                    }
                    VcpuExit::MmioRead(addr, data) => {
                        if !ctx.mmio.read(addr, data) {
                            log::debug!("vCPU {id}: unhandled MMIO read {addr:#x}");
                            data.fill(0xff);
                        }
                        Next::Continue
                    }
                    VcpuExit::MmioWrite(addr, data) => {
                        if !ctx.mmio.write(addr, data) {
                            log::debug!("vCPU {id}: unhandled MMIO write {addr:#x}");
                        }
                        Next::Continue
                    }
                    VcpuExit::Hlt | VcpuExit::Intr | VcpuExit::IrqWindowOpen => Next::Continue,
                    VcpuExit::IoapicEoi(_) => Next::Continue,
                    VcpuExit::Shutdown => Next::TripleFault,
                    VcpuExit::InternalError => Next::Internal,
                    VcpuExit::FailEntry(reason, _) => Next::FailEntry(reason),
                    VcpuExit::SystemEvent(kind, _) => match kind {
                        KVM_SYSTEM_EVENT_SHUTDOWN => Next::Done(VcpuOutcome::PowerOff),
                        KVM_SYSTEM_EVENT_RESET => Next::Done(VcpuOutcome::Reset),
                        other => Next::Unexpected(format!("SystemEvent({other})")),
                    },
                    other => Next::Unexpected(format!("{other:?}")),
                },
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.fd.set_kvm_immediate_exit(0);
                    Next::Continue
                }
                Err(source) => return Err(VcpuError::Run { id, source }),
            };
            match next {
                Next::Continue => {}
                Next::Done(outcome) => return Ok(outcome),
                Next::Internal => {
                    // SAFETY: KVM filled the `internal` member of the exit union for
                    // KVM_EXIT_INTERNAL_ERROR, the exit we are handling.
                    let suberror =
                        unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
                    return Err(VcpuError::Internal {
                        id,
                        suberror,
                        rip: self.rip(),
                    });
                }
                Next::TripleFault => {
                    return Err(VcpuError::TripleFault {
                        id,
                        rip: self.rip(),
                    })
                }
                Next::FailEntry(reason) => return Err(VcpuError::FailEntry { id, reason }),
                Next::Unexpected(exit) => {
                    return Err(VcpuError::UnexpectedExit {
                        id,
                        exit,
                        rip: self.rip(),
                    })
                }
            }
        }
    }

    /// Runs the loop on a thread named `vcpu<N>`; `exited` is signalled when it ends.
    pub fn spawn(
        mut self,
        ctx: VcpuContext,
        exited: EventFd,
    ) -> Result<JoinHandle<Result<VcpuOutcome, VcpuError>>, VcpuError> {
        let id = self.id;
        std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || {
                let r = if ctx.seccomp {
                    crate::seccomp::install(crate::seccomp::ThreadKind::Vcpu)
                        .map_err(|e| VcpuError::Thread {
                            id,
                            reason: e.to_string(),
                        })
                        .and_then(|()| self.run(&ctx))
                } else {
                    self.run(&ctx)
                };
                if let Err(e) = exited.write(1) {
                    log::error!("vCPU {id}: cannot signal exit: {e}");
                }
                r
            })
            .map_err(|e| VcpuError::Thread {
                id,
                reason: e.to_string(),
            })
    }
}
