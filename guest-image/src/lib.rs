//! Builds hull's guest initramfs: a newc cpio whose `/init` is the static hull-agent,
//! with the mount points PID 1 needs and `/dev/console`. The agent's self-test
//! (`hull.selftest=1`) builds its container's rootfs from `/init` itself; a busybox
//! rootfs can be added for debugging and tests that want a shell in the guest.
//!
//! The archive is written by [`cpio`], not by system tools, so the runtime can build
//! it on first use. Builds are reproducible (fixed inode numbers, owners and times)
//! and cached by the hash of their inputs.

pub mod cpio;
mod elf;

use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

pub use elf::is_static_elf;

/// Where, inside the guest, the optional busybox rootfs lives (see
/// [`ImageSpec::busybox`]): static busybox as `/bin/busybox` with `sh`, `true`, `echo`,
/// `cat`, `ls`, `id`, `hostname`, `sleep`, `mount`, `ps` links, `/etc/passwd` and
/// `/etc/group`.
///
/// It sits on the initramfs: pivot_root(2) into it fails with EINVAL while the
/// caller's root is the initramfs, unless PID 1 first moved its root (the agent does).
pub const BUSYBOX_ROOTFS: &str = "/hull/busybox-rootfs";

/// Environment variable naming the static busybox to use for the busybox rootfs.
pub const BUSYBOX_ENV: &str = "HULL_BUSYBOX";

/// Where a static busybox is looked for when [`BUSYBOX_ENV`] is not set (Debian's
/// busybox-static installs /usr/bin/busybox, /bin/busybox on unmerged systems).
pub const BUSYBOX_CANDIDATES: &[&str] = &["/usr/bin/busybox", "/bin/busybox"];

/// Applets linked in the busybox rootfs's /bin.
const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "true", "false", "echo", "cat", "ls", "id", "hostname", "sleep", "mount", "ps",
];

/// Changes whenever the layout written for the same inputs changes; part of the key.
const LAYOUT_VERSION: &str = "hull-initramfs-2";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] io::Error),
    #[error("{0} is not a static ELF executable: /init must not need a dynamic loader")]
    NotStatic(PathBuf),
    #[error("writing the archive: {0}")]
    Cpio(#[from] cpio::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |e| Error::Io(path.to_path_buf(), e)
}

/// What goes into an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// The static hull-agent, installed as `/init`.
    pub agent: PathBuf,
    /// A static busybox to carry as a rootfs at [`BUSYBOX_ROOTFS`]; none (the default:
    /// it costs every guest ~2 MiB of RAM) leaves it out.
    pub busybox: Option<PathBuf>,
}

impl ImageSpec {
    /// An image of `agent` alone.
    pub fn new(agent: &Path) -> Self {
        ImageSpec {
            agent: agent.to_path_buf(),
            busybox: None,
        }
    }

    /// Writes the archive to `out`.
    pub fn write_to<W: Write>(&self, out: W) -> Result<W> {
        if !is_static_elf(&self.agent).map_err(io_err(&self.agent))? {
            return Err(Error::NotStatic(self.agent.clone()));
        }
        let mut w = cpio::Writer::new(out);
        for (dir, perm) in [
            ("dev", 0o755),
            ("proc", 0o555),
            ("sys", 0o555),
            ("run", 0o755),
            ("tmp", 0o1777),
            ("mnt", 0o755),
            ("root", 0o700),
        ] {
            w.dir(dir, perm)?;
        }
        // The kernel opens /dev/console for init's stdio before anything is mounted.
        w.char_device("dev/console", 0o600, 5, 1)?;
        w.char_device("dev/null", 0o666, 1, 3)?;
        add_file(&mut w, "init", 0o755, &self.agent)?;

        if let Some(busybox) = &self.busybox {
            if !is_static_elf(busybox).map_err(io_err(busybox))? {
                return Err(Error::NotStatic(busybox.clone()));
            }
            let root = BUSYBOX_ROOTFS.trim_start_matches('/');
            let mut prefix = String::new();
            for part in root.split('/') {
                prefix.push_str(part);
                w.dir(&prefix, 0o755)?;
                prefix.push('/');
            }
            for dir in ["bin", "dev", "etc", "proc", "sys", "tmp"] {
                let perm = if dir == "tmp" { 0o1777 } else { 0o755 };
                w.dir(&format!("{root}/{dir}"), perm)?;
            }
            add_file(&mut w, &format!("{root}/bin/busybox"), 0o755, busybox)?;
            for applet in BUSYBOX_APPLETS {
                w.symlink(&format!("{root}/bin/{applet}"), "busybox")?;
            }
            w.file(
                &format!("{root}/etc/passwd"),
                0o644,
                b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
            )?;
            w.file(
                &format!("{root}/etc/group"),
                0o644,
                b"root:x:0:\nnogroup:x:65534:\n",
            )?;
        }
        Ok(w.finish()?)
    }

