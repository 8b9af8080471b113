//! The guest self-test (`hull.selftest=1`): can this kernel + agent run containers?
//! It checks every namespace type, the cgroup v2 controllers, and runs one container
//! through the engine, whose payload is a copy of the agent itself (so the initramfs
//! needs no other files). Exactly one line goes to the console: `PASS` or `FAIL <reason>`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use hull_protocol::guest::{SELFTEST_FAIL_PREFIX, SELFTEST_PASS};
use hull_protocol::{AgentError, CreateContainer, ErrorKind, ExitStatus, StdioMode, StreamKind};
use oci_spec::runtime::{LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder, Mount, Spec};

use crate::engine::{Engine, EngineConfig, StreamEndpoint};
use crate::init::CGROUP_CONTROLLERS;

/// `argv[1]` that makes the agent binary act as the self-test's container payload.
pub const PAYLOAD_ARG: &str = "--hull-selftest-payload";
/// The payload's exit code.
pub const PAYLOAD_EXIT: i32 = 42;
/// Hostname the payload container gets.
pub const PAYLOAD_HOSTNAME: &str = "hull-selftest";

/// What the payload prints: proves it ran as PID 1 of its own pid namespace with
/// the spec's hostname.
pub fn expected_payload_output() -> String {
    format!("hull-selftest-payload pid=1 hostname={PAYLOAD_HOSTNAME}\n")
}

/// The payload's main: prints its pid and hostname, returns the exit code.
pub fn payload() -> i32 {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let line = format!(
        "hull-selftest-payload pid={} hostname={host}\n",
        nix::unistd::getpid()
    );
    let _ = std::io::stdout().write_all(line.as_bytes());
    let _ = std::io::stdout().flush();
    PAYLOAD_EXIT
}

const NAMESPACES: [(&str, libc::c_int); 8] = [
    ("mnt", libc::CLONE_NEWNS),
    ("pid", libc::CLONE_NEWPID),
    ("uts", libc::CLONE_NEWUTS),
    ("ipc", libc::CLONE_NEWIPC),
    ("net", libc::CLONE_NEWNET),
    ("user", libc::CLONE_NEWUSER),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("time", libc::CLONE_NEWTIME),
];

/// Unshares each namespace type in a forked child.
pub fn check_namespaces() -> Result<(), String> {
    for (name, flag) in NAMESPACES {
        crate::helper::run::<(), _>("namespace check", &[], move || {
            // SAFETY: unshare in a single-threaded child that exits right after.
            if unsafe { libc::unshare(flag) } != 0 {
                return Err(AgentError::new(
                    ErrorKind::Unsupported,
                    std::io::Error::last_os_error().to_string(),
                ));
            }
            Ok(())
        })
        .map_err(|e| format!("{name} namespace: {}", e.message))?;
    }
    Ok(())
}

/// The cgroup v2 controllers containers need are available at `root`.
pub fn check_cgroup_controllers(root: &Path) -> Result<(), String> {
    let avail = std::fs::read_to_string(root.join("cgroup.controllers"))
        .map_err(|e| format!("{}/cgroup.controllers: {e}", root.display()))?;
    let have: Vec<&str> = avail.split_whitespace().collect();
    let missing: Vec<&str> = CGROUP_CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !have.contains(c))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "cgroup v2 controllers missing: {}",
            missing.join(" ")
        ))
    }
}

/// Builds a rootfs holding only `exe` under `work`, runs it as the payload in a
/// container with limits, and checks its output and exit code. `adjust` may change
/// the rootfs and spec (host tests bind the shared libraries of a dynamic `exe`).
pub fn run_payload_container(
    engine: &Engine,
    exe: &Path,
    work: &Path,
    adjust: &dyn Fn(&Path, &mut Spec),
) -> Result<(), String> {
    let rootfs = work.join("rootfs");
    for d in ["proc", "dev", "sys", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d)).map_err(|e| format!("rootfs: {e}"))?;
    }
    std::fs::copy(exe, rootfs.join("hull-agent"))
        .map_err(|e| format!("copying {} into the rootfs: {e}", exe.display()))?;
    let id = format!("hull-selftest-{}", std::process::id());
    let mut spec = payload_spec(&id).map_err(|e| format!("spec: {e}"))?;
    adjust(&rootfs, &mut spec);
    let req = CreateContainer {
        id: id.clone(),
        bundle: work.to_string_lossy().into_owned(),
        rootfs: Some(rootfs.to_string_lossy().into_owned()),
        spec,
        stdio: StdioMode::Streams,
        no_pivot: false,
        preserve_fds: 0,
    };
    let res = run_one(engine, &id, req);
    if engine.state(&id).is_ok() {
        if let Err(e) = engine.delete(&id, true) {
            return Err(res.err().unwrap_or_else(|| format!("delete: {e}")));
        }
    }
    res
}

