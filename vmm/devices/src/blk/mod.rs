//! virtio-blk on a raw image file, read-only or read-write, with flush, discard and
//! GET_ID, independent of the transport that carries its queue.
//!
//! [`request`] parses one descriptor chain into a request (refusing what a hostile
//! driver might send); this file owns the image and executes requests against it.

pub mod request;
#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestMemory};

use self::request::{Request, RequestKind, Segment};
use crate::model::DeviceModel;
use crate::queue_drain::drain_queue;
use crate::worker::{each_queue, QueueHandler, QueueRef};

/// virtio device ID of the block device.
pub const VIRTIO_ID_BLOCK: u32 = 2;
pub const SECTOR_SIZE: u64 = 512;
/// QEMU's virtio-mmio lets the driver use 1024 whatever the backend says, so offer that.
pub const QUEUE_MAX_SIZE: u16 = 1024;
/// Data segments per request the driver may use (config `seg_max`).
pub const SEG_MAX: u32 = 126;
/// Largest discard the driver may ask for at once, in sectors (1 GiB).
pub const MAX_DISCARD_SECTORS: u32 = 1 << 21;
/// Discard ranges per request.
pub const MAX_DISCARD_SEG: u32 = 32;
/// Bytes moved between the image and guest memory per step.
const CHUNK: usize = 128 << 10;

