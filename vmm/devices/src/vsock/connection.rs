//! One vsock stream between the guest and a host Unix socket: its state machine and the
//! credit-based flow control in both directions.
//!
//! Naming: "local" is the host side (the Unix stream), "peer" is the guest. Guest-to-host
//! bytes are buffered in `tx_buf` only while the host stream would block; our credit
//! (`buf_alloc`, `fwd_cnt`) tells the guest how much it may have in flight, so that buffer is
//! bounded by construction and a guest that ignores credit is reset. Host-to-guest bytes are
//! read from the stream only when the guest has advertised room for them.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use vmm_sys_util::epoll::EventSet;

use super::packet::{op, shutdown, Header, TYPE_STREAM};

/// Guest-to-host bytes we accept in flight per stream (our `buf_alloc`).
pub const CONN_BUF_SIZE: u32 = 256 * 1024;
/// Forwarded bytes after which the guest is told about the freed credit.
pub const CREDIT_UPDATE_THRESHOLD: u32 = CONN_BUF_SIZE / 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Host-initiated: REQUEST sent (or queued), waiting for the guest's RESPONSE.
    LocalInit,
    Established,
    /// The guest is gone (RST, or SHUTDOWN of both directions): only flush what it sent.
    PeerClosed,
    /// Nothing more moves; at most a final RST to the guest is pending.
    Dead,
}

/// Control packets owed to the guest; at most one of each kind is ever pending.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pending {
    request: bool,
    response: bool,
    rst: bool,
    credit_update: bool,
    credit_request: bool,
}

impl Pending {
    fn any(&self) -> bool {
        self.request || self.response || self.rst || self.credit_update || self.credit_request
    }
}

/// A packet the connection wants to send to the guest; the muxer fills in the CIDs.
#[derive(Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub op: u16,
    pub flags: u32,
    pub len: usize,
}

pub struct Connection {
    stream: UnixStream,
    local_port: u32,
    peer_port: u32,
    state: State,
    pending: Pending,

    // Guest-to-host direction.
    tx_buf: VecDeque<u8>,
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,
    /// The guest will send no more (SHUTDOWN with SEND).
    peer_shut_send: bool,
    /// After the flush, answer the guest's full shutdown with RST.
    rst_after_drain: bool,
    host_write_shut: bool,

    // Host-to-guest direction.
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    rx_cnt: Wrapping<u32>,
    /// The guest will receive no more (SHUTDOWN with RCV).
    peer_shut_rcv: bool,
    /// The host stream reported readiness (data, EOF or an error) not yet consumed.
    readable: bool,
    /// The host stream hit EOF; SHUTDOWN(SEND) has been or is being sent.
    local_eof: bool,
    credit_requested: bool,
    /// Host-initiated streams the guest has not answered by then are given up.
    connect_deadline: Option<Instant>,
}

impl Connection {
    /// A host-initiated stream: the guest is asked to accept it on `peer_port`.
    pub fn new_local(
        stream: UnixStream,
        local_port: u32,
        peer_port: u32,
        connect_deadline: Instant,
    ) -> Self {
        let mut c = Self::new(stream, local_port, peer_port, State::LocalInit);
        c.pending.request = true;
        c.connect_deadline = Some(connect_deadline);
        c
    }

    /// When an unanswered host-initiated connect times out.
    pub fn connect_deadline(&self) -> Option<Instant> {
        self.connect_deadline
            .filter(|_| self.state == State::LocalInit)
    }

    /// A guest-initiated stream whose host end is already connected: answer RESPONSE.
    pub fn new_peer(stream: UnixStream, local_port: u32, peer_port: u32, req: &Header) -> Self {
        let mut c = Self::new(stream, local_port, peer_port, State::Established);
        c.update_peer_credit(req);
        c.pending.response = true;
        c
    }