    /// Writes the archive to `out` atomically: readers see the old file or the whole
    /// new one, never a partial archive.
    pub fn build(&self, out: &Path) -> Result<()> {
        write_atomically(out, |f| self.write_to(BufWriter::new(f)).map(drop))
    }

    /// Hash of everything that determines the archive's bytes.
    pub fn cache_key(&self) -> Result<String> {
        let mut h = Sha256::new();
        h.update(LAYOUT_VERSION);
        hash_file(&mut h, &self.agent)?;
        match &self.busybox {
            Some(b) => hash_file(&mut h, b)?,
            None => h.update(b"no-busybox"),
        }
        let digest = h.finalize();
        Ok(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Returns `<cache_dir>/<key>/initramfs.img`, building it unless it is there.
    pub fn build_cached(&self, cache_dir: &Path) -> Result<PathBuf> {
        let path = cache_dir.join(self.cache_key()?).join("initramfs.img");
        if !path.is_file() {
            self.build(&path)?;
        }
        Ok(path)
    }
}

/// Builds the guest initramfs for `agent_binary` into `out`, atomically.
pub fn build_initramfs(agent_binary: &Path, out: &Path) -> Result<()> {
    ImageSpec::new(agent_binary).build(out)
}

/// For the runtime's first use: builds the image of `agent_binary` (through the cache
/// in [`default_cache_dir`]) and installs it as `dest` unless `dest` already holds
/// exactly that image. Returns `dest`.
pub fn ensure_initramfs(agent_binary: &Path, dest: &Path) -> Result<PathBuf> {
    let built = ImageSpec::new(agent_binary).build_cached(&default_cache_dir())?;
    if !same_contents(&built, dest)? {
        install(&built, dest)?;
    }
    Ok(dest.to_path_buf())
}

/// `${XDG_CACHE_HOME:-$HOME/.cache}/hull/initramfs`.
pub fn default_cache_dir() -> PathBuf {
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        }
    };
    base.join("hull").join("initramfs")
}

/// The static busybox named by [`BUSYBOX_ENV`], else the first static one of
/// [`BUSYBOX_CANDIDATES`].
pub fn find_static_busybox() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(BUSYBOX_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    BUSYBOX_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| is_static_elf(p).unwrap_or(false))
}

/// Copies `src` to `dest` atomically, creating `dest`'s directory.
pub fn install(src: &Path, dest: &Path) -> Result<()> {
    write_atomically(dest, |f| {
        let mut from = File::open(src).map_err(io_err(src))?;
        io::copy(&mut from, f).map_err(io_err(src))?;
        Ok(())
    })
}

fn add_file<W: Write>(w: &mut cpio::Writer<W>, name: &str, perm: u32, src: &Path) -> Result<()> {
    let mut f = File::open(src).map_err(io_err(src))?;
    let len = f.metadata().map_err(io_err(src))?.len();
    w.file_from(name, perm, len, &mut f)?;
    Ok(())
}

fn hash_file(h: &mut Sha256, path: &Path) -> Result<()> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

fn same_contents(a: &Path, b: &Path) -> Result<bool> {
    let (Ok(ma), Ok(mb)) = (fs::metadata(a), fs::metadata(b)) else {
        return Ok(false);
    };
    if ma.len() != mb.len() {
        return Ok(false);
    }
    Ok(fs::read(a).map_err(io_err(a))? == fs::read(b).map_err(io_err(b))?)
}

