//! Network fixtures: named network namespaces (removed on drop) and the "veth pair +
//! software bridge" picture a CNI bridge plugin makes: a bridge in one namespace, and
//! per container a namespace whose `eth0` is a veth into that bridge, with an address
//! and a default route. Traffic stays inside the namespaces the fixture creates.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Why the fixtures cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (network namespaces, veth pairs, bridges)".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("`ip` (iproute2) is missing".into()),
    }
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// A new, empty namespace (only `lo`, down) with a name unique to this process.
    pub fn new(tag: &str) -> NetNs {
        let name = format!(
            "hullt-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        run_ok("ip", &["netns", "add", &name]);
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The path a spec's `linux.namespaces` network entry names.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// `ip -n <ns> args`, asserting success; its stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run_ok("ip", &all)
    }

    /// `ip -n <ns> -j args`, parsed.
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["-j"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ip(&all)).expect("ip -j output")
    }

    /// A command that runs `prog args` inside the namespace.
    pub fn command(&self, prog: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, prog]).args(args);
        c
    }

    /// `tc args` inside the namespace, asserting success; its stdout.
    pub fn tc(&self, args: &[&str]) -> String {
        let out = self.command("tc", args).output().expect("tc");
        check(&format!("tc {args:?} in {}", self.name), &out);
        String::from_utf8(out.stdout).unwrap()
    }

    /// Interface names, sorted.
    pub fn links(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .ip_json(&["link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    }

    /// Pids of processes whose network namespace this is.
    pub fn pids(&self) -> Vec<i32> {
        run_ok("ip", &["netns", "pids", &self.name])
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// One container's namespace on a [`BridgeNet`].
pub struct Member {
    pub ns: NetNs,
    /// `eth0`'s address, without the prefix length.
    pub ip: String,
    pub mac: String,
    pub mtu: u32,
}

/// A bridge `br0` with address [`BridgeNet::GATEWAY`] in its own namespace, and the
/// members attached to it (dropped, and so removed, before the bridge's namespace).
pub struct BridgeNet {
    members: Vec<Member>,
    pub bridge: NetNs,
}

impl BridgeNet {
    pub const SUBNET_PREFIX: &'static str = "10.200.0";
    pub const GATEWAY: &'static str = "10.200.0.1";

    pub fn new() -> BridgeNet {
        let bridge = NetNs::new("br");
        bridge.ip(&["link", "add", "br0", "type", "bridge"]);
        bridge.ip(&[
            "addr",
            "add",
            &format!("{}/24", Self::GATEWAY),
            "dev",
            "br0",
        ]);
        bridge.ip(&["link", "set", "br0", "up"]);
        BridgeNet {
            members: Vec::new(),
            bridge,
        }
    }

    /// A new namespace whose `eth0` (MAC `mac`, MTU `mtu`, address `10.200.0.<n+2>/24`,
    /// default route via the bridge) is a veth into `br0`; returns its index.
    pub fn add_member(&mut self, mac: &str, mtu: u32) -> usize {
        let n = self.members.len();
        let ns = NetNs::new("ctr");
        let ip = format!("{}.{}", Self::SUBNET_PREFIX, n + 2);
        let peer = format!("veth{n}");
        let mtu_s = mtu.to_string();
        ns.ip(&[
            "link",
            "add",
            "eth0",
            "mtu",
            &mtu_s,
            "address",
            mac,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "mtu",
            &mtu_s,
            "netns",
            self.bridge.name(),
        ]);
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["route", "add", "default", "via", Self::GATEWAY]);
        self.bridge
            .ip(&["link", "set", &peer, "master", "br0", "up"]);
        self.members.push(Member {
            ns,
            ip,
            mac: mac.to_string(),
            mtu,
        });
        n
    }

    pub fn member(&self, n: usize) -> &Member {
        &self.members[n]
    }
}

impl Default for BridgeNet {
    fn default() -> Self {
        Self::new()
    }
}

fn check(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_ok(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e}"));
    check(&format!("{prog} {args:?}"), &out);
    String::from_utf8(out.stdout).unwrap()
}
