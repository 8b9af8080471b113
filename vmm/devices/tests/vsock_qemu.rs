//! End to end: a Linux guest under QEMU (`-M microvm`, TCG) talks to the host through
//! hull's vsock device served by `hull-vhost-user vsock`. Many concurrent streams in both
//! directions carry megabytes each, with half-closes, and are checked byte for byte.
//!
//! Needs `qemu-system-x86_64` (or `HULL_QEMU`) and the guest kernel at
//! `${HULL_ASSETS:-/var/lib/hull}/vmlinux`; skips with a reason when either is missing.
//! The guest's /init is tests/guest/vsock_guest.rs, built here with `rustc` for a static
//! target. Sizes: `HULL_VSOCK_TEST_STREAMS` and `HULL_VSOCK_TEST_SIZE` (bytes per stream);
//! `HULL_VHOST_USER` runs another `hull-vhost-user` build.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{find_qemu, wait_for, Reaped};

/// The guest powers off after this long whatever happens; QEMU and the backend exit
/// then, which closes every host socket, so no read in this test can block forever.
const GUEST_TIMEOUT_S: u64 = 300;

/// Same generator as the guest.
fn pattern(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Builds the static guest program; musl first, static glibc as the fallback.
fn build_guest(out: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest/vsock_guest.rs");
    let bin = out.join("vsock_guest");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let attempts: [&[&str]; 2] = [
        &["--target", "x86_64-unknown-linux-musl"],
        &["-C", "target-feature=+crt-static"],
    ];
    let mut errors = String::new();
    for extra in attempts {
        let o = Command::new(&rustc)
            .args([
                "--edition",
                "2021",
                "-O",
                "-C",
                "panic=abort",
                "-C",
                "strip=symbols",
            ])
            .args(extra)
            .arg(&src)
            .arg("-o")
            .arg(&bin)
            .output()
            .expect("run rustc");
        if o.status.success() {
            return bin;
        }
        errors.push_str(&String::from_utf8_lossy(&o.stderr));
    }
    panic!("cannot build the static guest program:\n{errors}");
}

fn build_initramfs(init: &Path, out: &Path) {
    let data = std::fs::read(init).unwrap();
    let f = std::fs::File::create(out).unwrap();
    let mut w = hull_guest_image::cpio::Writer::new(std::io::BufWriter::new(f));
    w.dir("dev", 0o755).unwrap();
    w.char_device("dev/console", 0o600, 5, 1).unwrap();
    w.file("init", 0o755, &data).unwrap();
    w.finish().unwrap();
}

/// Host-initiated stream: `CONNECT 1024`, retried while the guest is still booting.
fn connect_guest(uds: &Path, deadline: Instant) -> UnixStream {
    loop {
        if let Ok(mut s) = UnixStream::connect(uds) {
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            if s.write_all(b"CONNECT 1024\n").is_ok() {
                let mut line = vec![];
                let mut b = [0u8; 1];
                while let Ok(1) = s.read(&mut b) {
                    if b[0] == b'\n' {
                        break;
                    }
                    line.push(b[0]);
                }
                if line.starts_with(b"OK ") {
                    s.set_read_timeout(None).unwrap();
                    return s;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the guest never accepted on port 1024"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Echo through the guest: writer sends `data` and half-closes while the reader collects.
fn echo_stream(s: UnixStream, data: Arc<Vec<u8>>) -> Vec<u8> {
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || {
        w.write_all(b"E").unwrap();
        w.write_all(&data).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = vec![];
    let mut r = s;
    r.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    got
}

/// Host end of a guest-initiated stream: reads the guest's bytes while sending its own.
fn serve_guest_stream(s: UnixStream, size: usize) -> (u32, Vec<u8>) {
    let mut r = s.try_clone().unwrap();
    let mut idx = [0u8; 4];
    r.read_exact(&mut idx).unwrap();
    let index = u32::from_le_bytes(idx);
    let mut w = s;
    let writer = thread::spawn(move || {
        w.write_all(&pattern(1000 + index, size)).unwrap();
        // Closing entirely: the guest reads everything, then EOF.
    });
    let mut got = vec![];
    r.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    (index, got)
}

#[test]
fn vsock_streams_through_qemu_guest() {
    let Ok(qemu) = find_qemu() else {
        println!("SKIP: qemu-system-x86_64 not found on PATH or at $HULL_QEMU");
        return;
    };
    let assets = std::env::var_os("HULL_ASSETS").unwrap_or_else(|| "/var/lib/hull".into());
    let vmlinux = Path::new(&assets).join("vmlinux");
    if !vmlinux.is_file() {
        println!(
            "SKIP: no guest kernel at {} (build it with guest-kernel-config/build.sh)",
            vmlinux.display()
        );
        return;
    }
    let streams = env_usize("HULL_VSOCK_TEST_STREAMS", 4);
    let size = env_usize("HULL_VSOCK_TEST_SIZE", 2 << 20);

    let dir = tempfile::tempdir().unwrap();
    let init = build_guest(dir.path());
    let initrd = dir.path().join("initramfs.cpio");
    build_initramfs(&init, &initrd);

    let vhost_sock = dir.path().join("vhost.sock");
    let uds = dir.path().join("vsock.sock");
    let listener = UnixListener::bind(format!("{}_5000", uds.display())).unwrap();

    // HULL_VHOST_USER picks another build (e.g. release, to measure throughput).
    let backend_bin = std::env::var_os("HULL_VHOST_USER")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_hull-vhost-user").into());
    let mut backend = Command::new(backend_bin)
        .args(["vsock", "--guest-cid", "3", "--socket"])
        .arg(&vhost_sock)
        .arg("--uds-path")
        .arg(&uds)
        .spawn()
        .expect("start hull-vhost-user");
    wait_for(&vhost_sock, &mut backend);
    wait_for(&uds, &mut backend);
    let mut backend = Reaped(backend);

    let console = dir.path().join("console.log");
    let t_boot = Instant::now();
    let qemu = Command::new(&qemu)
        .args(["-accel", "tcg", "-M", "microvm,acpi=off,memory-backend=mem"])
        .args(["-m", "256M", "-smp", "1", "-cpu", "max"])
        .args(["-object", "memory-backend-memfd,id=mem,size=256M,share=on"])
        .arg("-chardev")
        .arg(format!("socket,id=c,path={}", vhost_sock.display()))
        .args(["-device", "vhost-user-vsock-device,chardev=c"])
        .arg("-kernel")
        .arg(&vmlinux)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 reboot=t panic=-1 hull_streams={streams} hull_size={size} \
             hull_timeout={GUEST_TIMEOUT_S}"
        ))
        .args(["-no-reboot", "-nographic"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&console).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start qemu");
    let mut qemu = Reaped(qemu);
    let console_log = || std::fs::read_to_string(&console).unwrap_or_default();

    // Guest-initiated streams: accept them all, each served on its own threads.
    let received = Arc::new(Mutex::new(Vec::new()));
    let acceptor = {
        let received = received.clone();
        thread::spawn(move || {
            let mut handlers = vec![];
            // Polled, so that a guest that never connects fails the test instead of
            // hanging it.
            listener.set_nonblocking(true).unwrap();
            let deadline = Instant::now() + Duration::from_secs(GUEST_TIMEOUT_S);
            while handlers.len() < streams {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        handlers.push(thread::spawn(move || serve_guest_stream(s, size)));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        assert!(Instant::now() < deadline, "guest streams never came");
                        thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
            for h in handlers {
                let r = h.join().unwrap();
                received.lock().unwrap().push(r);
            }
        })
    };

    // Host-initiated echo streams, concurrently with the above.
    let deadline = Instant::now() + Duration::from_secs(120);
    let first = connect_guest(&uds, deadline);
    let t_up = Instant::now();
    println!(
        "guest accepted a host stream {:?} after QEMU start",
        t_up - t_boot
    );
    let mut echoes = vec![];
    for i in 0..streams {
        let s = if i == 0 {
            first.try_clone().unwrap()
        } else {
            connect_guest(&uds, deadline)
        };
        let data = Arc::new(pattern(2000 + i as u32, size));
        echoes.push(thread::spawn(move || (echo_stream(s, data.clone()), data)));
    }
    drop(first);
    for (i, e) in echoes.into_iter().enumerate() {
        let (got, want) = e.join().unwrap();
        assert!(
            got == *want,
            "echo stream {i}: got {} bytes of {}; console:\n{}",
            got.len(),
            want.len(),
            console_log()
        );
    }
    acceptor.join().unwrap();
    let elapsed = t_up.elapsed();
    let mut received = received.lock().unwrap().clone();
    received.sort_by_key(|(i, _)| *i);
    assert_eq!(received.len(), streams);
    for (i, (index, got)) in received.iter().enumerate() {
        assert_eq!(*index as usize, i);
        assert!(
            *got == pattern(*index, size),
            "guest stream {index}: got {} bytes of {size}",
            got.len()
        );
    }

    // The guest's verdict on what it received, then it powers off.
    let mut q = connect_guest(&uds, deadline);
    q.write_all(b"Q").unwrap();
    let mut report = String::new();
    q.read_to_string(&mut report).unwrap();
    drop(q);
    assert!(
        report.starts_with(&format!("guest: {streams} of {streams} streams ok")),
        "guest report:\n{report}\nconsole:\n{}",
        console_log()
    );

    // Bytes moved: echo (both ways), guest-initiated (both ways).
    let total = 4 * streams * size;
    println!(
        "{streams} echo + {streams} guest-initiated streams of {size} bytes: {total} bytes in \
         {elapsed:?} = {:.1} MiB/s aggregate",
        total as f64 / elapsed.as_secs_f64() / (1 << 20) as f64
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = qemu.0.try_wait().unwrap() {
            println!("QEMU exited ({st}) {:?} after start", t_boot.elapsed());
            break;
        }
        assert!(Instant::now() < deadline, "guest did not power off");
        thread::sleep(Duration::from_millis(20));
    }
    // The backend serves one front-end and exits when it disconnects.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = backend.0.try_wait().unwrap() {
            assert!(st.success(), "hull-vhost-user: {st}");
            break;
        }
        assert!(Instant::now() < deadline, "hull-vhost-user did not exit");
        thread::sleep(Duration::from_millis(20));
    }
}
