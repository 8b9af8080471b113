//! A task process's stdio: containerd names FIFOs (or `file://` paths) for stdin,
//! stdout and stderr; this connects them to the process that `hull create` / `hull
//! exec` starts.
//!
//! Without a tty, stdout and stderr are handed to hull as they are, so the
//! container's host process writes straight into them. stdin goes through a pipe the
//! shim feeds, so that CloseIO can end it and so that the FIFO is read only once
//! its writer has opened it (reading a writer-less FIFO would be an early EOF).
//! With a tty, hull sends the pty master over a console socket and the shim copies
//! stdin -> master and master -> stdout.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::hull_command::CommandIo;

/// How long the tty output may keep flowing after the process exited (a background
/// job still holding the pty) before the exit is reported anyway.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);
/// How long hull has to send the pty master once its command has returned.
const CONSOLE_WAIT: Duration = Duration::from_secs(10);

/// What containerd asked for.
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

type SharedWriter = Arc<Mutex<Option<File>>>;

/// The shim's side of a process's stdio, alive until the process has exited.
pub struct ProcessIo {
    paths: StdioPaths,
    /// Where stdin bytes go (the pipe to the process, or the pty master).
    stdin_sink: SharedWriter,
    /// Our copies of stdout/stderr, held so their FIFOs stay open until the exit.
    held_outputs: Vec<File>,
    console: Option<File>,
    output_done: Option<mpsc::Receiver<()>>,
    console_dir: Option<tempfile::TempDir>,
}

/// Set up before the hull command runs: its stdio, and the console socket to pass.
pub struct PendingIo {
    io: ProcessIo,
    command_io: Option<CommandIo>,
    console_listener: Option<UnixListener>,
    pub console_socket: Option<PathBuf>,
}

fn strip_uri(path: &str) -> Result<&str, String> {
    if let Some(p) = path.strip_prefix("file://") {
        return Ok(p);
    }
    if let Some((scheme, _)) = path.split_once("://") {
        return Err(format!(
            "stdio {path:?}: the {scheme}:// scheme is not supported by hull's shim (use a FIFO or file://)"
        ));
    }
    Ok(path)
}

/// An output target: a FIFO opened read-write (so opening never blocks and the
/// FIFO outlives a slow reader), or a file appended to.
fn open_output(path: &str) -> Result<File, String> {
    let p = strip_uri(path)?;
    let is_file_uri = p.len() != path.len();
    let mut o = OpenOptions::new();
    if is_file_uri {
        o.append(true).create(true);
    } else {
        o.read(true).write(true);
    }
    o.open(p)
        .map_err(|e| format!("opening stdio {path:?}: {e}"))
}

fn dev_null(write: bool) -> Result<File, String> {
    OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))
}

/// Copies the stdin FIFO into `sink` once a writer opens it, until EOF or until
/// the sink is closed.
fn feed_stdin(fifo: PathBuf, sink: SharedWriter) {
    thread::spawn(move || {
        // Blocks until the client opens its end (or `unblock_stdin` does).
        let Ok(mut src) = File::open(&fifo) else {
            return;
        };
        let mut buf = [0u8; 8192];
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut guard = sink.lock().unwrap();
            let Some(dst) = guard.as_mut() else { break };
            if dst.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        // EOF from the client: the process sees EOF too (a tty keeps its master).
        if let Ok(mut g) = sink.lock() {
            if g.as_ref().is_some_and(|f| !is_tty(f)) {
                g.take();
            }
        }
    });
}

fn is_tty(f: &File) -> bool {
    nix::unistd::isatty(f.as_raw_fd()).unwrap_or(false)
}

/// Lets a `feed_stdin` thread still waiting in open() go: an open for writing
/// completes its open, and our immediate close gives it EOF.
fn unblock_stdin(fifo: &Path) {
    let _ = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo);
}

