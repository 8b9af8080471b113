//! A host pty standing in for the terminal of a process that runs elsewhere (in a
//! VM's guest): its master goes over runc's console socket to the caller, its slave is
//! relayed to the process's terminal stream, and the caller's window-size changes
//! follow as `ResizeTerminal` requests.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread::{self, JoinHandle};

use nix::pty::openpty;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::termios::{self, SetArg};

use crate::error::{Error, Result};
use crate::stdio;

pub struct ConsoleBridge {
    slave: File,
}

impl ConsoleBridge {
    /// Opens a pty, sends its master over `console_socket` and keeps the slave, in
    /// raw mode (the guest's own pty does the line discipline).
    pub fn send_master(console_socket: &Path) -> Result<ConsoleBridge> {
        let pty = openpty(None, None).map_err(|e| Error::Sandbox(format!("openpty: {e}")))?;
        let slave = File::from(pty.slave);
        let mut t = termios::tcgetattr(&slave)
            .map_err(|e| Error::Sandbox(format!("tcgetattr on the pty: {e}")))?;
        termios::cfmakeraw(&mut t);
        termios::tcsetattr(&slave, SetArg::TCSANOW, &t)
            .map_err(|e| Error::Sandbox(format!("tcsetattr on the pty: {e}")))?;
        send_fd(console_socket, &pty.master).map_err(|e| {
            Error::Sandbox(format!(
                "sending the pty master to console socket {}: {e}",
                console_socket.display()
            ))
        })?;
        Ok(ConsoleBridge { slave })
    }

    pub fn try_clone(&self) -> io::Result<ConsoleBridge> {
        Ok(ConsoleBridge {
            slave: self.slave.try_clone()?,
        })
    }

    /// Makes the pty this session's controlling terminal, so that the caller's
    /// window-size changes arrive as SIGWINCH. Needs a session without one (setsid).
    pub fn take_as_controlling_terminal(&self) {
        // SAFETY: TIOCSCTTY takes an int argument and only changes session state.
        unsafe { libc::ioctl(self.slave.as_raw_fd(), libc::TIOCSCTTY, 0) };
    }

    /// The window size the caller set on the master.
    pub fn window_size(&self) -> Option<(u16, u16)> {
        stdio::window_size(self.slave.as_raw_fd())
    }

    /// Relays the pty to and from `stream`; the returned thread ends when the process
    /// closes its terminal.
    pub fn relay(&self, stream: UnixStream) -> io::Result<JoinHandle<()>> {
        let mut to_guest = stream.try_clone()?;
        let mut from_caller = self.slave.try_clone()?;
        thread::spawn(move || {
            let _ = io::copy(&mut from_caller, &mut to_guest);
        });
        let mut to_caller = self.slave.try_clone()?;
        let mut from_guest = stream;
        Ok(thread::spawn(move || {
            let mut buf = [0u8; 32 * 1024];
            loop {
                match from_guest.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to_caller.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        }))
    }
}

/// runc's console-socket protocol: one message whose SCM_RIGHTS carries the master.
fn send_fd(socket: &Path, fd: &OwnedFd) -> io::Result<()> {
    let s = UnixStream::connect(socket)?;
    let fds = [fd.as_raw_fd()];
    sendmsg::<()>(
        s.as_raw_fd(),
        &[IoSlice::new(b"/dev/ptmx")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(io::Error::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::time::Duration;

    #[test]
    fn master_arrives_and_bytes_flow_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let bridge = ConsoleBridge::send_master(&path).unwrap();
        let mut master = stdio::receive_fd(&listener, Duration::from_secs(5)).unwrap();
        stdio::set_window_size(master.as_raw_fd(), 33, 101);
        assert_eq!(bridge.window_size(), Some((33, 101)));

        let (mut guest, host_end) = UnixStream::pair().unwrap();
        let out = bridge.relay(host_end).unwrap();
        guest.write_all(b"from guest").unwrap();
        let mut buf = [0u8; 10];
        master.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"from guest");
        master.write_all(b"typed").unwrap();
        let mut buf = [0u8; 5];
        guest.read_exact(&mut buf).unwrap();
        // Raw mode: no echo, no line buffering.
        assert_eq!(&buf, b"typed");
        drop(guest);
        out.join().unwrap();
    }
}
