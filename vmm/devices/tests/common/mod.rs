//! What the QEMU tests share: finding QEMU, the guest kernel and a static busybox, a
//! busybox initramfs whose /init is a test's script, and one guest run against a
//! `hull-vhost-user` backend.

#![allow(dead_code)]

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The guest's whole run (boot, checks, reboot) under TCG.
pub const GUEST_TIMEOUT_S: u64 = 120;

/// Kills a child process when the test ends, however it ends.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn find_qemu() -> Result<PathBuf, String> {
    if let Some(q) = std::env::var_os("HULL_QEMU") {
        let q = PathBuf::from(q);
        return if q.is_file() {
            Ok(q)
        } else {
            Err(format!("HULL_QEMU={} does not exist", q.display()))
        };
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("qemu-system-x86_64"))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| "qemu-system-x86_64 not found (set HULL_QEMU)".into())
}

pub fn find_busybox() -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = match std::env::var_os("HULL_BUSYBOX") {
        Some(b) => vec![b.into()],
        None => vec!["/usr/bin/busybox".into(), "/bin/busybox".into()],
    };
    for c in candidates {
        let Ok(bytes) = fs::read(&c) else { continue };
        // A dynamic binary carries a PT_INTERP path; the initramfs has no loader.
        if bytes.windows(16).any(|w| w == b"/lib64/ld-linux-") {
            return Err(format!("{} is not static", c.display()));
        }
        return Ok(c);
    }
    Err("no static busybox (install busybox-static or set HULL_BUSYBOX)".into())
}

pub fn build_initramfs(busybox: &Path, init: &str, out: &Path) {
    let bb = fs::read(busybox).unwrap();
    let f = fs::File::create(out).unwrap();
    let mut w = hull_guest_image::cpio::Writer::new(std::io::BufWriter::new(f));
    for d in ["bin", "dev", "etc", "mnt", "proc", "sys", "tmp"] {
        w.dir(d, 0o755).unwrap();
    }
    w.char_device("dev/console", 0o600, 5, 1).unwrap();
    w.file("bin/busybox", 0o755, &bb).unwrap();
    w.symlink("bin/sh", "busybox").unwrap();
    w.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0::/:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n",
    )
    .unwrap();
    w.file("etc/group", 0o644, b"root:x:0:\nuser:x:1000:\n")
        .unwrap();
    w.file("init", 0o755, init.as_bytes()).unwrap();
    w.finish().unwrap();
}

pub fn wait_for(path: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("backend exited early: {st}");
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// What a guest run needs from the host, or why it cannot run here.
pub struct Assets {
    pub qemu: PathBuf,
    pub vmlinux: PathBuf,
    pub busybox: PathBuf,
}

pub fn assets() -> Result<Assets, String> {
    let qemu = find_qemu()?;
    let dir = std::env::var_os("HULL_ASSETS").unwrap_or_else(|| "/var/lib/hull".into());
    let vmlinux = Path::new(&dir).join("vmlinux");
    if !vmlinux.is_file() {
        return Err(format!(
            "no guest kernel at {} (build it with guest-kernel-config/build.sh)",
            vmlinux.display()
        ));
    }
    // scripts/setup.sh installs busybox-static: its absence is a broken setup, not a skip.
    let busybox = find_busybox().unwrap_or_else(|why| panic!("{why}"));
    Ok(Assets {
        qemu,
        vmlinux,
        busybox,
    })
}

/// Boots a guest whose /init is `init` with one device served by
/// `hull-vhost-user <backend_args> --socket <sock>` and attached to QEMU as
/// `-device <device>,chardev=dev`; waits for it to power off and returns what it said
/// (`HULL: ...` lines) and the whole console.
pub fn run_guest(
    a: &Assets,
    init: &str,
    backend_args: &[OsString],
    device: &str,
) -> (Vec<String>, String) {
    let work = tempfile::tempdir().unwrap();
    let initrd = work.path().join("initramfs.cpio");
    build_initramfs(&a.busybox, init, &initrd);
    let vhost_sock = work.path().join("dev.sock");
    let mut backend = Command::new(env!("CARGO_BIN_EXE_hull-vhost-user"))
        .args(backend_args)
        .arg("--socket")
        .arg(&vhost_sock)
        .spawn()
        .expect("start hull-vhost-user");
    wait_for(&vhost_sock, &mut backend);
    let _backend = Reaped(backend);

    let console = work.path().join("console.log");
    let t0 = Instant::now();
    let qemu = Command::new(&a.qemu)
        .args(["-accel", "tcg", "-M", "microvm,acpi=off,memory-backend=mem"])
        .args(["-m", "256M", "-smp", "1", "-cpu", "max"])
        .args(["-object", "memory-backend-memfd,id=mem,size=256M,share=on"])
        .arg("-chardev")
        .arg(format!("socket,id=dev,path={}", vhost_sock.display()))
        .arg("-device")
        .arg(format!("{device},chardev=dev"))
        .arg("-kernel")
        .arg(&a.vmlinux)
        .arg("-initrd")
        .arg(&initrd)
        // init_on_alloc: TCG drops code translated from a page only when a vCPU writes
        // it, never when the backend does; zeroing pages on allocation is such a write.
        .args(["-append", "console=ttyS0 reboot=t panic=-1 init_on_alloc=1"])
        .args(["-no-reboot", "-nographic"])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&console).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start qemu");
    let mut qemu = Reaped(qemu);
    // Lossy: what a guest prints from a disk need not be UTF-8.
    let console_log =
        || String::from_utf8_lossy(&fs::read(&console).unwrap_or_default()).into_owned();
    let deadline = t0 + Duration::from_secs(GUEST_TIMEOUT_S);
    loop {
        if let Some(st) = qemu.0.try_wait().unwrap() {
            assert!(st.success(), "qemu: {st}\n{}", console_log());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "guest did not finish in {GUEST_TIMEOUT_S} s:\n{}",
            console_log()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let log = console_log();
    let said: Vec<String> = log
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("HULL: "))
        .map(str::to_string)
        .collect();
    println!("guest ran for {:?}; it said: {said:#?}", t0.elapsed());
    (said, log)
}
