//! A private containerd for the tests: Debian's containerd with its own config,
//! root, state and sockets under a temp dir, hull's binaries (`hull`,
//! `containerd-shim-hull-v2`) first on its PATH, stopped on drop together with the
//! shims it started and anything they left mounted.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::hull_cli::hull_bin_dir;

/// The containerd namespace the tests use.
pub const NAMESPACE: &str = "hull-test";

/// Why containerd tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("containerd needs root".into());
    }
    for bin in ["containerd", "ctr"] {
        if which(bin).is_none() {
            return Some(format!(
                "{bin} is not installed (Debian's containerd; scripts/setup.sh installs it)"
            ));
        }
    }
    crate::oci_image::unavailable()
}

pub fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    })
}

/// What a `ctr` command did.
pub struct CtrOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CtrOutput {
    fn from(out: Output) -> CtrOutput {
        CtrOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

pub struct Containerd {
    dir: tempfile::TempDir,
    daemon: Option<Child>,
    pub address: PathBuf,
}

impl Containerd {
    /// Starts the daemon and waits until it answers (panics with its log if it
    /// does not).
    pub fn start() -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("hull-ctrd-")
            .tempdir()
            .expect("containerd temp dir");
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        let address = dir.path().join("containerd.sock");
        let config = dir.path().join("config.toml");
        // The CRI plugin wants CNI and more; these tests drive containerd with ctr.
        fs::write(
            &config,
            format!(
                r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{address}"

[ttrpc]
  address = "{address}.ttrpc"

[debug]
  level = "debug"
"#,
                root = root.display(),
                state = state.display(),
                address = address.display(),
            ),
        )
        .unwrap();
        let path = format!(
            "{}:{}",
            hull_bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = fs::File::create(dir.path().join("containerd.log")).unwrap();
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        let mut c = Containerd {
            dir,
            daemon: Some(daemon),
            address,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if c.ctr(&["version"]).code == 0 {
                break;
            }
            if let Some(st) = c.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!("containerd exited ({st}):\n{}", c.log_tail(60));
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within a minute:\n{}",
                c.log_tail(60)
            );
            sleep(Duration::from_millis(50));
        }
        c
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `n` lines of the daemon's log (shims log there too).
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `ctr` against this daemon, in the test namespace; a hang is cut off after
    /// five minutes (killed, so the test fails instead of blocking the suite).
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["-s", "KILL", "300", "ctr", "--address"])
            .arg(&self.address)
            .args(["--namespace", NAMESPACE])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    pub fn ctr(&self, args: &[&str]) -> CtrOutput {
        CtrOutput::from(self.ctr_command(args).output().expect("running ctr"))
    }

    /// `ctr`, which must succeed; returns its stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert_eq!(
            out.code,
            0,
            "ctr {args:?} failed ({}):\n{}{}\n--- containerd log:\n{}",
            out.code,
            out.stdout,
            out.stderr,
            self.log_tail(40)
        );
        out.stdout
    }

    /// Builds the busybox image offline and imports it.
    pub fn import_busybox(&self) {
        let archive = self.dir.path().join("busybox-oci.tar");
        crate::oci_image::write_busybox_oci_archive(&archive);
        self.ctr_ok(&["images", "import", archive.to_str().unwrap()]);
        let images = self.ctr_ok(&["images", "ls", "-q"]);
        assert!(
            images.lines().any(|l| l == crate::oci_image::IMAGE_NAME),
            "the imported image is not listed: {images:?}"
        );
    }

    /// The status column of `ctr task ls` for `id` (None: no such task).
    pub fn task_status(&self, id: &str) -> Option<String> {
        let out = self.ctr_ok(&["tasks", "ls"]);
        out.lines().skip(1).find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.first() == Some(&id)).then(|| cols.last().unwrap_or(&"").to_string())
        })
    }

    /// Waits (bounded, failing with the daemon's log) for `id`'s task to reach `want`.
    pub fn wait_task_status(&self, id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let st = self.task_status(id);
            if st.as_deref() == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} is {st:?}, never {want}:\n{}",
                self.log_tail(40)
            );
            sleep(Duration::from_millis(50));
        }
    }

    pub fn container_ids(&self) -> Vec<String> {
        self.ctr_ok(&["containers", "ls", "-q"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Pids of processes whose command line mentions `needle`.
    pub fn processes_mentioning(needle: &str) -> Vec<i32> {
        let mut out = Vec::new();
        let me = std::process::id() as i32;
        for e in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if pid == me {
                continue;
            }
            if let Ok(cmd) = fs::read(e.path().join("cmdline")) {
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                if cmd.contains(needle) {
                    out.push(pid);
                }
            }
        }
        out
    }
}

fn mounts_under(prefix: &Path) -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| Path::new(m).starts_with(prefix))
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.len()));
    v
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(d.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = d.wait();
        }
        // Shims outlive the daemon by design; ours carry our socket's path.
        for pid in Containerd::processes_mentioning(&self.address.display().to_string()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for m in mounts_under(self.dir.path()) {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}
