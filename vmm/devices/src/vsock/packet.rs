//! The virtio-vsock packet header and how packets move through descriptor chains.
//!
//! Chains are read and written through `virtio_queue::{Reader, Writer}`, so a header or a
//! payload may be split over any number of descriptors: only the byte stream matters, which
//! makes odd but legal driver layouts work and keeps every access bounds-checked by vm-memory.

use std::io::{Read, Write};

use virtio_queue::{DescriptorChain, Reader, Writer};
use vm_memory::bitmap::{BitmapSlice, WithBitmapSlice};
use vm_memory::{ByteValued, GuestMemory, GuestMemoryRegion, Le16, Le32, Le64};

/// Size of the header on the wire (`struct virtio_vsock_hdr`).
pub const HDR_SIZE: usize = std::mem::size_of::<WireHeader>();
/// Largest payload one packet may carry (Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
pub const MAX_PKT_DATA: usize = 64 * 1024;

/// The well-known CID of the host.
pub const HOST_CID: u64 = 2;

/// `type` of stream sockets, the only type this device offers.
pub const TYPE_STREAM: u16 = 1;

/// Packet operations (virtio spec, "Device Operation" of the socket device).
pub mod op {
    pub const REQUEST: u16 = 1;
    pub const RESPONSE: u16 = 2;
    pub const RST: u16 = 3;
    pub const SHUTDOWN: u16 = 4;
    pub const RW: u16 = 5;
    pub const CREDIT_UPDATE: u16 = 6;
    pub const CREDIT_REQUEST: u16 = 7;
}

/// Flags of a SHUTDOWN packet.
pub mod shutdown {
    /// The sender will receive no more data.
    pub const RCV: u32 = 1;
    /// The sender will send no more data.
    pub const SEND: u32 = 2;
}

const _: () = assert!(HDR_SIZE == virtio_vsock::packet::PKT_HEADER_SIZE);

#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct WireHeader {
    src_cid: Le64,
    dst_cid: Le64,
    src_port: Le32,
    dst_port: Le32,
    len: Le32,
    type_: Le16,
    op: Le16,
    flags: Le32,
    buf_alloc: Le32,
    fwd_cnt: Le32,
}

// SAFETY: only integer fields, packed, so every byte pattern is a valid value.
unsafe impl ByteValued for WireHeader {}

/// A decoded packet header, in host byte order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Header {
    /// Decodes a header from its wire bytes.
    pub fn from_bytes(bytes: &[u8; HDR_SIZE]) -> Self {
        let mut w = WireHeader::default();
        w.as_mut_slice().copy_from_slice(bytes);
        Header {
            src_cid: w.src_cid.into(),
            dst_cid: w.dst_cid.into(),
            src_port: w.src_port.into(),
            dst_port: w.dst_port.into(),
            len: w.len.into(),
            type_: w.type_.into(),
            op: w.op.into(),
            flags: w.flags.into(),
            buf_alloc: w.buf_alloc.into(),
            fwd_cnt: w.fwd_cnt.into(),
        }
    }

    /// Encodes the header in wire format.
    pub fn to_bytes(&self) -> [u8; HDR_SIZE] {
        let w = WireHeader {
            src_cid: self.src_cid.into(),
            dst_cid: self.dst_cid.into(),
            src_port: self.src_port.into(),
            dst_port: self.dst_port.into(),
            len: self.len.into(),
            type_: self.type_.into(),
            op: self.op.into(),
            flags: self.flags.into(),
            buf_alloc: self.buf_alloc.into(),
            fwd_cnt: self.fwd_cnt.into(),
        };
        let mut out = [0u8; HDR_SIZE];
        out.copy_from_slice(w.as_slice());
        out
    }
}

/// Why a chain could not be used as a packet.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    #[error("descriptor chain does not map to guest memory")]
    BadChain,
    #[error("descriptor chain holds {0} bytes, fewer than a packet header")]
    ShortHeader(usize),
    #[error("header announces {0} payload bytes, more than {MAX_PKT_DATA}")]
    OversizedPayload(u32),
    #[error("header announces {want} payload bytes but the chain holds {have}")]
    TruncatedPayload { want: u32, have: usize },
}

