//! virtio-fs, independent of the transport that carries its queues.
//!
//! A host directory (the bundle's rootfs, a bind-mount volume) is served to the guest's
//! FUSE client by fuse-backend-rs's passthrough file system, in this process, as
//! Dragonball does. The device owns no queues: a transport (hull-vmm's virtio-mmio, or the
//! vhost-user backend in [`crate::vhost_user`]) hands it one queue plus guest memory
//! whenever that queue is kicked, and signals the driver when [`Fs::process`] says so;
//! [`worker`] runs it on its own thread for an in-process transport.
//! Every queue (high-priority and request queues) is served the same way: requests are
//! answered synchronously, so nothing is ever left in flight across a reset.
//!
//! Confinement rests on the passthrough file system: inodes are `O_PATH` fds opened with
//! `openat(parent, name, O_NOFOLLOW)`, names with `/` and `..`/`.` components are refused,
//! `..` of the root is the root, and only regular files and directories are ever opened.
//! [`Fs`] adds a screen in front of it: unknown opcodes never reach the server, and a
//! read-only share refuses every request that would change it.
//!
//! Ownership: a file is created as the requesting guest uid/gid by switching the serving
//! thread's credentials alone (raw `setresuid`/`setresgid`), so the rest of the VMM keeps
//! its own; that needs a root (CAP_SETUID/CAP_SETGID) process, as virtiofsd does.

#[cfg(test)]
mod tests;
pub mod worker;

use std::ffi::CString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{InHeader, Opcode, OpenIn, OutHeader};
use fuse_backend_rs::api::server::Server;
pub use fuse_backend_rs::passthrough::CachePolicy;
use fuse_backend_rs::passthrough::{Config, PassthroughFs};
use fuse_backend_rs::transport::{Reader, VirtioFsWriter};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{DescriptorChain, Queue};
use vm_memory::{ByteValued, GuestMemory};

use crate::model::read_config_bytes;
use crate::queue_drain::drain_queue;

/// virtio device ID of the file system device.
pub const VIRTIO_ID_FS: u32 = 26;
/// Queue 0 is the high-priority queue (FORGET, INTERRUPT); request queues follow.
pub const HIPRIO_QUEUE: usize = 0;
/// Request queues offered (`num_request_queues` in the config space).
pub const NUM_REQUEST_QUEUES: usize = 1;
pub const NUM_QUEUES: usize = 1 + NUM_REQUEST_QUEUES;
/// Largest queue size offered.
pub const QUEUE_MAX_SIZE: u16 = 1024;
/// `struct virtio_fs_config { u8 tag[36]; le32 num_request_queues; }`
pub const TAG_LEN: usize = 36;
const CONFIG_LEN: usize = TAG_LEN + 4;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("tag {0:?} must be 1 to 36 bytes without NUL")]
    InvalidTag(String),
    #[error("shared directory {0}: {1}")]
    SharedDir(PathBuf, io::Error),
    #[error("passthrough file system: {0}")]
    Passthrough(io::Error),
    #[error("virtqueue: {0}")]
    Queue(#[from] virtio_queue::Error),
}

/// What is shared and how.
#[derive(Clone, Debug)]
pub struct FsConfig {
    pub shared_dir: PathBuf,
    /// The mount tag the guest names (`mount -t virtiofs <tag> /mnt`).
    pub tag: String,
    /// Refuse every change to the shared directory (EROFS).
    pub readonly: bool,
    /// Guest caching: `Auto` (close-to-open) suits a rootfs the host does not change
    /// behind the guest's back; `Never` for volumes the host writes to as well.
    pub cache: CachePolicy,
}

impl FsConfig {
    pub fn new(shared_dir: impl Into<PathBuf>, tag: impl Into<String>) -> Self {
        FsConfig {
            shared_dir: shared_dir.into(),
            tag: tag.into(),
            readonly: false,
            cache: CachePolicy::Auto,
        }
    }
}

pub struct Fs {
    cfg: FsConfig,
    /// Canonical shared directory.
    root: PathBuf,
    server: Server<Arc<PassthroughFs>>,
}

