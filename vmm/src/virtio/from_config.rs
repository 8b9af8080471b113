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
use hull_devices::worker::ThreadInit;
use thiserror::Error;

use super::hosted::{HostedDevice, ThreadOptions};
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

/// The devices in slot order, each on its own thread. With `seccomp`, each thread
/// installs the device filter first; `selftest` makes each one break it at activation.
pub fn build_devices(
    config: &DeviceConfig,
    seccomp: bool,
    selftest: bool,
) -> Result<Vec<Box<dyn VirtioDevice>>, DeviceBuildError> {
    let options = || ThreadOptions {
        init: seccomp.then(|| -> ThreadInit {
            Box::new(|| {
                crate::seccomp::install(crate::seccomp::ThreadKind::Device)
                    .map_err(|e| e.to_string())
            })
        }),
        on_activate: selftest.then_some(crate::seccomp::forbidden_call_for_selftest as fn()),
    };
    let mut out: Vec<Box<dyn VirtioDevice>> = Vec::new();
    if let Some(v) = &config.vsock {
        let what = format!("--vsock uds={}", v.uds.display());
        let dev = Vsock::new(v.cid, &v.uds).map_err(|e| fail(what)(e.to_string()))?;
        out.push(hosted("hull-vsock".into(), dev, options())?);
    }
    for (i, f) in config.fs.iter().enumerate() {
        let what = format!("--fs tag={},dir={}", f.tag, f.dir.display());
        let mut cfg = FsConfig::new(&f.dir, &f.tag);
        cfg.readonly = f.readonly;
        let dev = Fs::new(cfg).map_err(|e| fail(what)(e.to_string()))?;
        out.push(hosted(format!("hull-fs{i}"), dev, options())?);
    }
    for (i, b) in config.blk.iter().enumerate() {
        let what = format!("--blk path={}", b.path.display());
        let dev = Block::new(BlkConfig {
            path: b.path.clone(),
            readonly: b.readonly,
            id: b.id.clone(),
        })
        .map_err(|e| fail(what)(e.to_string()))?;
        out.push(hosted(format!("hull-blk{i}"), dev, options())?);
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
        out.push(hosted(format!("hull-net{i}"), dev, options())?);
    }
    if config.rng {
        out.push(hosted("hull-rng".into(), Rng::new(), options())?);
    }
    Ok(out)
}

fn hosted<D: DeviceModel>(
    name: String,
    dev: D,
    options: ThreadOptions,
) -> Result<Box<dyn VirtioDevice>, DeviceBuildError> {
    let what = format!("{name} device thread");
    HostedDevice::new(name, dev, options)
        .map(|h| Box::new(h) as Box<dyn VirtioDevice>)
        .map_err(|e| fail(what)(e.to_string()))
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
