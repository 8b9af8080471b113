//! The host end of the guest's vsock: a Unix socket speaking Firecracker's hybrid
//! vsock handshake (`CONNECT <port>\n` answered by `OK <host port>\n`).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Longest an answer to `CONNECT` may take (the guest's accept, through virtio).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A stream to guest port `port` through the hybrid vsock socket `uds`.
pub fn connect(uds: &Path, port: u32) -> io::Result<UnixStream> {
    let mut s = UnixStream::connect(uds)?;
    s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())?;
    // Byte by byte: what follows the line belongs to the guest's protocol.
    let mut line = Vec::with_capacity(16);
    let mut b = [0u8; 1];
    loop {
        if s.read(&mut b)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("nothing listens on guest vsock port {port}"),
            ));
        }
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
        if line.len() > 64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "hybrid vsock: answer line too long",
            ));
        }
    }
    if !line.starts_with(b"OK ") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "hybrid vsock: unexpected answer {:?}",
                String::from_utf8_lossy(&line)
            ),
        ));
    }
    s.set_read_timeout(None)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;

    #[test]
    fn handshake_then_payload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let l = UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            for answer in ["OK 1073741824\nhello", "ERR\n"] {
                let (s, _) = l.accept().unwrap();
                let mut r = io::BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                assert_eq!(line, "CONNECT 1024\n");
                (&s).write_all(answer.as_bytes()).unwrap();
            }
        });
        let mut s = connect(&path, 1024).unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        let e = connect(&path, 1024).unwrap_err();
        assert!(e.to_string().contains("ERR"), "{e}");
        t.join().unwrap();
    }
}
