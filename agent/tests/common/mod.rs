//! Shared helpers: a busybox rootfs, specs, and an engine per test.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use hull_agent::engine::{Engine, EngineConfig, StreamEndpoint};
use hull_protocol::{CreateContainer, StdioMode, StreamKind};
use oci_spec::runtime::Spec;

pub const BUSYBOX: &str = "/usr/bin/busybox";

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "hostname", "sleep", "ls", "head", "dd", "yes", "true", "false", "kill",
    "id", "env", "wc", "grep", "seq", "tr", "readlink", "stat", "touch", "mkdir", "ps", "mount",
    "nproc", "printf", "test", "[", "rm", "uname", "tail", "stty", "tty",
];

/// Skips the test (returns None) where it cannot run: not root, or no busybox.
pub fn can_run() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return false;
    }
    if !Path::new(BUSYBOX).exists() {
        eprintln!("skipped: {BUSYBOX} missing (scripts/setup.sh installs busybox-static)");
        return false;
    }
    true
}

/// A bundle dir with `rootfs/` holding busybox and its applet links.
pub struct Bundle {
    pub dir: tempfile::TempDir,
}

impl Bundle {
    pub fn new() -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("hull-bundle")
            .tempdir()
            .unwrap();
        let root = dir.path().join("rootfs");
        for d in ["bin", "proc", "sys", "dev", "etc", "tmp", "root"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
        }
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
        Bundle { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }
}

static N: AtomicUsize = AtomicUsize::new(0);

/// A unique container id (cgroups are global to the host).
pub fn uid(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// The default runc-like spec running `args`, in a nested cgroup so that parent
/// removal is exercised.
pub fn spec(id: &str, args: &[&str]) -> Spec {
    let mut s = Spec::default();
    let mut p = s.process().clone().unwrap();
    p.set_args(Some(args.iter().map(|a| a.to_string()).collect()));
    s.set_process(Some(p));
    let mut l = s.linux().clone().unwrap();
    l.set_cgroups_path(Some(PathBuf::from(format!(
        "/hull-test-{}/{id}",
        std::process::id()
    ))));
    s.set_linux(Some(l));
    s
}

pub fn engine() -> (Engine, tempfile::TempDir) {
    let d = tempfile::Builder::new()
        .prefix("hull-state")
        .tempdir()
        .unwrap();
    let e = Engine::new(EngineConfig {
        state_root: d.path().to_path_buf(),
        ..Default::default()
    })
    .unwrap();
    (e, d)
}

pub fn create_req(id: &str, bundle: &Bundle, spec: Spec, stdio: StdioMode) -> CreateContainer {
    CreateContainer {
        id: id.into(),
        bundle: bundle.path().to_string_lossy().into(),
        rootfs: None,
        spec,
        stdio,
        no_pivot: false,
        preserve_fds: 0,
    }
}

/// Reads an output stream of a process to EOF.
pub fn read_stream(e: &Engine, id: &str, exec_id: Option<&str>, kind: StreamKind) -> Vec<u8> {
    let a = e.attach(id, exec_id, kind).unwrap();
    let StreamEndpoint::Output(mut f) = a.endpoint else {
        panic!("not an output stream")
    };
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    v
}

/// Runs `args` in a fresh container with Streams stdio; returns (status, out, err).
pub fn run(
    e: &Engine,
    bundle: &Bundle,
    id: &str,
    spec: Spec,
) -> (hull_protocol::ExitStatus, String, String) {
    e.create(create_req(id, bundle, spec, StdioMode::Streams))
        .unwrap();
    e.close_stdin(id, None).unwrap();
    e.start(id).unwrap();
    let ee = e.clone();
    let idc = id.to_string();
    let t = std::thread::spawn(move || read_stream(&ee, &idc, None, StreamKind::Stderr));
    let out = read_stream(e, id, None, StreamKind::Stdout);
    let err = t.join().unwrap();
    let st = e.wait(id, None).unwrap();
    e.delete(id, false).unwrap();
    (
        st,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}
