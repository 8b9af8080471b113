//! hull under a real containerd (Debian's 1.6), driven with `ctr`, by both routes:
//! its own shim (`--runtime io.containerd.hull.v2`) and containerd's runc.v2 shim
//! running `hull` as its runc (`--runc-binary`). Each case runs in the OS-level
//! sandbox (`--annotation io.hull.sandbox=os`) and in the VM sandbox; the VM variant
//! runs where `hull --sandbox vm run` works here and otherwise says why it skips.
//! Every case ends with `ctr task delete` / `ctr container rm` and checks that
//! nothing is left: no hull state, no process, no cgroup.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use hull_tests::containerd::{self, Containerd, NAMESPACE};
use hull_tests::hull_cli::hull_bin;
use hull_tests::oci_image::IMAGE_NAME;
use hull_tests::sandbox::Sandbox;

#[derive(Clone, Copy, Debug)]
enum Route {
    /// `--runtime io.containerd.hull.v2`
    HullShim,
    /// `--runtime io.containerd.runc.v2 --runc-binary <hull>`
    RuncBinary,
}

/// One case at a time: parallel containerds and TCG guests on a 2-core runner made
/// the OS exec case flaky (see the shim's CloseIO stdin race in the closing note).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Case {
    ctrd: Containerd,
    route: Route,
    sandbox: Sandbox,
    /// Last, so it is released after the containerd has stopped.
    _serial: std::sync::MutexGuard<'static, ()>,
}