/// Runs `fill` on a temporary file next to `dest`, then renames it over `dest`.
fn write_atomically(dest: &Path, fill: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        fill(&mut f)?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, dest).map_err(io_err(dest))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpio::{S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};

    /// A minimal static ELF64 executable header: enough for [`is_static_elf`].
    fn fake_static_elf(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, elf::tests::elf_with_phdrs(&[1])).unwrap();
        p
    }

    #[test]
    fn image_has_init_console_and_busybox_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        let agent = fake_static_elf(dir.path(), "agent");
        let busybox = fake_static_elf(dir.path(), "busybox");
        let spec = ImageSpec {
            agent: agent.clone(),
            busybox: Some(busybox),
        };
        let out = dir.path().join("sub/initramfs.img");
        spec.build(&out).unwrap();
        let entries = cpio::read_all(&fs::read(&out).unwrap()).unwrap();
        let get = |n: &str| {
            entries
                .iter()
                .find(|e| e.header.name == n)
                .unwrap_or_else(|| panic!("{n} missing"))
        };
        let init = get("init");
        assert_eq!(init.header.mode, S_IFREG | 0o755);
        assert_eq!(init.data, fs::read(&agent).unwrap());
        let console = get("dev/console");
        assert_eq!(console.header.mode & S_IFMT, S_IFCHR);
        assert_eq!(
            (console.header.rdev_major, console.header.rdev_minor),
            (5, 1)
        );
        for d in [
            "dev",
            "proc",
            "sys",
            "run",
            "tmp",
            "hull",
            "hull/busybox-rootfs",
        ] {
            assert_eq!(get(d).header.mode & S_IFMT, S_IFDIR, "{d}");
        }
        let root = BUSYBOX_ROOTFS.trim_start_matches('/');
        assert_eq!(
            get(&format!("{root}/bin/busybox")).header.mode,
            S_IFREG | 0o755
        );
        let sh = get(&format!("{root}/bin/sh"));
        assert_eq!(sh.header.mode & S_IFMT, S_IFLNK);
        assert_eq!(sh.data, b"busybox");

        // Every entry's parent comes before it: the kernel creates them in order.
        for (i, e) in entries.iter().enumerate() {
            if let Some((parent, _)) = e.header.name.rsplit_once('/') {
                assert!(
                    entries[..i].iter().any(|p| p.header.name == parent),
                    "{} before its parent",
                    e.header.name
                );
            }
        }
        // No temporary file left next to the output.
        let left: Vec<_> = fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(left.len(), 1);
    }

    #[test]
    fn builds_are_reproducible_and_cached_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let agent = fake_static_elf(dir.path(), "agent");
        let spec = ImageSpec {
            agent: agent.clone(),
            busybox: None,
        };
        let mut a = Vec::new();
        let mut b = Vec::new();
        spec.write_to(&mut a).unwrap();
        spec.write_to(&mut b).unwrap();
        assert_eq!(a, b);
        assert!(!cpio::read_all(&a)
            .unwrap()
            .iter()
            .any(|e| e.header.name.starts_with("hull")));

        let cache = dir.path().join("cache");
        let first = spec.build_cached(&cache).unwrap();
        assert_eq!(spec.build_cached(&cache).unwrap(), first);
        // A different agent is a different key.
        let mut other = elf::tests::elf_with_phdrs(&[1]);
        other.push(0);
        fs::write(&agent, other).unwrap();
        let second = spec.build_cached(&cache).unwrap();
        assert_ne!(first, second);
        assert!(first.is_file() && second.is_file());
    }

    #[test]
    fn dynamic_agent_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent");
        fs::write(&agent, elf::tests::elf_with_phdrs(&[6, 3, 1])).unwrap();
        let spec = ImageSpec {
            agent,
            busybox: None,
        };
        let err = spec.write_to(Vec::new()).unwrap_err();
        assert!(matches!(err, Error::NotStatic(_)), "{err}");
    }

    #[test]
    fn install_replaces_the_destination() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dest = dir.path().join("assets/initramfs.img");
        fs::write(&src, b"new").unwrap();
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::write(&dest, b"old contents").unwrap();
        install(&src, &dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new");
        assert!(same_contents(&src, &dest).unwrap());
    }
}
