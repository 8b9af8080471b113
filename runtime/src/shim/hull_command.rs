//! Running the `hull` binary the way containerd's runc shim runs runc: global flags
//! first (`--root`, `--log <bundle>/log.json --log-format json`, `--sandbox`), then
//! the command. A failure's reason is the last error line hull wrote to the log.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;

use crate::sandbox::SandboxKind;
use crate::shim::reaper::reaper;

/// The file hull logs to inside the bundle, as runc's shim names it.
pub const LOG_FILE: &str = "log.json";

#[derive(Debug, Clone)]
pub struct Hull {
    pub binary: PathBuf,
    pub root: PathBuf,
    /// `--sandbox`; `None` leaves the choice to the config's `io.hull.sandbox`.
    pub sandbox: Option<SandboxKind>,
}

/// The stdio a hull command gets; `None` is /dev/null (stdin) or a pipe we read.
#[derive(Default)]
pub struct CommandIo {
    pub stdin: Option<File>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
}

#[derive(Debug, thiserror::Error)]
#[error("hull {command}: {reason}")]
pub struct HullError {
    pub command: String,
    pub reason: String,
}

/// `hull` next to our own executable (both are built into one directory), else the
/// one on PATH.
pub fn find_hull_binary() -> PathBuf {
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        let candidate = dir.join("hull");
        if candidate.is_file() {
            return candidate;
        }
    }
    PathBuf::from("hull")
}

impl Hull {
    /// Runs `hull <globals> <args>` with the bundle's log; returns its stdout.
    pub fn run(&self, bundle: &Path, args: &[&str], io: CommandIo) -> Result<String, HullError> {
        let log = bundle.join(LOG_FILE);
        let log_start = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let fail = |reason: String| HullError {
            command: args.first().copied().unwrap_or_default().to_string(),
            reason,
        };
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&log)
            .args(["--log-format", "json"]);
        if let Some(kind) = self.sandbox {
            cmd.arg("--sandbox").arg(kind.to_string());
        }
        cmd.args(args).current_dir(bundle);
        cmd.stdin(io.stdin.map_or_else(Stdio::null, Stdio::from))
            .stdout(io.stdout.map_or_else(Stdio::piped, Stdio::from))
            .stderr(io.stderr.map_or_else(Stdio::piped, Stdio::from));
        let mut child = reaper().spawn(&mut cmd).map_err(|e| {
            fail(format!(
                "cannot run {}: {e} (is hull installed next to the shim or on PATH?)",
                self.binary.display()
            ))
        })?;
        let err_reader = child.stderr.take().map(|mut e| {
            thread::spawn(move || {
                let mut s = String::new();
                let _ = e.read_to_string(&mut s);
                s
            })
        });
        let mut out = String::new();
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        let stderr = err_reader.and_then(|t| t.join().ok()).unwrap_or_default();
        let code = reaper().wait_for(child.id() as i32);
        if code == 0 {
            return Ok(out);
        }
        let reason = last_logged_error(&log, log_start)
            .or_else(|| {
                let s = stderr.trim();
                (!s.is_empty()).then(|| s.trim_start_matches("hull: ").to_string())
            })
            .unwrap_or_else(|| format!("exited with status {code}"));
        Err(fail(reason))
    }
}

/// The `msg` of the last `"level":"error"` line written to `log` after `from`.
pub fn last_logged_error(log: &Path, from: u64) -> Option<String> {
    let mut f = File::open(log).ok()?;
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut text = String::new();
    f.read_to_string(&mut text).ok()?;
    text.lines().rev().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        (v["level"] == "error").then(|| v["msg"].as_str().map(str::to_string))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_is_the_last_error_after_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(LOG_FILE);
        let old = "{\"level\":\"error\",\"msg\":\"old\"}\n";
        std::fs::write(
            &log,
            format!(
                "{old}{{\"level\":\"error\",\"msg\":\"first\"}}\n\
                 {{\"level\":\"error\",\"msg\":\"second\"}}\n{{\"level\":\"info\",\"msg\":\"x\"}}\n"
            ),
        )
        .unwrap();
        assert_eq!(
            last_logged_error(&log, old.len() as u64).as_deref(),
            Some("second")
        );
        let all = std::fs::metadata(&log).unwrap().len();
        assert_eq!(last_logged_error(&log, all), None);
    }
}
