//! The host side of virtio-net: a tap device opened (or handed over) with
//! IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, so each read or write is one frame preceded by
//! the same 12-byte virtio-net header the driver uses.

use std::ffi::CStr;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// `struct virtio_net_hdr_v1`, what VERSION_1 drivers put before every frame.
pub const VNET_HDR_LEN: usize = 12;

const IFNAMSIZ: usize = 16;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("tap name {0:?} must be 1 to 15 bytes without NUL")]
    InvalidName(String),
    #[error("cannot open /dev/net/tun: {0}")]
    OpenTun(io::Error),
    #[error("cannot attach to tap {0:?}: {1}")]
    Attach(String, io::Error),
    #[error("fd {0} is not a tap device: {1}")]
    NotTap(RawFd, io::Error),
    #[error("tap fd {0} was opened without {1}")]
    MissingFlag(RawFd, &'static str),
    #[error("cannot configure tap {0}: {1}")]
    Configure(String, io::Error),
}

/// `struct ifreq` as far as the tun ioctls use it.
#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl IfReq {
    fn new() -> Self {
        IfReq {
            name: [0; IFNAMSIZ],
            flags: 0,
            _pad: [0; 22],
        }
    }
}

/// A tap device ready for [`super::Net`].
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
}

impl Tap {
    /// Creates or attaches to the tap interface `name`.
    pub fn open(name: &str) -> Result<Tap, TapError> {
        if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('\0') {
            return Err(TapError::InvalidName(name.to_string()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let mut req = IfReq::new();
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        req.flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `req` is laid out as.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
        if r < 0 {
            return Err(TapError::Attach(
                name.to_string(),
                io::Error::last_os_error(),
            ));
        }
        Self::configure(OwnedFd::from(file))
    }

    /// Takes over an fd the caller opened (e.g. the runtime, from the container's network
    /// namespace); it must be a tap opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR.
    pub fn from_fd(fd: OwnedFd) -> Result<Tap, TapError> {
        let raw = fd.as_raw_fd();
        let mut req = IfReq::new();
        // SAFETY: TUNGETIFF writes one `struct ifreq` into `req`.
        let r = unsafe { libc::ioctl(raw, TUNGETIFF, &mut req as *mut IfReq) };
        if r < 0 {
            return Err(TapError::NotTap(raw, io::Error::last_os_error()));
        }
        for (flag, name) in [
            (IFF_TAP, "IFF_TAP"),
            (IFF_NO_PI, "IFF_NO_PI"),
            (IFF_VNET_HDR, "IFF_VNET_HDR"),
        ] {
            if req.flags & flag == 0 {
                return Err(TapError::MissingFlag(raw, name));
            }
        }
        // SAFETY: fcntl on an fd we own; no memory is passed.
        let fl = unsafe { libc::fcntl(raw, libc::F_GETFL) };
        // SAFETY: as above.
        if fl < 0 || unsafe { libc::fcntl(raw, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
            return Err(TapError::Configure(
                format!("fd {raw}"),
                io::Error::last_os_error(),
            ));
        }
        Self::configure(fd)
    }

    /// Header size and no offloads: frames stay at most MTU-sized, which is what a
    /// driver without GUEST_TSO/MRG_RXBUF sizes its receive buffers for.
    fn configure(fd: OwnedFd) -> Result<Tap, TapError> {
        let raw = fd.as_raw_fd();
        let mut req = IfReq::new();
        // SAFETY: TUNGETIFF writes one `struct ifreq` into `req`.
        let r = unsafe { libc::ioctl(raw, TUNGETIFF, &mut req as *mut IfReq) };
        if r < 0 {
            return Err(TapError::NotTap(raw, io::Error::last_os_error()));
        }
        let name = CStr::from_bytes_until_nul(&req.name)
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default();
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int from the pointer, a live local.
        if unsafe { libc::ioctl(raw, TUNSETVNETHDRSZ, &hdr_len as *const libc::c_int) } < 0 {
            return Err(TapError::Configure(name, io::Error::last_os_error()));
        }
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        if unsafe { libc::ioctl(raw, TUNSETOFFLOAD, 0 as libc::c_ulong) } < 0 {
            return Err(TapError::Configure(name, io::Error::last_os_error()));
        }
        Ok(Tap { fd, name })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Takes ownership of a raw fd number given on the command line.
    ///
    /// # Safety
    /// `fd` must be open and owned by nobody else in this process.
    pub unsafe fn owned_from_raw(fd: RawFd) -> OwnedFd {
        // SAFETY: the caller guarantees sole ownership.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }
}