    fn new(stream: UnixStream, local_port: u32, peer_port: u32, state: State) -> Self {
        Connection {
            stream,
            local_port,
            peer_port,
            state,
            pending: Pending::default(),
            tx_buf: VecDeque::new(),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            peer_shut_send: false,
            rst_after_drain: false,
            host_write_shut: false,
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            peer_shut_rcv: false,
            readable: false,
            local_eof: false,
            credit_requested: false,
            connect_deadline: None,
        }
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    pub fn local_port(&self) -> u32 {
        self.local_port
    }

    pub fn peer_port(&self) -> u32 {
        self.peer_port
    }

    /// Whether the guest still sees this stream (packets for its ports belong to it).
    pub fn is_visible_to_peer(&self) -> bool {
        matches!(self.state, State::LocalInit | State::Established)
    }

    /// Done: nothing left to flush to the host nor to tell the guest.
    pub fn is_finished(&self) -> bool {
        self.state == State::Dead && !self.pending.rst
    }

    /// Our credit as the guest last heard it, for every header we send.
    pub fn buf_alloc(&self) -> u32 {
        CONN_BUF_SIZE
    }

    /// Bytes the guest may still send before it overruns our buffer.
    fn peer_free(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn update_peer_credit(&mut self, hdr: &Header) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        if self.peer_free() > 0 {
            self.credit_requested = false;
        }
    }

    fn can_send_data(&self) -> bool {
        self.state == State::Established && !self.local_eof && !self.peer_shut_rcv
    }

    /// Epoll interest on the host stream for the current state.
    pub fn interest(&self) -> EventSet {
        let mut ev = EventSet::empty();
        if self.can_send_data() && !self.readable {
            ev |= EventSet::IN;
        }
        if !self.tx_buf.is_empty() && matches!(self.state, State::Established | State::PeerClosed) {
            ev |= EventSet::OUT;
        }
        ev
    }

    /// Whether [`Connection::next_packet`] has something to send to the guest.
    pub fn has_rx_work(&self) -> bool {
        if self.state == State::Dead {
            return self.pending.rst;
        }
        // Out of credit with a CREDIT_REQUEST already sent: wait for the guest's update.
        let can_read = self.peer_free() > 0 || !self.credit_requested;
        self.pending.any() || (self.readable && self.can_send_data() && can_read)
    }

    /// Kills the stream: drop what is buffered and reset the guest side.
    pub fn kill(&mut self) {
        self.tx_buf.clear();
        self.pending = Pending {
            rst: matches!(self.state, State::LocalInit | State::Established)
                || self.rst_after_drain,
            ..Pending::default()
        };
        self.state = State::Dead;
    }

    /// Handles readiness of the host stream.
    pub fn notify(&mut self, ev: EventSet) {
        if ev.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::ERROR) {
            self.readable = true;
        }
        if ev.intersects(EventSet::OUT | EventSet::HANG_UP | EventSet::ERROR) {
            self.flush_tx();
        }
    }

    /// Handles a packet from the guest addressed to this stream. `data` is its payload.
    pub fn recv_from_peer(&mut self, hdr: &Header, data: &[u8]) {
        if !self.is_visible_to_peer() {
            return;
        }
        self.update_peer_credit(hdr);
        match hdr.op {
            op::RESPONSE if self.state == State::LocalInit => {
                let line = format!("OK {}\n", self.local_port);
                match self.stream.write(line.as_bytes()) {
                    // A fresh socket buffer always takes the short line whole.
                    Ok(n) if n == line.len() => self.state = State::Established,
                    _ => self.kill(),
                }
            }
            op::RW if self.state == State::Established && !self.peer_shut_send => {
                let room = CONN_BUF_SIZE as usize - self.tx_buf.len();
                if data.len() > room {
                    log::warn!(
                        "vsock {}:{}: guest overran its credit, resetting",
                        self.peer_port,
                        self.local_port
                    );
                    self.kill();
                    return;
                }
                self.queue_tx(data);
            }
            op::SHUTDOWN if self.state == State::Established => {
                if hdr.flags & shutdown::SEND != 0 {
                    self.peer_shut_send = true;
                }
                if hdr.flags & shutdown::RCV != 0 && !self.peer_shut_rcv {
                    self.peer_shut_rcv = true;
                    // Let the host's further writes fail instead of piling up unread.
                    let _ = self.stream.shutdown(Shutdown::Read);
                }
                if self.peer_shut_send && self.peer_shut_rcv {
                    // The guest closed: flush, then answer RST to end the stream.
                    self.rst_after_drain = true;
                    self.pending = Pending::default();
                    self.state = State::PeerClosed;
                }
                self.advance();
            }
            op::RST => {
                self.pending = Pending::default();
                self.state = State::PeerClosed;
                self.advance();
            }
            op::CREDIT_UPDATE => {}
            op::CREDIT_REQUEST => self.pending.credit_update = true,
            // RESPONSE or data out of state, a second REQUEST, unknown operations.
            _ => self.kill(),
        }
    }

