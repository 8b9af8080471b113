//! End to end: a Linux guest under QEMU (`-M microvm`, TCG) mounts a host directory
//! through hull's virtio-fs device served by `hull-vhost-user fs`, reads what the host put
//! there, writes files as root and as another user, and tries to get out of the share.
//!
//! Needs `qemu-system-x86_64` (or `HULL_QEMU`), the guest kernel at
//! `${HULL_ASSETS:-/var/lib/hull}/vmlinux`, and skips with a reason when either is missing;
//! it also needs a static busybox (`HULL_BUSYBOX`, default /usr/bin/busybox, /bin/busybox;
//! scripts/setup.sh installs busybox-static). The guest's /init is a busybox shell script
//! that prints `HULL: ...` lines on the console.

mod common;

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{assets, Assets};

const INIT: &str = r#"#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
say() { echo "HULL: $*"; }
if $B mount -t virtiofs rootfs /mnt; then say mounted; else say mount-failed; $B reboot -f; fi
say "host-file $($B cat /mnt/from-host.txt)"
say "host-mode $($B stat -c '%a %u %g' /mnt/from-host.txt)"
# Each open drops the file's cached pages; every exec must still run what the host holds.
n=0; for i in 1 2 3 4 5 6; do [ "$(/mnt/busybox echo ran)" = ran ] && n=$((n+1)); done
say "execs-ok $n"

echo "guest wrote this" > /mnt/guest.txt
$B chmod 0640 /mnt/guest.txt
$B chown 1234:5678 /mnt/guest.txt
$B mkdir -m 0750 /mnt/gdir
$B mkdir -m 1777 /mnt/pub
$B su -s /bin/sh user -c 'echo "by user" > /mnt/pub/user.txt' && say user-wrote
$B su -s /bin/sh user -c 'echo x > /mnt/gdir/denied.txt' 2>/dev/null || say user-denied

# Ways out: symlinks the host put there, `..`, renames and links across the mount.
$B cat /mnt/escape-abs/secret 2>/dev/null && say LEAK-abs-read || say abs-read-blocked
$B cat /mnt/escape-rel/secret 2>/dev/null && say LEAK-rel-read || say rel-read-blocked
echo pwned > /mnt/escape-abs/new 2>/dev/null && say LEAK-abs-write || say abs-write-blocked
echo pwned > /mnt/escape-file 2>/dev/null
cd /mnt/gdir && cd ../.. && say "dotdot-lands-in $($B pwd) $($B ls / | $B tr '\n' ' ')"
cd /
$B mv /mnt/to-move.txt /mnt/../moved-out.txt && say moved-out
$B ln /mnt/guest.txt /hardlink 2>/dev/null && say LEAK-link || say link-blocked
$B test -e /mnt/../outside && say LEAK-outside-visible || say outside-invisible

$B sync
$B umount /mnt && say unmounted
say done
$B reboot -f
"#;

