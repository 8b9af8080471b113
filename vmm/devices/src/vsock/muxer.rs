//! The host side of the device: Unix sockets with Firecracker's "hybrid vsock" convention.
//!
//! - Host-initiated: a client connects to `uds_path`, writes `CONNECT <port>\n`, and once the
//!   guest accepted on `<port>` reads `OK <host port>\n`; the stream then carries the data.
//! - Guest-initiated: a guest connection to CID 2 port P is connected to the Unix listener at
//!   `<uds_path>_P`.
//!
//! All host sockets sit in one private epoll set, so a transport needs to watch a single fd
//! ([`Muxer::as_raw_fd`]) and call [`Muxer::process_events`] when it is readable.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, ErrorKind, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::timerfd::TimerFd;

use super::connection::{Connection, CONN_BUF_SIZE};
use super::packet::{op, Header, HOST_CID, TYPE_STREAM};

/// Most streams alive at once; further guest REQUESTs are refused with RST.
pub const MAX_CONNECTIONS: usize = 1024;
/// Most host clients allowed to sit in the `CONNECT` handshake at once.
const MAX_HANDSHAKES: usize = 64;
/// Longest accepted `CONNECT <port>\n` line.
const MAX_CONNECT_LINE: usize = 32;
/// RSTs for unknown streams owed to the guest; when full, TX processing pauses.
const MAX_STRAY_RST: usize = 256;
/// First host port handed to host-initiated streams.
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// How long the guest has to answer a host-initiated connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const LISTENER_TOKEN: u64 = 0;
const TIMER_TOKEN: u64 = u64::MAX;

#[derive(Debug, thiserror::Error)]
pub enum MuxerError {
    #[error("cannot create epoll: {0}")]
    Epoll(io::Error),
    #[error("cannot listen on {0}: {1}")]
    Listen(PathBuf, io::Error),
    #[error("cannot register the listener: {0}")]
    Register(io::Error),
    #[error("cannot create the connect timer: {0}")]
    Timer(io::Error),
}

struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
}

pub struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    epoll: Epoll,
    listener: UnixListener,
    next_token: u64,
    next_local_port: u32,
    conns: HashMap<u64, Conn>,
    /// (local port, peer port) of streams the guest can address, to their token.
    by_ports: HashMap<(u32, u32), u64>,
    local_ports: HashSet<u32>,
    handshakes: HashMap<u64, Handshake>,
    /// Streams with something to send to the guest, served round-robin.
    rx_queue: VecDeque<u64>,
    /// RSTs answering packets for streams that do not exist: (src port, dst port) as sent.
    stray_rst: VecDeque<(u32, u32)>,
    connect_timeout: Duration,
    timer: TimerFd,
    timer_armed: bool,
}

struct Conn {
    inner: Connection,
    registered: EventSet,
    queued: bool,
}