impl PendingIo {
    /// Opens what the hull command needs; `dir` holds the console socket.
    pub fn prepare(paths: &StdioPaths) -> Result<PendingIo, String> {
        let mut io = ProcessIo {
            paths: paths.clone(),
            stdin_sink: Arc::new(Mutex::new(None)),
            held_outputs: Vec::new(),
            console: None,
            output_done: None,
            console_dir: None,
        };
        if paths.terminal {
            // A short path: sun_path holds 108 bytes, bundle paths can be longer.
            let dir = tempfile::Builder::new()
                .prefix("hull-shim-")
                .tempdir()
                .map_err(|e| format!("console socket directory: {e}"))?;
            let sock = dir.path().join("console.sock");
            let listener = UnixListener::bind(&sock).map_err(|e| format!("console socket: {e}"))?;
            io.console_dir = Some(dir);
            // hull gives the console to the process; its own stdio stays quiet.
            let command_io = CommandIo {
                stdin: Some(dev_null(false)?),
                stdout: Some(dev_null(true)?),
                stderr: Some(dev_null(true)?),
            };
            return Ok(PendingIo {
                io,
                command_io: Some(command_io),
                console_listener: Some(listener),
                console_socket: Some(sock),
            });
        }
        let stdin = if paths.stdin.is_empty() {
            dev_null(false)?
        } else {
            strip_uri(&paths.stdin)?;
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| format!("stdin pipe: {e}"))?;
            *io.stdin_sink.lock().unwrap() = Some(File::from(w));
            File::from(r)
        };
        let mut output = |path: &str| -> Result<File, String> {
            if path.is_empty() {
                return dev_null(true);
            }
            let f = open_output(path)?;
            io.held_outputs
                .push(f.try_clone().map_err(|e| format!("stdio {path:?}: {e}"))?);
            Ok(f)
        };
        let stdout = output(&paths.stdout)?;
        let stderr = output(&paths.stderr)?;
        Ok(PendingIo {
            io,
            command_io: Some(CommandIo {
                stdin: Some(stdin),
                stdout: Some(stdout),
                stderr: Some(stderr),
            }),
            console_listener: None,
            console_socket: None,
        })
    }

    /// The hull command's stdio (taken once).
    pub fn command_io(&mut self) -> CommandIo {
        self.command_io.take().unwrap_or_default()
    }

    /// After the hull command succeeded: receive the console, start the copies.
    pub fn attach(mut self) -> Result<ProcessIo, String> {
        let mut io = self.io;
        if let Some(listener) = self.console_listener.take() {
            let master = crate::stdio::receive_fd(&listener, CONSOLE_WAIT)
                .map_err(|e| format!("receiving the pty master from hull: {e}"))?;
            let out_path = &io.paths.stdout;
            let out = if out_path.is_empty() {
                dev_null(true)?
            } else {
                open_output(out_path)?
            };
            let reader = master.try_clone().map_err(|e| format!("pty master: {e}"))?;
            io.output_done = Some(copy_until_eof(reader, out));
            *io.stdin_sink.lock().unwrap() =
                Some(master.try_clone().map_err(|e| format!("pty master: {e}"))?);
            io.console = Some(master);
        }
        if !io.paths.stdin.is_empty() {
            let fifo = PathBuf::from(strip_uri(&io.paths.stdin)?);
            feed_stdin(fifo, io.stdin_sink.clone());
        }
        Ok(io)
    }
}

/// Copies `from` into `to` on a thread; the receiver hears when it is done.
fn copy_until_eof(mut from: File, mut to: File) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        // A pty master reads EIO once every slave fd is closed.
        let _ = io::copy(&mut from, &mut to);
        let _ = tx.send(());
    });
    rx
}

impl ProcessIo {
    pub fn paths(&self) -> &StdioPaths {
        &self.paths
    }

    /// ResizePty.
    pub fn resize(&self, width: u32, height: u32) -> Result<(), String> {
        let Some(console) = &self.console else {
            return Err("the process has no tty".into());
        };
        crate::stdio::set_window_size(
            console.as_raw_fd(),
            height.min(u16::MAX as u32) as u16,
            width.min(u16::MAX as u32) as u16,
        );
        Ok(())
    }

    /// CloseIO: the process's stdin ends (for a tty, our copying into it stops).
    pub fn close_stdin(&self) {
        self.stdin_sink.lock().unwrap().take();
        if !self.paths.stdin.is_empty() {
            if let Ok(p) = strip_uri(&self.paths.stdin) {
                unblock_stdin(Path::new(p));
            }
        }
    }

    /// After the process exited: let the tty output drain, then close everything,
    /// so the client sees EOF on its FIFOs.
    pub fn finish(mut self) {
        if let Some(done) = self.output_done.take() {
            let _ = done.recv_timeout(OUTPUT_DRAIN);
        }
        self.close_stdin();
        self.held_outputs.clear();
        self.console = None;
        self.console_dir = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::Mode;
    use nix::unistd::mkfifo;

    #[test]
    fn outputs_go_straight_to_the_fifos_and_stdin_through_a_pipe() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = |n: &str| {
            let p = dir.path().join(n);
            mkfifo(&p, Mode::from_bits_truncate(0o600)).unwrap();
            p.to_str().unwrap().to_string()
        };
        let paths = StdioPaths {
            stdin: fifo("in"),
            stdout: fifo("out"),
            stderr: String::new(),
            terminal: false,
        };
        let mut pending = PendingIo::prepare(&paths).unwrap();
        let cio = pending.command_io();
        let io = pending.attach().unwrap();
        // The client: writes stdin, reads stdout.
        let mut client_in = OpenOptions::new().write(true).open(&paths.stdin).unwrap();
        let mut client_out = File::open(&paths.stdout).unwrap();
        client_in.write_all(b"hello\n").unwrap();
        drop(client_in);
        let mut got = String::new();
        cio.stdin.unwrap().read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello\n");
        cio.stdout.unwrap().write_all(b"out\n").unwrap();
        io.finish();
        let mut out = String::new();
        client_out.read_to_string(&mut out).unwrap();
        assert_eq!(out, "out\n");
    }

    #[test]
    fn close_io_ends_stdin_even_before_the_client_opened_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in");
        mkfifo(&p, Mode::from_bits_truncate(0o600)).unwrap();
        let paths = StdioPaths {
            stdin: p.to_str().unwrap().into(),
            ..Default::default()
        };
        let mut pending = PendingIo::prepare(&paths).unwrap();
        let cio = pending.command_io();
        let io = pending.attach().unwrap();
        io.close_stdin();
        let mut got = Vec::new();
        cio.stdin.unwrap().read_to_end(&mut got).unwrap();
        assert!(got.is_empty());
    }

    #[test]
    fn unsupported_stdio_uris_are_named() {
        let paths = StdioPaths {
            stdout: "binary:///usr/bin/logger".into(),
            ..Default::default()
        };
        let e = PendingIo::prepare(&paths).err().unwrap();
        assert!(e.contains("binary://"), "{e}");
    }
}
