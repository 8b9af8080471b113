//! attach_vm / detach_vm on real namespaces, veths and taps: what appears, that frames
//! really cross between the tap fd and the veth's peer, and that nothing stays behind.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// An EtherType for local experiments (IEEE 802): nothing else sends it.
const ETHERTYPE: u16 = 0x88b5;
/// virtio_net_hdr without mergeable buffers: the tap's default IFF_VNET_HDR size.
const VNET_HDR_LEN: usize = 10;

pub(super) fn skip() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: needs root (network namespaces, taps)");
        return true;
    }
    if Command::new("tc").arg("-V").output().is_err() {
        eprintln!("skipping: iproute2 (ip, tc) is missing");
        return true;
    }
    false
}

fn sh(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A named network namespace, deleted on drop.
pub(super) struct Ns(pub(super) String);

impl Ns {
    fn new() -> Ns {
        let name = format!(
            "hullnet-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        sh("ip", &["netns", "add", &name]);
        Ns(name)
    }
    pub(super) fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.0)
    }
    pub(super) fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.0.as_str()];
        all.extend_from_slice(args);
        sh("ip", &all)
    }
    fn tc_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["netns", "exec", self.0.as_str(), "tc", "-j"];
        all.extend_from_slice(args);
        let out = sh("ip", &all);
        serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).unwrap()
    }
    pub(super) fn links(&self) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(&self.ip(&["-j", "link", "show"])).unwrap();
        let mut names: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }
    fn has_ingress(&self, dev: &str) -> bool {
        self.tc_json(&["qdisc", "show", "dev", dev])
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["kind"] == "ingress")
    }
    fn redirect_targets(&self, dev: &str) -> Vec<String> {
        let mut out = Vec::new();
        for f in self
            .tc_json(&["filter", "show", "dev", dev, "ingress"])
            .as_array()
            .unwrap()
        {
            for a in f["options"]["actions"].as_array().into_iter().flatten() {
                out.push(format!(
                    "{} {} {} {}",
                    a["kind"].as_str().unwrap_or(""),
                    a["direction"].as_str().unwrap_or(""),
                    a["mirred_action"].as_str().unwrap_or(""),
                    a["to_dev"].as_str().unwrap_or("")
                ));
            }
        }
        out
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

pub(super) const MAC: &str = "02:00:00:00:5e:01";

/// A container namespace whose `eth0` is a veth to `p0` in a peer namespace.
pub(super) fn veth_pair() -> (Ns, Ns) {
    let (ctr, peer) = (Ns::new(), Ns::new());
    ctr.ip(&[
        "link", "add", "eth0", "mtu", "1400", "address", MAC, "type", "veth", "peer", "name", "p0",
        "netns", &peer.0,
    ]);
    ctr.ip(&["addr", "add", "10.201.0.2/24", "dev", "eth0"]);
    ctr.ip(&["addr", "add", "fd00:201::2/64", "dev", "eth0"]);
    ctr.ip(&["link", "set", "eth0", "up"]);
    ctr.ip(&["route", "add", "default", "via", "10.201.0.1"]);
    ctr.ip(&["route", "add", "10.77.0.0/16", "dev", "eth0"]);
    peer.ip(&["link", "set", "p0", "up"]);
    (ctr, peer)
}

pub(super) fn id() -> String {
    format!(
        "net-test-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A raw packet socket on `dev` of `ns`, for [`ETHERTYPE`] frames only.
fn packet_socket(ns: &Ns, dev: &str) -> (OwnedFd, i32) {
    let dev = dev.to_string();
    netns::run_in(&ns.path(), move || {
        let index = nix::net::if_::if_nametoindex(dev.as_str()).unwrap() as i32;
        let proto = ETHERTYPE.to_be() as i32;
        // SAFETY: plain socket(2) call; the fd is owned right away.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd is a new socket nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let addr = sockaddr_ll(index);
        // SAFETY: `addr` is a valid sockaddr_ll of the given length.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        Ok((fd, index))
    })
    .unwrap()
}

fn sockaddr_ll(index: i32) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut a: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    a.sll_family = libc::AF_PACKET as u16;
    a.sll_protocol = ETHERTYPE.to_be();
    a.sll_ifindex = index;
    a
}

fn frame(src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE.to_be_bytes());
    f.extend_from_slice(payload);
    f.resize(f.len().max(60), 0);
    f
}

/// Reads until a frame containing `payload` arrives (`skip` bytes of header first);
/// a long poll timeout only keeps a broken wire from hanging the test.
fn expect_frame(fd: RawFd, skip: usize, payload: &[u8]) {
    let mut buf = vec![0u8; 65536];
    for _ in 0..200 {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 10_000) };
        assert!(n > 0, "no frame with {payload:?} arrived");
        // SAFETY: buf is writable for its whole length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        assert!(n > 0, "read: {}", std::io::Error::last_os_error());
        let f = &buf[skip.min(n as usize)..n as usize];
        if f.len() >= 14
            && f[12..14] == ETHERTYPE.to_be_bytes()
            && f.windows(payload.len()).any(|w| w == payload)
        {
            return;
        }
    }
    panic!("no frame with {payload:?} among 200 read");
}

