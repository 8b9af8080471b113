//! Finding and running hull's binaries from tests outside their package.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The directory holding `hull` and `containerd-shim-hull-v2`: `$HULL_BIN`'s
/// directory, else built (once per test process) by the cargo that runs the tests,
/// into the same target directory and profile, so they are never stale under
/// `cargo test --workspace`.
pub fn hull_bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(p) = std::env::var_os("HULL_BIN") {
            let p = PathBuf::from(p);
            return p.parent().expect("$HULL_BIN has a directory").to_path_buf();
        }
        // <target>/<profile>/deps/<test exe>
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
        let profile = profile_dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let mut cmd = Command::new(option_env!("CARGO").unwrap_or("cargo"));
        cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .args(["build", "--quiet", "-p", "hull-runtime"])
            .args(["--bin", "hull", "--bin", "containerd-shim-hull-v2"])
            .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap())
            .stdin(Stdio::null());
        match profile.as_str() {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            p => {
                cmd.args(["--profile", p]);
            }
        }
        let st = cmd
            .status()
            .expect("running cargo build for hull's binaries");
        assert!(st.success(), "cargo build -p hull-runtime failed: {st}");
        for bin in ["hull", "containerd-shim-hull-v2"] {
            assert!(
                profile_dir.join(bin).is_file(),
                "{bin} missing in {} after the build",
                profile_dir.display()
            );
        }
        profile_dir.to_path_buf()
    })
}

/// The `hull` binary (`$HULL_BIN`, else built as [`hull_bin_dir`] says).
pub fn hull_bin() -> PathBuf {
    match std::env::var_os("HULL_BIN") {
        Some(p) => PathBuf::from(p),
        None => hull_bin_dir().join("hull"),
    }
}

/// Runs `cmd` with `stdin` as its input (else /dev/null) and returns what it did.
/// Output goes through files, not pipes: a detached container or a supervisor that
/// inherits them would keep pipes open after the command exits. A command still
/// running after `timeout` is killed and fails the test instead of hanging the suite.
pub fn run_bounded(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let (o, e) = (dir.path().join("out"), dir.path().join("err"));
    cmd.stdout(File::create(&o).unwrap())
        .stderr(File::create(&e).unwrap())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().expect("spawn hull");
    if let Some(input) = stdin {
        let mut s = child.stdin.take().unwrap();
        s.write_all(input).unwrap();
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{:?} {:?} did not finish within {timeout:?}; stderr: {}",
                cmd.get_program(),
                cmd.get_args().collect::<Vec<_>>(),
                String::from_utf8_lossy(&fs::read(&e).unwrap_or_default())
            );
        }
        sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: fs::read(&o).unwrap(),
        stderr: fs::read(&e).unwrap(),
    }
}
