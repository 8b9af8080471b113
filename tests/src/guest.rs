//! Guest assets for the tests (the installed kernel and initramfs, with a clear message
//! when they are missing), throwaway busybox images, a console-capturing runner for a
//! VMM process, and the verdict of the agent's self-test.

use hull_guest_image::{cpio, find_static_busybox};
use hull_protocol::guest::{SELFTEST_FAIL_PREFIX, SELFTEST_PASS};
use hull_vmm::assets;
use std::fs::File;
use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The installed guest kernel; panics, saying how to build it, when it is missing.
pub fn require_kernel() -> PathBuf {
    let path = assets::kernel_path();
    assert!(
        path.is_file(),
        "guest kernel {} is missing: build it with `make guest-kernel` \
         (guest-kernel-config/build.sh; `make test` does it first)",
        path.display()
    );
    path
}

/// The installed guest initramfs; panics, saying how to build it, when it is missing.
pub fn require_initramfs() -> PathBuf {
    let path = assets::initramfs_path();
    assert!(
        path.is_file(),
        "guest initramfs {} is missing: build it with `make guest-image` \
         (scripts/build-guest-image.sh; `make test` does it first)",
        path.display()
    );
    path
}

/// Checks that the VM sandbox has what it boots here: the guest kernel and image, and
/// QEMU (hull-vmm needs hardware KVM; where it is missing the runtime uses QEMU).
/// Panics, saying how to get what is missing: `make test` provides all of it, so a VM
/// test must never pass by not running.
pub fn require_vm_sandbox() {
    require_kernel();
    require_initramfs();
    if hull_vmm::kvm::hardware_kvm_usable().is_err() {
        assert!(
            crate::qemu::qemu_binary().is_some(),
            "qemu-system-x86_64 is missing and hardware KVM is not usable: install \
             qemu-system-x86 (scripts/setup.sh; `make test` does it first)"
        );
    }
}

/// Writes an initramfs whose `/init` is `script` run by a static busybox (`/bin/sh`),
/// with the usual mount points and `/dev/console`. For kernel tests that must not
/// depend on the agent.
pub fn busybox_initramfs(script: &str, out: &Path) -> io::Result<()> {
    let busybox = find_static_busybox().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "no static busybox (apt-get install busybox-static, or set HULL_BUSYBOX)",
        )
    })?;
    let to_io = |e: cpio::Error| io::Error::other(e.to_string());
    let mut w = cpio::Writer::new(BufWriter::new(File::create(out)?));
    for dir in ["bin", "dev", "proc", "sys", "tmp"] {
        w.dir(dir, 0o755).map_err(to_io)?;
    }
    w.char_device("dev/console", 0o600, 5, 1).map_err(to_io)?;
    let mut bb = File::open(&busybox)?;
    let len = bb.metadata()?.len();
    w.file_from("bin/busybox", 0o755, len, &mut bb)
        .map_err(to_io)?;
    w.symlink("bin/sh", "busybox").map_err(to_io)?;
    let init = format!("#!/bin/busybox sh\n{script}");
    w.file("init", 0o755, init.as_bytes()).map_err(to_io)?;
    w.finish().map_err(to_io)?;
    Ok(())
}

/// The hull-vmm binary of this workspace's debug build (`cargo build -p hull-vmm`).
pub fn hull_vmm_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug").join("hull-vmm")
}

/// What a guest printed and how its VMM process ended.
#[derive(Debug, Clone)]
pub struct BootOutput {
    /// Serial console (and the VMM's own messages), as printed.
    pub console: String,
    /// The VMM's exit code; `None` when it was killed at the timeout.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// Wall time from spawning the VMM to its exit (or the kill).
    pub elapsed: Duration,
    /// Wall time from spawning the VMM until the console first contained the marker
    /// given to [`run_console`], if it did.
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

/// Spawns `cmd` (stdout and stderr piped), collects both into one console text, and
/// waits for it to exit, killing it after `timeout`.
pub fn run_console(
    mut cmd: Command,
    timeout: Duration,
    marker: Option<&str>,
) -> io::Result<BootOutput> {
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let console = Arc::new(Mutex::new(String::new()));
    let seen = Arc::new(Mutex::new(None::<Duration>));
    let pipes: [Option<Box<dyn Read + Send>>; 2] = [
        child.stdout.take().map(|p| Box::new(p) as _),
        child.stderr.take().map(|p| Box::new(p) as _),
    ];
    let mut readers = Vec::new();
    for mut pipe in pipes.into_iter().flatten() {
        let console = Arc::clone(&console);
        let seen = Arc::clone(&seen);
        let marker = marker.map(String::from);
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
    let deadline = start + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            // The child is ours: kill and reap it.
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

/// The agent's self-test verdict from a console: `Ok` for exactly one
/// `hull-selftest: PASS` line and no FAIL line, otherwise why not.
pub fn selftest_verdict(console: &str) -> Result<(), String> {
    // Kernel messages can share a line with the agent's output on the serial console,
    // so look for the result anywhere in a line.
    let results: Vec<&str> = console
        .lines()
        .filter_map(|l| {
            let l = l.trim_end_matches('\r');
            [SELFTEST_PASS, SELFTEST_FAIL_PREFIX]
                .iter()
                .filter_map(|p| l.find(p))
                .min()
                .map(|i| &l[i..])
        })
        .collect();
    match results.as_slice() {
        [] => Err("the guest printed no self-test result line".into()),
        [one] if *one == SELFTEST_PASS => Ok(()),
        [one] => match one.strip_prefix(SELFTEST_FAIL_PREFIX) {
            Some(reason) => Err(format!("the self-test failed: {}", reason.trim())),
            None => Err(format!("unexpected self-test line {one:?}")),
        },
        many => Err(format!(
            "{} self-test result lines, expected one: {many:?}",
            many.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_of_a_console() {
        let pass = format!("[    1.0] Run /init as init process\r\n{SELFTEST_PASS}\r\n");
        assert_eq!(selftest_verdict(&pass), Ok(()));
        let mixed = format!("[    1.2] random: crng init done{SELFTEST_PASS}\n");
        assert_eq!(selftest_verdict(&mixed), Ok(()));

        let fail = format!("{SELFTEST_FAIL_PREFIX} cgroup controller io missing\n");
        let err = selftest_verdict(&fail).unwrap_err();
        assert!(err.contains("cgroup controller io missing"), "{err}");

        assert!(selftest_verdict("Kernel panic - not syncing")
            .unwrap_err()
            .contains("no self-test result"));
        let twice = format!("{SELFTEST_PASS}\n{SELFTEST_PASS}\n");
        assert!(selftest_verdict(&twice)
            .unwrap_err()
            .contains("2 self-test"));
        let both = format!("{SELFTEST_PASS}\n{SELFTEST_FAIL_PREFIX} late\n");
        assert!(selftest_verdict(&both).is_err());
    }

    #[test]
    fn runner_captures_output_and_kills_at_the_timeout() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo hello; echo oops >&2; exit 3"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let out = run_console(c, Duration::from_secs(10), Some("hello")).unwrap();
        assert_eq!(out.exit_code, Some(3));
        assert!(!out.timed_out);
        assert!(out.console.contains("hello") && out.console.contains("oops"));
        assert!(out.marker_after.is_some());

        let mut c = Command::new("sleep");
        c.arg("30")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let out = run_console(c, Duration::from_millis(300), None).unwrap();
        assert!(out.timed_out);
        assert_eq!(out.exit_code, None);
        assert!(out.elapsed < Duration::from_secs(10));
    }
}