impl Muxer {
    /// Listens on `uds_path` (a stale socket file there is replaced).
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Self, MuxerError> {
        let epoll = Epoll::new().map_err(MuxerError::Epoll)?;
        if let Ok(meta) = std::fs::symlink_metadata(uds_path) {
            if meta.file_type().is_socket() {
                let _ = std::fs::remove_file(uds_path);
            }
        }
        let listener = UnixListener::bind(uds_path)
            .and_then(|l| l.set_nonblocking(true).map(|_| l))
            .map_err(|e| MuxerError::Listen(uds_path.to_owned(), e))?;
        epoll
            .ctl(
                ControlOperation::Add,
                listener.as_raw_fd(),
                EpollEvent::new(EventSet::IN, LISTENER_TOKEN),
            )
            .map_err(MuxerError::Register)?;
        let timer = TimerFd::new().map_err(|e| MuxerError::Timer(e.into()))?;
        // Nonblocking, so that reading a timer re-armed since it fired cannot stall us.
        // SAFETY: fcntl on an fd we own, arguments as documented.
        if unsafe { libc::fcntl(timer.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } < 0 {
            return Err(MuxerError::Timer(io::Error::last_os_error()));
        }
        epoll
            .ctl(
                ControlOperation::Add,
                timer.as_raw_fd(),
                EpollEvent::new(EventSet::IN, TIMER_TOKEN),
            )
            .map_err(MuxerError::Register)?;
        Ok(Muxer {
            guest_cid,
            uds_path: uds_path.to_owned(),
            epoll,
            listener,
            next_token: LISTENER_TOKEN + 1,
            next_local_port: FIRST_LOCAL_PORT,
            conns: HashMap::new(),
            by_ports: HashMap::new(),
            local_ports: HashSet::new(),
            handshakes: HashMap::new(),
            rx_queue: VecDeque::new(),
            stray_rst: VecDeque::new(),
            connect_timeout: CONNECT_TIMEOUT,
            timer,
            timer_armed: false,
        })
    }

    /// Changes how long the guest has to answer host-initiated connects.
    pub fn set_connect_timeout(&mut self, timeout: Duration) {
        self.connect_timeout = timeout;
    }

    pub fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    /// Number of live streams (including ones still flushing to the host).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Whether a packet for the guest is (probably) ready.
    pub fn has_pending_rx(&self) -> bool {
        !self.stray_rst.is_empty() || !self.rx_queue.is_empty()
    }

    /// Whether guest packets should wait until the guest took our queued replies.
    pub fn tx_backpressure(&self) -> bool {
        self.stray_rst.len() >= MAX_STRAY_RST
    }

    /// Handles everything that is ready on the host sockets, without blocking.
    pub fn process_events(&mut self) {
        let mut events = [EpollEvent::default(); 64];
        loop {
            let n = match self.epoll.wait(0, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("vsock: epoll_wait: {e}");
                    return;
                }
            };
            for ev in &events[..n] {
                let token = ev.data();
                let set = EventSet::from_bits_truncate(ev.events());
                if token == LISTENER_TOKEN {
                    self.accept();
                } else if token == TIMER_TOKEN {
                    self.expire_connects();
                } else if self.handshakes.contains_key(&token) {
                    self.handshake(token);
                } else if let Some(c) = self.conns.get_mut(&token) {
                    c.inner.notify(set);
                    self.sync(token);
                }
            }
            if n < events.len() {
                return;
            }
        }
    }

