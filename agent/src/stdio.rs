//! The stdio of a container process: what the process gets and what the agent keeps.

use std::fs::{File, OpenOptions};
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hull_protocol::{AgentError, ErrorKind, StdioMode};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// What the process is given.
#[derive(Default)]
pub(crate) struct ChildSide {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// Handed to libcontainer, which sends the pty master there.
    pub console_socket: Option<PathBuf>,
}

impl ChildSide {
    pub fn raw_fds(&self) -> Vec<RawFd> {
        [&self.stdin, &self.stdout, &self.stderr]
            .into_iter()
            .flatten()
            .map(|f| f.as_raw_fd())
            .collect()
    }
}

/// What the agent keeps until a client attaches.
#[derive(Default)]
pub(crate) struct AgentSide {
    pub stdin: Option<File>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
    /// Our own console socket (Streams + terminal); the pty master arrives there.
    pub console: Option<(UnixListener, PathBuf)>,
}

/// The write end of a process's stdin, shared by `CloseStdin` and an attached stream.
pub type StdinHandle = Arc<Mutex<Option<File>>>;

fn io_err(what: &str, e: impl std::fmt::Display) -> AgentError {
    AgentError::new(ErrorKind::Runtime, format!("{what}: {e}"))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), AgentError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io_err("pipe", e))
}

/// Builds both sides for `mode`. `console_path` is where our own console socket goes
/// when a Streams process asks for a terminal.
pub(crate) fn prepare(
    mode: &StdioMode,
    terminal: bool,
    console_path: &Path,
) -> Result<(ChildSide, AgentSide), AgentError> {
    let mut child = ChildSide::default();
    let mut agent = AgentSide::default();
    match mode {
        StdioMode::Streams if terminal => {
            let _ = std::fs::remove_file(console_path);
            let l = bind_long(console_path)
                .map_err(|e| io_err(&format!("console socket {}", console_path.display()), e))?;
            child.console_socket = Some(console_path.to_path_buf());
            agent.console = Some((l, console_path.to_path_buf()));
        }
        StdioMode::Streams => {
            let (r, w) = pipe()?;
            child.stdin = Some(r);
            agent.stdin = Some(File::from(w));
            let (r, w) = pipe()?;
            child.stdout = Some(w);
            agent.stdout = Some(File::from(r));
            let (r, w) = pipe()?;
            child.stderr = Some(w);
            agent.stderr = Some(File::from(r));
        }
        StdioMode::ConsoleSocket(path) => {
            if !terminal {
                return Err(AgentError::new(
                    ErrorKind::InvalidRequest,
                    format!("stdio: console socket {path} given but process.terminal is false"),
                ));
            }
            child.console_socket = Some(PathBuf::from(path));
        }
        StdioMode::Inherit | StdioMode::Null if terminal => {
            return Err(AgentError::new(
                ErrorKind::InvalidRequest,
                format!("stdio: process.terminal is true but stdio mode {mode:?} has no pty; use Streams or ConsoleSocket"),
            ));
        }
        // libcontainer leaves 0/1/2 alone when given nothing: the agent's own.
        StdioMode::Inherit => {}
        StdioMode::Null => {
            let open = || -> Result<OwnedFd, AgentError> {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
                    .map(OwnedFd::from)
                    .map_err(|e| io_err("/dev/null", e))
            };
            child.stdin = Some(open()?);
            child.stdout = Some(open()?);
            child.stderr = Some(open()?);
        }
    }
    Ok((child, agent))
}

/// Binds a Unix socket at a path longer than sun_path allows (state dirs named by
/// 64-character container ids are): through /proc/self/fd of its directory.
fn bind_long(path: &Path) -> std::io::Result<UnixListener> {
    if path.as_os_str().len() < 100 {
        return UnixListener::bind(path);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return UnixListener::bind(path);
    };
    let dirfd = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: open returned a new fd that nothing else owns.
    let dirfd = unsafe { OwnedFd::from_raw_fd(dirfd) };
    let short = Path::new("/proc/self/fd")
        .join(dirfd.as_raw_fd().to_string())
        .join(name);
    UnixListener::bind(short)
}

/// Takes the pty master that libcontainer sent to our console socket.
pub(crate) fn receive_pty(listener: &UnixListener, path: &Path) -> Result<File, AgentError> {
    let res = receive_pty_inner(listener);
    let _ = std::fs::remove_file(path);
    res
}

fn receive_pty_inner(listener: &UnixListener) -> Result<File, AgentError> {
    listener
        .set_nonblocking(true)
        .map_err(|e| io_err("console socket", e))?;
    // The pty was sent before the create/exec returned; the wait only covers delays.
    let deadline = Instant::now() + Duration::from_secs(5);
    let conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(io_err("console socket: no pty master arrived", e)),
        }
    };
    conn.set_nonblocking(false)
        .map_err(|e| io_err("console socket", e))?;
    let mut buf = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| io_err("console socket: recvmsg", e))?;
    let mut got: Option<File> = None;
    for c in msg.cmsgs().map_err(|e| io_err("console socket: cmsg", e))? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: SCM_RIGHTS hands us new fds that nothing else owns.
                let f = unsafe { File::from_raw_fd(fd) };
                if got.is_none() {
                    got = Some(f);
                }
            }
        }
    }
    got.ok_or_else(|| {
        AgentError::new(
            ErrorKind::Runtime,
            "console socket: message without a pty master",
        )
    })
}

/// Sets the window size of a pty.
pub(crate) fn resize(pty: &File, rows: u16, cols: u16) -> Result<(), AgentError> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize struct from the pointer.
    let rc = unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc != 0 {
        return Err(io_err("resize terminal", std::io::Error::last_os_error()));
    }
    Ok(())
}
