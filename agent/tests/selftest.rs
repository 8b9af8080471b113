//! The guest self-test's parts, run on this host.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use hull_agent::selftest;

#[test]
fn every_namespace_type_can_be_created() {
    if !can_run() {
        return;
    }
    selftest::check_namespaces().unwrap();
}

#[test]
fn missing_cgroup_controllers_are_named() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("cgroup.controllers"), "cpu pids\n").unwrap();
    let e = selftest::check_cgroup_controllers(d.path()).unwrap_err();
    assert!(
        e.contains("memory") && e.contains("io") && e.contains("cpuset"),
        "{e}"
    );
    std::fs::write(
        d.path().join("cgroup.controllers"),
        "cpuset cpu io memory hugetlb pids rdma misc\n",
    )
    .unwrap();
    selftest::check_cgroup_controllers(d.path()).unwrap();
}

/// The payload container with the real agent binary; on the host it is dynamically
/// linked, so the host's /usr (and the /lib links) are bound in read-only.
#[test]
fn payload_container_runs_the_agent_binary() {
    if !can_run() {
        return;
    }
    let (e, _state) = engine();
    let work = tempfile::tempdir().unwrap();
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_hull-agent"));
    let adjust = |rootfs: &Path, spec: &mut oci_spec::runtime::Spec| {
        let mut binds = vec![PathBuf::from("/usr")];
        for l in ["lib", "lib64", "lib32"] {
            let host = Path::new("/").join(l);
            match std::fs::read_link(&host) {
                Ok(target) => std::os::unix::fs::symlink(target, rootfs.join(l)).unwrap(),
                Err(_) if host.is_dir() => binds.push(host),
                Err(_) => {}
            }
        }
        selftest::add_ro_binds(spec, &binds);
    };
    selftest::run_payload_container(&e, &exe, work.path(), &adjust).unwrap();
}
