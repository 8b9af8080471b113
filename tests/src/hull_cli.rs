//! Finding and running the `hull` binary from tests outside its package.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The `hull` binary: `$HULL_BIN`, else built (once per test process) with the cargo
/// that runs the tests, into the same target directory and profile, so it is never
/// stale under `cargo test --workspace`.
pub fn hull_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("HULL_BIN") {
            return PathBuf::from(p);
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
            .args(["build", "--quiet", "-p", "hull-runtime", "--bin", "hull"])
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
        let st = cmd.status().expect("running cargo build for hull");
        assert!(st.success(), "cargo build -p hull-runtime failed: {st}");
        let bin = profile_dir.join("hull");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
}
