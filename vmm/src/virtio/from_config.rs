//! Builds the device models a [`DeviceConfig`] names, each wrapped for the
//! virtio-mmio transport, in MMIO slot order: vsock, fs, blk, net, rng.

use std::os::fd::RawFd;

use hull_devices::blk::{BlkConfig, Block};
use hull_devices::fs::{Fs, FsConfig};
use hull_devices::model::DeviceModel;
use hull_devices::net::tap::Tap;
use hull_devices::net::Net;
use hull_devices::rng::Rng;
use hull_devices::vsock::Vsock;
use thiserror::Error;

use super::hosted::{HostedDevice, ThreadInitFactory};
use super::VirtioDevice;
use crate::device_config::{DeviceConfig, NetBackend};

/// A device that cannot be built, naming its flag and the value at fault.
#[derive(Debug, Error)]
#[error("{what}: {reason}")]
pub struct DeviceBuildError {
    what: String,
    reason: String,
}

fn fail(what: String) -> impl FnOnce(String) -> DeviceBuildError {
    move |reason| DeviceBuildError { what, reason }
}

/// The devices in slot order. `thread_init` is run first on every worker thread.
pub fn build_devices(
    config: &DeviceConfig,
    thread_init: Option<ThreadInitFactory>,
) -> Result<Vec<Box<dyn VirtioDevice>>, DeviceBuildError> {
    let mut out: Vec<Box<dyn VirtioDevice>> = Vec::new();
    if let Some(v) = &config.vsock {
        let what = format!("--vsock uds={}", v.uds.display());
        let dev = Vsock::new(v.cid, &v.uds).map_err(|e| fail(what)(e.to_string()))?;
        out.push(hosted("hull-vsock".into(), dev, &thread_init));
    }
    for (i, f) in config.fs.iter().enumerate() {
        let what = format!("--fs tag={},dir={}", f.tag, f.dir.display());
        let mut cfg = FsConfig::new(&f.dir, &f.tag);
        cfg.readonly = f.readonly;
        let dev = Fs::new(cfg).map_err(|e| fail(what)(e.to_string()))?;
        out.push(hosted(format!("hull-fs{i}"), dev, &thread_init));
    }
    for (i, b) in config.blk.iter().enumerate() {
        let what = format!("--blk path={}", b.path.display());
        let dev = Block::new(BlkConfig {
            path: b.path.clone(),
            readonly: b.readonly,
            id: b.id.clone(),
        })
        .map_err(|e| fail(what)(e.to_string()))?;
        out.push(hosted(format!("hull-blk{i}"), dev, &thread_init));
    }
    for (i, n) in config.net.iter().enumerate() {
        let tap = match &n.backend {
            NetBackend::Tap(name) => {
                Tap::open(name).map_err(|e| fail(format!("--net tap={name}"))(e.to_string()))?
            }
            NetBackend::Fd(fd) => {
                let what = format!("--net fd={fd}");
                let owned = inherited_fd(*fd).map_err(|e| fail(what.clone())(e))?;
                Tap::from_fd(owned).map_err(|e| fail(what)(e.to_string()))?
            }
        };
        let dev = Net::new(tap.into_fd(), n.mac);
        out.push(hosted(format!("hull-net{i}"), dev, &thread_init));
    }
    if config.rng {
        out.push(hosted("hull-rng".into(), Rng::new(), &thread_init));
    }
    Ok(out)
}

fn hosted<D: DeviceModel>(
    name: String,
    dev: D,
    init: &Option<ThreadInitFactory>,
) -> Box<dyn VirtioDevice> {
    let h = HostedDevice::new(name, dev);
    Box::new(match init {
        Some(i) => h.with_thread_init(i.clone()),
        None => h,
    })
}

/// Takes over an fd the parent left open for us, after checking it is open.
fn inherited_fd(fd: RawFd) -> Result<std::os::fd::OwnedFd, String> {
    // SAFETY: F_GETFD only queries the fd table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(format!(
            "fd {fd} is not open: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the fd is open and was handed to this process for this device alone.
    Ok(unsafe { Tap::owned_from_raw(fd) })
}
