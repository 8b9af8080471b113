//! The guest side of container networking: makes each guest NIC look like the
//! container's netns interface it stands for (MTU, up, addresses, routes), through
//! rtnetlink, since the guest has no `ip`. A NIC is found by its MAC, which the VMM gave
//! it from the same [`NetInterface`].
//!
//! Works in whatever network namespace the calling thread is in (the guest's root one
//! in the VM; a scratch one in the tests).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;

use hull_protocol::{AgentError, ErrorKind, NetInterface, Route};
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::Socket;

/// Applies `interfaces` to the NICs of the current network namespace. Re-applying the
/// same configuration succeeds (addresses and routes that exist are kept).
pub fn configure(interfaces: &[NetInterface]) -> Result<(), AgentError> {
    let plans = interfaces
        .iter()
        .map(Plan::parse)
        .collect::<Result<Vec<_>, _>>()?;
    let mut nl = Netlink::open().map_err(|e| runtime(format!("rtnetlink socket: {e}")))?;
    let by_mac = nl
        .links_by_mac()
        .map_err(|e| runtime(format!("listing the guest's NICs: {e}")))?;
    for plan in &plans {
        let index = *by_mac.get(&plan.mac).ok_or_else(|| {
            AgentError::new(
                ErrorKind::NotFound,
                format!(
                    "no guest NIC has MAC {} (interface {} of the container's network namespace)",
                    plan.iface.mac, plan.iface.name
                ),
            )
        })?;
        plan.apply(&mut nl, index)?;
    }
    Ok(())
}

fn runtime(msg: String) -> AgentError {
    AgentError::new(ErrorKind::Runtime, msg)
}

fn invalid(msg: String) -> AgentError {
    AgentError::new(ErrorKind::InvalidRequest, msg)
}

/// One interface's request, parsed and checked before anything is changed.
struct Plan<'a> {
    iface: &'a NetInterface,
    mac: [u8; 6],
    addresses: Vec<(IpAddr, u8)>,
    routes: Vec<RoutePlan>,
}

struct RoutePlan {
    text: String,
    dest: IpAddr,
    prefix: u8,
    gateway: Option<IpAddr>,
    source: Option<IpAddr>,
    metric: Option<u32>,
}

