//! The engine on this host, creating real containers from a busybox rootfs.

mod common;

use common::*;
use hull_protocol::{ErrorKind, ExitStatus, Status, StdioMode};

#[test]
fn runs_a_container_and_reports_its_output_and_exit_code() {
    if !can_run() {
        return;
    }
    let (e, _state) = engine();
    let b = Bundle::new();
    let id = uid("basic");
    let s = spec(
        &id,
        &[
            "sh",
            "-c",
            "echo out; echo err >&2; hostname; echo $$; exit 3",
        ],
    );
    let (st, out, err) = run(&e, &b, &id, s);
    assert_eq!(st, ExitStatus::Code(3));
    assert_eq!(out, "out\nyouki\n1\n");
    assert_eq!(err, "err\n");
    assert!(e.state(&id).is_err());
}

#[test]
fn lifecycle_states_and_cgroup_cleanup() {
    if !can_run() {
        return;
    }
    let (e, _state) = engine();
    let b = Bundle::new();
    let id = uid("life");
    let s = spec(&id, &["sleep", "30"]);
    let pid = e.create(create_req(&id, &b, s, StdioMode::Null)).unwrap();
    assert!(pid > 0);
    let st = e.state(&id).unwrap();
    assert_eq!((st.status, st.pid), (Status::Created, pid));
    let dirs = hull_agent::cgroups::dirs(&std::path::PathBuf::from(format!(
        "/hull-test-{}/{id}",
        std::process::id()
    )));
    assert!(!dirs.is_empty(), "no cgroup dir for {id}");
    e.start(&id).unwrap();
    assert_eq!(e.state(&id).unwrap().status, Status::Running);
    assert_eq!(e.list().iter().filter(|c| c.id == id).count(), 1);
    let err = e.delete(&id, false).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidState);
    e.signal(&id, None, libc::SIGKILL, false).unwrap();
    assert_eq!(
        e.wait(&id, None).unwrap(),
        ExitStatus::Signal(libc::SIGKILL)
    );
    let st = e.state(&id).unwrap();
    assert_eq!((st.status, st.pid), (Status::Stopped, 0));
    assert_eq!(st.exit, Some(ExitStatus::Signal(libc::SIGKILL)));
    let err = e.signal(&id, None, libc::SIGKILL, false).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidState);
    e.delete(&id, false).unwrap();
    for d in dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    assert_eq!(e.state(&id).unwrap_err().kind, ErrorKind::NotFound);
}

use std::io::{Read, Write};
use std::path::PathBuf;

use hull_agent::engine::StreamEndpoint;
use hull_protocol::{ExecProcess, StreamKind};
use oci_spec::runtime::{
    LinuxCapabilities, LinuxPidsBuilder, LinuxResourcesBuilder, LinuxSeccompAction,
    LinuxSeccompBuilder, LinuxSyscallBuilder, Mount, PosixRlimitBuilder, PosixRlimitType, Spec,
    UserBuilder,
};

fn cgroup_of(id: &str) -> PathBuf {
    PathBuf::from(format!("/hull-test-{}/{id}", std::process::id()))
}

fn with_tmpfs_tmp(s: &mut Spec) {
    let mut mounts = s.mounts().clone().unwrap();
    let mut m = Mount::default();
    m.set_destination("/tmp".into());
    m.set_source(Some("tmpfs".into()));
    m.set_typ(Some("tmpfs".into()));
    m.set_options(Some(vec!["nosuid".into(), "nodev".into()]));
    mounts.push(m);
    s.set_mounts(Some(mounts));
}

fn exec_req(id: &str, exec_id: &str, args: &[&str], stdio: StdioMode) -> ExecProcess {
    let mut p = Spec::default().process().clone().unwrap();
    p.set_args(Some(args.iter().map(|a| a.to_string()).collect()));
    ExecProcess {
        id: id.into(),
        exec_id: exec_id.into(),
        process: p,
        stdio,
    }
}

fn start_sleeper(e: &hull_agent::engine::Engine, b: &Bundle, id: &str) -> i32 {
    let pid = e
        .create(create_req(
            id,
            b,
            spec(id, &["sleep", "60"]),
            StdioMode::Null,
        ))
        .unwrap();
    e.start(id).unwrap();
    pid
}

