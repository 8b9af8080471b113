//! One virtio-blk request as a driver lays it out in a descriptor chain: a readable
//! 16-byte header, data segments, and a writable status byte last. Everything a hostile
//! driver controls is checked here, before the device touches the image: directions,
//! lengths, and that every buffer lies inside guest memory.

use std::io;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
};
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory};

use super::SEG_MAX;

/// `struct virtio_blk_outhdr`.
const HEADER_LEN: u32 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    In,
    Out,
    Flush,
    GetId,
    Discard,
    Unsupported(u32),
}

/// A guest buffer checked to lie inside guest memory.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
}

impl Segment {
    /// The address `pos` bytes in.
    pub fn at(&self, pos: u32) -> io::Result<GuestAddress> {
        self.addr
            .checked_add(u64::from(pos))
            .ok_or_else(|| io::Error::other("segment address overflows"))
    }
}

#[derive(Debug)]
pub struct Request {
    pub kind: RequestKind,
    pub sector: u64,
    pub data: Vec<Segment>,
    pub status_addr: GuestAddress,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("descriptor at {0:#x}+{1} lies outside guest memory")]
    OutsideMemory(u64, u32),
    #[error("the header descriptor is missing, writable or shorter than 16 bytes")]
    BadHeader,
    #[error("the status descriptor is missing, read-only or empty")]
    BadStatus,
    #[error("a data descriptor has the wrong direction for request type {0}")]
    WrongDirection(u32),
    #[error("more than {SEG_MAX} data descriptors")]
    TooManySegments,
}

impl Request {
    /// Parses a chain. The chain iterator already stops at loops and at more
    /// descriptors than the queue holds.
    pub fn parse<M: GuestMemory>(
        mem: &M,
        chain: DescriptorChain<&M>,
    ) -> Result<Request, RequestError> {
        let mut descs = Vec::new();
        for d in chain {
            if !mem.check_range(d.addr(), d.len() as usize) {
                return Err(RequestError::OutsideMemory(d.addr().raw_value(), d.len()));
            }
            descs.push((d.addr(), d.len(), d.is_write_only()));
            // Header, status and at most SEG_MAX data segments.
            if descs.len() > SEG_MAX as usize + 2 {
                return Err(RequestError::TooManySegments);
            }
        }
        let Some(&(hdr_addr, hdr_len, hdr_w)) = descs.first() else {
            return Err(RequestError::BadHeader);
        };
        if hdr_w || hdr_len < HEADER_LEN {
            return Err(RequestError::BadHeader);
        }
        let mut hdr = [0u8; HEADER_LEN as usize];
        mem.read_slice(&mut hdr, hdr_addr)
            .map_err(|_| RequestError::BadHeader)?;
        let type_ = u32::from_le_bytes(hdr[0..4].try_into().expect("4 bytes"));
        let sector = u64::from_le_bytes(hdr[8..16].try_into().expect("8 bytes"));
        if descs.len() < 2 {
            return Err(RequestError::BadStatus);
        }
        let &(status_addr, status_len, status_w) = descs.last().expect("two or more");
        if !status_w || status_len == 0 {
            return Err(RequestError::BadStatus);
        }
        // The status is the last byte of the last descriptor (drivers may merge it).
        let status_addr = status_addr.unchecked_add(u64::from(status_len - 1));
        let kind = match type_ {
            VIRTIO_BLK_T_IN => RequestKind::In,
            VIRTIO_BLK_T_OUT => RequestKind::Out,
            VIRTIO_BLK_T_FLUSH => RequestKind::Flush,
            VIRTIO_BLK_T_GET_ID => RequestKind::GetId,
            VIRTIO_BLK_T_DISCARD => RequestKind::Discard,
            t => RequestKind::Unsupported(t),
        };
        let device_writes = matches!(kind, RequestKind::In | RequestKind::GetId);
        let mut data = Vec::new();
        let last = descs.len() - 1;
        for (i, &(addr, len, w)) in descs.iter().enumerate() {
            // The data part: after the header, before the status byte.
            let (addr, len) = match i {
                0 => {
                    // Data may follow the header in the same descriptor.
                    let rest = len - HEADER_LEN;
                    if rest == 0 {
                        continue;
                    }
                    (addr.unchecked_add(u64::from(HEADER_LEN)), rest)
                }
                i if i == last => {
                    if len == 1 {
                        continue;
                    }
                    (addr, len - 1)
                }
                _ => (addr, len),
            };
            // The header's descriptor is readable and the status's writable, so data
            // sharing them has their direction.
            let writable = match i {
                0 => false,
                i if i == last => true,
                _ => w,
            };
            let checked = !matches!(kind, RequestKind::Unsupported(_) | RequestKind::Flush);
            if checked && writable != device_writes {
                return Err(RequestError::WrongDirection(type_));
            }
            data.push(Segment { addr, len });
        }
        Ok(Request {
            kind,
            sector,
            data,
            status_addr,
        })
    }
}
