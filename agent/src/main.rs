//! hull-agent: guest PID 1, or a development server on a Unix socket.
//!
//! As PID 1: `hull_agent::init::main` (self-test with `hull.selftest=1`, else serve on
//! vsock). Otherwise: `hull-agent --listen <unix socket> [--state-root <dir>]`.

use std::path::PathBuf;

use hull_agent::engine::{Engine, EngineConfig};
use hull_agent::server::{Server, ServerOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(hull_agent::selftest::PAYLOAD_ARG) {
        std::process::exit(hull_agent::selftest::payload());
    }
    hull_agent::logging::init(log::LevelFilter::Info);
    hull_agent::logging::init_libcontainer_errors();
    if hull_agent::init::is_pid1() {
        hull_agent::init::main();
    }
    let mut listen = None;
    let mut state_root = PathBuf::from("/run/hull-agent");
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--listen", Some(v)) => listen = Some(PathBuf::from(v)),
            ("--state-root", Some(v)) => state_root = PathBuf::from(v),
            _ => usage(),
        }
    }
    let Some(listen) = listen else { usage() };
    let engine = Engine::new(EngineConfig {
        state_root,
        ..Default::default()
    })
    .unwrap_or_else(|e| fail(&e.to_string()));
    let _ = std::fs::remove_file(&listen);
    let l = std::os::unix::net::UnixListener::bind(&listen)
        .unwrap_or_else(|e| fail(&format!("{}: {e}", listen.display())));
    Server::new(engine, ServerOptions::default()).serve(&l)
}

fn usage() -> ! {
    fail("usage: hull-agent --listen <unix socket> [--state-root <dir>] (as PID 1: no arguments)")
}

fn fail(msg: &str) -> ! {
    eprintln!("hull-agent: {msg}");
    std::process::exit(2)
}
