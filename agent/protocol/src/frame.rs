//! Length-prefixed JSON frames.

use std::io::{self, Read, Write};

use serde::{de::DeserializeOwned, Serialize};

/// Largest frame either side accepts. A spec with many mounts or a large seccomp
/// profile stays far below this; anything larger is a bug or an attack.
pub const MAX_FRAME_LEN: u32 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed in the middle of a frame ({got} of {expected} bytes)")]
    Truncated { got: usize, expected: usize },
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    TooLarge(u64),
    #[error("malformed frame: {0}")]
    Json(#[from] serde_json::Error),
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// Writes one frame.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    let body = serde_json::to_vec(msg)?;
    if body.len() as u64 > MAX_FRAME_LEN as u64 {
        return Err(FrameError::TooLarge(body.len() as u64));
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    // One write so a frame is never split by a concurrent writer on the same stream.
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame. `Ok(None)` means the peer closed the connection cleanly between
/// frames.
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<Option<T>, FrameError> {
    let mut len = [0u8; 4];
    let got = read_full(r, &mut len)?;
    if got == 0 {
        return Ok(None);
    }
    if got < len.len() {
        return Err(FrameError::Truncated { got, expected: 4 });
    }
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len as u64));
    }
    let mut body = vec![0u8; len as usize];
    let got = read_full(r, &mut body)?;
    if got < body.len() {
        return Err(FrameError::Truncated {
            got,
            expected: body.len(),
        });
    }
    Ok(Some(serde_json::from_slice(&body)?))
}

/// Reads until `buf` is full or EOF; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut off = 0;
    while off < buf.len() {
        match r.read(&mut buf[off..]) {
            Ok(0) => break,
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(off)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{Request, Response};
    use std::io::Cursor;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &Request::State { id: "c1".into() }).unwrap();
        write_frame(&mut buf, &Request::Shutdown).unwrap();
        let mut r = Cursor::new(buf);
        let a: Request = read_frame(&mut r).unwrap().unwrap();
        let b: Request = read_frame(&mut r).unwrap().unwrap();
        assert!(matches!(a, Request::State { id } if id == "c1"));
        assert!(matches!(b, Request::Shutdown));
        assert!(read_frame::<_, Request>(&mut r).unwrap().is_none());
    }

    #[test]
    fn truncated_header_and_body() {
        let mut r = Cursor::new(vec![0u8, 0]);
        assert!(matches!(
            read_frame::<_, Request>(&mut r),
            Err(FrameError::Truncated {
                got: 2,
                expected: 4
            })
        ));
        let mut buf = Vec::new();
        write_frame(&mut buf, &Response::Ok).unwrap();
        buf.truncate(buf.len() - 1);
        let mut r = Cursor::new(buf);
        assert!(matches!(
            read_frame::<_, Response>(&mut r),
            Err(FrameError::Truncated { .. })
        ));
    }

    #[test]
    fn oversized_frame_is_refused_before_allocation() {
        let mut buf = (MAX_FRAME_LEN + 1).to_be_bytes().to_vec();
        buf.extend_from_slice(b"{}");
        let mut r = Cursor::new(buf);
        assert!(matches!(
            read_frame::<_, Request>(&mut r),
            Err(FrameError::TooLarge(n)) if n == MAX_FRAME_LEN as u64 + 1
        ));
    }

    #[test]
    fn garbage_is_a_json_error() {
        let mut buf = 5u32.to_be_bytes().to_vec();
        buf.extend_from_slice(b"\xff\x00ab{");
        let mut r = Cursor::new(buf);
        assert!(matches!(
            read_frame::<_, Request>(&mut r),
            Err(FrameError::Json(_))
        ));
        // Valid JSON that is no request is an error too, not a panic.
        let mut buf = Vec::new();
        write_frame(&mut buf, &serde_json::json!({"NoSuchOp": 1})).unwrap();
        assert!(read_frame::<_, Request>(&mut Cursor::new(buf)).is_err());
    }
}
