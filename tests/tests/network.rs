//! Container networking end to end: containers whose spec names a network namespace
//! (`linux.namespaces` network `path`) on a "veth pair + software bridge" network
//! (`hull_tests::netns::BridgeNet`): ping and a TCP echo (busybox nc) between two
//! containers and between a container and the bridge's namespace, MTU and MAC as the
//! namespace's creator set them, bad input named, nothing left behind.
//!
//! Every case runs in the OS-level sandbox and again in the VM sandbox (QEMU here,
//! hull-vmm on hardware KVM); a VM variant fails, not skips, when QEMU or the guest
//! assets are missing.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread::sleep;
use std::time::Duration;

use hull_tests::bundle::{self, Bundle};
use hull_tests::hull_cli::{hull_bin, run_bounded};
use hull_tests::netns::{self, BridgeNet, NetNs};
use hull_tests::sandbox::Sandbox;
use serde_json::json;

/// Longest one hull command may take before the test fails instead of hanging.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Why `sandbox` cannot run these cases here, if it cannot.
fn skip_reason(sandbox: Sandbox) -> Option<String> {
    if let Some(why) = netns::unavailable().or_else(bundle::unavailable) {
        return Some(why);
    }
    match sandbox {
        Sandbox::Os => None,
        Sandbox::Vm => vm_unavailable(),
    }
}