    fn queue_tx(&mut self, mut data: &[u8]) {
        if self.tx_buf.is_empty() {
            match self.stream.write(data) {
                Ok(n) => {
                    self.forwarded(n);
                    data = &data[n..];
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("vsock {}: host write: {e}", self.local_port);
                    self.kill();
                    return;
                }
            }
        }
        self.tx_buf.extend(data);
    }

    fn flush_tx(&mut self) {
        while !self.tx_buf.is_empty() {
            let (front, _) = self.tx_buf.as_slices();
            match self.stream.write(front) {
                Ok(0) => break,
                Ok(n) => {
                    self.tx_buf.drain(..n);
                    self.forwarded(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::debug!("vsock {}: host write: {e}", self.local_port);
                    self.kill();
                    return;
                }
            }
        }
        self.advance();
    }

    fn forwarded(&mut self, n: usize) {
        self.fwd_cnt += Wrapping(n as u32);
        if (self.fwd_cnt - self.last_fwd_cnt_sent).0 >= CREDIT_UPDATE_THRESHOLD
            && self.state == State::Established
        {
            self.pending.credit_update = true;
        }
    }

    /// Moves on once buffered guest data has reached the host.
    fn advance(&mut self) {
        if !self.tx_buf.is_empty() {
            return;
        }
        if (self.peer_shut_send || self.state == State::PeerClosed) && !self.host_write_shut {
            self.host_write_shut = true;
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        if self.state == State::PeerClosed {
            self.pending = Pending {
                rst: self.rst_after_drain,
                ..Pending::default()
            };
            self.state = State::Dead;
        }
    }

    /// Produces the next packet for the guest, reading host data into `buf` when that is
    /// what is due. Returns `None` when nothing can be sent right now.
    pub fn next_packet(&mut self, buf: &mut [u8]) -> Option<Outgoing> {
        let ctl = |op| {
            Some(Outgoing {
                op,
                flags: 0,
                len: 0,
            })
        };
        if self.pending.rst {
            self.pending = Pending::default();
            self.tx_buf.clear();
            self.state = State::Dead;
            return ctl(op::RST);
        }
        if self.state == State::Dead {
            return None;
        }
        if self.pending.response {
            self.pending.response = false;
            return self.sent(ctl(op::RESPONSE));
        }
        if self.pending.request {
            self.pending.request = false;
            return self.sent(ctl(op::REQUEST));
        }
        if self.readable && self.can_send_data() {
            let room = (self.peer_free() as usize).min(buf.len());
            if room == 0 {
                if !self.credit_requested {
                    self.credit_requested = true;
                    return self.sent(ctl(op::CREDIT_REQUEST));
                }
            } else {
                match self.stream.read(&mut buf[..room]) {
                    Ok(0) => {
                        self.local_eof = true;
                        return self.sent(Some(Outgoing {
                            op: op::SHUTDOWN,
                            flags: shutdown::SEND,
                            len: 0,
                        }));
                    }
                    Ok(n) => {
                        self.rx_cnt += Wrapping(n as u32);
                        return self.sent(Some(Outgoing {
                            op: op::RW,
                            flags: 0,
                            len: n,
                        }));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => self.readable = false,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        log::debug!("vsock {}: host read: {e}", self.local_port);
                        self.kill();
                        return self.next_packet(buf);
                    }
                }
            }
        }
        if self.pending.credit_update || self.pending.credit_request {
            self.pending.credit_request = false;
            return self.sent(ctl(op::CREDIT_UPDATE));
        }
        None
    }

    /// Every header carries our credit, so any packet is also a credit update.
    fn sent(&mut self, out: Option<Outgoing>) -> Option<Outgoing> {
        self.last_fwd_cnt_sent = self.fwd_cnt;
        self.pending.credit_update = false;
        out
    }

    /// Fills the stream-specific fields of a header for a packet to the guest.
    pub fn fill_header(&self, out: &Outgoing, hdr: &mut Header) {
        hdr.src_port = self.local_port;
        hdr.dst_port = self.peer_port;
        hdr.len = out.len as u32;
        hdr.type_ = TYPE_STREAM;
        hdr.op = out.op;
        hdr.flags = out.flags;
        hdr.buf_alloc = CONN_BUF_SIZE;
        hdr.fwd_cnt = self.fwd_cnt.0;
    }

    /// Drops the host stream abruptly (device reset).
    pub fn abort(&mut self) -> io::Result<()> {
        self.tx_buf.clear();
        self.pending = Pending::default();
        self.state = State::Dead;
        self.stream.shutdown(Shutdown::Both)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Connection, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let req = Header {
            op: op::REQUEST,
            buf_alloc: 4096,
            ..Header::default()
        };
        (Connection::new_peer(a, 5000, 777, &req), b)
    }

    fn hdr(op: u16, flags: u32, len: usize) -> Header {
        Header {
            op,
            flags,
            len: len as u32,
            buf_alloc: 4096,
            ..Header::default()
        }
    }

    #[test]
    fn response_first_then_data_within_credit() {
        let (mut c, mut host) = pair();
        let mut buf = vec![0u8; 65536];
        assert_eq!(c.next_packet(&mut buf).unwrap().op, op::RESPONSE);
        host.write_all(&[7u8; 10000]).unwrap();
        c.notify(EventSet::IN);
        let p = c.next_packet(&mut buf).unwrap();
        // The guest advertised 4096 bytes of buffer.
        assert_eq!((p.op, p.len), (op::RW, 4096));
        // Out of credit: ask once, then wait.
        assert_eq!(c.next_packet(&mut buf).unwrap().op, op::CREDIT_REQUEST);
        assert_eq!(c.next_packet(&mut buf), None);
        let mut upd = hdr(op::CREDIT_UPDATE, 0, 0);
        upd.fwd_cnt = 4096;
        c.recv_from_peer(&upd, &[]);
        assert_eq!(c.next_packet(&mut buf).unwrap().len, 4096);
    }

    #[test]
    fn credit_overrun_resets() {
        let (mut c, _host) = pair();
        let big = vec![1u8; CONN_BUF_SIZE as usize];
        // The host does not read, so the socket buffer fills and then tx_buf.
        for _ in 0..8 {
            c.recv_from_peer(&hdr(op::RW, 0, big.len()), &big);
        }
        let mut buf = vec![0u8; 16];
        let mut ops = vec![];
        while let Some(p) = c.next_packet(&mut buf) {
            ops.push(p.op);
        }
        assert_eq!(ops.last(), Some(&op::RST));
        assert!(c.is_finished());
    }

    #[test]
    fn guest_close_drains_before_rst() {
        let (mut c, mut host) = pair();
        let mut buf = vec![0u8; 16];
        c.next_packet(&mut buf);
        let chunk = vec![9u8; 60000];
        let mut sent = 0;
        // Fill the host socket buffer so that the data waits in tx_buf.
        for _ in 0..6 {
            c.recv_from_peer(&hdr(op::RW, 0, chunk.len()), &chunk);
            sent += chunk.len();
            // Grant ourselves credit as the guest would see it.
        }
        assert!(!c.tx_buf.is_empty());
        c.recv_from_peer(&hdr(op::SHUTDOWN, shutdown::SEND | shutdown::RCV, 0), &[]);
        // No RST before the host has everything.
        assert!(!c.has_rx_work());
        let mut got = 0;
        let mut rbuf = vec![0u8; 65536];
        loop {
            match host.read(&mut rbuf) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => c.notify(EventSet::OUT),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, sent);
        assert_eq!(c.next_packet(&mut buf).unwrap().op, op::RST);
        assert!(c.is_finished());
    }

    #[test]
    fn host_eof_becomes_shutdown_send_after_data() {
        let (mut c, mut host) = pair();
        let mut buf = vec![0u8; 4096];
        c.next_packet(&mut buf);
        host.write_all(b"hello").unwrap();
        host.shutdown(Shutdown::Write).unwrap();
        c.notify(EventSet::IN);
        let p = c.next_packet(&mut buf).unwrap();
        assert_eq!((p.op, p.len), (op::RW, 5));
        let p = c.next_packet(&mut buf).unwrap();
        assert_eq!((p.op, p.flags), (op::SHUTDOWN, shutdown::SEND));
        // The guest may still send: the host reads it.
        c.recv_from_peer(&hdr(op::RW, 0, 3), b"abc");
        let mut r = [0u8; 3];
        host.read_exact(&mut r).unwrap();
        assert_eq!(&r, b"abc");
        assert!(!c.is_finished());
    }
}
