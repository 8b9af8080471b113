//! iproute2's `ip` and `tc`, run in the calling thread's network namespace, with their
//! JSON output parsed.

use std::process::{Command, Stdio};

use serde_json::Value;

/// Runs `prog args`; its stdout, or an error with the command line and its stderr.
pub(crate) fn run(prog: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {prog} (iproute2): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{prog} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("{prog} {}: {e}", args.join(" ")))
}

/// Runs `prog -j args` and parses its JSON array (empty output is an empty array).
pub(crate) fn json(prog: &str, args: &[&str]) -> Result<Vec<Value>, String> {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    let out = run(prog, &all)?;
    if out.trim().is_empty() {
        return Ok(Vec::new());
    }
    match serde_json::from_str(&out) {
        Ok(Value::Array(v)) => Ok(v),
        Ok(other) => Err(format!(
            "{prog} {}: not a JSON array: {other}",
            all.join(" ")
        )),
        Err(e) => Err(format!("{prog} {}: {e}", all.join(" "))),
    }
}