impl Fs {
    pub fn new(cfg: FsConfig) -> Result<Self, FsError> {
        let tag_ok = (1..=TAG_LEN).contains(&cfg.tag.len()) && !cfg.tag.contains('\0');
        if !tag_ok {
            return Err(FsError::InvalidTag(cfg.tag));
        }
        let root = std::fs::canonicalize(&cfg.shared_dir)
            .and_then(|p| {
                if p.is_dir() {
                    Ok(p)
                } else {
                    Err(io::Error::from_raw_os_error(libc::ENOTDIR))
                }
            })
            .map_err(|e| FsError::SharedDir(cfg.shared_dir.clone(), e))?;
        let server = Server::new(Arc::new(passthrough(&root, &cfg)?));
        Ok(Fs { cfg, root, server })
    }

    pub fn tag(&self) -> &str {
        &self.cfg.tag
    }

    pub fn shared_dir(&self) -> &Path {
        &self.root
    }

    pub fn readonly(&self) -> bool {
        self.cfg.readonly
    }

    /// Feature bits the device offers (virtio-fs defines none of its own here: no
    /// notification queue, no DAX window).
    pub fn features() -> u64 {
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
    }

    /// Reads the config space; bytes beyond it read as zero.
    pub fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut cfg = [0u8; CONFIG_LEN];
        cfg[..self.cfg.tag.len()].copy_from_slice(self.cfg.tag.as_bytes());
        cfg[TAG_LEN..].copy_from_slice(&(NUM_REQUEST_QUEUES as u32).to_le_bytes());
        read_config_bytes(&cfg, offset, data);
    }

    /// Forgets every inode and open file of the old FUSE session (the driver reset the
    /// device; its next session starts with FUSE_INIT).
    pub fn reset(&mut self) -> Result<(), FsError> {
        self.server = Server::new(Arc::new(passthrough(&self.root, &self.cfg)?));
        Ok(())
    }

    /// Answers every request available on `q`. Never blocks on the guest; a queue that is
    /// not ready or whose rings lie outside guest memory is left alone. Returns whether the
    /// driver must be notified.
    pub fn process<M: GuestMemory>(&self, mem: &M, q: &mut Queue) -> Result<bool, FsError> {
        Ok(drain_queue(mem, q, |chain| self.handle_chain(mem, chain))?)
    }

    /// Serves one request; returns the bytes written to the chain's writable part. A chain
    /// that cannot be read or answered is completed with nothing written.
    fn handle_chain<M: GuestMemory>(&self, mem: &M, chain: DescriptorChain<&M>) -> u32 {
        let head = chain.head_index();
        let reader = match Reader::from_descriptor_chain(mem, chain.clone()) {
            Ok(r) => r,
            Err(e) => {
                log::debug!("virtio-fs: chain {head}: bad request buffers: {e}");
                return 0;
            }
        };
        let mut writer = match VirtioFsWriter::new(mem, chain) {
            Ok(w) => w,
            Err(e) => {
                log::debug!("virtio-fs: chain {head}: bad reply buffers: {e}");
                return 0;
            }
        };
        // The server reports the reply's length even when it found no room for it.
        let room = writer.available_bytes();
        let result = match self.screen(reader.clone()) {
            Screen::Serve => self
                .server
                .handle_message(reader, writer.into(), None, None)
                .map_err(|e| e.to_string()),
            Screen::Refuse(hdr, errno) => reply_error(&mut writer, hdr.unique, errno)
                .map(|()| writer.bytes_written())
                .map_err(|e| e.to_string()),
            Screen::Malformed => Err("no FUSE header".into()),
        };
        match result {
            Ok(n) => u32::try_from(n.min(room)).unwrap_or(0),
            Err(e) => {
                log::debug!("virtio-fs: chain {head}: {e}");
                0
            }
        }
    }

    /// Decides before the server sees a request whether it may: the server would log
    /// unknown opcodes through an invalid enum value, and it knows nothing of read-only.
    fn screen<S: vm_memory::bitmap::BitmapSlice>(&self, mut r: Reader<'_, S>) -> Screen {
        let Ok(hdr) = r.read_obj::<InHeader>() else {
            return Screen::Malformed;
        };
        let Some(op) = opcode(hdr.opcode) else {
            return Screen::Refuse(hdr, libc::ENOSYS);
        };
        if self.cfg.readonly && changes_fs(op, &mut r) {
            return Screen::Refuse(hdr, libc::EROFS);
        }
        Screen::Serve
    }
}

