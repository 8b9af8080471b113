//! Finding the programs the bench drives: hull's own binaries next to the bench
//! (same cargo target directory and profile) unless an environment variable names
//! another build, and the peers on the PATH.

use std::path::{Path, PathBuf};

/// `$var`, else `<dir of this executable>/<name>`; an error says how to build it.
pub fn hull_binary(name: &str, var: &str, package: &str) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{var}={} is not a file", p.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let p = exe.parent().unwrap_or(Path::new(".")).join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{} is not built (cargo build --release -p {package}, or set {var})",
            p.display()
        ))
    }
}

/// `name` on the PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// `$var` if set, else `name` on the PATH.
pub fn peer(name: &str, var: &str) -> Option<PathBuf> {
    match std::env::var_os(var).filter(|p| !p.is_empty()) {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => on_path(name),
    }
}
