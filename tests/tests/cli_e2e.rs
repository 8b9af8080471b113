//! End-to-end tests of the `hull` CLI against busybox bundles.
//!
//! Every case takes the sandbox it runs in, so the same cases run over each sandbox
//! (`sandbox_tests!` at the end): `Os` (namespaces + cgroups on the host) and `Vm` (a
//! microVM per container: hull-vmm on hardware KVM, QEMU elsewhere). Cases need root;
//! without it (or without busybox) they print why and pass without running. `Vm` cases
//! fail when QEMU or the guest kernel and image (`make guest`) are missing.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use hull_tests::bundle::{self, Bundle};
use hull_tests::hull_cli::{hull_bin, run_bounded};
use hull_tests::sandbox::Sandbox;
use serde_json::Value;

/// Why the end-to-end cases cannot run here, if they cannot.
fn skip_reason(sb: Sandbox) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (namespaces, cgroups)".into());
    }
    if let Some(why) = bundle::unavailable() {
        return Some(why);
    }
    if sb == Sandbox::Vm {
        hull_tests::guest::require_vm_sandbox();
    }
    None
}

/// Longest any single hull command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A unique name for containers and cgroups of this test run.
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// One `--root` (removed, with any container left in it, on drop).
struct Hull {
    sandbox: Sandbox,
    root: tempfile::TempDir,
    log: PathBuf,
}

impl Hull {
    fn new(sandbox: Sandbox) -> Option<Hull> {
        if let Some(why) = skip_reason(sandbox) {
            eprintln!("skipping ({} sandbox): {why}", sandbox.name());
            return None;
        }
        let root = tempfile::Builder::new()
            .prefix("hull-root-")
            .tempdir()
            .unwrap();
        let log = root.path().join("log.json");
        Some(Hull { sandbox, root, log })
    }

    fn bundle(&self, args: &[&str]) -> Bundle {
        Bundle::busybox(self.sandbox.name(), args)
    }

    fn root(&self) -> &Path {
        self.root.path()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(hull_bin());
        c.arg("--root")
            .arg(self.root())
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json")
            .args(args);
        c
    }

    /// Runs hull with `stdin` as input (see [`run_bounded`]).
    fn run_with(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        run_bounded(self.cmd(args), stdin, COMMAND_TIMEOUT)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, None)
    }

    /// Runs hull, asserts success, returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "hull {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs hull, asserts failure, returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "hull {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
        err
    }

    fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).unwrap()
    }

    fn status(&self, id: &str) -> String {
        self.state(id)["status"].as_str().unwrap().to_string()
    }

    fn wait_status(&self, id: &str, want: &str) {
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let st = self.status(id);
            if st == want {
                return;
            }
            assert!(Instant::now() < deadline, "{id}: still {st}, want {want}");
            sleep(Duration::from_millis(20));
        }
    }

    /// `create` with a pid file; returns the pid in it.
    fn create(&self, id: &str, b: &Bundle) -> i32 {
        let pid_file = self.root().join(format!("{id}.pid"));
        self.ok(&[
            "create",
            "--bundle",
            b.path().to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            id,
        ]);
        fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// A running `sleep` container; returns its supervisor pid.
    fn sleeper(&self, id: &str, b: &mut Bundle) -> i32 {
        b.set_args(&["sleep", "1000"]);
        let pid = self.create(id, b);
        self.ok(&["start", id]);
        assert_eq!(self.status(id), "running");
        pid
    }

    /// Nothing of container `id` remains: no state dir, no process, no cgroup.
    fn assert_gone(&self, id: &str, pids: &[i32], cgroup: Option<&str>) {
        assert!(
            !self.root().join(id).exists(),
            "state dir of {id} left behind"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        for &pid in pids {
            while alive(pid) && Instant::now() < deadline {
                sleep(Duration::from_millis(10));
            }
            assert!(!alive(pid), "process {pid} of {id} left behind");
        }
        if let Some(cg) = cgroup {
            for dir in cgroup_dirs(cg) {
                assert!(!dir.exists(), "cgroup {} left behind", dir.display());
            }
        }
        let err = self.fails(&["state", id]);
        assert!(err.contains("does not exist"), "{err}");
        assert!(
            supervisors_of(self.root()).is_empty(),
            "supervisor processes left: {:?}",
            supervisors_of(self.root())
        );
    }
}

impl Drop for Hull {
    fn drop(&mut self) {
        // After a failed case: remove what is left, and never leave processes behind.
        if let Ok(rd) = fs::read_dir(self.root()) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    let id = e.file_name().to_string_lossy().into_owned();
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        self.run(&["delete", "--force", &id])
                    }));
                }
            }
        }
        for pid in supervisors_of(self.root()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A live, non-zombie process.
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s.rsplit(')').next().unwrap_or("").split_whitespace().next();
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

/// Live host processes of containers under `root`: supervisors and hypervisors
/// (whose command lines name files under it).
fn supervisors_of(root: &Path) -> Vec<i32> {
    let needle = root.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let host_process = ["supervise", "qemu-system", "hull-vmm"]
                .iter()
                .any(|p| cmd.contains(p));
            if cmd.contains(&needle) && host_process && alive(pid) {
                found.push(pid);
            }
        }
    }
    found
}