impl<'a> Plan<'a> {
    fn parse(iface: &'a NetInterface) -> Result<Plan<'a>, AgentError> {
        let mac = parse_mac(&iface.mac).ok_or_else(|| {
            invalid(format!(
                "interface {}: mac {:?} is not a MAC address",
                iface.name, iface.mac
            ))
        })?;
        if iface.mtu < 68 {
            return Err(invalid(format!(
                "interface {}: mtu {} is below IPv4's minimum of 68",
                iface.name, iface.mtu
            )));
        }
        let addresses = iface
            .addresses
            .iter()
            .map(|a| {
                parse_cidr(a).ok_or_else(|| {
                    invalid(format!(
                        "interface {}: address {a:?} is not an IP address in CIDR form",
                        iface.name
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut routes = iface
            .routes
            .iter()
            .map(|r| RoutePlan::parse(&iface.name, r))
            .collect::<Result<Vec<_>, _>>()?;
        // On-link routes first: gateways must be reachable when their routes go in.
        routes.sort_by_key(|r| r.gateway.is_some());
        Ok(Plan {
            iface,
            mac,
            addresses,
            routes,
        })
    }

    fn apply(&self, nl: &mut Netlink, index: u32) -> Result<(), AgentError> {
        let name = &self.iface.name;
        nl.set_link(index, self.iface.mtu).map_err(|e| {
            runtime(format!(
                "interface {name}: setting mtu {} and up: {e}",
                self.iface.mtu
            ))
        })?;
        for (ip, prefix) in &self.addresses {
            nl.add_address(index, *ip, *prefix)
                .map_err(|e| runtime(format!("interface {name}: address {ip}/{prefix}: {e}")))?;
        }
        for r in &self.routes {
            nl.add_route(index, r)
                .map_err(|e| runtime(format!("interface {name}: route {}: {e}", r.text)))?;
        }
        Ok(())
    }
}

impl RoutePlan {
    fn parse(iface: &str, r: &Route) -> Result<RoutePlan, AgentError> {
        let bad = |what: &str, v: &str| {
            invalid(format!(
                "interface {iface}: route {:?}: {what} {v:?} is not an IP address",
                r.dest
            ))
        };
        let gateway = match &r.gateway {
            Some(g) => Some(g.parse::<IpAddr>().map_err(|_| bad("gateway", g))?),
            None => None,
        };
        let source = match &r.source {
            Some(s) => Some(s.parse::<IpAddr>().map_err(|_| bad("source", s))?),
            None => None,
        };
        let (dest, prefix) = if r.dest == "default" {
            match gateway {
                Some(IpAddr::V6(_)) => (IpAddr::V6(0.into()), 0),
                _ => (IpAddr::V4(0.into()), 0),
            }
        } else {
            parse_cidr(&r.dest).ok_or_else(|| {
                invalid(format!(
                    "interface {iface}: route destination {:?} is neither CIDR nor \"default\"",
                    r.dest
                ))
            })?
        };
        for other in [gateway, source].into_iter().flatten() {
            if other.is_ipv4() != dest.is_ipv4() {
                return Err(invalid(format!(
                    "interface {iface}: route {:?} mixes IPv4 and IPv6 ({other})",
                    r.dest
                )));
            }
        }
        Ok(RoutePlan {
            text: r.dest.clone(),
            dest,
            prefix,
            gateway,
            source,
            metric: r.metric,
        })
    }
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in mac.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

fn family(ip: &IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// A blocking rtnetlink socket that sends one request at a time.
struct Netlink {
    sock: Socket,
    seq: u32,
}

impl Netlink {
    fn open() -> io::Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        Ok(Netlink { sock, seq: 0 })
    }

    /// Sends `msg` and collects the kernel's answers until the ACK (or, for a dump,
    /// the end); a NACK becomes its errno.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq += 1;
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        req.header.sequence_number = self.seq;
        req.finalize();
        let mut buf = vec![0u8; req.buffer_len()];
        req.serialize(&mut buf);
        self.sock.send(&buf, 0)?;

        let mut out = Vec::new();
        let mut rx = vec![0u8; 64 << 10];
        loop {
            let n = self.sock.recv(&mut &mut rx[..], 0)?;
            let mut off = 0;
            while off < n {
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[off..n])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = m.header.length as usize;
                if m.header.sequence_number == self.seq {
                    match m.payload {
                        NetlinkPayload::InnerMessage(inner) => out.push(inner),
                        NetlinkPayload::Error(e) if e.code.is_none() => return Ok(out),
                        NetlinkPayload::Error(e) => return Err(e.to_io()),
                        NetlinkPayload::Done(_) => return Ok(out),
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }

    /// Interface index of every NIC, keyed by MAC.
    fn links_by_mac(&mut self) -> io::Result<HashMap<[u8; 6], u32>> {
        let msgs = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        let mut map = HashMap::new();
        for m in msgs {
            let RouteNetlinkMessage::NewLink(link) = m else {
                continue;
            };
            for a in &link.attributes {
                if let LinkAttribute::Address(bytes) = a {
                    if let Ok(mac) = <[u8; 6]>::try_from(bytes.as_slice()) {
                        map.insert(mac, link.header.index);
                    }
                }
            }
        }
        Ok(map)
    }

    fn set_link(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.header.flags = LinkFlags::Up;
        link.header.change_mask = LinkFlags::Up;
        link.attributes.push(LinkAttribute::Mtu(mtu));
        self.request(RouteNetlinkMessage::SetLink(link), 0)
            .map(drop)
    }

    fn add_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()> {
        let mut a = AddressMessage::default();
        a.header.family = family(&ip);
        a.header.prefix_len = prefix;
        a.header.index = index;
        a.attributes.push(AddressAttribute::Local(ip));
        a.attributes.push(AddressAttribute::Address(ip));
        if ip.is_ipv6() {
            // The address was already unique in the container's netns; DAD would
            // only delay the first packets.
            a.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        ignore_exists(self.request(
            RouteNetlinkMessage::NewAddress(a),
            NLM_F_CREATE | NLM_F_EXCL,
        ))
    }

    fn add_route(&mut self, index: u32, r: &RoutePlan) -> io::Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = family(&r.dest);
        m.header.destination_prefix_length = r.prefix;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = if r.gateway.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        m.header.kind = RouteType::Unicast;
        if r.prefix > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(r.dest)));
        }
        if let Some(g) = r.gateway {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(g)));
        }
        if let Some(s) = r.source {
            m.attributes
                .push(RouteAttribute::PrefSource(RouteAddress::from(s)));
        }
        if let Some(p) = r.metric {
            m.attributes.push(RouteAttribute::Priority(p));
        }
        m.attributes.push(RouteAttribute::Oif(index));
        ignore_exists(self.request(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL))
    }
}

fn ignore_exists(r: io::Result<Vec<RouteNetlinkMessage>>) -> io::Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_and_cidrs_parse_strictly() {
        assert_eq!(
            parse_mac("02:aB:00:00:00:ff"),
            Some([2, 0xab, 0, 0, 0, 0xff])
        );
        for bad in [
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "2:0:0:0:0:0",
            "zz:00:00:00:00:00",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        assert_eq!(
            parse_cidr("10.0.0.2/24"),
            Some(("10.0.0.2".parse().unwrap(), 24))
        );
        assert_eq!(parse_cidr("fd00::2/64").map(|c| c.1), Some(64));
        for bad in ["10.0.0.2", "10.0.0.2/33", "fd00::/129", "x/8"] {
            assert_eq!(parse_cidr(bad), None, "{bad}");
        }
    }

    #[test]
    fn bad_requests_name_the_interface_and_value() {
        let iface = |mac: &str, addr: &str, dest: &str| NetInterface {
            name: "eth7".into(),
            mac: mac.into(),
            mtu: 1500,
            addresses: vec![addr.into()],
            routes: vec![Route {
                dest: dest.into(),
                gateway: None,
                source: None,
                metric: None,
            }],
        };
        let cases = [
            (iface("nope", "10.0.0.2/24", "default"), "\"nope\""),
            (
                iface("02:00:00:00:00:01", "10.0.0.2", "default"),
                "\"10.0.0.2\"",
            ),
            (
                iface("02:00:00:00:00:01", "10.0.0.2/24", "10.1/8"),
                "\"10.1/8\"",
            ),
        ];
        for (i, needle) in cases {
            let e = configure(std::slice::from_ref(&i)).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidRequest, "{e}");
            assert!(
                e.message.contains("eth7") && e.message.contains(needle),
                "{e}"
            );
        }
        let mut mixed = iface("02:00:00:00:00:01", "10.0.0.2/24", "fd00::/64");
        mixed.routes[0].gateway = Some("10.0.0.1".into());
        let e = configure(&[mixed]).unwrap_err();
        assert!(e.message.contains("mixes IPv4 and IPv6"), "{e}");
    }

    #[test]
    fn default_routes_take_the_gateways_family() {
        let r = |gw: Option<&str>| Route {
            dest: "default".into(),
            gateway: gw.map(Into::into),
            source: None,
            metric: None,
        };
        let v6 = RoutePlan::parse("eth0", &r(Some("fd00::1"))).unwrap();
        assert!(v6.dest.is_ipv6() && v6.prefix == 0);
        let v4 = RoutePlan::parse("eth0", &r(None)).unwrap();
        assert!(v4.dest.is_ipv4() && v4.prefix == 0);
    }

    /// Runs `ip args` in the calling thread's network namespace; its stdout.
    fn ip(args: &[&str]) -> String {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn configures_a_veth_in_a_scratch_netns() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs root (network namespaces)");
            return;
        }
        if std::process::Command::new("ip").arg("-V").output().is_err() {
            eprintln!("skipping: no `ip` (iproute2) to set up and inspect the netns");
            return;
        }
        // The thread's own netns vanishes with it: nothing to clean up.
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            ip(&[
                "link",
                "add",
                "vguest",
                "address",
                "02:00:00:00:aa:01",
                "type",
                "veth",
                "peer",
                "name",
                "vpeer",
            ]);
            ip(&["link", "set", "vpeer", "up"]);
            let route = |dest: &str, gw: Option<&str>, metric: Option<u32>| Route {
                dest: dest.into(),
                gateway: gw.map(Into::into),
                source: None,
                metric,
            };
            let iface = NetInterface {
                name: "eth0".into(),
                mac: "02:00:00:00:AA:01".into(),
                mtu: 1400,
                addresses: vec!["10.9.0.2/24".into(), "fd00:9::2/64".into()],
                routes: vec![
                    route("default", Some("10.9.0.1"), None),
                    route("10.66.0.0/16", Some("10.9.0.254"), Some(50)),
                    route("10.77.0.0/16", None, None),
                    route("default", Some("fd00:9::1"), None),
                ],
            };
            configure(std::slice::from_ref(&iface)).unwrap();
            // A second ConfigureNetwork (e.g. a retried request) changes nothing.
            configure(std::slice::from_ref(&iface)).unwrap();

            let link: serde_json::Value =
                serde_json::from_str(&ip(&["-j", "addr", "show", "dev", "vguest"])).unwrap();
            let link = &link[0];
            assert_eq!(link["mtu"], 1400);
            assert!(link["flags"].as_array().unwrap().contains(&"UP".into()));
            let addrs: Vec<String> = link["addr_info"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
                .collect();
            assert!(addrs.contains(&"10.9.0.2/24".into()), "{addrs:?}");
            assert!(addrs.contains(&"fd00:9::2/64".into()), "{addrs:?}");

            let v4 = ip(&["route", "show"]);
            assert!(v4.contains("default via 10.9.0.1 dev vguest"), "{v4}");
            assert!(
                v4.contains("10.66.0.0/16 via 10.9.0.254 dev vguest"),
                "{v4}"
            );
            assert!(v4.contains("metric 50"), "{v4}");
            assert!(v4.contains("10.77.0.0/16 dev vguest"), "{v4}");
            let v6 = ip(&["-6", "route", "show"]);
            assert!(v6.contains("default via fd00:9::1 dev vguest"), "{v6}");

            let missing = NetInterface {
                mac: "02:00:00:00:aa:99".into(),
                ..iface
            };
            let e = configure(&[missing]).unwrap_err();
            assert_eq!(e.kind, ErrorKind::NotFound);
            assert!(e.message.contains("02:00:00:00:aa:99"), "{e}");
        })
        .join()
        .unwrap();
    }
}
