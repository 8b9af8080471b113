//! The serial console's host side: where output goes, and terminal input.

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use thiserror::Error;

use crate::config::ConsoleConfig;
use crate::devices::serial::{ConsoleOut, SerialDevice};

/// Errors setting up the console.
#[derive(Debug, Error)]
pub enum ConsoleError {
    /// The console file cannot be opened.
    #[error("cannot open console file {path}: {source}")]
    Open {
        /// File path.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
}

/// Opens the console output for `cfg`.
pub fn open_output(cfg: &ConsoleConfig) -> Result<ConsoleOut, ConsoleError> {
    Ok(match cfg {
        ConsoleConfig::Stdio => Box::new(io::stdout()),
        ConsoleConfig::None => Box::new(io::sink()),
        ConsoleConfig::File(path) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| ConsoleError::Open {
                    path: path.clone(),
                    source,
                })?,
        ),
    })
}

/// True when `fd` is a terminal.
pub fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor number.
    unsafe { libc::isatty(fd) == 1 }
}

/// Puts a terminal in raw mode and restores its previous settings when dropped.
#[derive(Debug)]
pub struct RawModeGuard {
    fd: RawFd,
    saved: libc::termios,
}

impl RawModeGuard {
    /// Switches `fd` (a terminal) to raw mode.
    pub fn new(fd: RawFd) -> io::Result<Self> {
        // SAFETY: zeroed termios is a valid value to be overwritten by tcgetattr.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and pointer to a termios we own.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw only edits the struct we pass.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: valid fd and termios.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd, saved })
    }
}

impl Drop for RawModeGuard {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `new` on the same fd.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// Feeds host stdin into the UART's receive FIFO.
pub struct StdinInput {
    serial: Arc<Mutex<SerialDevice>>,
}

impl StdinInput {
    /// Input for `serial`.
    pub fn new(serial: Arc<Mutex<SerialDevice>>) -> Self {
        Self { serial }
    }
}

impl MutEventSubscriber for StdinInput {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut buf = [0u8; 64];
        let n = if events.event_set().contains(EventSet::IN) {
            io::stdin().lock().read(&mut buf).unwrap_or(0)
        } else {
            0
        };
        if n == 0 {
            // EOF or hang-up: stop watching, the guest keeps running.
            let _ = ops.remove(Events::new(&io::stdin(), EventSet::IN));
            return;
        }
        let mut serial = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        match serial.enqueue_input(&buf[..n]) {
            Ok(taken) if taken < n => log::debug!("console: dropped {} input bytes", n - taken),
            Ok(_) => {}
            Err(e) => log::warn!("console input: {e}"),
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&io::stdin(), EventSet::IN)) {
            log::warn!("console: cannot watch stdin: {e:?}");
        }
    }
}

/// stdin's descriptor.
pub fn stdin_fd() -> RawFd {
    io::stdin().as_raw_fd()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::Write;

    #[test]
    fn file_console_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("console.log");
        let mut out = open_output(&ConsoleConfig::File(p.clone())).unwrap();
        out.write_all(b"x").unwrap();
        drop(out);
        assert_eq!(std::fs::read(&p).unwrap(), b"x");
    }

    #[test]
    fn unopenable_console_names_the_file() {
        let e = open_output(&ConsoleConfig::File("/nonexistent/dir/c".into()))
            .err()
            .unwrap();
        assert!(e.to_string().contains("/nonexistent/dir/c"));
    }
}