/// Why the VM sandbox cannot run here: one real `hull --sandbox vm run` of a tiny
/// busybox container decides, once per test process.
fn vm_unavailable() -> Option<String> {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    WHY.get_or_init(|| {
        let hull = hull_bin();
        let bundle = hull_tests::bundle::Bundle::busybox("vm", &["true"]);
        let root = tempfile::tempdir().unwrap();
        let out = Command::new(&hull)
            .arg("--root")
            .arg(root.path())
            .args(["--sandbox", "vm", "run", "--bundle"])
            .arg(bundle.path())
            .arg("hull-vm-probe")
            .stdin(Stdio::null())
            .output()
            .expect("running hull");
        if out.status.success() {
            return None;
        }
        let _ = Command::new(&hull)
            .arg("--root")
            .arg(root.path())
            .args(["delete", "--force", "hull-vm-probe"])
            .output();
        Some(format!(
            "`hull --sandbox vm run` does not work here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    })
    .clone()
}

impl Case {
    /// A fresh containerd with the image, or None (after saying why) to skip.
    fn new(route: Route, sandbox: Sandbox) -> Option<Case> {
        if let Some(why) = containerd::unavailable() {
            eprintln!("skipping: {why}");
            return None;
        }
        if let Sandbox::Vm = sandbox {
            if let Some(why) = vm_unavailable() {
                eprintln!("skipping the VM-sandbox variant: {why}");
                return None;
            }
        }
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let ctrd = Containerd::start();
        ctrd.import_busybox();
        Some(Case {
            ctrd,
            route,
            sandbox,
            _serial: serial,
        })
    }

    fn id(&self, name: &str) -> String {
        let route = match self.route {
            Route::HullShim => "shim",
            Route::RuncBinary => "runc",
        };
        format!("{name}-{route}-{}", self.sandbox.name())
    }

    fn hull(&self) -> PathBuf {
        hull_bin()
    }

    /// `ctr run` flags choosing the route and the sandbox.
    fn runtime_flags(&self) -> Vec<String> {
        let mut v = match self.route {
            Route::HullShim => vec!["--runtime".to_string(), "io.containerd.hull.v2".into()],
            Route::RuncBinary => vec![
                "--runtime".to_string(),
                "io.containerd.runc.v2".into(),
                "--runc-binary".into(),
                self.hull().display().to_string(),
            ],
        };
        v.push("--annotation".into());
        v.push(format!("io.hull.sandbox={}", self.sandbox.name()));
        v
    }

    /// `ctr run <flags> <route> IMAGE id cmd...`
    fn run_args(&self, flags: &[&str], id: &str, cmd: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec!["run".into()];
        a.extend(flags.iter().map(|s| s.to_string()));
        a.extend(self.runtime_flags());
        a.push(IMAGE_NAME.into());
        a.push(id.into());
        a.extend(cmd.iter().map(|s| s.to_string()));
        a
    }

    fn ctr(&self, args: &[String]) -> containerd::CtrOutput {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ctrd.ctr(&a)
    }

    fn ctr_ok(&self, args: &[&str]) -> String {
        self.ctrd.ctr_ok(args)
    }

    /// Starts a detached container running `cmd` and waits until it runs.
    fn run_detached(&self, id: &str, cmd: &[&str]) {
        let out = self.ctr(&self.run_args(&["-d"], id, cmd));
        assert_eq!(
            out.code,
            0,
            "ctr run -d {id}: {}{}\n{}",
            out.stdout,
            out.stderr,
            self.ctrd.log_tail(40)
        );
        self.ctrd.wait_task_status(id, "RUNNING");
    }

    /// SIGKILL, wait for STOPPED, `ctr task delete`, `ctr container rm`.
    fn kill_and_remove(&self, id: &str) {
        self.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", id]);
        self.ctrd.wait_task_status(id, "STOPPED");
        self.remove(id);
    }

    fn remove(&self, id: &str) {
        self.ctr_ok(&["tasks", "delete", id]);
        self.ctr_ok(&["containers", "rm", id]);
    }

    /// Where the runtime keeps `id`'s state on this route.
    fn state_dir(&self, id: &str) -> PathBuf {
        let base = match self.route {
            Route::HullShim => "/run/containerd/hull",
            Route::RuncBinary => "/run/containerd/runc",
        };
        Path::new(base).join(NAMESPACE).join(id)
    }

    /// Nothing of `id` is left: no task, container, state dir, process or cgroup.
    fn assert_clean(&self, id: &str) {
        assert_eq!(self.ctrd.task_status(id), None, "task {id} still listed");
        assert!(
            !self.ctrd.container_ids().iter().any(|c| c == id),
            "container {id} still listed"
        );
        let state = self.state_dir(id);
        assert!(!state.exists(), "{} was left behind", state.display());
        // The shim (`-id <id>`), hull's supervisor / VMM (`<id>` argument) ...
        let procs: Vec<String> = Containerd::processes_mentioning(&format!(" {id}"))
            .into_iter()
            .filter_map(|p| std::fs::read(format!("/proc/{p}/cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .collect();
        assert!(procs.is_empty(), "processes of {id} left: {procs:?}");
        // ... and the cgroup ctr asked for (/<namespace>/<id>) in every hierarchy.
        for ctl in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let cg = ctl.path().join(NAMESPACE).join(id);
            assert!(!cg.exists(), "cgroup {} was left behind", cg.display());
        }
    }
}

fn output_and_exit_code(route: Route, sandbox: Sandbox) {
    let Some(c) = Case::new(route, sandbox) else {
        return;
    };
    let id = c.id("out");
    let out = c.ctr(&c.run_args(
        &["--rm"],
        &id,
        &["sh", "-c", "echo hello from $0; echo to-stderr >&2; exit 3"],
    ));
    assert_eq!(
        out.code,
        3,
        "exit code; stdout {:?} stderr {:?}\n{}",
        out.stdout,
        out.stderr,
        c.ctrd.log_tail(40)
    );
    assert!(
        out.stdout.contains("hello from sh"),
        "stdout: {:?}",
        out.stdout
    );
    assert!(out.stderr.contains("to-stderr"), "stderr: {:?}", out.stderr);
    c.assert_clean(&id);
}

fn exec_pause_and_pids(route: Route, sandbox: Sandbox) {
    let Some(c) = Case::new(route, sandbox) else {
        return;
    };
    let id = c.id("exec");
    c.run_detached(&id, &["sleep", "1000"]);
    let out = c.ctr(&[
        "tasks".into(),
        "exec".into(),
        "--exec-id".into(),
        "e1".into(),
        id.clone(),
        "sh".into(),
        "-c".into(),
        "echo in-exec; exit 5".into(),
    ]);
    assert_eq!(out.code, 5, "exec: {}{}", out.stdout, out.stderr);
    assert_eq!(out.stdout.trim(), "in-exec");
    // stdin reaches the exec'd process and its end closes it (CloseIO).
    let mut child = c
        .ctrd
        .ctr_command(&["tasks", "exec", "--exec-id", "e2", &id, "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through stdin\n");
    // Pids lists the container's processes.
    let ps = c.ctr_ok(&["tasks", "ps", &id]);
    assert!(ps.lines().count() >= 2, "ctr task ps: {ps:?}");
    c.ctr_ok(&["tasks", "pause", &id]);
    c.ctrd.wait_task_status(&id, "PAUSED");
    c.ctr_ok(&["tasks", "resume", &id]);
    c.ctrd.wait_task_status(&id, "RUNNING");
    c.kill_and_remove(&id);
    c.assert_clean(&id);
}

fn kill_delivers_the_signal(route: Route, sandbox: Sandbox) {
    let Some(c) = Case::new(route, sandbox) else {
        return;
    };
    let id = c.id("kill");
    let args = c.run_args(
        &[],
        &id,
        &[
            "sh",
            "-c",
            "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 1; done",
        ],
    );
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut run = c
        .ctrd
        .ctr_command(&a)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.ctrd.wait_task_status(&id, "RUNNING");
    // Only once the trap is set: the shell is its PID namespace's init, which the
    // kernel shields from signals it has no handler for (a VM guest starts the shell
    // later than RUNNING is reported).
    let mut stdout_pipe = BufReader::new(run.stdout.take().unwrap());
    let mut first = String::new();
    stdout_pipe.read_line(&mut first).unwrap();
    assert_eq!(first.trim(), "ready", "{}", c.ctrd.log_tail(40));
    c.ctr_ok(&["tasks", "kill", &id]);
    let mut rest = Vec::new();
    stdout_pipe.read_to_end(&mut rest).unwrap();
    let out = run.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&rest);
    assert_eq!(
        out.status.code(),
        Some(42),
        "stdout {stdout:?} stderr {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("got-term"), "{stdout:?}");
    // A foreground `ctr run` deletes the task itself once it has exited.
    assert_eq!(c.ctrd.task_status(&id), None);
    c.ctr_ok(&["containers", "rm", &id]);
    c.assert_clean(&id);
}

/// Runs ctr with a pty as its stdio (ctr -t insists on a terminal); returns its
/// exit code and everything it printed.
fn ctr_on_a_pty(c: &Case, args: &[String]) -> (i32, String) {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave: OwnedFd = pty.slave;
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = c.ctrd.ctr_command(&a);
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    let mut master = std::fs::File::from(pty.master);
    let mut text = Vec::new();
    // EIO once ctr (the last holder of the slave) has exited.
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
        }
    }
    let code = child.wait().unwrap().code().unwrap_or(-1);
    let _ = master.as_raw_fd();
    (code, String::from_utf8_lossy(&text).into_owned())
}

fn tty(route: Route, sandbox: Sandbox) {
    let Some(c) = Case::new(route, sandbox) else {
        return;
    };
    let id = c.id("tty");
    let (code, text) = ctr_on_a_pty(
        &c,
        &c.run_args(
            &["--rm", "-t"],
            &id,
            &[
                "sh",
                "-c",
                "tty; [ -t 0 ] && [ -t 1 ] && echo both-ttys; exit 4",
            ],
        ),
    );
    assert_eq!(code, 4, "{text:?}\n{}", c.ctrd.log_tail(40));
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("both-ttys"), "{text:?}");
    c.assert_clean(&id);
}

fn two_containers_at_once(route: Route, sandbox: Sandbox) {
    let Some(c) = Case::new(route, sandbox) else {
        return;
    };
    let (a, b) = (c.id("twoa"), c.id("twob"));
    c.run_detached(&a, &["sleep", "1000"]);
    c.run_detached(&b, &["sleep", "1000"]);
    for id in [&a, &b] {
        let out = c.ctr_ok(&["tasks", "exec", "--exec-id", "e", id, "echo", id]);
        assert_eq!(out.trim(), id.as_str());
    }
    c.kill_and_remove(&a);
    // The other one is untouched.
    assert_eq!(c.ctrd.task_status(&b).as_deref(), Some("RUNNING"));
    c.kill_and_remove(&b);
    c.assert_clean(&a);
    c.assert_clean(&b);
}

macro_rules! cases {
    ($($(#[$attr:meta])* $name:ident: $case:ident($route:ident, $sandbox:ident);)*) => {
        $(
            #[test]
            $(#[$attr])*
            fn $name() {
                $case(Route::$route, Sandbox::$sandbox);
            }
        )*
    };
}

cases! {
    shim_os_output_and_exit_code: output_and_exit_code(HullShim, Os);
    shim_os_exec_pause_and_pids: exec_pause_and_pids(HullShim, Os);
    shim_os_kill: kill_delivers_the_signal(HullShim, Os);
    shim_os_tty: tty(HullShim, Os);
    shim_os_two_containers: two_containers_at_once(HullShim, Os);
    runc_route_os_output_and_exit_code: output_and_exit_code(RuncBinary, Os);
    runc_route_os_exec_pause_and_pids: exec_pause_and_pids(RuncBinary, Os);
    runc_route_os_kill: kill_delivers_the_signal(RuncBinary, Os);
    runc_route_os_tty: tty(RuncBinary, Os);
    runc_route_os_two_containers: two_containers_at_once(RuncBinary, Os);
    shim_vm_output_and_exit_code: output_and_exit_code(HullShim, Vm);
    shim_vm_exec_pause_and_pids: exec_pause_and_pids(HullShim, Vm);
    shim_vm_kill: kill_delivers_the_signal(HullShim, Vm);
    shim_vm_tty: tty(HullShim, Vm);
    shim_vm_two_containers: two_containers_at_once(HullShim, Vm);
    runc_route_vm_output_and_exit_code: output_and_exit_code(RuncBinary, Vm);
    runc_route_vm_exec_pause_and_pids: exec_pause_and_pids(RuncBinary, Vm);
    runc_route_vm_kill: kill_delivers_the_signal(RuncBinary, Vm);
    runc_route_vm_tty: tty(RuncBinary, Vm);
    runc_route_vm_two_containers: two_containers_at_once(RuncBinary, Vm);
}
