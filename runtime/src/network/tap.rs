//! The tap devices that stand in for a container's interfaces: named after the
//! container, created in its network namespace, handed to the VMM as open fds.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// Every hull tap's name starts with this.
const PREFIX: &str = "hull";

/// The name prefix of `id`'s taps: `hull` + 8 hex digits of a hash of the id + `_`
/// (ids are up to 1024 bytes; interface names 15).
pub fn tap_prefix(id: &str) -> String {
    // FNV-1a: stable across builds and hosts, unlike std's hasher.
    let hash = id.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("{PREFIX}{hash:08x}_")
}

/// The tap standing for interface number `n` (0-based, < [`MAX_TAPS`]) of `id`'s
/// netns.
pub fn tap_name(id: &str, n: usize) -> String {
    format!("{}{n}", tap_prefix(id))
}

/// Taps per container: what the 15-byte interface name leaves room for.
pub const MAX_TAPS: usize = 100;

/// Whether `name` has the shape of a hull tap (of any container).
pub fn is_hull_tap(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(PREFIX) else {
        return false;
    };
    let Some((hash, n)) = rest.split_once('_') else {
        return false;
    };
    hash.len() == 8
        && hash.bytes().all(|b| b.is_ascii_hexdigit())
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
}

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Creates tap `name` in the calling thread's network namespace and returns its queue
/// fd (close-on-exec; the caller hands it to the VMM). The tap is persistent: it stays,
/// with its tc filters, until [`super::detach_vm`] removes it, whatever happens to the
/// VMM. Frames on the fd carry a `virtio_net_hdr` (IFF_VNET_HDR; the kernel's default
/// header size is 10 bytes, TUNSETVNETHDRSZ changes it), as virtio-net wants them.
pub(crate) fn create(name: &str) -> io::Result<OwnedFd> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tap name {name:?} is longer than 15 bytes"),
        ));
    }
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| io::Error::new(e.kind(), format!("/dev/net/tun: {e}")))?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes one ifreq, which `req` is (40 bytes, the
    // kernel's layout); the fd is a tun fd this function owns.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TUNSETPERSIST takes an integer argument, no memory.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tun.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_an_interface_name_and_are_recognised() {
        let long = "x".repeat(1024);
        for id in ["a", "container-1", long.as_str()] {
            let last = tap_name(id, MAX_TAPS - 1);
            assert!(last.len() < libc::IFNAMSIZ, "{last}");
            assert!(is_hull_tap(&tap_name(id, 0)) && is_hull_tap(&last));
            assert!(tap_name(id, 3).starts_with(&tap_prefix(id)));
        }
        assert_ne!(tap_prefix("a"), tap_prefix("b"));
        for other in [
            "eth0",
            "hull",
            "hull1234567_0",
            "hullzzzzzzzz_0",
            "hull12345678_",
        ] {
            assert!(!is_hull_tap(other), "{other}");
        }
    }

    #[test]
    fn ifreq_has_the_kernels_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }
}