/// The directories cgroup path `cg` (and its first component) would have in every
/// mounted hierarchy.
fn cgroup_dirs(cg: &str) -> Vec<PathBuf> {
    let rel = cg.trim_start_matches('/');
    let top = rel.split('/').next().unwrap();
    let mut dirs = Vec::new();
    for e in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let base = e.path();
        dirs.push(base.join(rel));
        dirs.push(base.join(top));
    }
    // Pure cgroup v2: the hierarchy is /sys/fs/cgroup itself.
    dirs.push(Path::new("/sys/fs/cgroup").join(top));
    dirs
}

/// Waits for a child, killing it and failing after `COMMAND_TIMEOUT`.
fn wait_child(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child did not exit within {COMMAND_TIMEOUT:?}");
        }
        sleep(Duration::from_millis(5));
    }
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited normally")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---------------------------------------------------------------------------- cases

fn run_exit_codes(sb: Sandbox) {
    let Some(h) = Hull::new(sb) else { return };
    let b = h.bundle(&["true"]);
    let bp = b.path().to_str().unwrap();
    let out = h.run(&["run", "--bundle", bp, &unique("true")]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let b = h.bundle(&["false"]);
    let out = h.run(&[
        "run",
        "--bundle",
        b.path().to_str().unwrap(),
        &unique("false"),
    ]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let b = h.bundle(&["sh", "-c", "exit 42"]);
    let out = h.run(&[
        "run",
        "--bundle",
        b.path().to_str().unwrap(),
        &unique("c42"),
    ]);
    assert_eq!(code(&out), 42, "{}", text(&out.stderr));
    // `run` deletes what it ran.
    assert!(h.ok(&["list", "--quiet"]).is_empty());
    assert!(supervisors_of(h.root()).is_empty());
}

fn run_stdio(sb: Sandbox) {
    let Some(h) = Hull::new(sb) else { return };
    let b = h.bundle(&[
        "sh",
        "-c",
        "read line; echo \"got $line\"; echo oops >&2; exit 3",
    ]);
    let out = h.run_with(
        &[
            "run",
            "--bundle",
            b.path().to_str().unwrap(),
            &unique("stdio"),
        ],
        Some(b"hello\n"),
    );
    assert_eq!(code(&out), 3, "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "got hello\n");
    assert_eq!(text(&out.stderr), "oops\n");
}

fn run_env_cwd_user_hostname(sb: Sandbox) {
    let Some(h) = Hull::new(sb) else { return };
    let mut b = h.bundle(&["sh", "-c", "echo $FOO; pwd; id -u; id -g; hostname"]);
    let p = b.process();
    p["env"].as_array_mut().unwrap().push("FOO=bar baz".into());
    p["cwd"] = "/tmp".into();
    p["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
    b.config["hostname"] = "box-1".into();
    b.save();
    let out = h.run(&[
        "run",
        "--bundle",
        b.path().to_str().unwrap(),
        &unique("env"),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "bar baz\n/tmp\n1000\n1000\nbox-1\n");
}

fn lifecycle_and_signals(sb: Sandbox) {
    let Some(h) = Hull::new(sb) else { return };
    let id = unique("life");
    let cg = format!("/{}/{id}", unique("hull-e2e"));
    let mut b = h.bundle(&["sleep", "1000"]);
    b.set_cgroups_path(&cg);
    let sup = h.create(&id, &b);
    assert!(alive(sup));
    let st = h.state(&id);
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], id.as_str());
    assert_eq!(st["ociVersion"], "1.0.2");
    assert_eq!(
        Path::new(st["bundle"].as_str().unwrap()),
        fs::canonicalize(b.path()).unwrap()
    );
    let init = st["pid"].as_i64().unwrap() as i32;
    assert!(init > 0 && alive(init));

    h.ok(&["start", &id]);
    assert_eq!(h.status(&id), "running");
    let err = h.fails(&["start", &id]);
    assert!(err.contains("running"), "{err}");
    let err = h.fails(&["delete", &id]);
    assert!(
        err.contains("not stopped") && err.contains("running"),
        "{err}"
    );
    let err = h.fails(&["kill", &id, "SIGNOPE"]);
    assert!(err.contains("unknown signal"), "{err}");

    // A signal init has no handler for is ignored by a pid-namespace init...
    h.ok(&["kill", &id, "USR1"]);
    sleep(Duration::from_millis(100));
    assert_eq!(h.status(&id), "running");
    // ...but KILL is not.
    h.ok(&["kill", &id, "9"]);
    h.wait_status(&id, "stopped");
    assert_eq!(h.state(&id)["pid"], 0);
    let err = h.fails(&["kill", &id, "KILL"]);
    assert!(err.contains("stopped"), "{err}");
    let err = h.fails(&["exec", &id, "true"]);
    assert!(err.contains("stopped"), "{err}");
    let err = h.fails(&["start", &id]);
    assert!(err.contains("stopped"), "{err}");
    h.ok(&["delete", &id]);
    h.assert_gone(&id, &[sup, init], Some(&cg));
}

fn run_killed_by_signal(sb: Sandbox) {
    let Some(h) = Hull::new(sb) else { return };
    let id = unique("sig");
    let b = h.bundle(&["sleep", "1000"]);
    let mut run: Child = h
        .cmd(&["run", "--bundle", b.path().to_str().unwrap(), &id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    while h.run(&["state", &id]).stdout.is_empty() || h.status(&id) != "running" {
        assert!(Instant::now() < deadline, "container never ran");
        sleep(Duration::from_millis(20));
    }
    h.ok(&["kill", &id, "KILL"]);
    let st = wait_child(&mut run);
    assert_eq!(st.code(), Some(128 + 9));
    h.assert_gone(&id, &[], None);
}

fn exec_processes(sb: Sandbox) {
    let Some(h) = Hull::new(sb) else { return };
    let id = unique("exec");
    let mut b = h.bundle(&[]);
    h.sleeper(&id, &mut b);

    let out = h.run(&["exec", &id, "echo", "hi", "there"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi there\n");

    let out = h.run(&["exec", &id, "sh", "-c", "echo out; echo err >&2; exit 5"]);
    assert_eq!(code(&out), 5);
    assert_eq!(
        (text(&out.stdout), text(&out.stderr)),
        ("out\n".into(), "err\n".into())
    );

    let out = h.run_with(&["exec", &id, "cat"], Some(b"through stdin\n"));
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "through stdin\n");

    let out = h.run(&[
        "exec",
        "--env",
        "A=1",
        "--cwd",
        "/tmp",
        "--user",
        "1000:1000",
        &id,
        "sh",
        "-c",
        "echo $A $(pwd) $(id -u) $(id -g)",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "1 /tmp 1000 1000\n");

    // Killed by a signal: 128 + signal, as a shell reports it.
    let out = h.run(&["exec", &id, "sh", "-c", "kill -9 $$"]);
    assert_eq!(code(&out), 137);

    // --process: a process.json instead of flags.
    let pj = h.root().join("process.json");
    fs::write(
        &pj,
        r#"{"terminal":false,"user":{"uid":0,"gid":0},"args":["sh","-c","echo from json; exit 4"],"env":["PATH=/bin"],"cwd":"/"}"#,
    )
    .unwrap();
    let out = h.run(&["exec", "--process", pj.to_str().unwrap(), &id]);
    assert_eq!(code(&out), 4, "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "from json\n");

    // --detach: the pid file names a process that exits with the exec's status.
    let pid_file = h.root().join("exec.pid");
    let marker = "/tmp/detached-ran";
    h.ok(&[
        "exec",
        "--detach",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
        "sh",
        "-c",
        &format!("sleep 0.2; touch {marker}"),
    ]);
    let pid: i32 = fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert!(pid > 0);
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    while !b.rootfs().join(marker.trim_start_matches('/')).exists() {
        assert!(Instant::now() < deadline, "detached exec never ran");
        sleep(Duration::from_millis(20));
    }
    h.ok(&["delete", "--force", &id]);
    h.assert_gone(&id, &[], None);
}

fn ps_pause_resume(sb: Sandbox) {
    let Some(h) = Hull::new(sb) else { return };
    let id = unique("ps");
    let mut b = h.bundle(&[]);
    h.sleeper(&id, &mut b);
    let init = h.state(&id)["pid"].as_i64().unwrap();
    let pids: Vec<i64> = serde_json::from_str(&h.ok(&["ps", "--format", "json", &id])).unwrap();
    if sb == Sandbox::Os {
        assert!(pids.contains(&init), "{pids:?} lacks {init}");
    } else {
        // Guest pids: the container's init is pid 1 of its pid namespace, and the
        // host knows the VM supervisor as the container's pid.
        assert!(!pids.is_empty(), "{pids:?}");
    }
    let table = h.ok(&["ps", &id]);
    let mut lines = table.lines();
    assert!(lines.next().unwrap().contains("PID"));
    assert!(table.contains("sleep 1000"), "{table}");

    h.ok(&["pause", &id]);
    assert_eq!(h.status(&id), "paused");
    let err = h.fails(&["pause", &id]);
    assert!(err.contains("paused"), "{err}");
    let err = h.fails(&["exec", &id, "true"]);
    assert!(err.contains("paused"), "{err}");
    h.ok(&["resume", &id]);
    assert_eq!(h.status(&id), "running");
    let err = h.fails(&["resume", &id]);
    assert!(err.contains("running"), "{err}");
    // delete --force also works on a paused container.
    h.ok(&["pause", &id]);
    h.ok(&["delete", "--force", &id]);
    h.assert_gone(&id, &[init as i32], None);
}

fn update_memory_limit(sb: Sandbox) {
    let Some(h) = Hull::new(sb) else { return };
    let id = unique("upd");
    let cg = format!("/{}/{id}", unique("hull-e2e"));
    let mut b = h.bundle(&[]);
    b.set_cgroups_path(&cg);
    h.sleeper(&id, &mut b);
    // The limit as the kernel that enforces it sees it: the host's cgroup file, or the
    // guest's, as the agent reads it from the container's cgroup there.
    let limit = |h: &Hull| -> String {
        if sb == Sandbox::Vm {
            let stats: Value = serde_json::from_str(&h.ok(&["events", "--stats", &id])).unwrap();
            return stats["data"]["memory"]["usage"]["limit"].to_string();
        }
        let host_v1 = Path::new("/sys/fs/cgroup/memory").join(cg.trim_start_matches('/'));
        let host = if host_v1.exists() {
            host_v1.join("memory.limit_in_bytes")
        } else {
            Path::new("/sys/fs/cgroup")
                .join(cg.trim_start_matches('/'))
                .join("memory.max")
        };
        fs::read_to_string(&host).unwrap().trim().to_string()
    };
    h.ok(&["update", "--memory", "64m", &id]);
    assert_eq!(limit(&h), "67108864");
    let res = h.root().join("res.json");
    fs::write(&res, r#"{"memory":{"limit":33554432}}"#).unwrap();
    h.ok(&["update", "--resources", res.to_str().unwrap(), &id]);
    assert_eq!(limit(&h), "33554432");
    let stats: Value = serde_json::from_str(&h.ok(&["events", "--stats", &id])).unwrap();
    assert_eq!(stats["type"], "stats");
    assert_eq!(stats["data"]["memory"]["usage"]["limit"], 33554432);
    h.ok(&["delete", "--force", &id]);
    h.assert_gone(&id, &[], Some(&cg));
}

fn delete_force_running(sb: Sandbox) {
    let Some(h) = Hull::new(sb) else { return };
    let id = unique("force");
    let cg = format!("/{}/{id}", unique("hull-e2e"));
    let mut b = h.bundle(&[]);
    b.set_cgroups_path(&cg);
    let sup = h.sleeper(&id, &mut b);
    let init = h.state(&id)["pid"].as_i64().unwrap() as i32;
    h.ok(&["delete", "--force", &id]);
    h.assert_gone(&id, &[sup, init], Some(&cg));
    // Deleting what does not exist: an error, except with --force.
    let err = h.fails(&["delete", &id]);
    assert!(err.contains("does not exist"), "{err}");
    h.ok(&["delete", "--force", &id]);
}

fn supervisor_killed_from_outside(sb: Sandbox) {
    let Some(h) = Hull::new(sb) else { return };
    let id = unique("crash");
    let cg = format!("/{}/{id}", unique("hull-e2e"));
    let mut b = h.bundle(&[]);
    b.set_cgroups_path(&cg);
    let sup = h.sleeper(&id, &mut b);
    let init = h.state(&id)["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(sup) && Instant::now() < deadline {
        sleep(Duration::from_millis(10));
    }
    assert_eq!(h.status(&id), "stopped");
    // The VM went with its supervisor.
    assert!(
        supervisors_of(h.root()).is_empty(),
        "{:?}",
        supervisors_of(h.root())
    );
    h.ok(&["delete", &id]);
    h.assert_gone(&id, &[sup, init], Some(&cg));
}

fn two_containers_and_list(sb: Sandbox) {
    let Some(h) = Hull::new(sb) else { return };
    let (a, c) = (unique("two-a"), unique("two-b"));
    let (mut ba, mut bc) = (h.bundle(&[]), h.bundle(&[]));
    h.sleeper(&a, &mut ba);
    h.sleeper(&c, &mut bc);
    let mut quiet: Vec<String> = h.ok(&["list", "-q"]).lines().map(String::from).collect();
    quiet.sort();
    let mut want = vec![a.clone(), c.clone()];
    want.sort();
    assert_eq!(quiet, want);
    let list: Vec<Value> = serde_json::from_str(&h.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|s| s["status"] == "running"));
    let table = h.ok(&["list"]);
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(&a) && table.contains(&c));
    // Each sees only itself.
    let out = h.run(&["exec", &a, "hostname"]);
    assert_eq!(text(&out.stdout), "hull-test\n");
    h.ok(&["kill", &a, "KILL"]);
    h.wait_status(&a, "stopped");
    assert_eq!(h.status(&c), "running");
    h.ok(&["delete", &a]);
    h.ok(&["delete", "--force", &c]);
    h.assert_gone(&a, &[], None);
    h.assert_gone(&c, &[], None);
}

fn bad_bundles_leave_nothing(sb: Sandbox) {
    let Some(h) = Hull::new(sb) else { return };
    let check = |b: &Bundle, want: &[&str]| {
        let id = unique("bad");
        let err = h.fails(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
        for w in want {
            assert!(err.contains(w), "{err:?} lacks {w:?}");
        }
        assert!(!h.root().join(&id).exists(), "state dir left for {id}");
        assert!(supervisors_of(h.root()).is_empty());
        // containerd reads the reason from the json log.
        let log = fs::read_to_string(&h.log).unwrap();
        let last: Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
        assert_eq!(last["level"], "error");
        assert!(last["msg"].as_str().unwrap().contains(want[0]), "{last}");
    };
    let b = h.bundle(&["true"]);
    fs::remove_file(b.path().join("config.json")).unwrap();
    check(&b, &["config.json", "no such file"]);

    let b = h.bundle(&["true"]);
    fs::write(b.path().join("config.json"), "{\"ociVersion\": ").unwrap();
    check(&b, &["config.json", "invalid JSON"]);

    let b = h.bundle(&["true"]);
    fs::remove_dir_all(b.rootfs()).unwrap();
    check(&b, &["root.path", "rootfs"]);

    // A bundle that loads but whose process cannot run fails in the sandbox, and is
    // cleaned up all the same.
    let id = unique("noexec");
    let cg = format!("/{}/{id}", unique("hull-e2e"));
    let mut b = h.bundle(&["/no/such/binary"]);
    b.set_cgroups_path(&cg);
    let out = h.run(&["run", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(!out.status.success());
    assert!(!h.root().join(&id).exists(), "state dir left for {id}");
    assert!(supervisors_of(h.root()).is_empty());
    for dir in cgroup_dirs(&cg) {
        assert!(!dir.exists(), "cgroup {} left behind", dir.display());
    }
}

fn failures_late_in_create_leave_nothing(sb: Sandbox) {
    let Some(h) = Hull::new(sb) else { return };
    // The pid file cannot be written: the container was already created, and must go.
    let id = unique("pidfile");
    let cg = format!("/{}/{id}", unique("hull-e2e"));
    let mut b = h.bundle(&["sleep", "1000"]);
    b.set_cgroups_path(&cg);
    let err = h.fails(&[
        "create",
        "--pid-file",
        "/nonexistent-dir/x.pid",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    assert!(err.contains("x.pid"), "{err}");
    assert!(!h.root().join(&id).exists());
    assert!(supervisors_of(h.root()).is_empty());
    for dir in cgroup_dirs(&cg) {
        assert!(!dir.exists(), "cgroup {} left behind", dir.display());
    }
    // The console socket is not there: the agent fails to hand over the pty.
    let id = unique("nosock");
    b.process()["terminal"] = true.into();
    b.save();
    let sock = h.root().join("missing.sock");
    h.fails(&[
        "create",
        "--console-socket",
        sock.to_str().unwrap(),
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    assert!(!h.root().join(&id).exists());
    assert!(supervisors_of(h.root()).is_empty());
    for dir in cgroup_dirs(&cg) {
        assert!(!dir.exists(), "cgroup {} left behind", dir.display());
    }
}

fn concurrent_short_runs(sb: Sandbox) {
    let Some(h) = Hull::new(sb) else { return };
    // Short-lived containers racing each other: each run reports its own status,
    // even when the container (and its supervisor) is gone before `start` returns.
    let b = h.bundle(&["sh", "-c", "exit 9"]);
    let outs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (h, b) = (&h, &b);
                s.spawn(move || {
                    h.run(&[
                        "run",
                        "--bundle",
                        b.path().to_str().unwrap(),
                        &unique("race"),
                    ])
                })
            })
            .collect();
        handles.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for out in &outs {
        assert_eq!(code(out), 9, "{}", text(&out.stderr));
    }
    assert!(h.ok(&["list", "-q"]).is_empty());
    assert!(supervisors_of(h.root()).is_empty());
}

fn unknown_and_invalid_ids(sb: Sandbox) {
    let Some(h) = Hull::new(sb) else { return };
    for cmd in [
        &["state", "nope"][..],
        &["start", "nope"],
        &["kill", "nope"],
        &["delete", "nope"],
        &["pause", "nope"],
        &["exec", "nope", "true"],
        &["ps", "nope"],
    ] {
        let err = h.fails(cmd);
        assert!(err.contains("\"nope\" does not exist"), "{cmd:?}: {err}");
    }
    let b = h.bundle(&["true"]);
    for bad in ["a/b", "..", "../escape", ""] {
        let err = h.fails(&["create", "--bundle", b.path().to_str().unwrap(), bad]);
        assert!(err.contains("invalid container id"), "{bad:?}: {err}");
        let err = h.fails(&["state", bad]);
        assert!(err.contains("invalid container id"), "{bad:?}: {err}");
    }
    assert!(h.ok(&["list", "-q"]).is_empty());
    // Ids are exclusive.
    let id = unique("dup");
    let b = h.bundle(&["sleep", "1000"]);
    h.create(&id, &b);
    let err = h.fails(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(h.status(&id), "created");
    // A created container may be deleted without --force (as runc).
    h.ok(&["delete", &id]);
    h.assert_gone(&id, &[], None);
}

fn run_detached_and_forwarded_signals(sb: Sandbox) {
    let Some(h) = Hull::new(sb) else { return };
    // --detach: returns at once, the container keeps running.
    let id = unique("detach");
    let b = h.bundle(&["sleep", "1000"]);
    let pid_file = h.root().join("d.pid");
    h.ok(&[
        "run",
        "--detach",
        "--pid-file",
        pid_file.to_str().unwrap(),
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    assert_eq!(h.status(&id), "running");
    let sup: i32 = fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert!(alive(sup));
    h.ok(&["delete", "--force", &id]);
    h.assert_gone(&id, &[sup], None);

    // A foreground run passes the signals it gets on to the container.
    let id = unique("fwd");
    let b = h.bundle(&[
        "sh",
        "-c",
        "trap 'exit 7' TERM; while :; do sleep 0.05; done",
    ]);
    let mut run = h
        .cmd(&["run", "--bundle", b.path().to_str().unwrap(), &id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    while h.run(&["state", &id]).stdout.is_empty() || h.status(&id) != "running" {
        assert!(Instant::now() < deadline, "container never ran");
        sleep(Duration::from_millis(20));
    }
    // Let the shell install its trap.
    sleep(Duration::from_millis(200));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(wait_child(&mut run).code(), Some(7));
    h.assert_gone(&id, &[], None);
}

/// Receives the pty master a runtime sends to a console socket.
fn receive_pty(l: &std::os::unix::net::UnixListener) -> File {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd};
    let (conn, _) = l.accept().unwrap();
    let mut buf = [0u8; 1024];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .unwrap();
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the fd was just received and is owned by nobody else.
            return unsafe { File::from_raw_fd(fds[0]) };
        }
    }
    panic!("no fd on the console socket");
}

/// Reads from a pty master until `want` shows up (or EIO/EOF).
fn read_pty_until(f: &mut File, want: &str) -> String {
    use std::io::Read;
    let mut got = String::new();
    let mut buf = [0u8; 1024];
    while !got.contains(want) {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    got
}

fn terminals(sb: Sandbox) {
    let Some(h) = Hull::new(sb) else { return };
    let id = unique("tty");
    let mut b = h.bundle(&["sh", "-c", "tty; read x; echo \"read $x\"; sleep 1000"]);
    b.process()["terminal"] = true.into();
    b.save();
    // Without a console socket a detached container cannot get a terminal.
    let err = h.fails(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("console-socket"), "{err}");
    assert!(!h.root().join(&id).exists());

    let sock = h.root().join("console.sock");
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    // As the runc shim runs it: output captured through a pipe read until EOF, so
    // nothing hull leaves running may hold that pipe.
    let create = h
        .cmd(&[
            "create",
            "--console-socket",
            sock.to_str().unwrap(),
            "--bundle",
            b.path().to_str().unwrap(),
            &id,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(create.wait_with_output().unwrap()));
    let out = rx
        .recv_timeout(COMMAND_TIMEOUT)
        .expect("create's output pipe never reached EOF");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut master = receive_pty(&l);
    h.ok(&["start", &id]);
    let out = read_pty_until(&mut master, "/dev/pts/");
    assert!(out.contains("/dev/pts/"), "{out:?}");
    master.write_all(b"typed\n").unwrap();
    let out = read_pty_until(&mut master, "read typed");
    assert!(out.contains("read typed"), "{out:?}");

    // exec --tty: the process gets a pty, relayed through hull's stdio.
    let out = h.run(&["exec", "--tty", &id, "sh", "-c", "tty; exit 3"]);
    assert_eq!(code(&out), 3, "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("/dev/pts/"),
        "{}",
        text(&out.stdout)
    );
    // exec --console-socket: the pty master goes to the socket.
    let done = h.root().join("exec-done");
    let mut exec = h
        .cmd(&[
            "exec",
            "--console-socket",
            sock.to_str().unwrap(),
            &id,
            "sh",
            "-c",
            "echo in-exec; tty",
        ])
        .stdin(Stdio::null())
        .stdout(File::create(&done).unwrap())
        .spawn()
        .unwrap();
    let mut m = receive_pty(&l);
    let out = read_pty_until(&mut m, "/dev/pts/");
    assert!(out.contains("in-exec"), "{out:?}");
    assert_eq!(wait_child(&mut exec).code(), Some(0));
    h.ok(&["delete", "--force", &id]);
    h.assert_gone(&id, &[], None);
}

fn preserve_fds(sb: Sandbox) {
    let Some(h) = Hull::new(sb) else { return };
    let id = unique("fds");
    let b = h.bundle(&["sh", "-c", "echo via-fd-3 >&3"]);
    if sb == Sandbox::Vm {
        // Host file descriptors cannot cross into a guest: refused, nothing left.
        let err = h.fails(&[
            "run",
            "--preserve-fds",
            "1",
            "--bundle",
            b.path().to_str().unwrap(),
            &id,
        ]);
        assert!(err.contains("--preserve-fds"), "{err}");
        assert!(!h.root().join(&id).exists());
        return;
    }
    let shared = h.root().join("fd3.txt");
    // The shell opens fd 3 (without close-on-exec) and execs hull with it.
    let hull = h.cmd(&[
        "run",
        "--preserve-fds",
        "1",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("f=$1; shift; exec \"$@\" 3>\"$f\"")
        .arg("sh")
        .arg(&shared)
        .arg(hull.get_program())
        .args(hull.get_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(h.root().join("fds.err")).unwrap())
        .spawn()
        .unwrap();
    let st = wait_child(&mut child);
    let err = fs::read_to_string(h.root().join("fds.err")).unwrap();
    assert_eq!(st.code(), Some(0), "{err}");
    assert_eq!(fs::read_to_string(&shared).unwrap(), "via-fd-3\n");
}

/// Each case once per sandbox: `Os::case` and `Vm::case`.
macro_rules! sandbox_tests {
    ($($case:ident),* $(,)?) => {
        sandbox_tests!(@in Os: $($case),*);
        sandbox_tests!(@in Vm: $($case),*);
    };
    (@in $sandbox:ident: $($case:ident),*) => {
        #[allow(non_snake_case)]
        mod $sandbox {
            $(
                #[test]
                fn $case() {
                    super::$case(super::Sandbox::$sandbox);
                }
            )*
        }
    };
}

sandbox_tests!(
    run_exit_codes,
    run_stdio,
    run_env_cwd_user_hostname,
    lifecycle_and_signals,
    run_killed_by_signal,
    exec_processes,
    ps_pause_resume,
    update_memory_limit,
    delete_force_running,
    supervisor_killed_from_outside,
    two_containers_and_list,
    bad_bundles_leave_nothing,
    unknown_and_invalid_ids,
    run_detached_and_forwarded_signals,
    terminals,
    preserve_fds,
    failures_late_in_create_leave_nothing,
    concurrent_short_runs,
);

/// CRI's pod annotations: `sandbox` for the pod's own container, else a member of
/// the pod whose sandbox container is `pod`.
fn set_pod(b: &mut Bundle, kind: &str, pod: &str) {
    b.config["annotations"]["io.kubernetes.cri.container-type"] = kind.into();
    b.config["annotations"]["io.kubernetes.cri.sandbox-id"] = pod.into();
    b.save();
}

#[test]
fn pod_members_share_the_sandbox_vm() {
    let Some(h) = Hull::new(Sandbox::Vm) else {
        return;
    };
    let pod = unique("pod");
    let mut sb = h.bundle(&["sleep", "1000"]);
    set_pod(&mut sb, "sandbox", &pod);
    let sup = h.sleeper(&pod, &mut sb);
    let boot_id = h.ok(&["exec", &pod, "cat", "/proc/sys/kernel/random/boot_id"]);

    // A member runs in the same guest kernel, with its own rootfs.
    let member = unique("member");
    let mut mb = h.bundle(&[
        "sh",
        "-c",
        "cat /proc/sys/kernel/random/boot_id; echo m > /member-was-here; exit 5",
    ]);
    set_pod(&mut mb, "container", &pod);
    let out = h.run(&["run", "--bundle", mb.path().to_str().unwrap(), &member]);
    assert_eq!(code(&out), 5, "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), boot_id);
    assert!(mb.rootfs().join("member-was-here").exists());
    assert!(!sb.rootfs().join("member-was-here").exists());
    // Its binds left the sandbox's shared directory (seen in the supervisor's mount
    // namespace) with it.
    let shared = Path::new(&format!("/proc/{sup}/root"))
        .join(h.root().strip_prefix("/").unwrap())
        .join(&pod)
        .join("shared");
    assert!(shared.join(&pod).join("rootfs").join("bin").exists());
    assert!(!shared.join(&member).exists(), "binds of {member} left");

    // A member of a pod that does not exist is refused before anything is made.
    let ghost = unique("ghost");
    set_pod(&mut mb, "container", "no-such-pod");
    let err = h.fails(&["create", "--bundle", mb.path().to_str().unwrap(), &ghost]);
    assert!(
        err.contains("no-such-pod") && err.contains("does not exist"),
        "{err}"
    );
    assert!(!h.root().join(&ghost).exists());

    // Members die with their pod's VM.
    set_pod(&mut mb, "container", &pod);
    mb.set_args(&["sleep", "1000"]);
    mb.save();
    let m2 = unique("member");
    h.create(&m2, &mb);
    h.ok(&["start", &m2]);
    h.ok(&["delete", "--force", &pod]);
    h.wait_status(&m2, "stopped");
    h.ok(&["delete", &m2]);
    h.assert_gone(&pod, &[sup], None);
    h.assert_gone(&m2, &[], None);
}

// Sandbox-independent commands.

#[test]
fn spec_and_features() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(hull_bin())
        .args(["spec", "--bundle"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let spec: Value =
        serde_json::from_slice(&fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["root"]["path"], "rootfs");
    assert_eq!(spec["process"]["args"][0], "sh");
    let again = Command::new(hull_bin())
        .args(["spec", "--bundle"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("exists"));

    let out = Command::new(hull_bin()).arg("features").output().unwrap();
    assert!(out.status.success());
    let f: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(f["ociVersionMin"], "1.0.0");
    assert!(f["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .contains(&"pid".into()));
}

#[test]
fn vm_sandbox_says_which_guest_file_is_missing() {
    let Some(h) = Hull::new(Sandbox::Os) else {
        return;
    };
    let empty = tempfile::tempdir().unwrap();
    let b = Bundle::busybox("vm", &["true"]);
    let id = unique("vm");
    let out = h
        .cmd(&["create", "--bundle", b.path().to_str().unwrap(), &id])
        .env("HULL_ASSETS", empty.path())
        .env("HULL_QEMU", "/bin/true")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    let kernel = empty.path().join("vmlinux");
    assert!(
        err.contains(kernel.to_str().unwrap()) && err.contains("make guest"),
        "{err}"
    );
    assert!(!h.root().join(&id).exists());
}
