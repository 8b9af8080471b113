//! attach_vm with a real guest: QEMU (`-M microvm`, TCG) gets the tap fd as its
//! virtio-net backend (`-netdev tap,fd=N`), the guest configures the NIC from
//! `VmNic::guest` with busybox `ip`, then pings and talks TCP to the veth's peer.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hull_protocol::NetInterface;

use super::tests::{id, skip, veth_pair, MAC};
use super::*;

const BUSYBOX: &str = "/usr/bin/busybox";

/// The guest kernel and QEMU, or why this test cannot run here.
fn guest_assets() -> std::result::Result<(PathBuf, PathBuf), String> {
    let dir = std::env::var_os("HULL_ASSETS").unwrap_or_else(|| "/var/lib/hull".into());
    let kernel = Path::new(&dir).join("vmlinux");
    if !kernel.is_file() {
        return Err(format!(
            "{} is missing (make guest-kernel)",
            kernel.display()
        ));
    }
    let qemu = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("qemu-system-x86_64"))
                .find(|p| p.is_file())
        })
        .ok_or("qemu-system-x86_64 is not installed")?;
    for (what, path) in [("busybox-static", BUSYBOX), ("cpio", "/usr/bin/cpio")] {
        if !Path::new(path).exists() {
            return Err(format!("{path} is missing (install {what})"));
        }
    }
    Ok((kernel, qemu))
}

/// The guest's /init: configure the NIC whose MAC is `nic.mac` as `nic` says, then
/// ping the peer and ask its TCP server once.
fn guest_script(nic: &NetInterface, peer: &str) -> String {
    let mut s = format!(
        "#!/bin/busybox sh\n/bin/busybox --install -s /bin\n\
         mount -t proc proc /proc\nmount -t sysfs sys /sys\n\
         for d in /sys/class/net/*; do [ \"$(cat $d/address)\" = {mac} ] && dev=${{d##*/}}; done\n\
         echo \"guest-nic $dev\"\n\
         ip link set $dev mtu {mtu} up\n",
        mac = nic.mac,
        mtu = nic.mtu
    );
    for a in &nic.addresses {
        s += &format!("ip addr add {a} dev $dev\n");
    }
    for r in &nic.routes {
        let dest = if r.dest == "::/0" { "default" } else { &r.dest };
        let family = if r.dest.contains(':') { "-6 " } else { "" };
        let via = r
            .gateway
            .as_ref()
            .map(|g| format!(" via {g}"))
            .unwrap_or_default();
        s += &format!("ip {family}route add {dest}{via} dev $dev\n");
    }
    s += &format!(
        "echo \"guest-mtu $(cat /sys/class/net/$dev/mtu)\"\n\
         ping -c 1 -W 20 {peer} >/dev/null && echo GUEST-PING-OK\n\
         for i in $(seq 50); do out=$(echo from-guest | nc {peer} 7002) && [ -n \"$out\" ] && break; sleep 0.2; done\n\
         echo \"guest-got $out\"\n\
         reboot -f\n"
    );
    s
}

/// A newc initramfs with busybox, /dev/console and `init`.
fn initramfs(dir: &Path, init: &str) -> PathBuf {
    let root = dir.join("root");
    for d in ["bin", "dev", "proc", "sys", "tmp"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    fs::write(root.join("init"), init).unwrap();
    fs::set_permissions(
        root.join("init"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let console = root.join("dev/console");
    nix::sys::stat::mknod(
        &console,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(5, 1),
    )
    .unwrap();
    let img = dir.join("initramfs.img");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && find . | cpio -o -H newc --quiet > {}",
            root.display(),
            img.display()
        ))
        .status()
        .unwrap();
    assert!(st.success(), "cpio: {st}");
    img
}

#[test]
fn a_guest_nic_on_the_tap_reaches_the_peer_namespace() {
    if skip() {
        return;
    }
    let (kernel, qemu) = match guest_assets() {
        Ok(a) => a,
        Err(why) => {
            eprintln!("skipping: {why}");
            return;
        }
    };
    let (ctr, peer) = veth_pair();
    peer.ip(&["addr", "add", "10.201.0.1/24", "dev", "p0"]);
    let mut server = Command::new("ip")
        .args(["netns", "exec", &peer.0, BUSYBOX, "nc", "-l", "-p", "7002"])
        .args(["-e", "sh", "-c", "read l; echo peer:$l"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    let id = id();
    let nics = attach_vm(&ctr.path(), &id).unwrap();
    assert_eq!(nics.len(), 1);
    let nic = &nics[0];
    let dir = tempfile::tempdir().unwrap();
    let initrd = initramfs(dir.path(), &guest_script(&nic.guest, "10.201.0.1"));
    let tap_fd = nic.tap.as_raw_fd();
    let mut cmd = Command::new(qemu);
    cmd.args([
        "-accel",
        "tcg",
        "-M",
        "microvm,acpi=off",
        "-m",
        "256M",
        "-smp",
        "1",
    ])
    .args([
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-serial",
        "stdio",
    ])
    .arg("-no-reboot")
    .arg("-kernel")
    .arg(&kernel)
    .arg("-initrd")
    .arg(&initrd)
    .args(["-append", "console=ttyS0 reboot=t panic=-1 quiet"])
    .args(["-netdev", "tap,id=n0,fd=3"])
    .args(["-device", &format!("virtio-net-device,netdev=n0,mac={MAC}")])
    .stdin(Stdio::null())
    .stdout(fs::File::create(dir.path().join("console")).unwrap())
    .stderr(Stdio::inherit());
    // SAFETY: dup2 and fcntl are async-signal-safe; they only touch the child's fds.
    unsafe {
        cmd.pre_exec(move || {
            if tap_fd == 3 {
                let fl = libc::fcntl(3, libc::F_GETFD);
                libc::fcntl(3, libc::F_SETFD, fl & !libc::FD_CLOEXEC);
            } else if libc::dup2(tap_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut vm = cmd.spawn().unwrap();
    // Only a guard against a hung guest; the guest reboots (QEMU exits) when done.
    let deadline = Instant::now() + Duration::from_secs(180);
    while vm.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = vm.kill();
            let _ = vm.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = server.kill();
    let _ = server.wait();
    let console = fs::read_to_string(dir.path().join("console")).unwrap_or_default();
    let tail: Vec<&str> = console.lines().rev().take(30).collect();
    let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
    assert!(console.contains("guest-mtu 1400"), "{tail}");
    assert!(console.contains("GUEST-PING-OK"), "{tail}");
    assert!(console.contains("guest-got peer:from-guest"), "{tail}");

    drop(nics);
    detach_vm(&ctr.path(), &id).unwrap();
    assert_eq!(ctr.links(), ["eth0", "lo"]);
}
