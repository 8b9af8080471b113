//! Guest PID 1 duties: the mounts a container host needs, loopback, hostname and clock
//! from the kernel command line, the vsock listener, and power-off.
//!
//! Nothing here may end the process: a dying PID 1 panics the guest kernel. Every
//! failure is logged and the agent carries on (or, for power-off, waits forever).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hull_protocol::guest::{
    AGENT_VSOCK_PORT, BOOT_TIMER_MAGIC, BOOT_TIMER_PORT, CLOCK_ARG, GUEST_SHARED_DIR, HOSTNAME_ARG,
    SELFTEST_ARG, SHARE_ARG,
};
use nix::mount::{mount, MsFlags};
use nix::sys::socket::{bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType};

use crate::engine::{Engine, EngineConfig};
use crate::server::{Server, ServerOptions};

/// Where the guest agent keeps container state (tmpfs).
pub const GUEST_STATE_ROOT: &str = "/run/hull-agent";

/// Controllers the guest enables for containers (cgroup v2).
pub const CGROUP_CONTROLLERS: [&str; 5] = ["cpu", "memory", "pids", "io", "cpuset"];

pub fn is_pid1() -> bool {
    nix::unistd::getpid().as_raw() == 1
}

/// PID 1's whole life: set up, then self-test or serve. Never returns.
pub fn main() -> ! {
    setup();
    let args = kernel_args();
    if args.get(SELFTEST_ARG).map(String::as_str) == Some("1") {
        crate::selftest::run_and_report();
        power_off();
    }
    let engine = loop {
        match Engine::new(EngineConfig {
            state_root: GUEST_STATE_ROOT.into(),
            ..Default::default()
        }) {
            Ok(e) => break e,
            Err(e) => {
                log::error!("engine: {e}; retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    };
    let server = Server::new(
        engine,
        ServerOptions {
            on_shutdown: Some(Arc::new(shutdown_hook)),
            shutdown_when_empty: true,
        },
    );
    let listener = loop {
        match listen_vsock(AGENT_VSOCK_PORT) {
            Ok(l) => break l,
            Err(e) => {
                log::error!("vsock port {AGENT_VSOCK_PORT}: {e}; retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    };
    boot_timer();
    log::info!("hull-agent listening on vsock port {AGENT_VSOCK_PORT}");
    server.serve(&listener)
}

/// Mounts, stdio, cgroup controllers, loopback, hostname, clock; each step best effort.
pub fn setup() {
    leave_initramfs();
    mount_all();
    fix_stdio();
    crate::reaper::global();
    enable_controllers(Path::new("/sys/fs/cgroup"));
    if let Err(e) = loopback_up() {
        log::warn!("bringing up lo: {e}");
    }
    let args = kernel_args();
    if let Some(h) = args.get(HOSTNAME_ARG) {
        if let Err(e) = nix::unistd::sethostname(h) {
            log::warn!("hostname {h:?}: {e}");
        }
    }
    if let Some(tag) = args.get(SHARE_ARG) {
        mount_share(tag);
    }
    if let Some(c) = args.get(CLOCK_ARG) {
        match c.parse::<i64>() {
            Ok(secs) => {
                let ts = nix::sys::time::TimeSpec::new(secs, 0);
                if let Err(e) = nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts) {
                    log::warn!("setting the clock to {secs}: {e}");
                }
            }
            Err(_) => log::warn!("{CLOCK_ARG}={c:?} is not a number of seconds"),
        }
    }
}

/// pivot_root(2) refuses to run when the caller's root is the initial rootfs (no
/// parent mount), so no container could start from an initramfs. Moving a bind mount
/// of the rootfs over / and chrooting into it gives the root a parent, with no copy.
fn leave_initramfs() {
    use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};
    // linux/magic.h; not in libc or nix.
    const RAMFS_MAGIC: FsType = FsType(0x858458f6);
    let Ok(st) = statfs("/") else {
        return;
    };
    if st.filesystem_type() != RAMFS_MAGIC && st.filesystem_type() != TMPFS_MAGIC {
        return;
    }
    let step = || -> nix::Result<()> {
        let new = "/.hull-root";
        let _ = std::fs::create_dir(new);
        mount(
            Some("/"),
            new,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )?;
        nix::unistd::chdir(new)?;
        mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)?;
        nix::unistd::chroot(".")?;
        nix::unistd::chdir("/")
    };
    if let Err(e) = step() {
        log::warn!("moving off the initramfs root: {e} (containers need no_pivot)");
    }
}

fn mount_all() {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let table: [(&str, &str, &str, MsFlags, Option<&str>); 7] = [
        ("proc", "/proc", "proc", nosuid_nodev_noexec, None),
        ("sysfs", "/sys", "sysfs", nosuid_nodev_noexec, None),
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        ),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ),
        (
            "shm",
            "/dev/shm",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
        (
            "run",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
        (
            "cgroup2",
            "/sys/fs/cgroup",
            "cgroup2",
            nosuid_nodev_noexec,
            None,
        ),
    ];
    for (src, target, fstype, flags, data) in table {
        let _ = std::fs::create_dir_all(target);
        match mount(Some(src), target, Some(fstype), flags, data) {
            Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
            Err(e) => log::warn!("mounting {fstype} on {target}: {e}"),
        }
    }
    // Userspace expects /dev/ptmx to be the devpts instance's.
    if !Path::new("/dev/ptmx").exists() {
        let _ = std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx");
    }
}

/// The host's container files (rootfs, volumes) arrive over virtio-fs.
fn mount_share(tag: &str) {
    let _ = std::fs::create_dir_all(GUEST_SHARED_DIR);
    if let Err(e) = mount(
        Some(tag),
        GUEST_SHARED_DIR,
        Some("virtiofs"),
        MsFlags::MS_NODEV,
        None::<&str>,
    ) {
        log::error!("mounting virtio-fs {tag:?} on {GUEST_SHARED_DIR}: {e}");
    }
}

/// The kernel gives init no stdio when the initramfs lacks /dev/console; anything we
/// open first would become fd 1. Point missing 0/1/2 at the console.
fn fix_stdio() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries the descriptor.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
            continue;
        }
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/console")
            .or_else(|_| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
            });
        if let Ok(f) = f {
            let f = OwnedFd::from(f);
            if f.as_raw_fd() != fd {
                // SAFETY: dup2 onto a free descriptor number; `f` is closed after.
                unsafe { libc::dup2(f.as_raw_fd(), fd) };
            } else {
                std::mem::forget(f);
            }
        }
    }
}

/// Makes the controllers available to child cgroups of `root`.
pub fn enable_controllers(root: &Path) {
    let Ok(avail) = std::fs::read_to_string(root.join("cgroup.controllers")) else {
        return;
    };
    let want: Vec<String> = avail.split_whitespace().map(|c| format!("+{c}")).collect();
    // One at a time: a controller the kernel refuses must not block the others.
    for w in want {
        let _ = std::fs::write(root.join("cgroup.subtree_control"), &w);
    }
}

fn loopback_up() -> std::io::Result<()> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `key=value` arguments of the kernel command line (flags without '=' map to "").
pub fn kernel_args() -> HashMap<String, String> {
    parse_cmdline(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default())
}

pub fn parse_cmdline(s: &str) -> HashMap<String, String> {
    s.split_whitespace()
        .map(|a| match a.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (a.to_string(), String::new()),
        })
        .collect()
}

