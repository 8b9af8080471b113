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