fn set_resources(s: &mut Spec, f: impl FnOnce(&mut oci_spec::runtime::LinuxResources)) {
    let mut l = s.linux().clone().unwrap();
    let mut r = l.resources().clone().unwrap_or_default();
    f(&mut r);
    l.set_resources(Some(r));
    s.set_linux(Some(l));
}

#[test]
fn exec_ps_pause_resume_and_errors_on_a_stopped_container() {
    if !can_run() {
        return;
    }
    let (e, _state) = engine();
    let b = Bundle::new();
    let id = uid("exec");
    let init = start_sleeper(&e, &b, &id);
    let script = "echo exec-out; echo exec-err >&2; exit 5";
    let xpid = e
        .exec(exec_req(
            &id,
            "x1",
            &["sh", "-c", script],
            StdioMode::Streams,
        ))
        .unwrap();
    assert!(xpid > 0 && xpid != init);
    assert_eq!(
        read_stream(&e, &id, Some("x1"), StreamKind::Stdout),
        b"exec-out\n"
    );
    assert_eq!(
        read_stream(&e, &id, Some("x1"), StreamKind::Stderr),
        b"exec-err\n"
    );
    assert_eq!(e.wait(&id, Some("x1")).unwrap(), ExitStatus::Code(5));
    let dup = e
        .exec(exec_req(&id, "x1", &["true"], StdioMode::Null))
        .unwrap_err();
    assert_eq!(dup.kind, ErrorKind::AlreadyExists);

    // A long-running exec shows in ps and can be signalled on its own.
    let spid = e
        .exec(exec_req(&id, "x2", &["sleep", "60"], StdioMode::Null))
        .unwrap();
    let pids = e.ps(&id).unwrap();
    assert!(pids.contains(&init) && pids.contains(&spid), "{pids:?}");
    e.signal(&id, Some("x2"), libc::SIGTERM, false).unwrap();
    assert_eq!(
        e.wait(&id, Some("x2")).unwrap(),
        ExitStatus::Signal(libc::SIGTERM)
    );
    let gone = e.signal(&id, Some("x2"), libc::SIGTERM, false).unwrap_err();
    assert_eq!(gone.kind, ErrorKind::InvalidState);
    let unknown = e
        .signal(&id, Some("nope"), libc::SIGTERM, false)
        .unwrap_err();
    assert_eq!(unknown.kind, ErrorKind::NotFound);
    assert!(unknown.message.contains("nope"), "{}", unknown.message);

    e.pause(&id).unwrap();
    assert_eq!(e.state(&id).unwrap().status, Status::Paused);
    let err = e
        .exec(exec_req(&id, "x3", &["true"], StdioMode::Null))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidState);
    assert_eq!(e.pause(&id).unwrap_err().kind, ErrorKind::InvalidState);
    e.resume(&id).unwrap();
    assert_eq!(e.state(&id).unwrap().status, Status::Running);
    assert_eq!(e.resume(&id).unwrap_err().kind, ErrorKind::InvalidState);
    assert_eq!(e.start(&id).unwrap_err().kind, ErrorKind::InvalidState);

    e.signal(&id, None, libc::SIGKILL, true).unwrap();
    assert_eq!(
        e.wait(&id, None).unwrap(),
        ExitStatus::Signal(libc::SIGKILL)
    );
    let err = e
        .exec(exec_req(&id, "x4", &["true"], StdioMode::Null))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidState);
    assert!(err.message.contains(&id), "{}", err.message);
    assert_eq!(e.pause(&id).unwrap_err().kind, ErrorKind::InvalidState);
    e.delete(&id, false).unwrap();
}

