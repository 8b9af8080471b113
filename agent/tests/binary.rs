//! The hull-agent binary as a server on a Unix socket (no engine in this test
//! process, so std's child handling works here): Inherit stdio, and bad input that
//! must not end it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hull_protocol::{Client, ExitStatus, Request, Response, StdioMode};

#[test]
fn inherit_stdio_goes_to_the_agents_own_fds_and_garbage_does_not_kill_it() {
    if !can_run() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let sock = state.path().join("agent.sock");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_hull-agent"))
        .arg("--listen")
        .arg(&sock)
        .arg("--state-root")
        .arg(state.path().join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "agent did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Garbage of several kinds, each on its own connection.
    for junk in [
        &b"\xff\xff\xff\xff"[..],
        b"\x00\x00\x00\x05hello",
        b"\x00\x00",
    ] {
        let mut c = UnixStream::connect(&sock).unwrap();
        let _ = c.write_all(junk);
    }
    let mut c = UnixStream::connect(&sock).unwrap();
    let _ = c.write_all(b"\x00\x00\x00\x10{\"Hello\":{\"ver");
    drop(c);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        agent.try_wait().unwrap().is_none(),
        "agent exited on garbage"
    );

    let b = Bundle::new();
    let id = uid("inherit");
    let mut c = Client::handshake(UnixStream::connect(&sock).unwrap()).unwrap();
    let s = spec(
        &id,
        &[
            "sh",
            "-c",
            "echo inherited-out; echo inherited-err >&2; exit 2",
        ],
    );
    let r = c
        .call(&Request::Create(Box::new(create_req(
            &id,
            &b,
            s,
            StdioMode::Inherit,
        ))))
        .unwrap();
    assert!(matches!(r, Response::Created { .. }));
    c.call(&Request::Start { id: id.clone() }).unwrap();
    let r = c
        .call(&Request::Wait {
            id: id.clone(),
            exec_id: None,
        })
        .unwrap();
    assert!(matches!(r, Response::Exited(ExitStatus::Code(2))), "{r:?}");
    c.call(&Request::Delete {
        id: id.clone(),
        force: false,
    })
    .unwrap();
    let mut out = String::new();
    BufReader::new(agent.stdout.as_mut().unwrap())
        .read_line(&mut out)
        .unwrap();
    assert_eq!(out, "inherited-out\n");
    let mut err = BufReader::new(agent.stderr.as_mut().unwrap());
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 && !line.contains("inherited-err") {
        line.clear();
    }
    assert_eq!(line, "inherited-err\n");
    assert!(agent.try_wait().unwrap().is_none());
    agent.kill().unwrap();
    agent.wait().unwrap();
}
