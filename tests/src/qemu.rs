//! Boots a guest under QEMU (`-M microvm`, TCG) and captures its serial console: the
//! way the guest image is tested on hosts where KVM cannot boot Linux.

use crate::guest::{run_console, BootOutput};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Environment variable overriding the QEMU binary.
pub const QEMU_ENV: &str = "HULL_QEMU";

/// The QEMU binary: `$HULL_QEMU`, else `qemu-system-x86_64` on the PATH.
pub fn qemu_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(QEMU_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("qemu-system-x86_64"))
            .find(|p| p.is_file())
    })
}

/// One guest boot: kernel, initramfs, command line, extra devices.
#[derive(Debug, Clone)]
pub struct QemuBoot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Appended to the base command line (`console=ttyS0 reboot=t panic=-1`).
    pub append: Vec<String>,
    /// Extra QEMU arguments, e.g. `-device virtio-rng-device`.
    pub extra_args: Vec<String>,
    pub memory_mib: u32,
    pub cpus: u32,
    pub timeout: Duration,
}

impl QemuBoot {
    pub fn new(kernel: &Path, initrd: &Path) -> Self {
        QemuBoot {
            kernel: kernel.to_path_buf(),
            initrd: initrd.to_path_buf(),
            append: Vec::new(),
            extra_args: Vec::new(),
            memory_mib: 256,
            cpus: 1,
            timeout: Duration::from_secs(120),
        }
    }

    pub fn append(mut self, arg: impl Into<String>) -> Self {
        self.append.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The kernel command line.
    pub fn cmdline(&self) -> String {
        // reboot=t: without ACPI a power-off only halts; a triple-fault reset ends the
        // guest and -no-reboot turns it into QEMU's exit.
        let mut parts = vec!["console=ttyS0", "reboot=t", "panic=-1"];
        parts.extend(self.append.iter().map(String::as_str));
        parts.join(" ")
    }

    /// The full QEMU command.
    pub fn command(&self, qemu: &Path) -> Command {
        let mut c = Command::new(qemu);
        c.args(["-accel", "tcg", "-M", "microvm,acpi=off"])
            .args(["-m", &format!("{}M", self.memory_mib)])
            .args(["-smp", &self.cpus.to_string()])
            .args(["-nodefaults", "-no-user-config", "-nographic"])
            .args(["-serial", "stdio", "-no-reboot"])
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .args(["-append", &self.cmdline()])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Boots and waits for QEMU to exit (or kills it at the timeout).
    pub fn run(&self) -> io::Result<BootOutput> {
        self.run_until(None)
    }

    /// Like [`run`](Self::run), and records when a console line containing `marker`
    /// first appeared.
    pub fn run_until(&self, marker: Option<&str>) -> io::Result<BootOutput> {
        let qemu = qemu_binary().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "qemu-system-x86_64 not found (scripts/setup.sh installs qemu-system-x86)",
            )
        })?;
        run_console(self.command(&qemu), self.timeout, marker)
    }
}