#[test]
fn paused_container_is_frozen_and_can_be_killed() {
    if !can_run() {
        return;
    }
    let (e, _state) = engine();
    let b = Bundle::new();
    let id = uid("frozen");
    let s = spec(
        &id,
        &["sh", "-c", "while true; do echo tick; sleep 0.05; done"],
    );
    e.create(create_req(&id, &b, s, StdioMode::Streams))
        .unwrap();
    let a = e.attach(&id, None, StreamKind::Stdout).unwrap();
    let StreamEndpoint::Output(out) = a.endpoint else {
        panic!()
    };
    e.start(&id).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    e.pause(&id).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let drain = |f: &std::fs::File| {
        nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(f),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        let mut n = 0;
        let mut buf = [0u8; 4096];
        while let Ok(k) = (&*f).read(&mut buf) {
            if k == 0 {
                break;
            }
            n += k;
        }
        n
    };
    assert!(drain(&out) > 0);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(drain(&out), 0, "output while paused");
    // SIGKILL to a paused container thaws it so that it dies.
    e.signal(&id, None, libc::SIGKILL, true).unwrap();
    assert_eq!(
        e.wait(&id, None).unwrap(),
        ExitStatus::Signal(libc::SIGKILL)
    );
    e.delete(&id, false).unwrap();
}

#[test]
fn duplicate_ids_bad_signals_and_force_delete() {
    if !can_run() {
        return;
    }
    let (e, _state) = engine();
    let b = Bundle::new();
    let id = uid("dup");
    start_sleeper(&e, &b, &id);
    let err = e
        .create(create_req(&id, &b, spec(&id, &["true"]), StdioMode::Null))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::AlreadyExists);
    assert!(err.message.contains(&id), "{}", err.message);
    let err = e.signal(&id, None, 999, false).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    assert!(err.message.contains("999"));
    e.delete(&id, true).unwrap();
    assert!(hull_agent::cgroups::dirs(&cgroup_of(&id)).is_empty());
    // A created (never started) container is deleted without force.
    let id2 = uid("dup");
    e.create(create_req(&id2, &b, spec(&id2, &["true"]), StdioMode::Null))
        .unwrap();
    e.delete(&id2, false).unwrap();
    assert!(hull_agent::cgroups::dirs(&cgroup_of(&id2)).is_empty());
}

#[test]
fn output_waits_in_the_pipe_until_attached() {
    if !can_run() {
        return;
    }
    let (e, _state) = engine();
    let b = Bundle::new();
    let id = uid("late");
    let s = spec(&id, &["sh", "-c", "echo early; echo late-err >&2"]);
    e.create(create_req(&id, &b, s, StdioMode::Streams))
        .unwrap();
    e.start(&id).unwrap();
    assert_eq!(e.wait(&id, None).unwrap(), ExitStatus::Code(0));
    assert_eq!(read_stream(&e, &id, None, StreamKind::Stdout), b"early\n");
    assert_eq!(
        read_stream(&e, &id, None, StreamKind::Stderr),
        b"late-err\n"
    );
    e.delete(&id, false).unwrap();
}

#[test]
fn heavy_stdout_and_stderr_stay_separate_and_complete() {
    if !can_run() {
        return;
    }
    let (e, _state) = engine();
    let b = Bundle::new();
    let id = uid("heavy");
    let script = "(yes out | head -c 4000000) & (yes err | head -c 4000000 >&2) & wait; \
                  printf LAST-OUT; printf LAST-ERR >&2";
    let (st, out, err) = run(&e, &b, &id, spec(&id, &["sh", "-c", script]));
    assert_eq!(st, ExitStatus::Code(0));
    assert_eq!(out.len(), 4000000 + 8);
    assert_eq!(err.len(), 4000000 + 8);
    assert!(out.ends_with("LAST-OUT") && err.ends_with("LAST-ERR"));
    // Every full line is its own stream's; only the cut at 4000000 bytes is partial.
    assert!(out[..4000000].split('\n').all(|l| "out".starts_with(l)));
    assert!(err[..4000000].split('\n').all(|l| "err".starts_with(l)));
}

