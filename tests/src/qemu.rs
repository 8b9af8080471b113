//! Boots a guest under QEMU (`-M microvm`, TCG) and captures its serial console: the
//! way the guest image is tested on hosts where KVM cannot boot Linux.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// What a boot printed and how it ended.
#[derive(Debug, Clone)]
pub struct BootOutput {
    /// Serial console (and QEMU's own messages), as printed.
    pub console: String,
    /// QEMU's exit code; `None` when it was killed at the timeout.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// Wall time from spawning QEMU to its exit (or the kill).
    pub elapsed: Duration,
    /// Wall time from spawning QEMU until the first console line that contains the
    /// marker given to [`QemuBoot::run_until`], if it was seen.
    pub marker_after: Option<Duration>,
}

impl BootOutput {
    /// The last `n` lines of the console, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let lines: Vec<_> = self.console.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Lines of the console that start with `prefix` (after the carriage returns the
    /// serial console adds are stripped).
    pub fn lines_starting_with<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> {
        self.console
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(move |l| l.starts_with(prefix))
    }
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
        let start = Instant::now();
        let mut child = self.command(&qemu).spawn()?;
        let console = Arc::new(Mutex::new(String::new()));
        let seen = Arc::new(Mutex::new(None::<Duration>));
        let mut readers = Vec::new();
        for (i, pipe) in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .enumerate()
        {
            let Some(mut pipe) = pipe else { continue };
            let console = Arc::clone(&console);
            let seen = Arc::clone(&seen);
            // Only stdout (the serial console) can show the marker.
            let marker = if i == 0 {
                marker.map(String::from)
            } else {
                None
            };
            readers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut c = console.lock().unwrap();
                    c.push_str(&String::from_utf8_lossy(&buf[..n]));
                    if let Some(m) = &marker {
                        let mut s = seen.lock().unwrap();
                        if s.is_none() && c.contains(m.as_str()) {
                            *s = Some(start.elapsed());
                        }
                    }
                }
            }));
        }
        let deadline = start + self.timeout;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if Instant::now() >= deadline {
                // The child is ours; kill it and reap it.
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let elapsed = start.elapsed();
        for r in readers {
            let _ = r.join();
        }
        let console = std::mem::take(&mut *console.lock().unwrap());
        let marker_after = *seen.lock().unwrap();
        Ok(BootOutput {
            console,
            exit_code: status.and_then(|s| s.code()),
            timed_out: status.is_none(),
            elapsed,
            marker_after,
        })
    }
}