/// Owner, group and permission bits.
fn owner_mode(p: &Path) -> (u32, u32, u32) {
    let md = fs::symlink_metadata(p).unwrap();
    (md.uid(), md.gid(), md.permissions().mode() & 0o7777)
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Runs `init` with `shared` served as tag `rootfs` by `hull-vhost-user fs <extra>`.
fn run_guest(a: &Assets, shared: &Path, init: &str, extra: &[&str]) -> (Vec<String>, String) {
    let mut args: Vec<OsString> = vec!["fs".into(), "--tag".into(), "rootfs".into()];
    args.push("--shared-dir".into());
    args.push(shared.into());
    args.extend(extra.iter().map(OsString::from));
    common::run_guest(a, init, &args, "vhost-user-fs-device,tag=rootfs")
}

#[test]
fn guest_files_reach_the_host_and_the_guest_stays_inside() {
    let a = match assets() {
        Ok(a) => a,
        Err(why) => return println!("SKIP: {why}"),
    };
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;

    // `top` holds the share and a sibling it must not reach.
    let top = tempfile::tempdir().unwrap();
    let shared = top.path().join("shared");
    let outside = top.path().join("outside");
    fs::create_dir(&shared).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(outside.join("secret"), "host secret").unwrap();
    fs::write(shared.join("from-host.txt"), "hello-from-host").unwrap();
    fs::set_permissions(
        shared.join("from-host.txt"),
        fs::Permissions::from_mode(0o604),
    )
    .unwrap();
    fs::write(shared.join("to-move.txt"), "move me").unwrap();
    fs::copy(&a.busybox, shared.join("busybox")).unwrap();
    fs::set_permissions(shared.join("busybox"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(&outside, shared.join("escape-abs")).unwrap();
    std::os::unix::fs::symlink("../outside", shared.join("escape-rel")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), shared.join("escape-file")).unwrap();

    let (said, log) = run_guest(&a, &shared, INIT, &[]);
    let said: Vec<&str> = said.iter().map(String::as_str).collect();

    // What the host shared, the guest read, with its owner and mode.
    assert!(said.contains(&"mounted"), "{log}");
    assert!(said.contains(&"host-file hello-from-host"), "{log}");
    let host_owner = fs::metadata(shared.join("from-host.txt")).unwrap();
    let expect = format!("host-mode 604 {} {}", host_owner.uid(), host_owner.gid());
    assert!(said.contains(&expect.as_str()), "{expect}: {said:?}");
    assert!(said.contains(&"execs-ok 6"), "{said:?}");

    // What the guest wrote, the host sees, with the owner and mode the guest set.
    assert_eq!(
        fs::read_to_string(shared.join("guest.txt")).unwrap(),
        "guest wrote this\n"
    );
    let gdir = owner_mode(&shared.join("gdir"));
    assert_eq!(gdir.2, 0o750);
    assert!(fs::metadata(shared.join("gdir")).unwrap().is_dir());
    assert_eq!(owner_mode(&shared.join("pub")).2, 0o1777);
    if root {
        assert_eq!(owner_mode(&shared.join("guest.txt")), (1234, 5678, 0o640));
        assert_eq!(gdir.0, 0);
        assert!(said.contains(&"user-wrote"), "{said:?}");
        assert_eq!(owner_mode(&shared.join("pub/user.txt")).0, 1000);
        assert_eq!(owner_mode(&shared.join("pub/user.txt")).1, 1000);
        assert!(said.contains(&"user-denied"), "{said:?}");
        assert!(!shared.join("gdir/denied.txt").exists());
    } else {
        println!("not root: owners are not checked");
    }

    // Nothing left the share.
    for blocked in [
        "abs-read-blocked",
        "rel-read-blocked",
        "abs-write-blocked",
        "link-blocked",
        "outside-invisible",
        "moved-out",
        "unmounted",
        "done",
    ] {
        assert!(said.contains(&blocked), "{blocked}: {said:?}");
    }
    assert!(!said.iter().any(|s| s.starts_with("LEAK")), "{said:?}");
    let dotdot = said
        .iter()
        .find(|s| s.starts_with("dotdot-lands-in"))
        .expect("dotdot line");
    assert!(dotdot.starts_with("dotdot-lands-in / "), "{dotdot}");
    assert!(dotdot.contains(" init "), "guest's own root: {dotdot}");
    assert_eq!(
        fs::read_to_string(outside.join("secret")).unwrap(),
        "host secret"
    );
    assert_eq!(names(&outside), vec!["secret"]);
    assert_eq!(names(top.path()), vec!["outside", "shared"]);
    assert!(
        !shared.join("to-move.txt").exists(),
        "moved out of the share"
    );
    assert!(
        fs::symlink_metadata(shared.join("escape-file"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the host symlink was not replaced"
    );
}

const INIT_READONLY: &str = r#"#!/bin/busybox sh
B=/bin/busybox
say() { echo "HULL: $*"; }
$B mount -t virtiofs rootfs /mnt && say mounted
say "read $($B cat /mnt/keep.txt)"
echo x > /mnt/new.txt 2>/dev/null && say LEAK-create || say create-refused
echo x >> /mnt/keep.txt 2>/dev/null && say LEAK-append || say append-refused
$B mkdir /mnt/d 2>/dev/null && say LEAK-mkdir || say mkdir-refused
$B rm -f /mnt/keep.txt 2>/dev/null && say LEAK-rm || say rm-refused
$B chmod 777 /mnt/keep.txt 2>/dev/null && say LEAK-chmod || say chmod-refused
$B umount /mnt
say done
$B reboot -f
"#;

#[test]
fn readonly_share_refuses_guest_writes() {
    let a = match assets() {
        Ok(a) => a,
        Err(why) => return println!("SKIP: {why}"),
    };
    let top = tempfile::tempdir().unwrap();
    let shared = top.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::write(shared.join("keep.txt"), "kept").unwrap();
    fs::set_permissions(shared.join("keep.txt"), fs::Permissions::from_mode(0o644)).unwrap();

    let (said, log) = run_guest(
        &a,
        &shared,
        INIT_READONLY,
        &["--readonly", "--cache", "never"],
    );
    for line in [
        "mounted",
        "read kept",
        "create-refused",
        "append-refused",
        "mkdir-refused",
        "rm-refused",
        "chmod-refused",
        "done",
    ] {
        assert!(said.iter().any(|s| s == line), "{line}: {log}");
    }
    assert!(!said.iter().any(|s| s.starts_with("LEAK")), "{said:?}");
    assert_eq!(names(&shared), vec!["keep.txt"]);
    assert_eq!(fs::read_to_string(shared.join("keep.txt")).unwrap(), "kept");
    assert_eq!(owner_mode(&shared.join("keep.txt")).2, 0o644);
}