#[test]
fn stdin_reaches_the_process_and_its_eof_too() {
    if !can_run() {
        return;
    }
    let (e, _state) = engine();
    let b = Bundle::new();
    let id = uid("stdin");
    let s = spec(&id, &["sh", "-c", "wc -c; echo after-eof"]);
    e.create(create_req(&id, &b, s, StdioMode::Streams))
        .unwrap();
    e.start(&id).unwrap();
    let a = e.attach(&id, None, StreamKind::Stdin).unwrap();
    let StreamEndpoint::Input(h) = a.endpoint else {
        panic!()
    };
    h.lock()
        .unwrap()
        .as_mut()
        .unwrap()
        .write_all(&[b'x'; 100000])
        .unwrap();
    // CloseStdin while the stream is attached closes it too.
    e.close_stdin(&id, None).unwrap();
    let out = read_stream(&e, &id, None, StreamKind::Stdout);
    assert_eq!(String::from_utf8_lossy(&out), "100000\nafter-eof\n");
    assert_eq!(e.wait(&id, None).unwrap(), ExitStatus::Code(0));
    e.delete(&id, false).unwrap();
}

#[test]
fn terminal_process_gets_a_pty_with_the_requested_size() {
    if !can_run() {
        return;
    }
    let (e, _state) = engine();
    let b = Bundle::new();
    let id = uid("tty");
    let mut s = spec(&id, &["sh", "-c", "stty size; tty"]);
    let mut p = s.process().clone().unwrap();
    p.set_terminal(Some(true));
    s.set_process(Some(p));
    e.create(create_req(&id, &b, s, StdioMode::Streams))
        .unwrap();
    e.resize(&id, None, 33, 77).unwrap();
    let a = e.attach(&id, None, StreamKind::Terminal).unwrap();
    assert_eq!(
        e.attach(&id, None, StreamKind::Stdout)
            .err()
            .map(|e| e.kind),
        Some(ErrorKind::InvalidState)
    );
    e.start(&id).unwrap();
    let StreamEndpoint::Terminal(pty) = a.endpoint else {
        panic!()
    };
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match (&*pty).read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("33 77\r\n"), "{out:?}");
    assert!(out.contains("/dev/"), "{out:?}");
    assert_eq!(e.wait(&id, None).unwrap(), ExitStatus::Code(0));
    let err = e.resize(&id, Some("nope"), 1, 1).unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    e.delete(&id, false).unwrap();
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    if !can_run() {
        return;
    }
    let (e, _state) = engine();
    let b = Bundle::new();
    let id = uid("bomb");
    let mut s = spec(&id, &["sleep", "60"]);
    set_resources(&mut s, |r| {
        r.set_pids(Some(LinuxPidsBuilder::default().limit(16).build().unwrap()));
    });
    e.create(create_req(&id, &b, s, StdioMode::Null)).unwrap();
    e.start(&id).unwrap();
    // ash gives up at the first failed fork, so the bomb runs beside init.
    let bomb = "for i in $(seq 1 60); do sleep 30 & done";
    e.exec(exec_req(
        &id,
        "bomb",
        &["sh", "-c", bomb],
        StdioMode::Streams,
    ))
    .unwrap();
    e.close_stdin(&id, Some("bomb")).unwrap();
    let ee = e.clone();
    let idc = id.clone();
    let errs = std::thread::spawn(move || read_stream(&ee, &idc, Some("bomb"), StreamKind::Stderr));
    assert_ne!(e.wait(&id, Some("bomb")).unwrap(), ExitStatus::Code(0));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let st = e.stats(&id).unwrap();
    assert_eq!(st.pids_max, Some(16));
    assert!(st.pids_current.unwrap() <= 16, "{st:?}");
    assert!(e.ps(&id).unwrap().len() <= 16);
    // A raised limit takes effect through Update.
    let res = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(100).build().unwrap())
        .build()
        .unwrap();
    e.update(&id, &res).unwrap();
    assert_eq!(e.stats(&id).unwrap().pids_max, Some(100));
    e.delete(&id, true).unwrap();
    let errs = String::from_utf8_lossy(&errs.join().unwrap()).into_owned();
    assert!(errs.contains("fork"), "{errs}");
}

#[test]
fn memory_limit_oom_kills_and_is_reported() {
    if !can_run() {
        return;
    }
    let (e, _state) = engine();
    let b = Bundle::new();
    let id = uid("oom");
    let mut s = spec(
        &id,
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"],
    );
    set_resources(&mut s, |r| {
        let mut m = oci_spec::runtime::LinuxMemory::default();
        m.set_limit(Some(32 << 20));
        r.set_memory(Some(m));
    });
    e.create(create_req(&id, &b, s, StdioMode::Null)).unwrap();
    e.start(&id).unwrap();
    assert_eq!(
        e.wait(&id, None).unwrap(),
        ExitStatus::Signal(libc::SIGKILL)
    );
    let st = e.stats(&id).unwrap();
    assert_eq!(st.memory_max, Some(32 << 20));
    assert!(st.memory_oom_kills.unwrap_or(0) >= 1, "{st:?}");
    e.delete(&id, false).unwrap();
}

