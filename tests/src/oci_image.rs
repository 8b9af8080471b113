//! A busybox OCI image made offline (there is no registry here): one layer tarball
//! holding Debian's static busybox and its applet links, the image config, the
//! manifest, `index.json` and `oci-layout`, all packed into an OCI layout tarball
//! that `ctr image import` takes.

use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::bundle::{busybox_applets, BUSYBOX};

/// The name the image gets in containerd.
pub const IMAGE_NAME: &str = "hull.test/busybox:latest";

/// Why the image cannot be built here, if it cannot.
pub fn unavailable() -> Option<String> {
    crate::bundle::unavailable()
}

/// A tar archive written by hand (ustar: regular files, directories, symlinks).
#[derive(Default)]
pub struct TarWriter {
    out: Vec<u8>,
}

impl TarWriter {
    fn header(&mut self, name: &str, mode: u32, size: usize, kind: u8, link: &str) {
        assert!(
            name.len() <= 100 && link.len() <= 100,
            "tar name too long: {name}"
        );
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |h: &mut [u8; 512], at: usize, width: usize, v: u64| {
            let s = format!("{v:0w$o}\0", w = width - 1);
            h[at..at + width].copy_from_slice(s.as_bytes());
        };
        octal(&mut h, 100, 8, mode as u64);
        octal(&mut h, 108, 8, 0); // uid
        octal(&mut h, 116, 8, 0); // gid
        octal(&mut h, 124, 12, size as u64);
        octal(&mut h, 136, 12, 0); // mtime: fixed, so the digest is reproducible
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        // The checksum is computed with its own field as spaces.
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.out.extend_from_slice(&h);
    }

    pub fn dir(&mut self, name: &str) {
        self.header(
            &format!("{}/", name.trim_end_matches('/')),
            0o755,
            0,
            b'5',
            "",
        );
    }

    pub fn file(&mut self, name: &str, mode: u32, body: &[u8]) {
        self.header(name, mode, body.len(), b'0', "");
        self.out.extend_from_slice(body);
        let pad = (512 - body.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
    }

    pub fn symlink(&mut self, name: &str, target: &str) {
        self.header(name, 0o777, 0, b'2', target);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend(std::iter::repeat_n(0u8, 1024));
        self.out
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// The busybox root filesystem as a layer tarball.
pub fn busybox_layer() -> Vec<u8> {
    let busybox = std::fs::read(BUSYBOX).expect("reading busybox");
    let mut t = TarWriter::default();
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        t.dir(d);
    }
    t.file("bin/busybox", 0o755, &busybox);
    for applet in busybox_applets() {
        t.symlink(&format!("bin/{applet}"), "busybox");
    }
    t.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    );
    t.file("etc/group", 0o644, b"root:x:0:\nnobody:x:65534:\n");
    t.finish()
}

fn descriptor(media_type: &str, body: &[u8]) -> Value {
    json!({
        "mediaType": media_type,
        "digest": format!("sha256:{}", sha256_hex(body)),
        "size": body.len(),
    })
}

/// The whole image as an OCI layout tarball.
pub fn busybox_oci_archive() -> Vec<u8> {
    let layer = busybox_layer();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin"],
            "Cmd": ["sh"],
            "WorkingDir": "/",
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": [format!("sha256:{}", sha256_hex(&layer))],
        },
        "history": [{"created_by": "hull-tests oci_image"}],
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
    }))
    .unwrap();
    let mut manifest_desc = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    manifest_desc["platform"] = json!({"architecture": "amd64", "os": "linux"});
    manifest_desc["annotations"] = json!({
        "io.containerd.image.name": IMAGE_NAME,
        "org.opencontainers.image.ref.name": "latest",
    });
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest_desc],
    }))
    .unwrap();
    let mut t = TarWriter::default();
    t.file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#);
    t.file("index.json", 0o644, &index);
    t.dir("blobs");
    t.dir("blobs/sha256");
    for blob in [&layer, &config, &manifest] {
        t.file(&format!("blobs/sha256/{}", sha256_hex(blob)), 0o644, blob);
    }
    t.finish()
}

/// Writes the archive to `path`.
pub fn write_busybox_oci_archive(path: &Path) {
    std::fs::write(path, busybox_oci_archive()).expect("writing the OCI archive");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layer_is_a_tar_that_tar_reads() {
        if let Some(why) = unavailable() {
            eprintln!("skipping: {why}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layer.tar");
        std::fs::write(&layer, busybox_layer()).unwrap();
        let out = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&layer)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list = String::from_utf8_lossy(&out.stdout);
        assert!(list.contains("bin/busybox"), "{list}");
        assert!(list.contains("bin/sh -> busybox"), "{list}");
        // Deterministic: the same bytes twice, so the same digest.
        assert_eq!(
            sha256_hex(&busybox_oci_archive()),
            sha256_hex(&busybox_oci_archive())
        );
    }
}
