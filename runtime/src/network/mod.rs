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
        let ifaces = inventory::list().map_err(setup)?;
        for i in &ifaces {
            if let Some(why) = i.unredirectable() {
                return Err(Error::Unredirectable {
                    netns: netns.to_path_buf(),
                    iface: i.guest.name.clone(),
                    why,
                });
            }
        }
        if ifaces.len() > MAX_TAPS {
            return Err(setup(format!(
                "{} interfaces; a VM takes at most {MAX_TAPS}",
                ifaces.len()
            )));
        }
        let existing = remove_taps_of(id).map_err(setup)?;
        if existing > 0 {
            log::warn!(
                "{}: removed {existing} stale tap(s) of container {id}",
                netns.display()
            );
        }
        let mut nics = Vec::with_capacity(ifaces.len());
        let made = ifaces.into_iter().enumerate().try_for_each(|(n, i)| {
            let name = tap_name(id, n);
            let fd = tap::create(&name).map_err(|e| format!("creating tap {name}: {e}"))?;
            let nic = VmNic {
                tap_name: name,
                tap: fd,
                guest: i.guest,
            };
            let mtu = nic.guest.mtu.to_string();
            nics.push(nic);
            let nic = nics.last().expect("just pushed");
            iproute::run(
                "ip",
                &["link", "set", "dev", &nic.tap_name, "mtu", &mtu, "up"],
            )?;
            tc_redirect::connect(&nic.guest.name, &nic.tap_name)
        });
        if let Err(msg) = made {
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
    let links = iproute::json("ip", &["link", "show"])?;
    let names: Vec<String> = links
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect();
    let (taps, others): (Vec<_>, Vec<_>) = names.iter().partition(|n| n.starts_with(&prefix));
    if taps.is_empty() {
        return Ok(0);
    }
    let mut first_err = None;
    for dev in others {
        let ours = match tc_redirect::targets(dev) {
            Ok(t) => t.iter().any(|t| t.starts_with(&prefix)),
            Err(e) => {
                first_err.get_or_insert(e);
                false
            }
        };
        if ours {
            if let Err(e) = tc_redirect::disconnect(dev) {
                first_err.get_or_insert(e);
            }
        }
    }
    for tap in &taps {
        if let Err(e) = iproute::run("ip", &["link", "del", "dev", tap]) {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(taps.len()),
    }
}