#[test]
fn seccomp_blocks_a_syscall_with_the_spec_errno() {
    if !can_run() {
        return;
    }
    let (e, _state) = engine();
    let b = Bundle::new();
    let id = uid("seccomp");
    let script = "mkdir /tmp/x; echo rc=$?; touch /tmp/y && echo touched";
    let mut s = spec(&id, &["sh", "-c", script]);
    with_tmpfs_tmp(&mut s);
    let mut l = s.linux().clone().unwrap();
    let rule = LinuxSyscallBuilder::default()
        .names(vec!["mkdir".to_string(), "mkdirat".to_string()])
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(libc::EXDEV as u32)
        .build()
        .unwrap();
    l.set_seccomp(Some(
        LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .syscalls(vec![rule])
            .build()
            .unwrap(),
    ));
    s.set_linux(Some(l));
    let (st, out, err) = run(&e, &b, &id, s.clone());
    assert_eq!(st, ExitStatus::Code(0));
    assert_eq!(out, "rc=1\ntouched\n");
    assert!(err.contains("Invalid cross-device link"), "{err}");

    // Exec'd processes are filtered too.
    let id = uid("seccomp");
    s.set_process(Some({
        let mut p = s.process().clone().unwrap();
        p.set_args(Some(vec!["sleep".into(), "60".into()]));
        p
    }));
    e.create(create_req(&id, &b, s, StdioMode::Null)).unwrap();
    e.start(&id).unwrap();
    e.exec(exec_req(&id, "m", &["mkdir", "/tmp/z"], StdioMode::Streams))
        .unwrap();
    e.close_stdin(&id, Some("m")).unwrap();
    let err = read_stream(&e, &id, Some("m"), StreamKind::Stderr);
    assert_eq!(e.wait(&id, Some("m")).unwrap(), ExitStatus::Code(1));
    assert!(String::from_utf8_lossy(&err).contains("Invalid cross-device link"));
    // Also without no_new_privileges and without CAP_SYS_ADMIN.
    let mut req = exec_req(&id, "m2", &["mkdir", "/tmp/z"], StdioMode::Null);
    req.process.set_no_new_privileges(Some(false));
    e.exec(req).unwrap();
    assert_eq!(e.wait(&id, Some("m2")).unwrap(), ExitStatus::Code(1));
    e.delete(&id, true).unwrap();
}

#[test]
fn process_settings_and_mount_namespace_are_applied() {
    if !can_run() {
        return;
    }
    let (e, _state) = engine();
    let b = Bundle::new();
    let id = uid("settings");
    let script = "id -u; id -g; id -G; echo $FOO; pwd; ulimit -n; \
                  cat /proc/sys/net/ipv4/ip_forward; cat /proc/self/oom_score_adj; \
                  grep -E 'NoNewPrivs|CapBnd' /proc/self/status; ls /sys/firmware | wc -l; \
                  hostname; touch /tmp/inside; ls /tmp; (echo x > /rootfs-file) 2>/dev/null || echo ro";
    let mut s = spec(&id, &["sh", "-c", script]);
    with_tmpfs_tmp(&mut s);
    s.set_hostname(Some("inner-host".into()));
    let mut p = s.process().clone().unwrap();
    p.set_user(
        UserBuilder::default()
            .uid(1000u32)
            .gid(1001u32)
            .additional_gids(vec![2000u32])
            .build()
            .unwrap(),
    );
    let mut env = p.env().clone().unwrap();
    env.push("FOO=bar".into());
    p.set_env(Some(env));
    p.set_cwd("/tmp".into());
    p.set_rlimits(Some(vec![PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .soft(123u64)
        .hard(123u64)
        .build()
        .unwrap()]));
    p.set_oom_score_adj(Some(500));
    p.set_capabilities(Some(LinuxCapabilities::default()));
    s.set_process(Some(p));
    let mut l = s.linux().clone().unwrap();
    l.set_sysctl(Some(
        [("net.ipv4.ip_forward".to_string(), "1".to_string())].into(),
    ));
    s.set_linux(Some(l));
    let rootfs = b.rootfs();
    let (st, out, err) = run(&e, &b, &id, s);
    assert_eq!(st, ExitStatus::Code(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..8],
        [
            "1000",
            "1001",
            "1001 2000",
            "bar",
            "/tmp",
            "123",
            "1",
            "500"
        ],
        "{out}"
    );
    assert!(lines.contains(&"NoNewPrivs:\t1"), "{out}");
    // AUDIT_WRITE, KILL, NET_BIND_SERVICE: the default set.
    assert!(lines.contains(&"CapBnd:\t0000000020000420"), "{out}");
    assert_eq!(lines[10], "0", "masked /sys/firmware: {out}");
    assert_eq!(lines[11..], ["inner-host", "inside", "ro"], "{out}");
    // The container's tmpfs never showed on the host side.
    assert!(!rootfs.join("tmp/inside").exists());
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host_mounts.contains(rootfs.to_str().unwrap()));
}