#[test]
fn attach_connects_each_interface_to_a_tap_that_carries_frames_both_ways() {
    if skip() {
        return;
    }
    let (ctr, peer) = veth_pair();
    let id = id();
    let nics = attach_vm(&ctr.path(), &id).unwrap();
    assert_eq!(nics.len(), 1);
    let nic = &nics[0];
    assert_eq!(nic.tap_name, tap_name(&id, 0));
    let g = &nic.guest;
    assert_eq!(
        (g.name.as_str(), g.mac.as_str(), g.mtu),
        ("eth0", MAC, 1400)
    );
    assert_eq!(g.addresses, ["10.201.0.2/24", "fd00:201::2/64"]);
    let routes: Vec<String> = g
        .routes
        .iter()
        .map(|r| format!("{} {:?}", r.dest, r.gateway))
        .collect();
    assert_eq!(
        routes,
        ["default Some(\"10.201.0.1\")", "10.77.0.0/16 None"]
    );

    // The tap sits in the container's netns, redirected to and from eth0.
    assert_eq!(ctr.links(), ["eth0", nic.tap_name.as_str(), "lo"]);
    let tap_link: serde_json::Value =
        serde_json::from_str(&ctr.ip(&["-j", "link", "show", &nic.tap_name])).unwrap();
    assert_eq!(tap_link[0]["mtu"], 1400);
    assert_eq!(
        ctr.redirect_targets("eth0"),
        [format!("mirred egress redirect {}", nic.tap_name)]
    );
    assert_eq!(
        ctr.redirect_targets(&nic.tap_name),
        ["mirred egress redirect eth0".to_string()]
    );

    // Guest -> peer: a frame written to the tap fd leaves through the veth.
    let (sock, p0) = packet_socket(&peer, "p0");
    let mut out = vec![0u8; VNET_HDR_LEN];
    out.extend(frame([2, 0, 0, 0, 0x5e, 1], b"from-the-guest"));
    // SAFETY: writing an initialised buffer to the tap fd.
    let n = unsafe { libc::write(nic.tap.as_raw_fd(), out.as_ptr().cast(), out.len()) };
    assert_eq!(n, out.len() as isize, "{}", std::io::Error::last_os_error());
    expect_frame(sock.as_raw_fd(), 0, b"from-the-guest");

    // Peer -> guest: a frame sent on p0 comes out of the tap fd.
    let back = frame([2, 0, 0, 0, 0x5e, 2], b"to-the-guest");
    let addr = sockaddr_ll(p0);
    // SAFETY: valid buffer and sockaddr_ll.
    let n = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            back.as_ptr().cast(),
            back.len(),
            0,
            &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(
        n,
        back.len() as isize,
        "{}",
        std::io::Error::last_os_error()
    );
    expect_frame(nic.tap.as_raw_fd(), VNET_HDR_LEN, b"to-the-guest");

    // detach leaves the namespace as its creator made it, and may run again.
    drop(nics);
    detach_vm(&ctr.path(), &id).unwrap();
    assert_eq!(ctr.links(), ["eth0", "lo"]);
    assert!(!ctr.has_ingress("eth0"));
    detach_vm(&ctr.path(), &id).unwrap();
    // The namespace itself and its addresses are the creator's: untouched.
    assert!(ctr.ip(&["addr", "show", "eth0"]).contains("10.201.0.2/24"));
}

