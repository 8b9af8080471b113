//! The VM's place in the host's cgroups: the supervisor (and with it the hypervisor
//! and device threads it starts) joins the container's `cgroupsPath` in every
//! hierarchy, so host accounting sees what the container costs. Limits stay with the
//! guest kernel, which enforces them on the workload itself.

use std::fs;
use std::path::{Path, PathBuf};

use hull_agent::cgroups;

use crate::error::{Error, Result};
use crate::state;

/// Creates `cgroups_path` in every hierarchy and moves this process into it; records
/// in `record` the directories it created, for [`remove`].
pub fn join(cgroups_path: &Path, record: &Path) -> Result<()> {
    let created = cgroups::missing_dirs(cgroups_path);
    // Recorded first: whatever happens next, cleanup knows what to remove.
    state::write_json_atomic(record, &created)?;
    let mut by_depth = created.clone();
    by_depth.sort_by_key(|d| d.components().count());
    for d in &by_depth {
        fs::create_dir(d).map_err(Error::io(format!("creating cgroup {}", d.display())))?;
        inherit_cpuset(d);
    }
    let pid = std::process::id().to_string();
    for dir in cgroups::paths(cgroups_path) {
        if let Err(e) = fs::write(dir.join("cgroup.procs"), &pid) {
            // A hierarchy that refuses (a named or foreign one) costs accounting there
            // only; the VM still runs.
            log::warn!("joining cgroup {}: {e}", dir.display());
        }
    }
    Ok(())
}

/// A new cgroup v1 cpuset starts empty and takes no tasks until given CPUs and nodes.
fn inherit_cpuset(dir: &Path) {
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let own = dir.join(f);
        let empty = fs::read_to_string(&own)
            .map(|s| s.trim().is_empty())
            .unwrap_or(false);
        if !empty {
            continue;
        }
        if let Some(parent) = dir.parent() {
            if let Ok(v) = fs::read_to_string(parent.join(f)) {
                let _ = fs::write(&own, v.trim());
            }
        }
    }
}

/// Removes the directories [`join`] created, once the processes in them are gone.
pub fn remove(record: &Path) {
    if let Ok(dirs) = state::read_json::<Vec<PathBuf>>(record) {
        cgroups::remove_dirs(&dirs);
    }
}
