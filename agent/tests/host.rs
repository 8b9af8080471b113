//! The OS-level sandbox's supervisor and cleanup.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use hull_agent::host::{cleanup, run_supervisor, SupervisorOptions};
use hull_protocol::{Client, ExitStatus, Request, Response, StdioMode, StreamKind};

fn connect(sock: &Path) -> Client<UnixStream> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match UnixStream::connect(sock) {
            Ok(s) => return Client::handshake(s).unwrap(),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("{}: {e}", sock.display()),
        }
    }
}

#[test]
fn supervisor_returns_the_init_exit_status_and_cleanup_removes_everything() {
    if !can_run() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let b = Bundle::new();
    let id = uid("sup");
    let sock = state.path().join("sup.sock");
    let opts = SupervisorOptions {
        socket: sock.clone(),
        id: id.clone(),
        state_root: state.path().to_path_buf(),
    };
    let sup = std::thread::spawn(move || run_supervisor(opts));
    let mut c = connect(&sock);
    let s = spec(&id, &["sh", "-c", "echo from-container; exit 7"]);
    let r = c
        .call(&Request::Create(Box::new(create_req(
            &id,
            &b,
            s,
            StdioMode::Streams,
        ))))
        .unwrap();
    assert!(matches!(r, Response::Created { .. }));
    let mut out = connect(&sock)
        .into_stream(&Request::AttachStream {
            id: id.clone(),
            exec_id: None,
            stream: StreamKind::Stdout,
        })
        .unwrap();
    c.call(&Request::Start { id: id.clone() }).unwrap();
    let mut s = String::new();
    out.read_to_string(&mut s).unwrap();
    assert_eq!(s, "from-container\n");
    assert_eq!(sup.join().unwrap().unwrap(), ExitStatus::Code(7));
    assert!(!sock.exists(), "socket left after the supervisor returned");

    let cg = PathBuf::from(format!("/hull-test-{}/{id}", std::process::id()));
    assert!(!hull_agent::cgroups::dirs(&cg).is_empty());
    assert!(state.path().join(&id).exists());
    cleanup(state.path(), &id).unwrap();
    assert!(
        hull_agent::cgroups::dirs(&cg).is_empty(),
        "cgroups left behind"
    );
    assert!(!state.path().join(&id).exists());
    // Idempotent, also for containers that never existed.
    cleanup(state.path(), &id).unwrap();
    cleanup(state.path(), "never-was").unwrap();
}

#[test]
fn cleanup_kills_a_container_whose_supervisor_is_gone() {
    if !can_run() {
        return;
    }
    let (e, state) = engine();
    let b = Bundle::new();
    let id = uid("orphan");
    e.create(create_req(
        &id,
        &b,
        spec(&id, &["sleep", "60"]),
        StdioMode::Null,
    ))
    .unwrap();
    e.start(&id).unwrap();
    let cg = PathBuf::from(format!("/hull-test-{}/{id}", std::process::id()));
    assert!(!hull_agent::cgroups::pids(&cg).is_empty());
    cleanup(state.path(), &id).unwrap();
    assert_eq!(e.wait(&id, None).unwrap(), ExitStatus::Signal(9));
    assert!(
        hull_agent::cgroups::dirs(&cg).is_empty(),
        "cgroups left behind"
    );
}

#[test]
fn shutdown_before_exit_kills_the_container_and_reports_it() {
    if !can_run() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let b = Bundle::new();
    let id = uid("supdown");
    let sock = state.path().join("sup.sock");
    let opts = SupervisorOptions {
        socket: sock.clone(),
        id: id.clone(),
        state_root: state.path().to_path_buf(),
    };
    let sup = std::thread::spawn(move || run_supervisor(opts));
    let mut c = connect(&sock);
    c.call(&Request::Create(Box::new(create_req(
        &id,
        &b,
        spec(&id, &["sleep", "60"]),
        StdioMode::Null,
    ))))
    .unwrap();
    c.call(&Request::Start { id: id.clone() }).unwrap();
    c.call(&Request::Shutdown).unwrap();
    let err = sup.join().unwrap().unwrap_err();
    assert_eq!(err.kind, hull_protocol::ErrorKind::InvalidState);
    assert!(err.message.contains(&id), "{err}");
    let cg = PathBuf::from(format!("/hull-test-{}/{id}", std::process::id()));
    assert!(
        hull_agent::cgroups::dirs(&cg).is_empty(),
        "cgroups left behind"
    );
}
