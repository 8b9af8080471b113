//! `hull-vmm`: command-line shell over the hull_vmm library.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

use clap::Parser;
use hull_vmm::device_config::{BlkSpec, FsSpec, NetSpec, VsockSpec};
use hull_vmm::{assets, ConsoleConfig, DeviceConfig, Vm, VmConfig, VmExit};

/// Boot a Linux kernel in a KVM microVM.
#[derive(Debug, Parser)]
#[command(name = "hull-vmm", version)]
struct Cli {
    /// Kernel image: ELF vmlinux (PVH entry if present) or bzImage [default: $HULL_ASSETS/vmlinux].
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initramfs image.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = hull_vmm::config::DEFAULT_CMDLINE)]
    cmdline: String,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = hull_vmm::config::DEFAULT_MEMORY_MIB)]
    memory: u64,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u16,
    /// Serial console: stdio, file:PATH or none.
    #[arg(long, default_value = "stdio")]
    console: ConsoleConfig,
    /// Back guest RAM with a shared memfd (for vhost-user backends).
    #[arg(long)]
    memfd: bool,
    /// virtio-vsock, exposed on the host as a hybrid-vsock Unix socket: uds=PATH[,cid=N].
    #[arg(long, value_name = "uds=PATH[,cid=N]")]
    vsock: Option<VsockSpec>,
    /// virtio-fs share served in-process (repeatable): tag=TAG,dir=DIR[,readonly].
    #[arg(long, value_name = "tag=TAG,dir=DIR[,readonly]")]
    fs: Vec<FsSpec>,
    /// virtio-blk on a raw image (repeatable): path=FILE[,readonly][,id=ID].
    #[arg(long, value_name = "path=FILE[,readonly][,id=ID]")]
    blk: Vec<BlkSpec>,
    /// virtio-net on a tap (repeatable): fd=N,mac=MAC or tap=NAME,mac=MAC.
    #[arg(long, value_name = "fd=N|tap=NAME,mac=MAC")]
    net: Vec<NetSpec>,
    /// virtio-rng fed from the host's getrandom(2).
    #[arg(long)]
    rng: bool,
    /// Run without seccomp filters (they are on by default).
    #[arg(long)]
    no_seccomp: bool,
    /// Test only: device threads make a forbidden system call when activated.
    #[arg(long, hide = true)]
    seccomp_selftest: bool,
}

/// Write end for the signal handler (an eventfd), and which signal arrived.
static STOP_FD: AtomicI32 = AtomicI32::new(-1);
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop_signal(sig: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    STOP_SIGNAL.store(sig, Ordering::SeqCst);
    let fd = STOP_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one = 1u64.to_ne_bytes();
        // SAFETY: write(2) is async-signal-safe; the buffer is a live local.
        unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
    }
}

struct StderrLogger(log::LevelFilter);

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= self.0
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            eprintln!(
                "hull-vmm: {}: {}",
                r.level().as_str().to_lowercase(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}

fn init_logging() {
    let level = std::env::var("HULL_VMM_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(log::LevelFilter::Info);
    let logger = Box::leak(Box::new(StderrLogger(level)));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

fn main() -> ExitCode {
    let start = Instant::now();
    let cli = Cli::parse();
    init_logging();
    let config = VmConfig {
        kernel: cli.kernel.unwrap_or_else(assets::kernel_path),
        initrd: cli.initrd,
        cmdline: cli.cmdline,
        memory_mib: cli.memory,
        vcpus: cli.vcpus,
        console: cli.console,
        memfd: cli.memfd,
        devices: DeviceConfig {
            vsock: cli.vsock,
            fs: cli.fs,
            blk: cli.blk,
            net: cli.net,
            rng: cli.rng,
        },
        seccomp: !cli.no_seccomp,
        seccomp_selftest: cli.seccomp_selftest,
        start_time: start,
    };
    match run(config) {
        Ok(VmExit::PowerOff) | Ok(VmExit::Reset) => ExitCode::SUCCESS,
        // Stopped by a signal: report it the way a shell would.
        Ok(VmExit::Stopped) => ExitCode::from((128 + STOP_SIGNAL.load(Ordering::SeqCst)) as u8),
        Err(e) => {
            eprintln!("hull-vmm: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: VmConfig) -> Result<VmExit, hull_vmm::VmError> {
    let vm = Vm::new(config)?;
    let stop = vm.stop_handle()?;
    // The handler keeps this fd for the rest of the process.
    STOP_FD.store(stop.as_raw_fd(), Ordering::SeqCst);
    for sig in [libc::SIGTERM, libc::SIGINT] {
        if let Err(e) = vmm_sys_util::signal::register_signal_handler(sig, on_stop_signal) {
            log::warn!("cannot handle signal {sig}: {e}");
        }
    }
    let r = vm.run();
    // Signals after this point have nothing left to stop.
    STOP_FD.store(-1, Ordering::SeqCst);
    drop(stop);
    r
}
