//! Guest boot to agent-ready, the same kernel and initramfs under two VMMs:
//! - hull-vmm: the agent's boot-timer write (port 0x440), timestamped by the VMM
//!   from its own start (needs hardware KVM);
//! - QEMU `-M microvm`: from spawning QEMU to the agent answering the protocol
//!   handshake on vsock port 1024, through hull's vsock device served by
//!   `hull-vhost-user` (the host cannot see a port write under QEMU).
//!
//! Each sample also records the VMM's RSS outside guest RAM and the PSS of the VMM
//! plus its device backend at that moment.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hull_protocol::guest::AGENT_VSOCK_PORT;
use hull_protocol::Client;

use crate::procs;

pub const GUEST_MIB: u64 = 256;
/// quiet: console output is slow under TCG and not what is measured.
pub const CMDLINE: &str = "console=ttyS0 reboot=t panic=-1 quiet";
const BOOT_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy)]
pub struct BootSample {
    pub ready_ms: f64,
    pub vmm_rss_kib: u64,
    pub pss_kib: u64,
}

/// Kills and reaps a child however the sample ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct QemuPeer {
    pub qemu: PathBuf,
    pub vhost_user: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// "kvm" or "tcg".
    pub accel: &'static str,
}

impl QemuPeer {
    pub fn boot(&self) -> Result<BootSample, String> {
        let dir = tempfile::Builder::new()
            .prefix("hull-bench-qemu-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let vhost_sock = dir.path().join("vhost.sock");
        let uds = dir.path().join("vsock.sock");
        let backend_log = dir.path().join("backend.log");
        let backend = Command::new(&self.vhost_user)
            .args(["vsock", "--guest-cid", "3", "--socket"])
            .arg(&vhost_sock)
            .arg("--uds-path")
            .arg(&uds)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file(&backend_log)?)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.vhost_user.display()))?;
        let mut backend = Reaped(backend);
        wait_for_socket(&vhost_sock, &mut backend.0, &backend_log)?;

        let qemu_log = dir.path().join("qemu.log");
        let t0 = Instant::now();
        let qemu = Command::new(&self.qemu)
            .args([
                "-accel",
                self.accel,
                "-M",
                "microvm,acpi=off,memory-backend=mem",
            ])
            .args(["-m", &format!("{GUEST_MIB}M"), "-smp", "1", "-cpu", "max"])
            .arg("-object")
            .arg(format!(
                "memory-backend-memfd,id=mem,size={GUEST_MIB}M,share=on"
            ))
            .arg("-chardev")
            .arg(format!("socket,id=vsock,path={}", vhost_sock.display()))
            .args(["-device", "vhost-user-vsock-device,chardev=vsock"])
            .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
            .args(["-serial", "null"])
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .args(["-append", CMDLINE])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file(&qemu_log)?)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.qemu.display()))?;
        let mut qemu = Reaped(qemu);
        loop {
            if agent_answers(&uds) {
                break;
            }
            if let Ok(Some(st)) = qemu.0.try_wait() {
                return Err(format!(
                    "QEMU exited ({st}) before the agent answered: {}",
                    tail(&qemu_log)
                ));
            }
            if let Ok(Some(st)) = backend.0.try_wait() {
                return Err(format!(
                    "hull-vhost-user exited ({st}): {}",
                    tail(&backend_log)
                ));
            }
            if t0.elapsed() > BOOT_LIMIT {
                return Err(format!(
                    "the agent did not answer on vsock within {BOOT_LIMIT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let ready_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let (q, b) = (qemu.0.id(), backend.0.id());
        let vmm_rss_kib =
            procs::rss_excluding_guest_kib(q, GUEST_MIB).ok_or("cannot read QEMU's smaps")?;
        let pss_kib = procs::pss_kib(q).unwrap_or(0) + procs::pss_kib(b).unwrap_or(0);
        Ok(BootSample {
            ready_ms,
            vmm_rss_kib,
            pss_kib,
        })
    }
}

/// One try: hybrid-vsock `CONNECT`, then the agent protocol's version handshake.
fn agent_answers(uds: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(uds) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if s.write_all(format!("CONNECT {AGENT_VSOCK_PORT}\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while let Ok(1) = s.read(&mut b) {
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
    }
    line.starts_with(b"OK ") && Client::handshake(s).is_ok()
}

pub struct HullVmm {
    pub bin: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

impl HullVmm {
    /// Boots until hull-vmm logs the agent's boot-timer write.
    pub fn boot(&self) -> Result<BootSample, String> {
        hull_vmm::kvm::hardware_kvm_usable().map_err(|why| format!("needs hardware KVM: {why}"))?;
        // The agent writes the boot timer once it listens on vsock: it needs the device.
        let dir = tempfile::Builder::new()
            .prefix("hull-bench-vmm-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let child = Command::new(&self.bin)
            .arg("--vsock")
            .arg(format!(
                "uds={},cid=3",
                dir.path().join("vsock.sock").display()
            ))
            .arg("--kernel")
            .arg(&self.kernel)
            .arg("--initrd")
            .arg(&self.initrd)
            .args(["--memory", &GUEST_MIB.to_string(), "--cmdline", CMDLINE])
            .args(["--console", "none"])
            .env("HULL_VMM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        let mut vmm = Reaped(child);
        let stderr = vmm.0.stderr.take().ok_or("no stderr pipe")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut last = String::new();
        let ready_ms = loop {
            match rx.recv_timeout(BOOT_LIMIT) {
                Ok(line) => {
                    if let Some(ms) = boot_timer_ms(&line) {
                        break ms;
                    }
                    last = line;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "no boot-timer write within {BOOT_LIMIT:?}; last log: {last}"
                    ))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!(
                        "hull-vmm exited before the agent was ready: {last}"
                    ))
                }
            }
        };
        let pid = vmm.0.id();
        let vmm_rss_kib =
            procs::rss_excluding_guest_kib(pid, GUEST_MIB).ok_or("cannot read hull-vmm's smaps")?;
        let pss_kib = procs::pss_kib(pid).unwrap_or(0);
        Ok(BootSample {
            ready_ms,
            vmm_rss_kib,
            pss_kib,
        })
    }
}

/// "hull-vmm: info: boot-timer: guest ready 93.125 ms after VMM start" -> 93.125.
fn boot_timer_ms(line: &str) -> Option<f64> {
    let rest = &line[line.find("boot-timer: guest ready ")? + "boot-timer: guest ready ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

fn file(path: &Path) -> Result<std::fs::File, String> {
    std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The last non-empty line of a log, for an error message.
fn tail(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "(no output)".into())
}

fn wait_for_socket(path: &Path, child: &mut Child, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("hull-vhost-user exited ({st}): {}", tail(log)));
        }
        if Instant::now() > deadline {
            return Err(format!("{} never appeared", path.display()));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn boot_timer_line() {
        let l = "hull-vmm: info: boot-timer: guest ready 93.125 ms after VMM start";
        assert_eq!(super::boot_timer_ms(l), Some(93.125));
        assert_eq!(super::boot_timer_ms("hull-vmm: info: other"), None);
    }
}
