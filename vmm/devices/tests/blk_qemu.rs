//! End to end: a Linux guest under QEMU (`-M microvm`, TCG) sees a raw image file as
//! /dev/vda through hull's virtio-blk served by `hull-vhost-user blk` (QEMU's
//! `vhost-user-blk`), reads what the host wrote, writes, flushes and discards, and the
//! host checks the file afterwards. Read-only images refuse every change.
//!
//! Needs what `fs_qemu.rs` needs (QEMU, the guest kernel, a static busybox) and skips
//! with the reason when QEMU or the kernel is missing.

mod common;

use std::ffi::OsString;
use std::path::Path;

use common::assets;

const SECTOR: usize = 512;
const IMAGE_SECTORS: usize = 2048; // 1 MiB

const INIT: &str = r#"#!/bin/busybox sh
B=/bin/busybox
say() { echo "HULL: $*"; }
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
say "size $($B cat /sys/block/vda/size)"
say "ro $($B cat /sys/block/vda/ro)"
say "serial $($B cat /sys/block/vda/serial)"
say "first $($B dd if=/dev/vda bs=512 count=1 2>/dev/null | $B head -c 15)"
if printf 'written-by-guest' | $B dd of=/dev/vda bs=512 seek=4 conv=notrunc,fsync 2>/dev/null
then say wrote; else say write-refused; fi
if $B blkdiscard -o 65536 -l 65536 /dev/vda 2>/dev/null; then say discarded; else say discard-refused; fi
$B sync
echo 3 > /proc/sys/vm/drop_caches
say "again $($B dd if=/dev/vda bs=512 skip=4 count=1 2>/dev/null | $B head -c 16 | $B tr -c 'a-z-' .)"
say done
$B reboot -f
"#;

/// A 1 MiB image: "image-from-host" at the start, 0xaa everywhere else.
fn make_image(path: &Path) -> Vec<u8> {
    let mut img = vec![0xaau8; IMAGE_SECTORS * SECTOR];
    img[..15].copy_from_slice(b"image-from-host");
    std::fs::write(path, &img).unwrap();
    img
}

/// `None` when the test must skip (it says why).
fn run(image: &Path, extra: &[&str]) -> Option<(Vec<String>, String)> {
    let a = match assets() {
        Ok(a) => a,
        Err(why) => {
            println!("SKIP: {why}");
            return None;
        }
    };
    let mut args: Vec<OsString> = vec!["blk".into(), "--path".into(), image.into()];
    args.extend(extra.iter().map(OsString::from));
    Some(common::run_guest(&a, INIT, &args, "vhost-user-blk"))
}

#[test]
fn guest_reads_writes_and_discards_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    let before = make_image(&image);
    let Some((said, log)) = run(&image, &["--id", "hull-test-disk"]) else {
        return;
    };
    for line in [
        "size 2048",
        "ro 0",
        "serial hull-test-disk",
        "first image-from-host",
        "wrote",
        "discarded",
        "again written-by-guest",
        "done",
    ] {
        assert!(said.iter().any(|s| s == line), "{line}: {said:?}\n{log}");
    }
    let after = std::fs::read(&image).unwrap();
    assert_eq!(after.len(), before.len(), "the image keeps its size");
    assert_eq!(&after[4 * SECTOR..4 * SECTOR + 16], b"written-by-guest");
    assert!(
        after[65536..131072].iter().all(|&b| b == 0),
        "discarded range"
    );
    assert!(after[131072..].iter().all(|&b| b == 0xaa));
    assert_eq!(&after[..15], b"image-from-host");
}

#[test]
fn readonly_image_refuses_guest_changes() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    let before = make_image(&image);
    let Some((said, log)) = run(&image, &["--readonly"]) else {
        return;
    };
    for line in [
        "ro 1",
        "first image-from-host",
        "write-refused",
        "discard-refused",
        "again ................",
        "done",
    ] {
        assert!(said.iter().any(|s| s == line), "{line}: {said:?}\n{log}");
    }
    assert_eq!(std::fs::read(&image).unwrap(), before);
}
