//! iproute2's `ip` and `tc`, run in the calling thread's network namespace, with their
//! JSON output parsed.

use std::io::Write;
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

/// Runs `prog -batch -` with one command per line on stdin, so many changes cost one
/// process. Fails with the failed line's index (when `prog` says which) and a message
/// naming that command.
pub(crate) fn batch(prog: &str, lines: &[String]) -> Result<(), (Option<usize>, String)> {
    let mut child = Command::new(prog)
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| (None, format!("running {prog} (iproute2): {e}")))?;
    let mut input = lines.join("\n");
    input.push('\n');
    let mut stdin = child.stdin.take().expect("piped stdin");
    let written = stdin.write_all(input.as_bytes());
    drop(stdin);
    let out = child
        .wait_with_output()
        .map_err(|e| (None, format!("{prog} -batch: {e}")))?;
    if out.status.success() {
        return written.map_err(|e| (None, format!("{prog} -batch: {e}")));
    }
    let err = String::from_utf8_lossy(&out.stderr);
    // iproute2 ends with "Command failed -:<line>" (1-based).
    let line = err
        .lines()
        .find_map(|l| l.trim().strip_prefix("Command failed -:"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .and_then(|n| n.checked_sub(1))
        .filter(|&n| n < lines.len());
    let what = match line {
        Some(n) => format!("{prog} {}", lines[n]),
        None => format!("{prog} -batch"),
    };
    let why: Vec<&str> = err
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Command failed"))
        .collect();
    Err((line, format!("{what}: {}", why.join("; "))))
}
