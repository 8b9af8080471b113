//! Moving bytes between this process's stdio and a process's attached streams, the
//! caller's terminal in raw mode, and signal forwarding.

use std::fs::File;
use std::io::{self, IoSliceMut, Read, Write};
use std::mem::ManuallyDrop;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
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

/// Sets the window size of the terminal behind `fd` (a pty master).
pub fn set_window_size(fd: RawFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from `ws`.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}

/// Accepts one connection on `listener` within `timeout` and receives the fd sent on
/// it with SCM_RIGHTS (runc's console-socket protocol).
pub fn receive_fd(listener: &UnixListener, timeout: Duration) -> io::Result<File> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    let conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(2));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "nobody sent the pty master",
                ))
            }
            Err(e) => return Err(e),
        }
    };
    conn.set_nonblocking(false)?;
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just gave us this fd; nothing else owns it.
                return Ok(unsafe { File::from_raw_fd(fd) });
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "console socket message carried no fd",
    ))
}

/// Pumps our stdin into the pty master and its output to our stdout; returns the
/// output pump, which ends when the last slave fd closes.
pub fn pump_pty(master: File) -> io::Result<JoinHandle<()>> {
    let mut input = master.try_clone()?;
    thread::spawn(move || {
        let mut stdin = borrowed(0);
        let _ = copy(&mut *stdin, &mut input);
    });
    let mut output = master;
    Ok(thread::spawn(move || {
        let mut out = borrowed(1);
        // EIO once the container's side is closed.
        let _ = copy(&mut output, &mut *out);
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{sendmsg, ControlMessage};
    use std::io::{IoSlice, Seek};

    #[test]
    fn receives_an_fd_over_the_console_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"pty").unwrap();
        let sender = thread::spawn(move || {
            let s = UnixStream::connect(&path).unwrap();
            let fds = [f.as_raw_fd()];
            sendmsg::<()>(
                s.as_raw_fd(),
                &[IoSlice::new(b"/dev/ptmx")],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            )
            .unwrap();
        });
        let mut got = receive_fd(&listener, Duration::from_secs(5)).unwrap();
        sender.join().unwrap();
        got.rewind().unwrap();
        let mut s = String::new();
        got.read_to_string(&mut s).unwrap();
        assert_eq!(s, "pty");
        // Nobody connects: a timeout, not a hang.
        let e = receive_fd(&listener, Duration::from_millis(20)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