/// A packet read from a TX (driver to device) chain.
pub struct TxPacket {
    pub hdr: Header,
    /// Payload length; the bytes are in the caller's buffer.
    pub data_len: usize,
}

/// Reads one packet from a TX chain; the payload is copied into `buf` (at least
/// [`MAX_PKT_DATA`] bytes). Device-writable descriptors are ignored, never read.
///
/// On a payload error the header is still returned so that the caller can reset the stream.
pub fn read_tx_chain<'a, B, M, T>(
    mem: &'a M,
    chain: DescriptorChain<T>,
    buf: &mut [u8],
) -> Result<TxPacket, (Option<Header>, PacketError)>
where
    B: BitmapSlice,
    M: GuestMemory,
    <<M as GuestMemory>::R as GuestMemoryRegion>::B: WithBitmapSlice<'a, S = B>,
    T: std::ops::Deref,
    T::Target: GuestMemory + Sized,
{
    let mut reader: Reader<'a, B> =
        Reader::new(mem, chain).map_err(|_| (None, PacketError::BadChain))?;
    let have = reader.available_bytes();
    if have < HDR_SIZE {
        return Err((None, PacketError::ShortHeader(have)));
    }
    let mut raw = [0u8; HDR_SIZE];
    reader
        .read_exact(&mut raw)
        .map_err(|_| (None, PacketError::BadChain))?;
    let hdr = Header::from_bytes(&raw);
    let want = hdr.len as usize;
    if want > MAX_PKT_DATA || want > buf.len() {
        return Err((Some(hdr), PacketError::OversizedPayload(hdr.len)));
    }
    let have = reader.available_bytes();
    if want > have {
        return Err((
            Some(hdr),
            PacketError::TruncatedPayload {
                want: hdr.len,
                have,
            },
        ));
    }
    reader
        .read_exact(&mut buf[..want])
        .map_err(|_| (Some(hdr), PacketError::BadChain))?;
    Ok(TxPacket {
        hdr,
        data_len: want,
    })
}

/// A device-writable RX chain, ready to take one packet.
pub struct RxBuffer<'a, B> {
    writer: Writer<'a, B>,
}

impl<'a, B: BitmapSlice> RxBuffer<'a, B> {
    /// Maps the writable part of an RX chain. Device-readable descriptors are skipped, so
    /// nothing the driver marked read-only is ever written.
    pub fn new<M, T>(mem: &'a M, chain: DescriptorChain<T>) -> Result<Self, PacketError>
    where
        M: GuestMemory,
        <<M as GuestMemory>::R as GuestMemoryRegion>::B: WithBitmapSlice<'a, S = B>,
        T: std::ops::Deref,
        T::Target: GuestMemory + Sized,
    {
        let writer = Writer::new(mem, chain).map_err(|_| PacketError::BadChain)?;
        let have = writer.available_bytes();
        if have < HDR_SIZE {
            return Err(PacketError::ShortHeader(have));
        }
        Ok(RxBuffer { writer })
    }

    /// How many payload bytes fit after the header (capped at [`MAX_PKT_DATA`]).
    pub fn data_capacity(&self) -> usize {
        (self.writer.available_bytes() - HDR_SIZE).min(MAX_PKT_DATA)
    }

    /// Writes header and payload; returns the used length to report.
    pub fn write(mut self, hdr: &Header, data: &[u8]) -> Result<u32, PacketError> {
        debug_assert!(data.len() <= self.data_capacity());
        self.writer
            .write_all(&hdr.to_bytes())
            .map_err(|_| PacketError::BadChain)?;
        self.writer
            .write_all(data)
            .map_err(|_| PacketError::BadChain)?;
        Ok((HDR_SIZE + data.len()) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 0x1234_5678,
            dst_port: 1024,
            len: 77,
            type_: TYPE_STREAM,
            op: op::RW,
            flags: shutdown::SEND,
            buf_alloc: 1 << 18,
            fwd_cnt: 0xdead_beef,
        };
        let b = h.to_bytes();
        assert_eq!(b.len(), 44);
        // Little-endian layout from the spec.
        assert_eq!(&b[0..8], &3u64.to_le_bytes());
        assert_eq!(&b[20..24], &1024u32.to_le_bytes());
        assert_eq!(&b[30..32], &op::RW.to_le_bytes());
        assert_eq!(Header::from_bytes(&b), h);
    }
}
