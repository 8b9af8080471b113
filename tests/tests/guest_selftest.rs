//! The guest on its own: hull's kernel boots under QEMU TCG (which works on every host,
//! PVM included), and the agent's self-test passes as PID 1.
//!
//! The kernel and initramfs are the installed assets (`make guest`; `make test` builds
//! them first). A missing asset fails the test with the command that builds it.

use hull_protocol::guest::{SELFTEST_ARG, SELFTEST_PASS};
use hull_tests::guest::{
    busybox_initramfs, hull_vmm_binary, require_initramfs, require_kernel, run_console,
    selftest_verdict, BootOutput,
};
use hull_tests::qemu::QemuBoot;
use std::process::{Command, Stdio};
use std::time::Duration;

/// TCG on two loaded cores is slow; a healthy boot takes a few seconds.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// Guest uptime printed by printk for the line that starts `/init`.
fn init_started_at(console: &str) -> Option<f64> {
    let line = console
        .lines()
        .find(|l| l.contains("Run /init as init process"))?;
    let stamp = line.split_once('[')?.1.split_once(']')?.0;
    stamp.trim().parse().ok()
}

#[test]
fn kernel_boots_busybox_init_and_sees_command_line_virtio_devices() {
    let kernel = require_kernel();
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initramfs.img");
    // The guest lists the virtio-mmio devices QEMU described on the command line
    // (acpi=off) and resets itself; -no-reboot turns the reset into QEMU's exit.
    busybox_initramfs(
        r#"/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "hull-test-init: uptime $(cut -d' ' -f1 /proc/uptime)"
for d in /sys/bus/virtio/devices/*; do echo "hull-test-init: virtio $(cat $d/device)"; done
echo "hull-test-init: cmdline $(cat /proc/cmdline)"
reboot -f
"#,
        &initrd,
    )
    .unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let out = QemuBoot::new(&kernel, &initrd)
        .timeout(BOOT_TIMEOUT)
        .args(["-device", "virtio-rng-device"])
        .args([
            "-drive".to_string(),
            format!("file={},if=none,format=raw,id=d0", disk.display()),
            "-device".to_string(),
            "virtio-blk-device,drive=d0".to_string(),
        ])
        .run_until(Some("hull-test-init: uptime"))
        .expect("run qemu");
    assert!(
        !out.timed_out,
        "guest did not reset within {BOOT_TIMEOUT:?}:\n{}",
        out.tail(40)
    );
    assert_eq!(out.exit_code, Some(0), "qemu failed:\n{}", out.tail(40));
    let uptime: Vec<_> = out.lines_starting_with("hull-test-init: uptime").collect();
    assert_eq!(uptime.len(), 1, "init did not run:\n{}", out.tail(40));

    // virtio device ids: 2 = block, 4 = entropy.
    let ids: Vec<_> = out
        .lines_starting_with("hull-test-init: virtio ")
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
        .collect();
    assert!(
        ids.contains(&"0x0002".to_string()) && ids.contains(&"0x0004".to_string()),
        "virtio-mmio devices from the command line not found (got {ids:?}):\n{}",
        out.tail(40)
    );
    let cmdline = out
        .lines_starting_with("hull-test-init: cmdline")
        .next()
        .unwrap_or_default();
    assert!(cmdline.contains("virtio_mmio.device="), "{cmdline}");

    eprintln!(
        "boot: /init started at {:?} s guest uptime, init saw uptime {}, \
         init output {:?} after spawning qemu, qemu exited after {:?}",
        init_started_at(&out.console),
        uptime[0].rsplit(' ').next().unwrap(),
        out.marker_after.unwrap_or_default(),
        out.elapsed
    );
}

/// What the agent relies on, checked without the agent: every namespace type, the
/// file systems, seccomp filters, the netfilter tables, vsock, and the cgroup v2
/// controllers including a frozen child cgroup.
const FEATURE_SCRIPT: &str = r#"/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
miss() { echo "hull-test-init: missing $*"; }
for ns in cgroup ipc mnt net pid time user uts; do
  [ -e /proc/self/ns/$ns ] || miss namespace $ns
done
unshare -m -u -i -n -p -U -f true || miss unshare
for fs in ext4 erofs overlay tmpfs devtmpfs fuse virtiofs mqueue devpts cgroup2; do
  grep -qw $fs /proc/filesystems || miss filesystem $fs
done
grep -q '^Seccomp_filters:' /proc/self/status || miss seccomp filters
for f in ip_tables_names ip6_tables_names unix tcp6; do
  [ -e /proc/net/$f ] || miss /proc/net/$f
done
[ -e /proc/sysvipc/msg ] || miss sysvipc
dmesg | grep -q PF_VSOCK || miss vsock
mount -t cgroup2 none /sys/fs/cgroup || miss cgroup2 mount
for c in cpuset cpu io memory pids; do
  grep -qw $c /sys/fs/cgroup/cgroup.controllers || miss cgroup controller $c
done
echo "+cpuset +cpu +io +memory +pids" > /sys/fs/cgroup/cgroup.subtree_control || miss subtree_control
mkdir /sys/fs/cgroup/t
for f in cpu.max cpu.weight memory.max pids.max io.max cpuset.cpus cgroup.freeze; do
  [ -e /sys/fs/cgroup/t/$f ] || miss cgroup file $f
done
echo 1 > /sys/fs/cgroup/t/cgroup.freeze
grep -q 'frozen 1' /sys/fs/cgroup/t/cgroup.events || miss cgroup freezing
echo "hull-test-init: features checked"
reboot -f
"#;

#[test]
fn kernel_has_what_the_agent_needs() {
    let kernel = require_kernel();
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initramfs.img");
    busybox_initramfs(FEATURE_SCRIPT, &initrd).unwrap();
    let out = QemuBoot::new(&kernel, &initrd)
        .timeout(BOOT_TIMEOUT)
        .run()
        .expect("run qemu");
    assert!(
        out.lines_starting_with("hull-test-init: features checked")
            .next()
            .is_some(),
        "the check script did not finish:\n{}",
        out.tail(40)
    );
    let missing: Vec<_> = out
        .lines_starting_with("hull-test-init: missing ")
        .collect();
    assert!(missing.is_empty(), "kernel lacks features: {missing:#?}");
    assert!(
        !out.timed_out && out.exit_code == Some(0),
        "{}",
        out.tail(20)
    );
}

/// Fails the test unless the console holds exactly one PASS line and the VMM ended
/// by itself (the agent powers the guest off after the result).
fn assert_selftest_passed(vmm: &str, out: &BootOutput) {
    if let Err(why) = selftest_verdict(&out.console) {
        panic!(
            "{vmm}: {why}{}\n--- console (last 60 lines) ---\n{}",
            if out.timed_out {
                " (and the guest was killed at the timeout)"
            } else {
                ""
            },
            out.tail(60)
        );
    }
    assert!(
        !out.timed_out,
        "{vmm}: the self-test passed but the guest did not power off:\n{}",
        out.tail(20)
    );
    eprintln!(
        "{vmm}: {SELFTEST_PASS} after {:?} (process exited after {:?}, /init at {:?} s guest uptime)",
        out.marker_after.unwrap_or_default(),
        out.elapsed,
        init_started_at(&out.console)
    );
}

#[test]
fn agent_selftest_passes_under_qemu_tcg() {
    let kernel = require_kernel();
    let initrd = require_initramfs();
    let out = QemuBoot::new(&kernel, &initrd)
        .append(format!("{SELFTEST_ARG}=1"))
        .memory_mib(512)
        .timeout(BOOT_TIMEOUT)
        .run_until(Some(SELFTEST_PASS))
        .expect("run qemu-system-x86_64");
    assert_selftest_passed("qemu (tcg)", &out);
    assert_eq!(out.exit_code, Some(0), "qemu: {}", out.tail(20));
}

#[test]
fn agent_selftest_passes_under_hull_vmm() {
    if let Err(why) = hull_vmm::kvm::hardware_kvm_usable() {
        eprintln!("SKIP agent_selftest_passes_under_hull_vmm: {why}");
        return;
    }
    let kernel = require_kernel();
    let initrd = require_initramfs();
    let vmm = hull_vmm_binary();
    assert!(
        vmm.is_file(),
        "{} is missing: build it with `cargo build -p hull-vmm`",
        vmm.display()
    );
    let mut cmd = Command::new(&vmm);
    cmd.arg("--kernel")
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd)
        .args(["--memory", "512", "--console", "stdio", "--cmdline"])
        .arg(format!("console=ttyS0 reboot=k panic=-1 {SELFTEST_ARG}=1"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = run_console(cmd, Duration::from_secs(60), Some(SELFTEST_PASS)).expect("run hull-vmm");
    assert_selftest_passed("hull-vmm", &out);
    assert_eq!(out.exit_code, Some(0), "hull-vmm: {}", out.tail(20));
}