    fn alloc_token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    fn accept(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("vsock: accept on {}: {e}", self.uds_path.display());
                    return;
                }
            };
            if self.handshakes.len() >= MAX_HANDSHAKES || stream.set_nonblocking(true).is_err() {
                continue;
            }
            let token = self.alloc_token();
            let ev = EpollEvent::new(EventSet::IN, token);
            if self
                .epoll
                .ctl(ControlOperation::Add, stream.as_raw_fd(), ev)
                .is_ok()
            {
                self.handshakes.insert(
                    token,
                    Handshake {
                        stream,
                        line: Vec::new(),
                    },
                );
                // The line is often there already.
                self.handshake(token);
            }
        }
    }

    /// Reads the `CONNECT <port>\n` line byte by byte, so that data the client sends right
    /// after it stays in the socket for the guest.
    fn handshake(&mut self, token: u64) {
        let Some(hs) = self.handshakes.get_mut(&token) else {
            return;
        };
        let mut byte = [0u8; 1];
        let done = loop {
            match hs.stream.read(&mut byte) {
                Ok(0) => break Err(()),
                Ok(_) if byte[0] == b'\n' => break Ok(()),
                Ok(_) if hs.line.len() < MAX_CONNECT_LINE => hs.line.push(byte[0]),
                Ok(_) => break Err(()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break Err(()),
            }
        };
        let Some(hs) = self.handshakes.remove(&token) else {
            return;
        };
        let _ = self.epoll.ctl(
            ControlOperation::Delete,
            hs.stream.as_raw_fd(),
            EpollEvent::default(),
        );
        let port = done.ok().and_then(|()| parse_connect(&hs.line));
        let Some(peer_port) = port else {
            log::debug!(
                "vsock: bad handshake {:?}",
                String::from_utf8_lossy(&hs.line)
            );
            return;
        };
        if self.conns.len() >= MAX_CONNECTIONS {
            return;
        }
        let local_port = self.alloc_local_port(peer_port);
        let token = self.alloc_token();
        self.local_ports.insert(local_port);
        self.by_ports.insert((local_port, peer_port), token);
        let deadline = Instant::now() + self.connect_timeout;
        self.conns.insert(
            token,
            Conn {
                inner: Connection::new_local(hs.stream, local_port, peer_port, deadline),
                registered: EventSet::empty(),
                queued: false,
            },
        );
        self.sync(token);
        if !self.timer_armed {
            self.arm_timer(deadline);
        }
    }

    fn arm_timer(&mut self, deadline: Instant) {
        // A zero duration would disarm the timer: fire in a millisecond at least.
        let after = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        match self.timer.reset(after, None) {
            Ok(()) => self.timer_armed = true,
            Err(e) => log::error!("vsock: cannot arm the connect timer: {e}"),
        }
    }

    /// Resets host-initiated streams the guest left unanswered past their deadline.
    fn expire_connects(&mut self) {
        let _ = self.timer.wait();
        self.timer_armed = false;
        let now = Instant::now();
        let mut expired = vec![];
        let mut next: Option<Instant> = None;
        for (&token, c) in &self.conns {
            match c.inner.connect_deadline() {
                Some(d) if d <= now => expired.push(token),
                Some(d) => next = Some(next.map_or(d, |n| n.min(d))),
                None => {}
            }
        }
        for token in expired {
            if let Some(c) = self.conns.get_mut(&token) {
                log::debug!(
                    "vsock: guest did not answer connect to {}",
                    c.inner.peer_port()
                );
                c.inner.kill();
            }
            self.sync(token);
        }
        if let Some(d) = next {
            self.arm_timer(d);
        }
    }

    /// A host port for a stream to `peer_port`, unique among host-initiated streams and
    /// not clashing with a guest-initiated stream to that port number.
    fn alloc_local_port(&mut self, peer_port: u32) -> u32 {
        loop {
            let p = self.next_local_port;
            self.next_local_port = self
                .next_local_port
                .checked_add(1)
                .unwrap_or(FIRST_LOCAL_PORT);
            if !self.local_ports.contains(&p) && !self.by_ports.contains_key(&(p, peer_port)) {
                return p;
            }
        }
    }

    /// Brings a stream's epoll registration, RX scheduling and lifetime up to date.
    fn sync(&mut self, token: u64) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        if c.inner.is_finished() {
            self.remove(token);
            return;
        }
        let want = c.inner.interest();
        if want != c.registered {
            let fd = c.inner.stream().as_raw_fd();
            let ev = EpollEvent::new(want, token);
            // With no interest the fd leaves the set, or a hang-up would be reported forever.
            let r = if want.is_empty() {
                self.epoll.ctl(ControlOperation::Delete, fd, ev)
            } else if c.registered.is_empty() {
                self.epoll.ctl(ControlOperation::Add, fd, ev)
            } else {
                self.epoll.ctl(ControlOperation::Modify, fd, ev)
            };
            if let Err(e) = r {
                log::error!("vsock: epoll_ctl: {e}");
            }
            c.registered = want;
        }
        if !c.inner.is_visible_to_peer() {
            let key = (c.inner.local_port(), c.inner.peer_port());
            if self.by_ports.get(&key) == Some(&token) {
                self.by_ports.remove(&key);
                self.local_ports.remove(&key.0);
            }
        }
        if c.inner.has_rx_work() && !c.queued {
            c.queued = true;
            self.rx_queue.push_back(token);
        }
    }

    fn remove(&mut self, token: u64) {
        let Some(c) = self.conns.remove(&token) else {
            return;
        };
        if !c.registered.is_empty() {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                c.inner.stream().as_raw_fd(),
                EpollEvent::default(),
            );
        }
        let key = (c.inner.local_port(), c.inner.peer_port());
        if self.by_ports.get(&key) == Some(&token) {
            self.by_ports.remove(&key);
            self.local_ports.remove(&key.0);
        }
    }

    /// Takes a packet the guest sent (header plus payload).
    pub fn send_to_host(&mut self, hdr: &Header, data: &[u8]) {
        if hdr.src_cid != self.guest_cid {
            log::debug!("vsock: dropping packet from spoofed CID {}", hdr.src_cid);
            return;
        }
        if hdr.op == op::RST {
            if let Some(&token) = self.by_ports.get(&(hdr.dst_port, hdr.src_port)) {
                if let Some(c) = self.conns.get_mut(&token) {
                    c.inner.recv_from_peer(hdr, data);
                }
                self.sync(token);
            }
            return;
        }
        if hdr.dst_cid != HOST_CID || hdr.type_ != TYPE_STREAM {
            self.reset_peer(hdr);
            return;
        }
        let key = (hdr.dst_port, hdr.src_port);
        match self.by_ports.get(&key) {
            Some(&token) => {
                if let Some(c) = self.conns.get_mut(&token) {
                    c.inner.recv_from_peer(hdr, data);
                }
                self.sync(token);
            }
            None if hdr.op == op::REQUEST => self.guest_connect(hdr),
            None => self.reset_peer(hdr),
        }
    }

    /// Answers a packet with RST (for streams that do not exist or malformed packets).
    pub fn reset_peer(&mut self, hdr: &Header) {
        if hdr.op == op::RST || hdr.src_cid != self.guest_cid {
            return;
        }
        if let Some(&token) = self.by_ports.get(&(hdr.dst_port, hdr.src_port)) {
            if let Some(c) = self.conns.get_mut(&token) {
                c.inner.kill();
            }
            self.sync(token);
            return;
        }
        if self.stray_rst.len() < MAX_STRAY_RST {
            self.stray_rst.push_back((hdr.dst_port, hdr.src_port));
        }
    }

    fn guest_connect(&mut self, hdr: &Header) {
        if self.conns.len() >= MAX_CONNECTIONS {
            self.reset_peer(hdr);
            return;
        }
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{}", hdr.dst_port));
        let stream = match connect_nonblocking(Path::new(&path)) {
            Ok(s) => s,
            Err(e) => {
                log::debug!("vsock: guest connect to {path:?}: {e}");
                self.reset_peer(hdr);
                return;
            }
        };
        let token = self.alloc_token();
        self.by_ports.insert((hdr.dst_port, hdr.src_port), token);
        self.conns.insert(
            token,
            Conn {
                inner: Connection::new_peer(stream, hdr.dst_port, hdr.src_port, hdr),
                registered: EventSet::empty(),
                queued: false,
            },
        );
        self.sync(token);
    }

    /// Produces the next packet for the guest into `hdr` and `buf` (payload room).
    /// Returns the payload length, or `None` when nothing is ready.
    pub fn recv_from_host(&mut self, hdr: &mut Header, buf: &mut [u8]) -> Option<usize> {
        *hdr = Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            type_: TYPE_STREAM,
            buf_alloc: CONN_BUF_SIZE,
            ..Header::default()
        };
        if let Some((src, dst)) = self.stray_rst.pop_front() {
            hdr.src_port = src;
            hdr.dst_port = dst;
            hdr.op = op::RST;
            hdr.buf_alloc = 0;
            return Some(0);
        }
        // One pass over the streams queued now; re-queued ones wait for the next buffer.
        for _ in 0..self.rx_queue.len() {
            let Some(token) = self.rx_queue.pop_front() else {
                break;
            };
            let Some(c) = self.conns.get_mut(&token) else {
                continue;
            };
            c.queued = false;
            let out = c.inner.next_packet(buf);
            if let Some(out) = &out {
                c.inner.fill_header(out, hdr);
            }
            self.sync(token);
            if let Some(out) = out {
                return Some(out.len);
            }
        }
        None
    }

    /// Drops every stream (device reset): host clients see their sockets shut down.
    pub fn reset(&mut self) {
        for (_, mut c) in self.conns.drain() {
            let _ = c.inner.abort();
        }
        for (_, hs) in self.handshakes.drain() {
            let _ = hs.stream.shutdown(std::net::Shutdown::Both);
        }
        // Closed fds leave the epoll set by themselves.
        self.by_ports.clear();
        self.local_ports.clear();
        self.rx_queue.clear();
        self.stray_rst.clear();
    }
}