fn run_one(engine: &Engine, id: &str, req: CreateContainer) -> Result<(), String> {
    engine.create(req).map_err(|e| format!("create: {e}"))?;
    let mut out = Vec::new();
    let stdout = engine
        .attach(id, None, StreamKind::Stdout)
        .map_err(|e| format!("attach: {e}"))?;
    engine.close_stdin(id, None).map_err(|e| e.to_string())?;
    engine.start(id).map_err(|e| format!("start: {e}"))?;
    if let StreamEndpoint::Output(mut f) = stdout.endpoint {
        f.read_to_end(&mut out)
            .map_err(|e| format!("reading stdout: {e}"))?;
    }
    let status = engine.wait(id, None).map_err(|e| e.to_string())?;
    let out = String::from_utf8_lossy(&out);
    if out != expected_payload_output() {
        return Err(format!("payload printed {out:?}"));
    }
    if status != ExitStatus::Code(PAYLOAD_EXIT) {
        return Err(format!(
            "payload ended with {status:?}, not code {PAYLOAD_EXIT}"
        ));
    }
    Ok(())
}

fn payload_spec(id: &str) -> Result<Spec, oci_spec::OciSpecError> {
    let mut spec = Spec::default();
    spec.set_hostname(Some(PAYLOAD_HOSTNAME.into()));
    let mut p = spec.process().clone().unwrap_or_default();
    p.set_args(Some(vec!["/hull-agent".into(), PAYLOAD_ARG.into()]));
    spec.set_process(Some(p));
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_cgroups_path(Some(PathBuf::from(format!("/hull-selftest/{id}"))));
    let mut res = linux.resources().clone().unwrap_or_default();
    let limits = LinuxResourcesBuilder::default()
        .memory(LinuxMemoryBuilder::default().limit(128 << 20).build()?)
        .pids(LinuxPidsBuilder::default().limit(64).build()?)
        .build()?;
    res.set_memory(*limits.memory());
    res.set_pids(*limits.pids());
    linux.set_resources(Some(res));
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// Adds read-only bind mounts of host paths (host tests only).
pub fn add_ro_binds(spec: &mut Spec, paths: &[PathBuf]) {
    let mut mounts: Vec<Mount> = spec.mounts().clone().unwrap_or_default();
    for p in paths {
        let mut m = Mount::default();
        m.set_destination(p.clone());
        m.set_source(Some(p.clone()));
        m.set_typ(Some("bind".into()));
        m.set_options(Some(vec!["rbind".into(), "ro".into()]));
        mounts.push(m);
    }
    spec.set_mounts(Some(mounts));
}

/// All checks, guest style; the error is the reason.
pub fn run_all() -> Result<(), String> {
    check_namespaces()?;
    check_cgroup_controllers(Path::new("/sys/fs/cgroup"))?;
    let engine = Engine::new(EngineConfig {
        state_root: PathBuf::from(crate::init::GUEST_STATE_ROOT),
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    let work = PathBuf::from("/run/hull-selftest");
    let exe = std::fs::read_link("/proc/self/exe").map_err(|e| format!("/proc/self/exe: {e}"))?;
    run_payload_container(&engine, &exe, &work, &|_, _| {})
}

/// The one-line verdict.
pub fn verdict(res: &Result<(), String>) -> String {
    match res {
        Ok(()) => SELFTEST_PASS.to_string(),
        Err(reason) => format!(
            "{SELFTEST_FAIL_PREFIX} {}",
            reason.replace(['\n', '\r'], " ")
        ),
    }
}

/// Runs the self-test and prints the verdict line to the console.
pub fn run_and_report() {
    let line = verdict(&run_all()) + "\n";
    let written = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/console")
        .and_then(|mut c| c.write_all(line.as_bytes()));
    if written.is_err() {
        let _ = std::io::stdout().write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_is_one_line() {
        assert_eq!(verdict(&Ok(())), "hull-selftest: PASS");
        assert_eq!(verdict(&Err("a\nb".into())), "hull-selftest: FAIL a b");
    }
}
