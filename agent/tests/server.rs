//! The protocol server on a Unix socket: handshake, bad input, streams.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use common::*;
use hull_agent::server::{Server, ServerOptions};
use hull_protocol::{
    read_frame, write_frame, Client, ClientError, ErrorKind, ExitStatus, Request, Response,
    StdioMode, StreamKind, PROTOCOL_VERSION,
};

fn start_server() -> (PathBuf, tempfile::TempDir) {
    hull_agent::logging::init_libcontainer_errors();
    let (e, state) = engine();
    let sock = state.path().join("agent.sock");
    let l = UnixListener::bind(&sock).unwrap();
    let s = Server::new(e, ServerOptions::default());
    std::thread::spawn(move || s.serve(&l));
    (sock, state)
}

fn client(sock: &Path) -> Client<UnixStream> {
    Client::handshake(UnixStream::connect(sock).unwrap()).unwrap()
}

fn agent_err(r: Result<Response, ClientError>) -> hull_protocol::AgentError {
    match r {
        Err(ClientError::Agent(e)) => e,
        other => panic!("expected an agent error, got {other:?}"),
    }
}

#[test]
fn handshake_refuses_unknown_versions_and_requires_hello_first() {
    let (sock, _s) = start_server();
    let mut c = UnixStream::connect(&sock).unwrap();
    write_frame(
        &mut c,
        &Request::Hello {
            version: PROTOCOL_VERSION + 7,
        },
    )
    .unwrap();
    match read_frame::<_, Response>(&mut c).unwrap().unwrap() {
        Response::Error(e) => assert_eq!(e.kind, ErrorKind::VersionMismatch),
        other => panic!("{other:?}"),
    }
    let mut c = UnixStream::connect(&sock).unwrap();
    write_frame(&mut c, &Request::List).unwrap();
    match read_frame::<_, Response>(&mut c).unwrap().unwrap() {
        Response::Error(e) => {
            assert_eq!(e.kind, ErrorKind::InvalidRequest);
            assert!(e.message.contains("Hello"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(client(&sock).version(), PROTOCOL_VERSION);
}

#[test]
fn bad_requests_get_errors_and_the_server_keeps_serving() {
    let (sock, _s) = start_server();
    // Garbage JSON, then a valid frame on the same connection still works.
    let mut c = UnixStream::connect(&sock).unwrap();
    write_frame(
        &mut c,
        &Request::Hello {
            version: PROTOCOL_VERSION,
        },
    )
    .unwrap();
    read_frame::<_, Response>(&mut c).unwrap().unwrap();
    c.write_all(&5u32.to_be_bytes()).unwrap();
    c.write_all(b"\xff{{[x").unwrap();
    assert!(matches!(
        read_frame::<_, Response>(&mut c).unwrap().unwrap(),
        Response::Error(e) if e.kind == ErrorKind::InvalidRequest
    ));
    write_frame(&mut c, &serde_json::json!({"NoSuchRequest": {"id": 1}})).unwrap();
    assert!(matches!(
        read_frame::<_, Response>(&mut c).unwrap().unwrap(),
        Response::Error(e) if e.kind == ErrorKind::InvalidRequest
    ));
    write_frame(&mut c, &Request::List).unwrap();
    assert!(matches!(
        read_frame::<_, Response>(&mut c).unwrap().unwrap(),
        Response::List(_)
    ));
    // An oversized length and a truncated frame end only that connection.
    let mut c = UnixStream::connect(&sock).unwrap();
    c.write_all(&u32::MAX.to_be_bytes()).unwrap();
    let _ = read_frame::<_, Response>(&mut c);
    let mut c = UnixStream::connect(&sock).unwrap();
    c.write_all(&[0, 0, 1]).unwrap();
    drop(c);
    let mut c = UnixStream::connect(&sock).unwrap();
    write_frame(
        &mut c,
        &Request::Hello {
            version: PROTOCOL_VERSION,
        },
    )
    .unwrap();
    c.write_all(&100u32.to_be_bytes()).unwrap();
    c.write_all(b"{\"Sta").unwrap();
    drop(c);

    let mut c = client(&sock);
    for (req, kind, needle) in [
        (
            Request::State { id: "nope".into() },
            ErrorKind::NotFound,
            "nope",
        ),
        (
            Request::Start { id: "nope".into() },
            ErrorKind::NotFound,
            "nope",
        ),
        (
            Request::Signal {
                id: "nope".into(),
                exec_id: None,
                signal: 9,
                all: false,
            },
            ErrorKind::NotFound,
            "nope",
        ),
        (
            Request::Delete {
                id: "nope".into(),
                force: true,
            },
            ErrorKind::NotFound,
            "nope",
        ),
        (
            Request::AttachStream {
                id: "nope".into(),
                exec_id: None,
                stream: StreamKind::Stdout,
            },
            ErrorKind::NotFound,
            "nope",
        ),
        (
            Request::Hello { version: 1 },
            ErrorKind::InvalidRequest,
            "Hello",
        ),
    ] {
        let e = agent_err(c.call(&req));
        assert_eq!(e.kind, kind, "{req:?}: {e}");
        assert!(e.message.contains(needle), "{req:?}: {e}");
    }
    if can_run() {
        let b = Bundle::new();
        // Invalid spec, missing rootfs, bad id: typed errors naming the field.
        let mut s = spec("x", &["true"]);
        s.set_process(None);
        let e = agent_err(c.call(&Request::Create(Box::new(create_req(
            &uid("bad"),
            &b,
            s,
            StdioMode::Null,
        )))));
        assert_eq!(e.kind, ErrorKind::InvalidSpec);
        assert!(e.message.contains("process"), "{e}");
        let mut req = create_req(&uid("bad"), &b, spec("x", &["true"]), StdioMode::Null);
        req.rootfs = Some("/no/such/rootfs".into());
        let e = agent_err(c.call(&Request::Create(Box::new(req))));
        assert_eq!(e.kind, ErrorKind::InvalidSpec);
        assert!(e.message.contains("/no/such/rootfs"), "{e}");
        let req = create_req("../evil", &b, spec("x", &["true"]), StdioMode::Null);
        let e = agent_err(c.call(&Request::Create(Box::new(req))));
        assert_eq!(e.kind, ErrorKind::InvalidRequest);
        assert!(e.message.contains("../evil"), "{e}");
        let req = create_req(
            &uid("bad"),
            &b,
            spec("x", &["/bin/nonexistent"]),
            StdioMode::Null,
        );
        let e = agent_err(c.call(&Request::Create(Box::new(req))));
        assert!(e.message.contains("nonexistent"), "{e}");
    }
    // Still serving.
    assert!(matches!(c.call(&Request::List).unwrap(), Response::List(_)));
    assert!(matches!(
        client(&sock).call(&Request::List).unwrap(),
        Response::List(_)
    ));
}

fn attach(sock: &Path, id: &str, exec_id: Option<&str>, stream: StreamKind) -> UnixStream {
    client(sock)
        .into_stream(&Request::AttachStream {
            id: id.into(),
            exec_id: exec_id.map(Into::into),
            stream,
        })
        .unwrap()
}

#[test]
fn stdio_streams_over_the_protocol() {
    if !can_run() {
        return;
    }
    let (sock, _s) = start_server();
    let b = Bundle::new();
    let id = uid("srv");
    let mut c = client(&sock);
    let s = spec(
        &id,
        &[
            "sh",
            "-c",
            "read x; echo got $x; echo oops >&2; cat; exit 4",
        ],
    );
    let resp = c
        .call(&Request::Create(Box::new(create_req(
            &id,
            &b,
            s,
            StdioMode::Streams,
        ))))
        .unwrap();
    assert!(matches!(resp, Response::Created { pid } if pid > 0));
    let mut stdin = attach(&sock, &id, None, StreamKind::Stdin);
    let mut stdout = attach(&sock, &id, None, StreamKind::Stdout);
    let mut stderr = attach(&sock, &id, None, StreamKind::Stderr);
    // A stream can be attached once.
    let e = agent_err(client(&sock).call(&Request::AttachStream {
        id: id.clone(),
        exec_id: None,
        stream: StreamKind::Stdout,
    }));
    assert_eq!(e.kind, ErrorKind::InvalidState);
    c.call(&Request::Start { id: id.clone() }).unwrap();
    stdin.write_all(b"hello\nrest of input").unwrap();
    stdin.shutdown(Shutdown::Write).unwrap();
    let mut out = String::new();
    stdout.read_to_string(&mut out).unwrap();
    let mut err = String::new();
    stderr.read_to_string(&mut err).unwrap();
    assert_eq!(out, "got hello\nrest of input");
    assert_eq!(err, "oops\n");
    let r = c
        .call(&Request::Wait {
            id: id.clone(),
            exec_id: None,
        })
        .unwrap();
    assert!(matches!(r, Response::Exited(ExitStatus::Code(4))), "{r:?}");
    c.call(&Request::Delete {
        id: id.clone(),
        force: false,
    })
    .unwrap();
}