enum Screen {
    Serve,
    Refuse(InHeader, i32),
    Malformed,
}

fn passthrough(root: &Path, cfg: &FsConfig) -> Result<PassthroughFs, FsError> {
    let root_dir = root
        .to_str()
        .filter(|s| CString::new(*s).is_ok())
        .ok_or_else(|| {
            FsError::SharedDir(
                root.to_path_buf(),
                io::Error::new(io::ErrorKind::InvalidInput, "not valid UTF-8"),
            )
        })?;
    let timeout = match cfg.cache {
        CachePolicy::Never => Duration::ZERO,
        _ => Duration::from_secs(1),
    };
    let pcfg = Config {
        root_dir: root_dir.to_string(),
        cache_policy: cfg.cache.clone(),
        entry_timeout: timeout,
        attr_timeout: timeout,
        // File capabilities and ACLs in images need xattrs.
        xattr: true,
        // Guest-provided file handles are never used: they could name any host inode.
        inode_file_handles: false,
        do_import: true,
        ..Config::default()
    };
    let fs = PassthroughFs::<()>::new(pcfg).map_err(FsError::Passthrough)?;
    fs.import().map_err(FsError::Passthrough)?;
    Ok(fs)
}

/// The opcode if it is one the server knows (the ABI has holes at 7 and 19).
fn opcode(raw: u32) -> Option<Opcode> {
    use Opcode::*;
    const KNOWN: [Opcode; 48] = [
        Lookup,
        Forget,
        Getattr,
        Setattr,
        Readlink,
        Symlink,
        Mknod,
        Mkdir,
        Unlink,
        Rmdir,
        Rename,
        Link,
        Open,
        Read,
        Write,
        Statfs,
        Release,
        Fsync,
        Setxattr,
        Getxattr,
        Listxattr,
        Removexattr,
        Flush,
        Init,
        Opendir,
        Readdir,
        Releasedir,
        Fsyncdir,
        Getlk,
        Setlk,
        Setlkw,
        Access,
        Create,
        Interrupt,
        Bmap,
        Destroy,
        Ioctl,
        Poll,
        NotifyReply,
        BatchForget,
        Fallocate,
        Readdirplus,
        Rename2,
        Lseek,
        CopyFileRange,
        SetupMapping,
        RemoveMapping,
        MaxOpcode,
    ];
    KNOWN
        .into_iter()
        .find(|&op| op as u32 == raw && raw != MaxOpcode as u32)
}

/// Whether `op` (whose arguments follow in `r`) would change the shared directory.
fn changes_fs<S: vm_memory::bitmap::BitmapSlice>(op: Opcode, r: &mut Reader<'_, S>) -> bool {
    use Opcode::*;
    match op {
        Setattr | Symlink | Mknod | Mkdir | Unlink | Rmdir | Rename | Link | Write | Setxattr
        | Removexattr | Create | Fallocate | Rename2 | CopyFileRange | SetupMapping | Ioctl => true,
        Open => match r.read_obj::<OpenIn>() {
            Ok(o) => {
                let flags = o.flags as i32;
                flags & libc::O_ACCMODE != libc::O_RDONLY
                    || flags & (libc::O_TRUNC | libc::O_CREAT) != 0
            }
            // Let the server reject the malformed request.
            Err(_) => false,
        },
        _ => false,
    }
}

fn reply_error<W: Write>(w: &mut W, unique: u64, errno: i32) -> io::Result<()> {
    let hdr = OutHeader {
        len: std::mem::size_of::<OutHeader>() as u32,
        error: -errno,
        unique,
    };
    w.write_all(hdr.as_slice())
}

/// Every inode the guest has looked up holds an fd here: allow as many as the hard limit.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for the kernel to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: `lim` is a valid rlimit; raising the soft limit up to the hard one is allowed.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        log::warn!(
            "virtio-fs: cannot raise the open-file limit: {}",
            io::Error::last_os_error()
        );
    }
}