/// The VM sandbox must run here (QEMU, or hull-vmm on hardware KVM): a missing
/// piece fails the case instead of skipping it (`make test` provides all of them).
fn vm_unavailable() -> Option<String> {
    hull_tests::guest::require_vm_sandbox();
    None
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// One `--root` for one test; containers left in it are force-deleted on drop.
struct Hull {
    sandbox: Sandbox,
    root: tempfile::TempDir,
    ids: std::cell::RefCell<Vec<String>>,
}

impl Hull {
    fn new(sandbox: Sandbox) -> Hull {
        Hull {
            sandbox,
            root: tempfile::Builder::new()
                .prefix("hull-net-root-")
                .tempdir()
                .unwrap(),
            ids: Default::default(),
        }
    }

    /// Runs hull; output through files, since a detached container keeps its stdio.
    fn run(&self, args: &[&str]) -> Output {
        if let Some(id) = args.last() {
            if matches!(args.first(), Some(&"run") | Some(&"create")) {
                self.ids.borrow_mut().push(id.to_string());
            }
        }
        let mut cmd = Command::new(hull_bin());
        cmd.arg("--root").arg(self.root.path()).args(args);
        run_bounded(cmd, None, COMMAND_TIMEOUT)
    }

    /// A container id unique to this test process (cgroups are shared by all roots).
    fn id(&self, name: &str) -> String {
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{name}-{}-{n}", std::process::id())
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "hull {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A busybox bundle running `script` under `sh -c`, in `ns`'s network namespace.
    fn bundle(&self, ns: &NetNs, script: &str) -> Bundle {
        let mut b = Bundle::busybox(self.sandbox.name(), &["sh", "-c", script]);
        join_netns(&mut b, &ns.path().to_string_lossy());
        b
    }

    /// `hull run` in the foreground: the container's stdout.
    fn run_fg(&self, id: &str, b: &Bundle) -> String {
        self.ok(&["run", "--bundle", path_str(b.path()), id])
    }

    fn run_detached(&self, id: &str, b: &Bundle) {
        self.ok(&["run", "--detach", "--bundle", path_str(b.path()), id]);
    }

    fn delete(&self, id: &str) {
        self.ok(&["delete", "--force", id]);
    }

    /// Asserts the root holds no container any more.
    fn assert_empty(&self) {
        let left: Vec<_> = fs::read_dir(self.root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left in --root: {left:?}");
    }
}

impl Drop for Hull {
    fn drop(&mut self) {
        for id in self.ids.take() {
            let _ = Command::new(hull_bin())
                .arg("--root")
                .arg(self.root.path())
                .args(["delete", "--force", &id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Points the bundle's network namespace entry at `path`.
fn join_netns(b: &mut Bundle, path: &str) {
    let nss = b.config["linux"]["namespaces"].as_array_mut().unwrap();
    for ns in nss.iter_mut() {
        if ns["type"] == "network" {
            *ns = json!({"type": "network", "path": path});
        }
    }
    b.save();
}

/// A persistent busybox TCP server on `port` that answers each line with
/// `<tag>:<line>`.
fn echo_server(port: u16, tag: &str) -> String {
    format!("exec nc -ll -p {port} -e sh -c 'read l; echo {tag}:$l'")
}

/// A shell snippet that pings `ip` once, then sends `msg` to `ip:port` until the
/// server answers (it may still be starting), printing `ping-ok` and the answer.
fn client(ip: &str, port: u16, msg: &str) -> String {
    format!(
        "ping -c 1 -W 5 {ip} >/dev/null && echo ping-ok; \
         for i in $(seq 100); do out=$(echo {msg} | nc {ip} {port}) && [ -n \"$out\" ] && break; sleep 0.1; done; \
         echo \"$out\""
    )
}

/// After every container is deleted: no state, the namespaces exactly as their
/// creator made them, no process left in them.
fn assert_nothing_left(hull: &Hull, members: &[&NetNs]) {
    hull.assert_empty();
    for ns in members {
        assert_eq!(ns.links(), ["eth0", "lo"], "{}", ns.name());
        assert_eq!(
            ns.pids(),
            Vec::<i32>::new(),
            "processes left in {}",
            ns.name()
        );
        let qdiscs = ns.tc(&["qdisc", "show", "dev", "eth0"]);
        assert!(!qdiscs.contains("ingress"), "{}: {qdiscs}", ns.name());
    }
}

fn two_containers_ping_and_echo(sandbox: Sandbox) {
    let hull = Hull::new(sandbox);
    let mut net = BridgeNet::new();
    let (a, b) = (
        net.add_member("02:00:00:00:0a:02", 1500),
        net.add_member("02:00:00:00:0a:03", 1500),
    );
    let (a, b) = (net.member(a), net.member(b));
    let server_id = hull.id("net-server");
    let server = hull.bundle(&a.ns, &echo_server(7000, "echo"));
    hull.run_detached(&server_id, &server);
    let client_b = hull.bundle(&b.ns, &client(&a.ip, 7000, "hello"));
    let out = hull.run_fg(&hull.id("net-client"), &client_b);
    assert!(out.contains("ping-ok"), "{out}");
    assert!(out.contains("echo:hello"), "{out}");
    hull.delete(&server_id);
    assert_nothing_left(&hull, &[&a.ns, &b.ns]);
}

fn container_and_bridge_namespace_talk(sandbox: Sandbox) {
    let hull = Hull::new(sandbox);
    let mut net = BridgeNet::new();
    let a = net.add_member("02:00:00:00:0a:04", 1500);
    let a = net.member(a);

    // Container -> a server in the bridge's namespace (one connection, then exits).
    let mut server = net
        .bridge
        .command(
            bundle::BUSYBOX,
            &[
                "nc",
                "-l",
                "-p",
                "7001",
                "-e",
                "sh",
                "-c",
                "read l; echo bridge:$l",
            ],
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let b = hull.bundle(&a.ns, &client(BridgeNet::GATEWAY, 7001, "hi"));
    let out = hull.run_fg(&hull.id("net-to-bridge"), &b);
    let _ = server.kill();
    let _ = server.wait();
    assert!(out.contains("ping-ok"), "{out}");
    assert!(out.contains("bridge:hi"), "{out}");

    // The bridge's namespace -> a server in the container.
    let server_id = hull.id("net-server");
    let b = hull.bundle(&a.ns, &echo_server(7000, "ctr"));
    hull.run_detached(&server_id, &b);
    let ping = net
        .bridge
        .command(bundle::BUSYBOX, &["ping", "-c", "1", "-W", "5", &a.ip])
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "ping {} from the bridge: {}",
        a.ip,
        String::from_utf8_lossy(&ping.stdout)
    );
    let mut answer = String::new();
    for _ in 0..100 {
        let out = net
            .bridge
            .command(
                "sh",
                &[
                    "-c",
                    &format!("echo from-bridge | {} nc {} 7000", bundle::BUSYBOX, a.ip),
                ],
            )
            .output()
            .unwrap();
        answer = String::from_utf8_lossy(&out.stdout).into_owned();
        if !answer.is_empty() {
            break;
        }
        sleep(Duration::from_millis(100));
    }
    assert_eq!(answer.trim(), "ctr:from-bridge");
    hull.delete(&server_id);
    assert_nothing_left(&hull, &[&a.ns]);
}

fn mtu_mac_and_addresses_as_configured(sandbox: Sandbox) {
    let hull = Hull::new(sandbox);
    let mut net = BridgeNet::new();
    let m = net.add_member("02:00:00:00:0b:07", 1400);
    let m = net.member(m);
    // By MAC, not name: a guest NIC need not be called eth0.
    let b = hull.bundle(
        &m.ns,
        "for d in /sys/class/net/*; do echo \"nic $(cat $d/address) $(cat $d/mtu)\"; done; ip addr; ip route",
    );
    let out = hull.run_fg(&hull.id("net-show"), &b);
    assert!(out.contains(&format!("nic {} {}", m.mac, m.mtu)), "{out}");
    assert!(out.contains(&format!("inet {}/24", m.ip)), "{out}");
    assert!(
        out.contains(&format!("default via {}", BridgeNet::GATEWAY)),
        "{out}"
    );
    assert_nothing_left(&hull, &[&m.ns]);
}

fn without_a_path_the_container_gets_a_new_empty_netns(sandbox: Sandbox) {
    let hull = Hull::new(sandbox);
    let b = Bundle::busybox(sandbox.name(), &["ls", "/sys/class/net"]);
    let out = hull.run_fg(&hull.id("net-new"), &b);
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["lo"]);
    hull.assert_empty();
}

fn exec_joins_the_same_network(sandbox: Sandbox) {
    let hull = Hull::new(sandbox);
    let mut net = BridgeNet::new();
    let m = net.add_member("02:00:00:00:0b:09", 1500);
    let m = net.member(m);
    let id = hull.id("net-exec");
    let b = hull.bundle(&m.ns, "exec sleep 1000");
    hull.run_detached(&id, &b);
    let out = hull.ok(&["exec", &id, "sh", "-c", "cat /sys/class/net/*/address"]);
    assert!(out.contains(&m.mac), "{out}");
    hull.delete(&id);
    assert_nothing_left(&hull, &[&m.ns]);
}

fn a_missing_netns_is_named(sandbox: Sandbox) {
    let hull = Hull::new(sandbox);
    let missing = format!("/var/run/netns/hull-missing-{}", std::process::id());
    let mut b = Bundle::busybox(sandbox.name(), &["true"]);
    join_netns(&mut b, &missing);
    let id = hull.id("net-missing");
    let out = hull.run(&["create", "--bundle", path_str(b.path()), &id]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&missing),
        "the error does not name {missing}: {err}"
    );
    hull.assert_empty();
}

fn an_unredirectable_interface_is_named(sandbox: Sandbox) {
    let hull = Hull::new(sandbox);
    let mut net = BridgeNet::new();
    let m = net.add_member("02:00:00:00:0b:08", 1500);
    let m = net.member(m);
    // An L3 tun carries IP packets, not the Ethernet frames a virtio-net NIC speaks.
    m.ns.ip(&["tuntap", "add", "mode", "tun", "name", "tun7"]);
    let b = hull.bundle(&m.ns, "true");
    let id = hull.id("net-tun");
    let out = hull.run(&["create", "--bundle", path_str(b.path()), &id]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tun7"), "the error does not name tun7: {err}");
    hull.assert_empty();
    assert_eq!(m.ns.links(), ["eth0", "lo", "tun7"]);
}

macro_rules! in_sandboxes {
    ($($case:ident),* $(,)?) => {
        mod os {
            $(
                #[test]
                fn $case() {
                    if let Some(why) = super::skip_reason(super::Sandbox::Os) {
                        eprintln!("skipping: {why}");
                        return;
                    }
                    super::$case(super::Sandbox::Os);
                }
            )*
        }
        mod vm {
            $(
                #[test]
                fn $case() {
                    if let Some(why) = super::skip_reason(super::Sandbox::Vm) {
                        eprintln!("skipping: {why}");
                        return;
                    }
                    super::$case(super::Sandbox::Vm);
                }
            )*
            /// The VM sandbox redirects interfaces; an L3 one cannot be (the OS-level
            /// sandbox just joins the namespace, whatever it holds).
            #[test]
            fn an_unredirectable_interface_is_named() {
                if let Some(why) = super::skip_reason(super::Sandbox::Vm) {
                    eprintln!("skipping: {why}");
                    return;
                }
                super::an_unredirectable_interface_is_named(super::Sandbox::Vm);
            }
        }
    };
}

in_sandboxes!(
    two_containers_ping_and_echo,
    container_and_bridge_namespace_talk,
    mtu_mac_and_addresses_as_configured,
    without_a_path_the_container_gets_a_new_empty_netns,
    exec_joins_the_same_network,
    a_missing_netns_is_named,
);
