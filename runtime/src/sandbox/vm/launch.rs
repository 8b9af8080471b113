//! The hypervisor command lines: the same guest (kernel, initramfs, command line,
//! vsock, shared directory) on hull-vmm or on QEMU microvm.

use std::os::fd::RawFd;
use std::path::Path;
use std::process::Command;

use hull_protocol::guest::{CLOCK_ARG, HOSTNAME_ARG, SHARE_ARG};

use super::assets::GuestAssets;
use super::hypervisor::{self, Hypervisor};
use super::layout::{Layout, GUEST_CID};
use super::shared_fs::SHARE_TAG;
use super::sizing::VmSize;
use crate::error::{Error, Result};

/// The CPU model QEMU emulates without KVM: the baseline x86-64 one, the cheapest to
/// emulate.
const TCG_CPU: &str = "qemu64";

/// TCG reuses code it translated from a guest page until a vCPU writes to that page;
/// the vhost-user backends' writes (virtio-fs filling the page cache) bypass it, so a
/// recycled page would run the code it held before. Zeroing each page as it is
/// allocated is such a vCPU write.
const TCG_GUEST_ARG: &str = "init_on_alloc=1";

/// Everything both hypervisors are given.
pub struct GuestSpec<'a> {
    pub assets: &'a GuestAssets,
    pub size: VmSize,
    pub hostname: &'a str,
    pub layout: &'a Layout,
    pub debug: bool,
    /// virtio-net NICs: a tap fd (inherited by the hypervisor) and the guest MAC.
    pub nics: &'a [(RawFd, String)],
}

/// The kernel command line for `hv`.
pub fn cmdline(g: &GuestSpec, hv: Hypervisor) -> String {
    // Without ACPI a power-off only halts: the agent resets the guest, which each
    // hypervisor turns into its exit (hull-vmm through the i8042, QEMU -no-reboot
    // through a triple fault).
    let reboot = match hv {
        Hypervisor::HullVmm => "reboot=k",
        Hypervisor::Qemu => "reboot=t",
    };
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut parts = vec![
        "console=ttyS0".to_string(),
        reboot.into(),
        "panic=-1".into(),
        "pci=off".into(),
        format!("{SHARE_ARG}={SHARE_TAG}"),
        format!("{CLOCK_ARG}={clock}"),
    ];
    if is_plain_word(g.hostname) {
        parts.push(format!("{HOSTNAME_ARG}={}", g.hostname));
    }
    if !g.debug {
        // The serial console is slow under emulation; keep boot messages off it.
        parts.push("quiet".into());
    }
    parts.join(" ")
}

fn is_plain_word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

/// The command that runs the guest on `hv`.
pub fn command(g: &GuestSpec, hv: Hypervisor) -> Result<Command> {
    match hv {
        Hypervisor::HullVmm => hull_vmm(g),
        Hypervisor::Qemu => qemu(g),
    }
}

fn hull_vmm(g: &GuestSpec) -> Result<Command> {
    let bin = hypervisor::hull_vmm_binary()
        .ok_or_else(|| Error::Sandbox("hull-vmm binary not found".into()))?;
    let mut c = Command::new(bin);
    c.arg("--kernel")
        .arg(&g.assets.kernel)
        .arg("--initrd")
        .arg(&g.assets.initramfs)
        .args(["--cmdline", &cmdline(g, Hypervisor::HullVmm)])
        .args(["--memory", &g.size.memory_mib.to_string()])
        .args(["--vcpus", &g.size.vcpus.to_string()])
        .arg("--console")
        .arg(format!("file:{}", g.layout.console_log.display()))
        .arg("--vsock")
        .arg(format!("uds={},cid={GUEST_CID}", g.layout.vsock.display()))
        .arg("--fs")
        .arg(format!("tag={SHARE_TAG},dir={}", g.layout.shared.display()));
    Ok(c)
}

fn qemu(g: &GuestSpec) -> Result<Command> {
    let bin = hypervisor::qemu_binary()
        .ok_or_else(|| Error::Sandbox("qemu-system-x86_64 not found".into()))?;
    let hw = hull_vmm::kvm::hardware_kvm_usable().is_ok();
    let mem = format!("{}M", g.size.memory_mib);
    let mut append = cmdline(g, Hypervisor::Qemu);
    if !hw {
        append.push(' ');
        append.push_str(TCG_GUEST_ARG);
    }
    let mut c = Command::new(bin);
    c.args(["-name", "hull"])
        .args(["-accel", if hw { "kvm" } else { "tcg" }])
        .args(["-cpu", if hw { "host" } else { TCG_CPU }])
        .args(["-M", "microvm,acpi=off,memory-backend=mem"])
        .args(["-m", &mem, "-smp", &g.size.vcpus.to_string()])
        // Guest RAM in a memfd the vhost-user backends can map.
        .args([
            "-object",
            &format!("memory-backend-memfd,id=mem,size={mem},share=on"),
        ])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", g.layout.console_log.display()))
        .arg("-kernel")
        .arg(&g.assets.kernel)
        .arg("-initrd")
        .arg(&g.assets.initramfs)
        .args(["-append", &append])
        .arg("-chardev")
        .arg(chardev("vsock", &g.layout.vsock_backend))
        .args(["-device", "vhost-user-vsock-device,chardev=vsock"])
        .arg("-chardev")
        .arg(chardev("fs", &g.layout.fs_backend))
        .args([
            "-device",
            &format!("vhost-user-fs-device,chardev=fs,tag={SHARE_TAG},queue-size=1024"),
        ]);
    for (n, (fd, mac)) in g.nics.iter().enumerate() {
        c.args(["-netdev", &format!("tap,id=net{n},fd={fd}")])
            .args([
                "-device",
                &format!("virtio-net-device,netdev=net{n},mac={mac}"),
            ]);
    }
    Ok(c)
}

fn chardev(id: &str, path: &Path) -> String {
    format!("socket,id={id},path={}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_carries_share_clock_and_hostname() {
        let assets = GuestAssets {
            kernel: "/k".into(),
            initramfs: "/i".into(),
        };
        let layout = Layout::new(Path::new("/run/hull/c1"));
        let g = GuestSpec {
            assets: &assets,
            size: VmSize {
                vcpus: 1,
                memory_mib: 256,
            },
            hostname: "web-1",
            layout: &layout,
            debug: false,
            nics: &[],
        };
        let q = cmdline(&g, Hypervisor::Qemu);
        assert!(
            q.contains("reboot=t") && q.contains("hull.share=hullshared"),
            "{q}"
        );
        assert!(
            q.contains("hull.hostname=web-1") && q.contains("quiet"),
            "{q}"
        );
        assert!(cmdline(&g, Hypervisor::HullVmm).contains("reboot=k"));
        let g = GuestSpec {
            hostname: "bad name",
            ..g
        };
        assert!(!cmdline(&g, Hypervisor::Qemu).contains("hull.hostname"));
    }
}
