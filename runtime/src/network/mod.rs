//! Container networking, host side. A container's network is whatever its network
//! namespace holds (CNI, or someone with `ip link add ... type veth`):
//!
//! - OS-level sandbox: the container joins that namespace (`linux.namespaces` network
//!   with a `path`), as runc does; nothing here is needed.
//! - VM sandbox: [`attach_vm`] creates one tap per interface of the namespace, in the
//!   namespace, wires tap and interface together with tc mirred redirects (Kata's
//!   default "tcfilter" model) and returns the taps' fds for the VMM's virtio-net
//!   devices, each with the [`NetInterface`] the guest agent must configure
//!   (`Request::ConfigureNetwork`). [`detach_vm`] undoes it. The namespace itself
//!   belongs to its creator and is left alone.
//!
//! The host side runs iproute2's `ip` and `tc` inside the namespace ([`netns`]); the
//! guest side is `hull_agent::network`.

use std::os::fd::OwnedFd;
use std::path::Path;

use hull_protocol::NetInterface;

mod error;
#[cfg(test)]
mod guest_tests;
mod inventory;
mod iproute;
mod netns;
mod spec;
mod tap;
mod tc_redirect;
#[cfg(test)]
mod tests;

pub use error::{Error, Result};
pub use spec::{check_netns, guest_spec, netns_path};
pub use tap::{tap_name, tap_prefix, MAX_TAPS};

/// One virtio-net NIC of the VM.
#[derive(Debug)]
pub struct VmNic {
    /// The tap in the container's netns (`hull<hash>_<n>`).
    pub tap_name: String,
    /// The tap's queue fd, close-on-exec, with IFF_VNET_HDR: give it to the VMM (QEMU
    /// `-netdev tap,id=n0,fd=N` + `-device virtio-net-device,netdev=n0,mac=<guest.mac>`;
    /// hull-vmm `--net fd=N,mac=<guest.mac>`). Closing it does not remove the tap.
    pub tap: OwnedFd,
    /// What the guest agent configures on the NIC whose MAC is `guest.mac`: the
    /// container interface's own MAC, so peers' ARP caches and the CNI's records stay
    /// true; its MTU, addresses and routes.
    pub guest: NetInterface,
}

/// Connects every interface of `netns` (except `lo`) to a new tap and returns the taps,
/// in interface order; empty for a namespace with only `lo` (a VM without a NIC).
/// Checks every interface before changing anything, and removes whatever it made when a
/// later step fails.
pub fn attach_vm(netns: &Path, id: &str) -> Result<Vec<VmNic>> {
    netns::run_in(netns, || {
        let setup = |msg: String| Error::Setup {
            netns: netns.to_path_buf(),
            msg,
        };
        let found = inventory::list().map_err(setup)?;
        for i in &found.interfaces {
            if let Some(why) = i.unredirectable() {
                return Err(Error::Unredirectable {
                    netns: netns.to_path_buf(),
                    iface: i.guest.name.clone(),
                    why,
                });
            }
        }
        if found.interfaces.len() > MAX_TAPS {
            return Err(setup(format!(
                "{} interfaces; a VM takes at most {MAX_TAPS}",
                found.interfaces.len()
            )));
        }
        let prefix = tap_prefix(id);
        if found.taps.iter().any(|t| t.starts_with(&prefix)) {
            let n = remove_taps_of(id).map_err(setup)?;
            log::warn!(
                "{}: removed {n} stale tap(s) of container {id}",
                netns.display()
            );
        }
        let mut nics = Vec::with_capacity(found.interfaces.len());
        if let Err(msg) = make_taps(id, found.interfaces, &mut nics) {
            drop(nics);
            if let Err(e) = remove_taps_of(id) {
                log::warn!(
                    "{}: cleaning up after a failed attach: {e}",
                    netns.display()
                );
            }
            return Err(setup(msg));
        }
        Ok(nics)
    })
}

/// Creates a tap per interface (pushed to `nics` as soon as it exists, so a failure
/// leaves them to the caller's clean-up), brings them up with the interface's MTU and
/// its name as their alias (detach finds the pairs by it), and redirects each pair.
fn make_taps(
    id: &str,
    ifaces: Vec<inventory::HostInterface>,
    nics: &mut Vec<VmNic>,
) -> std::result::Result<(), String> {
    for (n, i) in ifaces.into_iter().enumerate() {
        let name = tap_name(id, n);
        let fd = tap::create(&name).map_err(|e| format!("creating tap {name}: {e}"))?;
        nics.push(VmNic {
            tap_name: name,
            tap: fd,
            guest: i.guest,
        });
    }
    if nics.is_empty() {
        return Ok(());
    }
    let links: Vec<String> = nics
        .iter()
        .map(|n| {
            format!(
                "link set dev {} mtu {} alias {} up",
                n.tap_name, n.guest.mtu, n.guest.name
            )
        })
        .collect();
    iproute::batch("ip", &links).map_err(|(_, msg)| msg)?;
    let pairs: Vec<(&str, &str)> = nics
        .iter()
        .map(|n| (n.guest.name.as_str(), n.tap_name.as_str()))
        .collect();
    tc_redirect::connect_all(&pairs)
}

/// Removes `id`'s taps and the tc redirects to them from `netns`. Idempotent; a
/// namespace that is gone has nothing left to remove.
pub fn detach_vm(netns: &Path, id: &str) -> Result<()> {
    match netns::run_in(netns, || {
        remove_taps_of(id).map(drop).map_err(|msg| Error::Setup {
            netns: netns.to_path_buf(),
            msg,
        })
    }) {
        Err(Error::NetnsMissing(_)) | Err(Error::NotNetns { .. }) => Ok(()),
        r => r,
    }
}

/// In the calling thread's netns: drops the ingress qdiscs that redirect to `id`'s
/// taps, then the taps; how many taps there were.
fn remove_taps_of(id: &str) -> std::result::Result<usize, String> {
    let prefix = tap_prefix(id);
    let mut taps = Vec::new();
    let mut paired = Vec::new();
    let mut others = Vec::new();
    for l in iproute::json("ip", &["link", "show"])? {
        let name = l["ifname"].as_str().unwrap_or_default().to_string();
        if name.starts_with(&prefix) {
            paired.push(l["ifalias"].as_str().map(str::to_string));
            taps.push(name);
        } else {
            others.push(name);
        }
    }
    if taps.is_empty() {
        return Ok(0);
    }
    // Each tap's alias names its interface; without one, any interface may redirect.
    let candidates: Vec<String> = match paired.into_iter().collect::<Option<Vec<_>>>() {
        Some(names) => others.into_iter().filter(|o| names.contains(o)).collect(),
        None => others,
    };
    let mut first_err = None;
    let mut ours = Vec::new();
    for dev in candidates {
        match tc_redirect::targets(&dev) {
            Ok(t) if t.iter().any(|t| t.starts_with(&prefix)) => ours.push(dev),
            Ok(_) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Err(e) = tc_redirect::disconnect_all(&ours) {
        first_err.get_or_insert(e);
    }
    let dels: Vec<String> = taps.iter().map(|t| format!("link del dev {t}")).collect();
    if let Err((_, e)) = iproute::batch("ip", &dels) {
        first_err.get_or_insert(e);
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(taps.len()),
    }
}