#[derive(Debug, thiserror::Error)]
pub enum BlkError {
    #[error("block image {0}: {1}")]
    Open(PathBuf, io::Error),
    #[error("block image {0} is not a regular file or block device")]
    NotAFile(PathBuf),
    #[error("block device id {0:?} is longer than {VIRTIO_BLK_ID_BYTES} bytes")]
    IdTooLong(String),
    #[error("virtqueue: {0}")]
    Queue(#[from] virtio_queue::Error),
}

/// What to serve and how.
#[derive(Clone, Debug)]
pub struct BlkConfig {
    pub path: PathBuf,
    pub readonly: bool,
    /// Serial the guest reads with GET_ID (`/sys/block/vda/serial`); at most 20 bytes.
    pub id: Option<String>,
}

pub struct Block {
    cfg: BlkConfig,
    file: File,
    /// Image size in bytes, rounded down to whole sectors.
    size: u64,
    buf: Box<[u8]>,
}

impl Block {
    pub fn new(cfg: BlkConfig) -> Result<Self, BlkError> {
        if let Some(id) = &cfg.id {
            if id.len() > VIRTIO_BLK_ID_BYTES as usize {
                return Err(BlkError::IdTooLong(id.clone()));
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(!cfg.readonly)
            .open(&cfg.path)
            .map_err(|e| BlkError::Open(cfg.path.clone(), e))?;
        let meta = file
            .metadata()
            .map_err(|e| BlkError::Open(cfg.path.clone(), e))?;
        use std::os::unix::fs::FileTypeExt;
        let size = if meta.is_file() {
            meta.len()
        } else if meta.file_type().is_block_device() {
            device_size(&file).map_err(|e| BlkError::Open(cfg.path.clone(), e))?
        } else {
            return Err(BlkError::NotAFile(cfg.path.clone()));
        };
        Ok(Block {
            cfg,
            file,
            size: size / SECTOR_SIZE * SECTOR_SIZE,
            buf: vec![0u8; CHUNK].into_boxed_slice(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.cfg.path
    }

    pub fn readonly(&self) -> bool {
        self.cfg.readonly
    }

    /// Capacity in sectors.
    pub fn capacity(&self) -> u64 {
        self.size / SECTOR_SIZE
    }

    pub fn features(&self) -> u64 {
        let mut f = (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_FLUSH);
        if self.cfg.readonly {
            f |= 1 << VIRTIO_BLK_F_RO;
        } else {
            f |= 1 << VIRTIO_BLK_F_DISCARD;
        }
        f
    }

    /// `struct virtio_blk_config` up to the discard fields.
    pub fn config_space(&self) -> Vec<u8> {
        let mut c = vec![0u8; 48];
        c[0..8].copy_from_slice(&self.capacity().to_le_bytes());
        c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        c[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes()); // blk_size
        c[34..36].copy_from_slice(&1u16.to_le_bytes()); // num_queues
        c[36..40].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
        c[40..44].copy_from_slice(&MAX_DISCARD_SEG.to_le_bytes());
        c[44..48].copy_from_slice(&1u32.to_le_bytes()); // discard_sector_alignment
        c
    }

    /// Serves every request available on `q`; returns whether the driver must be
    /// notified. A queue that is not ready or lies outside guest memory is left alone.
    pub fn process<M: GuestMemory>(&mut self, mem: &M, q: &mut Queue) -> Result<bool, BlkError> {
        Ok(drain_queue(mem, q, |chain| {
            let head = chain.head_index();
            match Request::parse(mem, chain) {
                Ok(req) => {
                    let (status, written) = self.execute(mem, &req);
                    // The status byte lies in guest memory the parser checked.
                    match mem.write_obj(status, req.status_addr) {
                        Ok(()) => written.saturating_add(1),
                        Err(_) => 0,
                    }
                }
                Err(e) => {
                    log::debug!("virtio-blk: chain {head}: {e}");
                    0
                }
            }
        })?)
    }

    /// Runs one request; returns the status byte and the bytes written to the guest's
    /// data buffers.
    fn execute<M: GuestMemory>(&mut self, mem: &M, req: &Request) -> (u8, u32) {
        let result = match req.kind {
            RequestKind::In => self.read(mem, req.sector, &req.data),
            RequestKind::Out if self.cfg.readonly => Err(io::ErrorKind::PermissionDenied.into()),
            RequestKind::Out => self.write(mem, req.sector, &req.data).map(|_| 0),
            RequestKind::Flush => self.file.sync_data().map(|_| 0),
            RequestKind::GetId => self.get_id(mem, &req.data),
            RequestKind::Discard if self.cfg.readonly => {
                Err(io::ErrorKind::PermissionDenied.into())
            }
            RequestKind::Discard => self.discard(mem, &req.data).map(|_| 0),
            RequestKind::Unsupported(t) => {
                log::debug!("virtio-blk: request type {t} unsupported");
                return (VIRTIO_BLK_S_UNSUPP as u8, 0);
            }
        };
        match result {
            Ok(n) => (VIRTIO_BLK_S_OK as u8, n),
            Err(e) => {
                log::debug!("virtio-blk: {:?} at sector {}: {e}", req.kind, req.sector);
                (VIRTIO_BLK_S_IOERR as u8, 0)
            }
        }
    }

    /// The byte range a data transfer covers, if it lies inside the image.
    fn range(&self, sector: u64, data: &[Segment]) -> io::Result<u64> {
        let len: u64 = data.iter().map(|s| u64::from(s.len)).sum();
        let start = sector
            .checked_mul(SECTOR_SIZE)
            .filter(|s| s.checked_add(len).is_some_and(|end| end <= self.size))
            .ok_or_else(|| io::Error::other("beyond the end of the image"))?;
        Ok(start)
    }

    fn read<M: GuestMemory>(&mut self, mem: &M, sector: u64, data: &[Segment]) -> io::Result<u32> {
        let mut off = self.range(sector, data)?;
        let mut done = 0u32;
        for seg in data {
            let mut pos = 0u32;
            while pos < seg.len {
                let n = CHUNK.min((seg.len - pos) as usize);
                self.file.read_exact_at(&mut self.buf[..n], off)?;
                mem.write_slice(&self.buf[..n], seg.at(pos)?)
                    .map_err(io::Error::other)?;
                pos += n as u32;
                off += n as u64;
                done = done.saturating_add(n as u32);
            }
        }
        Ok(done)
    }

    fn write<M: GuestMemory>(&mut self, mem: &M, sector: u64, data: &[Segment]) -> io::Result<()> {
        let mut off = self.range(sector, data)?;
        for seg in data {
            let mut pos = 0u32;
            while pos < seg.len {
                let n = CHUNK.min((seg.len - pos) as usize);
                mem.read_slice(&mut self.buf[..n], seg.at(pos)?)
                    .map_err(io::Error::other)?;
                self.file.write_all_at(&self.buf[..n], off)?;
                pos += n as u32;
                off += n as u64;
            }
        }
        Ok(())
    }

    fn get_id<M: GuestMemory>(&self, mem: &M, data: &[Segment]) -> io::Result<u32> {
        // The id is NUL padded to 20 bytes; shorter buffers get what fits.
        let mut id = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        if let Some(s) = &self.cfg.id {
            id[..s.len()].copy_from_slice(s.as_bytes());
        }
        let mut done = 0usize;
        for seg in data {
            let n = (seg.len as usize).min(id.len() - done);
            mem.write_slice(&id[done..done + n], seg.addr)
                .map_err(io::Error::other)?;
            done += n;
            if done == id.len() {
                break;
            }
        }
        Ok(done as u32)
    }

    fn discard<M: GuestMemory>(&self, mem: &M, data: &[Segment]) -> io::Result<()> {
        // Each range is `struct virtio_blk_discard_write_zeroes` (16 bytes).
        let mut ranges = Vec::new();
        for seg in data {
            if seg.len % 16 != 0 {
                return Err(io::Error::other("discard segment not a multiple of 16"));
            }
            for i in 0..seg.len / 16 {
                let mut raw = [0u8; 16];
                mem.read_slice(&mut raw, seg.at(i * 16)?)
                    .map_err(io::Error::other)?;
                let sector = u64::from_le_bytes(raw[0..8].try_into().expect("8 bytes"));
                let count = u32::from_le_bytes(raw[8..12].try_into().expect("4 bytes"));
                let flags = u32::from_le_bytes(raw[12..16].try_into().expect("4 bytes"));
                if flags != 0 || count > MAX_DISCARD_SECTORS {
                    return Err(io::Error::other("bad discard range"));
                }
                ranges.push((sector, count));
                if ranges.len() > MAX_DISCARD_SEG as usize {
                    return Err(io::Error::other("too many discard ranges"));
                }
            }
        }
        // Check every range before changing anything.
        let mut spans = Vec::with_capacity(ranges.len());
        for (sector, count) in ranges {
            let len = u64::from(count) * SECTOR_SIZE;
            let start = sector
                .checked_mul(SECTOR_SIZE)
                .filter(|s| s.checked_add(len).is_some_and(|end| end <= self.size))
                .ok_or_else(|| io::Error::other("discard beyond the end of the image"))?;
            spans.push((start, len));
        }
        for (start, len) in spans {
            punch_hole(&self.file, start, len)?;
        }
        Ok(())
    }
}

/// Frees `[start, start + len)` of the image; reads of it return zeros afterwards.
fn punch_hole(file: &File, start: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let (off, n) = (
        libc::off_t::try_from(start).map_err(io::Error::other)?,
        libc::off_t::try_from(len).map_err(io::Error::other)?,
    );
    // SAFETY: fallocate on a file descriptor we own; no memory is passed.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            n,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Size of a block device in bytes (BLKGETSIZE64).
fn device_size(file: &File) -> io::Result<u64> {
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    let mut size = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64 to the pointer, which is a live local.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) };
    if r == 0 {
        Ok(size)
    } else {
        Err(io::Error::last_os_error())
    }
}

impl QueueHandler for Block {
    fn process<M: GuestMemory>(&mut self, mem: &M, queues: &mut [QueueRef<'_>]) -> Vec<usize> {
        each_queue("virtio-blk", queues, |q| Block::process(self, mem, q))
    }
}

impl DeviceModel for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_MAX_SIZE]
    }

    fn features(&self) -> u64 {
        Block::features(self)
    }

    fn config_space(&self) -> Vec<u8> {
        Block::config_space(self)
    }

    /// Requests are answered synchronously, so nothing is in flight to drop.
    fn reset(&mut self) {}
}
