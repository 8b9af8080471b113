//! What a container's network namespace holds: its interfaces (except `lo` and hull's
//! own taps) with MAC, MTU, addresses and routes, read with `ip -j` in the namespace.

use std::collections::HashMap;

use hull_protocol::{NetInterface, Route};
use serde_json::Value;

use super::iproute;
use super::tap;

/// One interface of the namespace and what the guest must make of it.
#[derive(Debug, Clone)]
pub(crate) struct HostInterface {
    /// `linkinfo.info_kind` (`veth`, `macvlan`, `tun`...); None for physical NICs.
    pub kind: Option<String>,
    /// `ether`, `none` (L3 tun), `ipip`...
    pub link_type: String,
    pub guest: NetInterface,
}

impl HostInterface {
    /// Why tc cannot redirect this interface's frames to and from a tap, if it cannot.
    pub fn unredirectable(&self) -> Option<String> {
        if self.link_type != "ether" {
            return Some(format!(
                "its link type is {:?}{}; only Ethernet interfaces carry the frames a virtio-net NIC sends and receives",
                self.link_type,
                self.kind
                    .as_deref()
                    .map(|k| format!(" (kind {k})"))
                    .unwrap_or_default()
            ));
        }
        None
    }
}

/// What [`list`] found.
pub(crate) struct Inventory {
    pub interfaces: Vec<HostInterface>,
    /// hull taps already in the namespace (of any container).
    pub taps: Vec<String>,
}

/// Lists the interfaces of the calling thread's network namespace, in index order,
/// with two `ip` runs.
pub(crate) fn list() -> Result<Inventory, String> {
    let mut interfaces: Vec<HostInterface> = Vec::new();
    let mut taps = Vec::new();
    for l in iproute::json("ip", &["-d", "addr", "show"])? {
        let name = str_of(&l, "ifname");
        let kind = l["linkinfo"]["info_kind"].as_str().map(str::to_string);
        if kind.as_deref() == Some("tun") && tap::is_hull_tap(&name) {
            taps.push(name);
            continue;
        }
        if name == "lo" {
            continue;
        }
        let mut guest = NetInterface {
            mac: str_of(&l, "address"),
            mtu: l["mtu"].as_u64().unwrap_or(1500) as u32,
            name,
            addresses: Vec::new(),
            routes: Vec::new(),
        };
        for info in l["addr_info"].as_array().into_iter().flatten() {
            // Link-local addresses belong to the link: the guest kernel makes its own
            // (the same ones, from the same MAC).
            if matches!(info["scope"].as_str(), Some("link" | "host")) {
                continue;
            }
            if let (Some(ip), Some(len)) = (info["local"].as_str(), info["prefixlen"].as_u64()) {
                guest.addresses.push(format!("{ip}/{len}"));
            }
        }
        interfaces.push(HostInterface {
            link_type: str_of(&l, "link_type"),
            kind,
            guest,
        });
    }
    let by_name: HashMap<String, usize> = interfaces
        .iter()
        .enumerate()
        .map(|(i, f)| (f.guest.name.clone(), i))
        .collect();
    // Both families in one dump; the main table's entries carry no "table".
    for r in iproute::json("ip", &["route", "show", "table", "all"])? {
        if r.get("table").is_some() {
            continue;
        }
        let Some(&i) = by_name.get(&str_of(&r, "dev")) else {
            continue; // multipath or another device's route
        };
        if let Some(route) = guest_route(&r) {
            interfaces[i].guest.routes.push(route);
        }
    }
    Ok(Inventory { interfaces, taps })
}

/// The route the guest must add for one `ip -j route` entry; None for the routes the
/// guest kernel makes itself (subnet routes of its addresses) and non-unicast ones.
/// `ip -j` names no family: an IPv6 route has a `:` in its destination or gateway (a
/// default route without a gateway counts as IPv4).
fn guest_route(r: &Value) -> Option<Route> {
    if r["protocol"].as_str() == Some("kernel") {
        return None;
    }
    if let Some(t) = r["type"].as_str() {
        if t != "unicast" {
            return None;
        }
    }
    let dst = r["dst"].as_str()?;
    let v6 = dst.contains(':') || r["gateway"].as_str().is_some_and(|g| g.contains(':'));
    let dest = match dst {
        "default" if v6 => "::/0".to_string(),
        "default" => "default".to_string(),
        d if d.contains('/') => d.to_string(),
        d if v6 => format!("{d}/128"),
        d => format!("{d}/32"),
    };
    Some(Route {
        dest,
        gateway: r["gateway"].as_str().map(str::to_string),
        source: r["prefsrc"].as_str().map(str::to_string),
        metric: r["metric"].as_u64().map(|m| m as u32).filter(|&m| m != 0),
    })
}

fn str_of(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kernel_and_non_unicast_routes_are_left_to_the_guest() {
        let kernel = json!({"dst":"10.9.0.0/24","dev":"eth0","protocol":"kernel","scope":"link"});
        assert!(guest_route(&kernel).is_none());
        let blackhole = json!({"type":"blackhole","dst":"10.5.0.0/16","flags":[]});
        assert!(guest_route(&blackhole).is_none());
    }

    #[test]
    fn routes_keep_gateway_source_and_metric() {
        let r = guest_route(&json!({"dst":"default","gateway":"10.9.0.1","dev":"eth0","metric":7}))
            .unwrap();
        assert_eq!(
            (r.dest.as_str(), r.gateway.as_deref(), r.metric),
            ("default", Some("10.9.0.1"), Some(7))
        );
        let r6 = guest_route(&json!({"dst":"default","gateway":"fd00::1","dev":"eth0"}));
        assert_eq!(r6.unwrap().dest, "::/0");
        let host =
            guest_route(&json!({"dst":"10.1.2.3","dev":"eth0","prefsrc":"10.9.0.2"})).unwrap();
        assert_eq!(
            (host.dest.as_str(), host.source.as_deref()),
            ("10.1.2.3/32", Some("10.9.0.2"))
        );
        let host6 = guest_route(&json!({"dst":"fd00::5","dev":"eth0"})).unwrap();
        assert_eq!(host6.dest, "fd00::5/128");
    }

    #[test]
    fn only_ethernet_can_be_redirected() {
        let iface = |link_type: &str, kind: Option<&str>| HostInterface {
            kind: kind.map(Into::into),
            link_type: link_type.into(),
            guest: NetInterface {
                name: "x".into(),
                mac: String::new(),
                mtu: 1500,
                addresses: vec![],
                routes: vec![],
            },
        };
        assert!(iface("ether", Some("veth")).unredirectable().is_none());
        let why = iface("none", Some("tun")).unredirectable().unwrap();
        assert!(
            why.contains("\"none\"") && why.contains("kind tun"),
            "{why}"
        );
    }
}