#[test]
fn console_socket_receives_the_pty_master() {
    if !can_run() {
        return;
    }
    use std::os::fd::{AsRawFd, FromRawFd};
    let (e, state) = engine();
    let b = Bundle::new();
    let id = uid("console");
    let sock = state.path().join("console-client.sock");
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let mut s = spec(&id, &["sh", "-c", "echo via-console"]);
    let mut p = s.process().clone().unwrap();
    p.set_terminal(Some(true));
    s.set_process(Some(p));
    let mode = StdioMode::ConsoleSocket(sock.to_string_lossy().into());
    e.create(create_req(&id, &b, s, mode)).unwrap();
    let (conn, _) = l.accept().unwrap();
    let mut buf = [0u8; 64];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    let fd = msg
        .cmsgs()
        .unwrap()
        .find_map(|c| match c {
            nix::sys::socket::ControlMessageOwned::ScmRights(f) => f.first().copied(),
            _ => None,
        })
        .expect("no pty master");
    // SAFETY: SCM_RIGHTS gave us this fd.
    let mut master = unsafe { std::fs::File::from_raw_fd(fd) };
    e.start(&id).unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 1024];
    while let Ok(n) = master.read(&mut chunk) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&out), "via-console\r\n");
    assert_eq!(e.wait(&id, None).unwrap(), ExitStatus::Code(0));
    e.delete(&id, false).unwrap();
    // A console socket without a terminal is refused, naming the problem.
    let id = uid("console");
    let mode = StdioMode::ConsoleSocket(sock.to_string_lossy().into());
    let err = e
        .create(create_req(&id, &b, spec(&id, &["true"]), mode))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    assert!(err.message.contains("terminal"), "{}", err.message);
}

#[test]
fn long_ids_and_deep_state_dirs_work_with_a_terminal() {
    if !can_run() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let deep = state
        .path()
        .join("a-fairly-long-runtime-root-directory/k8s.io/and-more");
    let e = hull_agent::engine::Engine::new(hull_agent::engine::EngineConfig {
        state_root: deep,
        ..Default::default()
    })
    .unwrap();
    let b = Bundle::new();
    let id = format!("{:0>64}", uid("long").replace('-', ""));
    let mut s = spec(&id, &["sh", "-c", "echo long-ok"]);
    let mut p = s.process().clone().unwrap();
    p.set_terminal(Some(true));
    s.set_process(Some(p));
    e.create(create_req(&id, &b, s, StdioMode::Streams))
        .unwrap();
    let a = e.attach(&id, None, StreamKind::Terminal).unwrap();
    e.start(&id).unwrap();
    let StreamEndpoint::Terminal(pty) = a.endpoint else {
        panic!()
    };
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = (&*pty).read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&out), "long-ok\r\n");
    assert_eq!(e.wait(&id, None).unwrap(), ExitStatus::Code(0));
    e.delete(&id, false).unwrap();
}
