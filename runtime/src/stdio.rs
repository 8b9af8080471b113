//! Moving bytes between this process's stdio and a process's attached streams, the
//! caller's terminal in raw mode, and signal forwarding.

use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::net::Shutdown;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::thread::{self, JoinHandle};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::termios::{self, SetArg, Termios};

/// This process's fd `fd` as a `File` that is never closed.
fn borrowed(fd: RawFd) -> ManuallyDrop<File> {
    // SAFETY: 0, 1 and 2 stay open for the life of the process and the ManuallyDrop
    // never closes them.
    ManuallyDrop::new(unsafe { File::from_raw_fd(fd) })
}

/// Copies `from` into `to` until EOF or an error on either side.
fn copy(from: &mut impl Read, to: &mut impl Write) -> io::Result<u64> {
    let mut buf = [0u8; 32 * 1024];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        to.flush()?;
        total += n as u64;
    }
}

/// Our stdin into `stream`; half-closes it on EOF so the process sees EOF too.
pub fn pump_stdin(mut stream: UnixStream) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut stdin = borrowed(0);
        let _ = copy(&mut *stdin, &mut stream);
        let _ = stream.shutdown(Shutdown::Write);
    })
}

/// `stream` into our fd `fd` (1 or 2) until the process closes it.
pub fn pump_out(mut stream: UnixStream, fd: RawFd) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut out = borrowed(fd);
        if copy(&mut stream, &mut *out).is_err() {
            // Our side is gone: keep draining so the process is not blocked on a pipe.
            let _ = io::copy(&mut stream, &mut io::sink());
        }
    })
}

/// Whether fd is a terminal.
pub fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the fd.
    unsafe { libc::isatty(fd) == 1 }
}

/// The window size of the terminal on `fd`, as (rows, cols).
pub fn window_size(fd: RawFd) -> Option<(u16, u16)> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into `ws`.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Puts the terminal on stdin in raw mode until dropped.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    pub fn enter() -> Option<RawMode> {
        let stdin = io::stdin();
        let saved = termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

/// Signals a foreground `run`/`exec` passes on to the container's process, as runc
/// does (SIGCHLD, SIGPIPE and SIGURG are the runtime's own business).
const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGWINCH,
];

/// Blocks the forwarded signals in this thread (call it before spawning any other
/// thread, which inherit the mask) and hands each one that arrives to `f` on a
/// dedicated thread.
pub fn forward_signals<F: Fn(i32) + Send + 'static>(f: F) {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    if set.thread_block().is_err() {
        return;
    }
    thread::spawn(move || loop {
        if let Ok(sig) = set.wait() {
            f(sig as i32);
        }
    });
}
