//! Where a container's cgroups live, what creating them added, and their counters.
//!
//! libcgroups creates and limits the cgroups; this module only finds them (v1, v2 or
//! hybrid alike: every mounted cgroup hierarchy is looked at) so that the engine can
//! read counters, list pids and remove the parent directories libcgroups created
//! for a nested `cgroupsPath` but never removes.

use std::fs;
use std::path::{Component, Path, PathBuf};

use hull_protocol::Stats;

/// Mount points of all cgroup (v1) and cgroup2 hierarchies of this mount namespace.
pub fn mount_points() -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in info.lines() {
        // "... mount_point opts - fstype source superopts"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fstype = right.split(' ').next().unwrap_or("");
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        if let Some(mp) = left.split(' ').nth(4) {
            let mp = PathBuf::from(unescape(mp));
            if !out.contains(&mp) {
                out.push(mp);
            }
        }
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(v) = oct.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup path's components below a hierarchy root (absolute and relative paths
/// are both taken from the root, as libcgroups does).
fn relative(cgroup_path: &Path) -> Vec<&std::ffi::OsStr> {
    cgroup_path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect()
}

/// Directories (the cgroup itself and its ancestors, in every hierarchy) that do
/// not exist yet: the ones creating this cgroup will add.
pub fn missing_dirs(cgroup_path: &Path) -> Vec<PathBuf> {
    let parts = relative(cgroup_path);
    let mut out = Vec::new();
    for mp in mount_points() {
        let mut dir = mp.clone();
        for p in &parts {
            dir.push(p);
            if !dir.exists() {
                out.push(dir.clone());
            }
        }
    }
    out
}

/// Removes what [`missing_dirs`] listed, deepest first; non-empty or busy ones (a
/// sibling container still uses the parent) stay.
pub fn remove_dirs(dirs: &[PathBuf]) {
    let mut dirs: Vec<&PathBuf> = dirs.iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        for attempt in 0..20 {
            match fs::remove_dir(d) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 19 => {
                    // Tasks that were just killed leave the cgroup asynchronously.
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(_) => break,
            }
        }
    }
}

/// The container's cgroup directory in every hierarchy, existing or not.
pub fn paths(cgroup_path: &Path) -> Vec<PathBuf> {
    let parts = relative(cgroup_path);
    mount_points()
        .into_iter()
        .map(|mut d| {
            d.extend(&parts);
            d
        })
        .collect()
}

/// The container's cgroup directory in every hierarchy where it exists.
pub fn dirs(cgroup_path: &Path) -> Vec<PathBuf> {
    paths(cgroup_path)
        .into_iter()
        .filter(|d| d.is_dir())
        .collect()
}

/// Every pid in the container's cgroup (all hierarchies, deduplicated).
pub fn pids(cgroup_path: &Path) -> Vec<i32> {
    let mut out: Vec<i32> = Vec::new();
    for d in dirs(cgroup_path) {
        if let Ok(s) = fs::read_to_string(d.join("cgroup.procs")) {
            out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn read_u64(dirs: &[PathBuf], file: &str) -> Option<u64> {
    dirs.iter().find_map(|d| {
        let s = fs::read_to_string(d.join(file)).ok()?;
        s.trim().parse().ok()
    })
}

/// `key value` lines, as in cpu.stat, memory.events, memory.oom_control, cpuacct.stat.
fn read_key(dirs: &[PathBuf], file: &str, key: &str) -> Option<u64> {
    dirs.iter().find_map(|d| {
        let s = fs::read_to_string(d.join(file)).ok()?;
        s.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
    })
}

/// "max" (v2) and the v1 "unlimited" value read as `None`.
fn limit(v: Option<u64>) -> Option<u64> {
    v.filter(|&v| v < (i64::MAX as u64) & !4095)
}

fn read_limit(dirs: &[PathBuf], file: &str) -> Option<u64> {
    dirs.iter().find_map(|d| {
        let s = fs::read_to_string(d.join(file)).ok()?;
        let s = s.trim();
        if s == "max" {
            return Some(u64::MAX);
        }
        s.parse().ok()
    })
}

/// Counters of the container's cgroups, v2 files first, then their v1 equivalents.
pub fn stats(cgroup_path: &Path) -> Stats {
    let d = dirs(cgroup_path);
    // SAFETY: sysconf has no memory effects.
    let hz = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as u64,
        _ => 100,
    };
    let ticks = |v: Option<u64>| v.map(|t| t * 1_000_000 / hz);
    Stats {
        cpu_usage_usec: read_key(&d, "cpu.stat", "usage_usec")
            .or_else(|| read_u64(&d, "cpuacct.usage").map(|ns| ns / 1000)),
        cpu_user_usec: read_key(&d, "cpu.stat", "user_usec")
            .or_else(|| ticks(read_key(&d, "cpuacct.stat", "user"))),
        cpu_system_usec: read_key(&d, "cpu.stat", "system_usec")
            .or_else(|| ticks(read_key(&d, "cpuacct.stat", "system"))),
        memory_current: read_u64(&d, "memory.current")
            .or_else(|| read_u64(&d, "memory.usage_in_bytes")),
        memory_max: limit(
            read_limit(&d, "memory.max").or_else(|| read_limit(&d, "memory.limit_in_bytes")),
        ),
        memory_oom_kills: read_key(&d, "memory.events", "oom_kill")
            .or_else(|| read_key(&d, "memory.oom_control", "oom_kill")),
        pids_current: read_u64(&d, "pids.current"),
        pids_max: limit(read_limit(&d, "pids.max")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_octal() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/end\\"), "/end\\");
    }

    #[test]
    fn relative_ignores_root_and_dots() {
        let r = relative(Path::new("/hull/x/c1"));
        assert_eq!(r, ["hull", "x", "c1"]);
        assert_eq!(relative(Path::new("a/b")), ["a", "b"]);
    }

    #[test]
    fn limits_read_as_none_when_unlimited() {
        assert_eq!(limit(Some(u64::MAX)), None);
        assert_eq!(limit(Some(9223372036854771712)), None);
        assert_eq!(limit(Some(32 << 20)), Some(32 << 20));
    }
}
