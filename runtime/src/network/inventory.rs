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

/// Lists the interfaces of the calling thread's network namespace, in index order.
pub(crate) fn list() -> Result<Vec<HostInterface>, String> {
    let mut ifaces = Vec::new();
    for l in iproute::json("ip", &["-d", "link", "show"])? {
        let name = str_of(&l, "ifname");
        let kind = l["linkinfo"]["info_kind"].as_str().map(str::to_string);
        if name == "lo" || (kind.as_deref() == Some("tun") && tap::is_hull_tap(&name)) {
            continue;
        }
        ifaces.push(HostInterface {
            link_type: str_of(&l, "link_type"),
            kind,
            guest: NetInterface {
                mac: str_of(&l, "address"),
                mtu: l["mtu"].as_u64().unwrap_or(1500) as u32,
                name,
                addresses: Vec::new(),
                routes: Vec::new(),
            },
        });
    }
    let by_name: HashMap<String, usize> = ifaces
        .iter()
        .enumerate()
        .map(|(i, f)| (f.guest.name.clone(), i))
        .collect();
    for a in iproute::json("ip", &["addr", "show"])? {
        let Some(&i) = by_name.get(&str_of(&a, "ifname")) else {
            continue;
        };
        for info in a["addr_info"].as_array().into_iter().flatten() {
            // Link-local addresses belong to the link: the guest kernel makes its own
            // (the same ones, from the same MAC).
            if matches!(info["scope"].as_str(), Some("link" | "host")) {
                continue;
            }
            if let (Some(ip), Some(len)) = (info["local"].as_str(), info["prefixlen"].as_u64()) {
                ifaces[i].guest.addresses.push(format!("{ip}/{len}"));
            }
        }
    }
    for v6 in [false, true] {
        let args: &[&str] = if v6 {
            &["-6", "route", "show", "table", "main"]
        } else {
            &["-4", "route", "show", "table", "main"]
        };
        for r in iproute::json("ip", args)? {
            let Some(&i) = by_name.get(&str_of(&r, "dev")) else {
                continue; // multipath or another device's route
            };
            if let Some(route) = guest_route(&r, v6) {
                ifaces[i].guest.routes.push(route);
            }
        }
    }
    Ok(ifaces)
}

/// The route the guest must add for one `ip -j route` entry; None for the routes the
/// guest kernel makes itself (subnet routes of its addresses) and non-unicast ones.
fn guest_route(r: &Value, v6: bool) -> Option<Route> {
    if r["protocol"].as_str() == Some("kernel") {
        return None;
    }
    if let Some(t) = r["type"].as_str() {
        if t != "unicast" {
            return None;
        }
    }
    let dst = r["dst"].as_str()?;
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
        assert!(guest_route(&kernel, false).is_none());
        let blackhole = json!({"type":"blackhole","dst":"10.5.0.0/16","flags":[]});
        assert!(guest_route(&blackhole, false).is_none());
    }

    #[test]
    fn routes_keep_gateway_source_and_metric() {
        let r = guest_route(
            &json!({"dst":"default","gateway":"10.9.0.1","dev":"eth0","metric":7}),
            false,
        )
        .unwrap();
        assert_eq!(
            (r.dest.as_str(), r.gateway.as_deref(), r.metric),
            ("default", Some("10.9.0.1"), Some(7))
        );
        let r6 = guest_route(
            &json!({"dst":"default","gateway":"fd00::1","dev":"eth0"}),
            true,
        );
        assert_eq!(r6.unwrap().dest, "::/0");
        let host = guest_route(
            &json!({"dst":"10.1.2.3","dev":"eth0","prefsrc":"10.9.0.2"}),
            false,
        )
        .unwrap();
        assert_eq!(
            (host.dest.as_str(), host.source.as_deref()),
            ("10.1.2.3/32", Some("10.9.0.2"))
        );
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