#[test]
fn closing_the_fd_keeps_the_tap_until_detach() {
    if skip() {
        return;
    }
    let (ctr, _peer) = veth_pair();
    let id = id();
    let nics = attach_vm(&ctr.path(), &id).unwrap();
    let tap = nics[0].tap_name.clone();
    drop(nics);
    assert!(ctr.links().contains(&tap));
    assert!(ctr.has_ingress("eth0"));
    detach_vm(&ctr.path(), &id).unwrap();
    assert_eq!(ctr.links(), ["eth0", "lo"]);
    assert!(!ctr.has_ingress("eth0"));
}

#[test]
fn a_netns_with_only_lo_gives_no_nic() {
    if skip() {
        return;
    }
    let ns = Ns::new();
    let id = id();
    assert!(attach_vm(&ns.path(), &id).unwrap().is_empty());
    assert_eq!(ns.links(), ["lo"]);
    detach_vm(&ns.path(), &id).unwrap();
}

#[test]
fn a_missing_netns_is_named_and_detach_there_is_a_no_op() {
    let path = PathBuf::from(format!(
        "/var/run/netns/hull-no-such-{}",
        std::process::id()
    ));
    let e = attach_vm(&path, "c").unwrap_err();
    assert!(matches!(e, Error::NetnsMissing(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("network namespace {} does not exist", path.display())
    );
    detach_vm(&path, "c").unwrap();
}

#[test]
fn a_file_that_is_not_a_netns_is_refused() {
    if skip() {
        return;
    }
    let f = tempfile::NamedTempFile::new().unwrap();
    let e = attach_vm(f.path(), "c").unwrap_err();
    assert!(matches!(e, Error::NotNetns { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&f.path().display().to_string()) && msg.contains("not a namespace file"),
        "{msg}"
    );
}

#[test]
fn an_interface_that_cannot_be_redirected_is_named_and_nothing_is_made() {
    if skip() {
        return;
    }
    let (ctr, _peer) = veth_pair();
    // An L3 tun device carries IP packets, not Ethernet frames.
    ctr.ip(&["tuntap", "add", "mode", "tun", "name", "tun7"]);
    let id = id();
    let e = attach_vm(&ctr.path(), &id).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Unredirectable { .. }), "{e:?}");
    assert!(
        msg.contains("interface tun7") && msg.contains(&ctr.path().display().to_string()),
        "{msg}"
    );
    assert_eq!(ctr.links(), ["eth0", "lo", "tun7"]);
    assert!(!ctr.has_ingress("eth0"));
}

#[test]
fn a_failure_half_way_removes_what_was_made() {
    if skip() {
        return;
    }
    let (ctr, peer) = veth_pair();
    ctr.ip(&[
        "link", "add", "eth1", "type", "veth", "peer", "name", "p1", "netns", &peer.0,
    ]);
    // eth1 is already someone's: its ingress qdisc is not ours to replace or remove.
    sh(
        "ip",
        &[
            "netns", "exec", &ctr.0, "tc", "qdisc", "add", "dev", "eth1", "ingress",
        ],
    );
    let id = id();
    let e = attach_vm(&ctr.path(), &id).unwrap_err();
    assert!(
        e.to_string().contains("eth1 already has an ingress qdisc"),
        "{e}"
    );
    assert_eq!(ctr.links(), ["eth0", "eth1", "lo"]);
    assert!(!ctr.has_ingress("eth0"));
    assert!(ctr.has_ingress("eth1"));
}