/// A listening AF_VSOCK stream socket on `port` for any CID.
pub fn listen_vsock(port: u32) -> nix::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(
        fd.as_raw_fd(),
        &nix::sys::socket::VsockAddr::new(libc::VMADDR_CID_ANY, port),
    )?;
    listen(&fd, Backlog::new(128).unwrap_or(Backlog::MAXCONN))?;
    Ok(fd)
}

/// Tells the VMM that the agent is ready (it timestamps this port write). Without
/// the port (not a VM, or no permission) nothing happens.
pub fn boot_timer() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: ioperm grants access to exactly this port; the out instruction writes
    // one byte to it and touches no memory.
    unsafe {
        if libc::ioperm(BOOT_TIMER_PORT as libc::c_ulong, 1, 1) == 0 {
            std::arch::asm!("out dx, al", in("dx") BOOT_TIMER_PORT, in("al") BOOT_TIMER_MAGIC,
                options(nomem, nostack, preserves_flags));
        }
    }
}

fn shutdown_hook() {
    // Give the answer a moment to leave through virtio-vsock before the reset.
    std::thread::sleep(Duration::from_millis(20));
    power_off()
}

/// Ends the guest: sync, then reboot(2) (the guest runs with `reboot=t`, the VMM turns
/// the reset into an exit). Never returns.
pub fn power_off() -> ! {
    nix::unistd::sync();
    let Err(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    log::error!("reboot: {e}");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_command_line_is_parsed() {
        let a = parse_cmdline("console=ttyS0 reboot=t hull.selftest=1 quiet hull.clock=17\n");
        assert_eq!(a.get("hull.selftest").map(String::as_str), Some("1"));
        assert_eq!(a.get("hull.clock").map(String::as_str), Some("17"));
        assert_eq!(a.get("quiet").map(String::as_str), Some(""));
        assert!(!a.contains_key("hull.hostname"));
    }
}