impl AsRawFd for Muxer {
    /// The epoll fd that becomes readable when a host socket needs attention.
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.uds_path);
    }
}

fn parse_connect(line: &[u8]) -> Option<u32> {
    let line = std::str::from_utf8(line).ok()?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let port = line.strip_prefix("CONNECT ")?;
    port.trim().parse().ok()
}

/// Connects without ever blocking: a listener with a full backlog fails with EAGAIN
/// instead of stalling the device.
fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data, for which all-zero bytes are valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "socket path too long",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: a plain syscall; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new socket that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is a valid, NUL-terminated sockaddr_un and `len` lies within it.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            len as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_line() {
        assert_eq!(parse_connect(b"CONNECT 1024"), Some(1024));
        assert_eq!(parse_connect(b"CONNECT 1024\r"), Some(1024));
        assert_eq!(parse_connect(b"CONNECT -1"), None);
        assert_eq!(parse_connect(b"CONNECT 99999999999"), None);
        assert_eq!(parse_connect(b"connect 1"), None);
        assert_eq!(parse_connect(b"\xff"), None);
    }

    #[test]
    fn nonblocking_connect_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nothing");
        assert!(connect_nonblocking(&missing).is_err());
        let long = dir.path().join("x".repeat(200));
        assert_eq!(
            connect_nonblocking(&long).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        let l = UnixListener::bind(dir.path().join("l")).unwrap();
        let s = connect_nonblocking(&dir.path().join("l")).unwrap();
        drop(l);
        drop(s);
    }
}
