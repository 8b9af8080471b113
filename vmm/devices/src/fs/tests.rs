//! Device-level tests: FUSE requests built into descriptor chains in guest memory, the
//! way the guest's virtio-fs driver sends them, and the way a hostile one might.

use std::ffi::CString;
use std::fs;
use std::mem::size_of;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use fuse_backend_rs::abi::fuse_abi::{
    AttrOut, CreateIn, EntryOut, GetattrIn, InHeader, InitIn, InitOut, LinkIn, MkdirIn, MknodIn,
    OpenIn, OpenOut, ReadIn, Rename2In, RenameIn, SetattrIn, WriteIn, WriteOut,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, ByteValued, Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::test_utils::{test_memory, Buf, BufAlloc, TestQueue, F_INDIRECT, F_NEXT, F_WRITE};

const MEM_SIZE: usize = 4 << 20;
const ROOT: u64 = 1;
const REPLY_CAP: u32 = 64 << 10;
// FUSE opcodes, as the guest sends them.
const LOOKUP: u32 = 1;
const FORGET: u32 = 2;
const GETATTR: u32 = 3;
const SETATTR: u32 = 4;
const READLINK: u32 = 5;
const SYMLINK: u32 = 6;
const MKNOD: u32 = 8;
const MKDIR: u32 = 9;
const UNLINK: u32 = 10;
const RMDIR: u32 = 11;
const RENAME: u32 = 12;
const LINK: u32 = 13;
const OPEN: u32 = 14;
const READ: u32 = 15;
const WRITE: u32 = 16;
const INIT: u32 = 26;
const CREATE: u32 = 35;
const RENAME2: u32 = 45;
// SETATTR valid bits.
const FATTR_MODE: u32 = 1;
const FATTR_UID: u32 = 2;
const FATTR_GID: u32 = 4;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn pod<T: ByteValued + Default>(bytes: &[u8]) -> T {
    let mut v = T::default();
    let n = size_of::<T>();
    assert!(bytes.len() >= n, "reply too short: {} < {n}", bytes.len());
    v.as_mut_slice().copy_from_slice(&bytes[..n]);
    v
}

fn cstr(s: &str) -> Vec<u8> {
    CString::new(s).unwrap().into_bytes_with_nul()
}

fn args(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A shared directory `<tmp>/shared` next to `<tmp>/outside/secret`, a device serving it,
/// and one request queue in test guest memory.
struct Harness {
    _tmp: tempfile::TempDir,
    shared: PathBuf,
    outside: PathBuf,
    mem: GuestMemoryMmap,
    tq: TestQueue,
    q: Queue,
    alloc: BufAlloc,
    fs: Fs,
    unique: u64,
    uid: u32,
    gid: u32,
}

/// A reply: the `error` field (a negative errno, or 0) and the body after the header.
type Reply = Result<Vec<u8>, i32>;

impl Harness {
    fn new(readonly: bool) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let shared = tmp.path().join("shared");
        let outside = tmp.path().join("outside");
        fs::create_dir(&shared).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), b"host secret").unwrap();
        let mut cfg = FsConfig::new(&shared, "rootfs");
        cfg.readonly = readonly;
        let fs = Fs::new(cfg).unwrap();
        let mem = test_memory(MEM_SIZE);
        let tq = TestQueue::new(&mem, GuestAddress(0x1000), 16);
        let q = tq.queue(false);
        let alloc = BufAlloc::new(tq.end(), GuestAddress(MEM_SIZE as u64));
        let mut h = Harness {
            _tmp: tmp,
            shared,
            outside,
            mem,
            tq,
            q,
            alloc,
            fs,
            unique: 0,
            uid: 0,
            gid: 0,
        };
        h.init();
        h
    }

    fn header(&mut self, opcode: u32, nodeid: u64, args_len: usize) -> InHeader {
        self.unique += 1;
        InHeader {
            len: (size_of::<InHeader>() + args_len) as u32,
            opcode,
            unique: self.unique,
            nodeid,
            uid: self.uid,
            gid: self.gid,
            pid: 1,
            padding: 0,
        }
    }

    /// Runs the device and returns what it put in the used ring.
    fn process(&mut self) -> Vec<(u16, u32)> {
        self.fs.process(&self.mem, &mut self.q).unwrap();
        self.tq.take_used()
    }

    /// Sends raw request bytes with a reply buffer of `cap` bytes; returns the used length
    /// and the reply buffer's bytes.
    fn raw(&mut self, req: &[u8], cap: u32) -> (u32, Vec<u8>) {
        let rlen = req.len() as u32;
        let ra = self.alloc.alloc(rlen.max(1));
        self.mem.write_slice(req, ra).unwrap();
        let wa = self.alloc.alloc(cap);
        self.mem.write_slice(&vec![0u8; cap as usize], wa).unwrap();
        let head = self
            .tq
            .add_chain(&[Buf::readable(ra, rlen), Buf::writable(wa, cap)])
            .unwrap();
        let used = self.process();
        assert_eq!(used.len(), 1, "one request, one used entry");
        assert_eq!(used[0].0, head);
        let mut out = vec![0u8; cap as usize];
        self.mem.read_slice(&mut out, wa).unwrap();
        self.alloc.free(ra, rlen.max(1));
        self.alloc.free(wa, cap);
        (used[0].1, out)
    }

    fn call(&mut self, opcode: u32, nodeid: u64, body: &[u8]) -> Reply {
        let hdr = self.header(opcode, nodeid, body.len());
        let req = args(&[hdr.as_slice(), body]);
        let (len, out) = self.raw(&req, REPLY_CAP);
        let out_hdr: OutHeader = pod(&out);
        assert_eq!(out_hdr.unique, hdr.unique, "reply to the right request");
        assert_eq!(out_hdr.len, len, "used length is the reply length");
        if out_hdr.error != 0 {
            return Err(-out_hdr.error);
        }
        Ok(out[size_of::<OutHeader>()..len as usize].to_vec())
    }

    fn init(&mut self) -> InitOut {
        let init = InitIn {
            major: 7,
            minor: 31,
            max_readahead: 1 << 20,
            flags: 0,
        };
        pod(&self.call(INIT, 0, init.as_slice()).expect("FUSE_INIT"))
    }

    fn lookup(&mut self, parent: u64, name: &str) -> Result<EntryOut, i32> {
        self.call(LOOKUP, parent, &cstr(name)).map(|b| pod(&b))
    }

    fn getattr(&mut self, node: u64) -> Result<AttrOut, i32> {
        self.call(GETATTR, node, GetattrIn::default().as_slice())
            .map(|b| pod(&b))
    }

    fn create(
        &mut self,
        parent: u64,
        name: &str,
        flags: i32,
        mode: u32,
    ) -> Result<(u64, u64), i32> {
        let c = CreateIn {
            flags: flags as u32,
            mode: libc::S_IFREG | mode,
            umask: 0o022,
            fuse_flags: 0,
        };
        let b = self.call(CREATE, parent, &args(&[c.as_slice(), &cstr(name)]))?;
        let e: EntryOut = pod(&b);
        let o: OpenOut = pod(&b[size_of::<EntryOut>()..]);
        Ok((e.nodeid, o.fh))
    }

    fn mkdir(&mut self, parent: u64, name: &str, mode: u32) -> Result<EntryOut, i32> {
        let m = MkdirIn { mode, umask: 0 };
        self.call(MKDIR, parent, &args(&[m.as_slice(), &cstr(name)]))
            .map(|b| pod(&b))
    }

    fn open(&mut self, node: u64, flags: i32) -> Result<u64, i32> {
        let o = OpenIn {
            flags: flags as u32,
            fuse_flags: 0,
        };
        self.call(OPEN, node, o.as_slice())
            .map(|b| pod::<OpenOut>(&b).fh)
    }

    fn read(&mut self, node: u64, fh: u64, size: u32) -> Reply {
        let r = ReadIn {
            fh,
            size,
            ..Default::default()
        };
        self.call(READ, node, r.as_slice())
    }

    fn write(&mut self, node: u64, fh: u64, data: &[u8]) -> Result<u32, i32> {
        let w = WriteIn {
            fh,
            size: data.len() as u32,
            ..Default::default()
        };
        self.call(WRITE, node, &args(&[w.as_slice(), data]))
            .map(|b| pod::<WriteOut>(&b).size)
    }

    fn rename(&mut self, olddir: u64, old: &str, newdir: u64, new: &str) -> Reply {
        let r = RenameIn { newdir };
        self.call(
            RENAME,
            olddir,
            &args(&[r.as_slice(), &cstr(old), &cstr(new)]),
        )
    }

    fn host(&self, name: &str) -> PathBuf {
        self.shared.join(name)
    }

    /// Everything in the temporary directory above the shared one, except the two dirs.
    fn parent_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.shared.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "shared" && n != "outside")
            .collect();
        v.sort();
        v
    }

    fn secret_intact(&self) -> bool {
        fs::read(self.outside.join("secret")).unwrap() == b"host secret"
            && fs::read_dir(&self.outside).unwrap().count() == 1
    }
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode()
}

// ---- the FUSE protocol through the queue ------------------------------------------

#[test]
fn init_config_and_features() {
    let mut h = Harness::new(false);
    let out = h.init();
    assert_eq!(out.major, 7);
    assert!(out.minor >= 27);

    let mut cfg = [0xffu8; 48];
    h.fs.read_config(0, &mut cfg);
    assert_eq!(&cfg[..6], b"rootfs");
    assert!(cfg[6..TAG_LEN].iter().all(|&b| b == 0));
    assert_eq!(&cfg[TAG_LEN..TAG_LEN + 4], &1u32.to_le_bytes());
    assert!(
        cfg[CONFIG_LEN..].iter().all(|&b| b == 0),
        "past the end reads 0"
    );
    let mut tail = [0xffu8; 4];
    h.fs.read_config(u64::MAX - 1, &mut tail);
    assert_eq!(tail, [0; 4]);
    assert_ne!(Fs::features() & (1 << VIRTIO_F_VERSION_1), 0);

    assert!(matches!(
        Fs::new(FsConfig::new(&h.shared, "")),
        Err(FsError::InvalidTag(_))
    ));
    assert!(matches!(
        Fs::new(FsConfig::new(&h.shared, "x".repeat(37))),
        Err(FsError::InvalidTag(_))
    ));
    assert!(matches!(
        Fs::new(FsConfig::new(h.host("missing"), "t")),
        Err(FsError::SharedDir(..))
    ));
    fs::write(h.host("file"), b"").unwrap();
    assert!(matches!(
        Fs::new(FsConfig::new(h.host("file"), "t")),
        Err(FsError::SharedDir(..))
    ));
}

#[test]
fn lookup_getattr_open_read_a_host_file() {
    let mut h = Harness::new(false);
    fs::write(h.host("hello.txt"), b"hello from the host").unwrap();
    fs::set_permissions(h.host("hello.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    if is_root() {
        std::os::unix::fs::chown(h.host("hello.txt"), Some(1000), Some(1001)).unwrap();
    }
    let e = h.lookup(ROOT, "hello.txt").unwrap();
    assert_ne!(e.nodeid, ROOT);
    assert_eq!(e.attr.mode, libc::S_IFREG | 0o640);
    assert_eq!(e.attr.size, 19);
    if is_root() {
        assert_eq!((e.attr.uid, e.attr.gid), (1000, 1001));
    }
    let a = h.getattr(e.nodeid).unwrap();
    assert_eq!(a.attr.ino, e.attr.ino);
    assert_eq!(a.attr.mode, e.attr.mode);

    let fh = h.open(e.nodeid, libc::O_RDONLY).unwrap();
    assert_eq!(h.read(e.nodeid, fh, 4096).unwrap(), b"hello from the host");
    assert_eq!(h.lookup(ROOT, "missing").unwrap_err(), libc::ENOENT);
}

#[test]
fn guest_writes_are_on_the_host_with_owner_and_mode() {
    let mut h = Harness::new(false);
    if is_root() {
        (h.uid, h.gid) = (1234, 5678);
    }
    let (node, fh) = h
        .create(ROOT, "new.txt", libc::O_WRONLY | libc::O_CREAT, 0o664)
        .unwrap();
    assert_eq!(h.write(node, fh, b"written by the guest").unwrap(), 20);
    assert_eq!(
        fs::read(h.host("new.txt")).unwrap(),
        b"written by the guest"
    );
    let md = fs::metadata(h.host("new.txt")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o644, "mode with the guest's umask");
    if is_root() {
        assert_eq!((md.uid(), md.gid()), (1234, 5678), "created as the caller");
    }

    let d = h.mkdir(ROOT, "sub", 0o750).unwrap();
    assert_eq!(mode_of(&h.host("sub")) & 0o7777, 0o750);
    if is_root() {
        assert_eq!(fs::metadata(h.host("sub")).unwrap().uid(), 1234);
        (h.uid, h.gid) = (0, 0);
        let s = SetattrIn {
            valid: FATTR_MODE | FATTR_UID | FATTR_GID,
            mode: 0o600,
            uid: 42,
            gid: 43,
            ..Default::default()
        };
        h.call(SETATTR, node, s.as_slice()).unwrap();
        let md = fs::metadata(h.host("new.txt")).unwrap();
        assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (42, 43, 0o600));
    }
    h.rename(ROOT, "new.txt", d.nodeid, "moved.txt").unwrap();
    assert!(!h.host("new.txt").exists());
    assert_eq!(
        fs::read(h.host("sub/moved.txt")).unwrap(),
        b"written by the guest"
    );
    h.call(UNLINK, d.nodeid, &cstr("moved.txt")).unwrap();
    h.call(RMDIR, ROOT, &cstr("sub")).unwrap();
    assert!(!h.host("sub").exists());
}

// ---- no way out of the shared directory --------------------------------------------

#[test]
fn dotdot_lookups_stay_inside() {
    let mut h = Harness::new(false);
    fs::create_dir(h.host("sub")).unwrap();
    assert_eq!(
        h.lookup(ROOT, "..").unwrap().nodeid,
        ROOT,
        "root's parent is root"
    );
    assert_eq!(h.lookup(ROOT, ".").unwrap().nodeid, ROOT);
    let sub = h.lookup(ROOT, "sub").unwrap().nodeid;
    assert_eq!(h.lookup(sub, "..").unwrap().nodeid, ROOT);
    let up = h.lookup(sub, "..").unwrap().nodeid;
    assert_eq!(h.lookup(up, "..").unwrap().nodeid, ROOT);
    for name in [
        "../outside",
        "../outside/secret",
        "sub/../../outside",
        "/etc",
    ] {
        assert_eq!(h.lookup(ROOT, name).unwrap_err(), libc::EINVAL, "{name}");
    }
    assert_eq!(h.lookup(ROOT, "outside").unwrap_err(), libc::ENOENT);
    // Node ids the server never handed out.
    for bogus in [999, u64::MAX] {
        assert!(h.lookup(bogus, "secret").is_err());
        assert!(h.getattr(bogus).is_err());
    }
}

#[test]
fn symlinks_are_never_followed_on_the_host() {
    let mut h = Harness::new(false);
    let target = h.outside.clone();
    std::os::unix::fs::symlink(&target, h.host("abs")).unwrap();
    std::os::unix::fs::symlink("../outside", h.host("rel")).unwrap();
    std::os::unix::fs::symlink(target.join("secret"), h.host("file")).unwrap();
    for link in ["abs", "rel", "file"] {
        let e = h.lookup(ROOT, link).unwrap();
        assert_eq!(
            e.attr.mode & libc::S_IFMT,
            libc::S_IFLNK,
            "{link}: the link itself"
        );
        assert!(
            h.lookup(e.nodeid, "secret").is_err(),
            "{link}: no lookup through it"
        );
        assert!(
            h.open(e.nodeid, libc::O_RDONLY).is_err(),
            "{link}: not opened"
        );
        assert!(
            h.open(e.nodeid, libc::O_RDWR).is_err(),
            "{link}: not opened"
        );
        assert!(
            h.create(
                ROOT,
                link,
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                0o644
            )
            .is_err(),
            "{link}: not created through"
        );
        assert!(h.mkdir(e.nodeid, "x", 0o755).is_err());
        // The guest reads the link text and resolves it in its own namespace.
        assert!(h.call(READLINK, e.nodeid, &[]).is_ok());
    }
    // A symlink the guest makes is just as inert.
    h.call(SYMLINK, ROOT, &args(&[&cstr("mine"), &cstr("/etc/passwd")]))
        .unwrap();
    let e = h.lookup(ROOT, "mine").unwrap();
    assert!(h.open(e.nodeid, libc::O_RDONLY).is_err());
    assert_eq!(
        fs::read_link(h.host("mine")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert!(h.secret_intact());
}

#[test]
fn renames_links_and_creates_cannot_cross_the_boundary() {
    let mut h = Harness::new(false);
    fs::write(h.host("f"), b"inside").unwrap();
    fs::create_dir(h.host("sub")).unwrap();
    let f = h.lookup(ROOT, "f").unwrap().nodeid;
    let sub = h.lookup(ROOT, "sub").unwrap().nodeid;
    let bad = ["..", ".", "../escaped", "../outside/secret", "a/b", ""];
    for name in bad {
        assert!(
            h.rename(ROOT, "f", ROOT, name).is_err(),
            "rename to {name:?}"
        );
        assert!(h.rename(sub, "..", ROOT, "x").is_err() || !h.host("x").exists());
        assert!(
            h.rename(ROOT, name, sub, "y").is_err(),
            "rename from {name:?}"
        );
        let r2 = Rename2In {
            newdir: ROOT,
            flags: 0,
            padding: 0,
        };
        assert!(h
            .call(
                RENAME2,
                ROOT,
                &args(&[r2.as_slice(), &cstr("f"), &cstr(name)])
            )
            .is_err());
        let l = LinkIn { oldnodeid: f };
        assert!(h
            .call(LINK, ROOT, &args(&[l.as_slice(), &cstr(name)]))
            .is_err());
        assert!(h.mkdir(ROOT, name, 0o755).is_err(), "mkdir {name:?}");
        assert!(h
            .create(ROOT, name, libc::O_CREAT | libc::O_WRONLY, 0o644)
            .is_err());
        assert!(h
            .call(SYMLINK, ROOT, &args(&[&cstr(name), &cstr("x")]))
            .is_err());
        let m = MknodIn {
            mode: libc::S_IFREG | 0o644,
            ..Default::default()
        };
        assert!(h
            .call(MKNOD, ROOT, &args(&[m.as_slice(), &cstr(name)]))
            .is_err());
        assert!(h.call(UNLINK, sub, &cstr(name)).is_err(), "unlink {name:?}");
        assert!(h.call(RMDIR, sub, &cstr(name)).is_err(), "rmdir {name:?}");
    }
    // Moving the root or a parent away is refused too.
    assert!(h.rename(sub, "..", sub, "root").is_err());
    assert_eq!(fs::read(h.host("f")).unwrap(), b"inside");
    assert!(h.host("sub").is_dir());
    assert!(h.parent_entries().is_empty(), "{:?}", h.parent_entries());
    assert!(h.secret_intact());
}

#[test]
fn special_files_are_not_opened_and_do_not_block() {
    let mut h = Harness::new(false);
    let fifo = CString::new(h.host("fifo").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o666) }, 0);
    let e = h.lookup(ROOT, "fifo").unwrap();
    assert_eq!(e.attr.mode & libc::S_IFMT, libc::S_IFIFO);
    // Opening a FIFO with no writer would block the device forever.
    assert!(h.open(e.nodeid, libc::O_RDONLY).is_err());
    assert!(h
        .create(ROOT, "fifo", libc::O_RDONLY | libc::O_CREAT, 0o644)
        .is_err());
    // A guest-made device node is created (the guest's kernel handles it) but the host
    // never opens it.
    if is_root() {
        let m = MknodIn {
            mode: libc::S_IFCHR | 0o666,
            rdev: (1 << 8) | 3, // 1:3, /dev/null: harmless if it were opened
            ..Default::default()
        };
        if h.call(MKNOD, ROOT, &args(&[m.as_slice(), &cstr("dev")]))
            .is_ok()
        {
            let d = h.lookup(ROOT, "dev").unwrap();
            assert!(h.open(d.nodeid, libc::O_RDWR).is_err());
        }
    }
}

#[test]
fn readonly_share_refuses_every_change() {
    let mut h = Harness::new(true);
    fs::write(h.host("f"), b"keep").unwrap();
    let before = fs::read_dir(&h.shared).unwrap().count();
    let mode = mode_of(&h.host("f"));
    let f = h.lookup(ROOT, "f").unwrap().nodeid;
    let fh = h.open(f, libc::O_RDONLY).unwrap();
    assert_eq!(h.read(f, fh, 100).unwrap(), b"keep");
    assert_eq!(h.write(f, fh, b"x").unwrap_err(), libc::EROFS);
    for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC] {
        assert_eq!(h.open(f, flags).unwrap_err(), libc::EROFS);
    }
    assert_eq!(
        h.create(ROOT, "n", libc::O_CREAT | libc::O_RDONLY, 0o644)
            .unwrap_err(),
        libc::EROFS
    );
    assert_eq!(h.mkdir(ROOT, "d", 0o755).unwrap_err(), libc::EROFS);
    assert_eq!(h.rename(ROOT, "f", ROOT, "g").unwrap_err(), libc::EROFS);
    assert_eq!(h.call(UNLINK, ROOT, &cstr("f")).unwrap_err(), libc::EROFS);
    let s = SetattrIn {
        valid: FATTR_MODE,
        mode: 0o777,
        ..Default::default()
    };
    assert_eq!(h.call(SETATTR, f, s.as_slice()).unwrap_err(), libc::EROFS);
    assert_eq!(fs::read(h.host("f")).unwrap(), b"keep");
    assert_eq!(fs::read_dir(&h.shared).unwrap().count(), before);
    assert_eq!(mode_of(&h.host("f")), mode);
}

#[test]
fn unknown_opcodes_get_enosys() {
    let mut h = Harness::new(false);
    for op in [0, 7, 19, 50, 51, 4096, 0x1a00_0000, u32::MAX] {
        assert_eq!(
            h.call(op, ROOT, &[0; 64]).unwrap_err(),
            libc::ENOSYS,
            "{op}"
        );
    }
}

// ---- hostile chains ----------------------------------------------------------------

/// A LOOKUP of "." for chains built by hand.
fn lookup_req(h: &mut Harness) -> Vec<u8> {
    let name = cstr(".");
    let hdr = h.header(LOOKUP, ROOT, name.len());
    args(&[hdr.as_slice(), &name])
}

/// The device is still healthy after whatever the test did.
fn still_serves(h: &mut Harness) {
    assert_eq!(h.lookup(ROOT, ".").unwrap().nodeid, ROOT);
}

#[test]
fn buffers_outside_guest_memory_complete_empty() {
    let mut h = Harness::new(false);
    let req = lookup_req(&mut h);
    let ra = h.alloc.alloc(req.len() as u32);
    h.mem.write_slice(&req, ra).unwrap();
    let wa = h.alloc.alloc(256);
    h.mem.write_slice(&[0xaa; 256], wa).unwrap();
    let end = MEM_SIZE as u64;
    let cases = [
        // Request beyond memory.
        vec![
            Buf::readable(GuestAddress(1 << 40), 64),
            Buf::writable(wa, 256),
        ],
        // Request straddling the end of memory.
        vec![
            Buf::readable(GuestAddress(end - 16), 64),
            Buf::writable(wa, 256),
        ],
        // Reply beyond memory / straddling the end / at the top of the address space.
        vec![
            Buf::readable(ra, req.len() as u32),
            Buf::writable(GuestAddress(end), 256),
        ],
        vec![
            Buf::readable(ra, req.len() as u32),
            Buf::writable(GuestAddress(end - 8), 4096),
        ],
        vec![
            Buf::readable(ra, req.len() as u32),
            Buf::writable(GuestAddress(u64::MAX - 8), 256),
        ],
        // Huge lengths.
        vec![Buf::readable(ra, u32::MAX), Buf::writable(wa, 256)],
        vec![
            Buf::readable(ra, req.len() as u32),
            Buf::writable(wa, u32::MAX),
        ],
    ];
    for (i, bufs) in cases.iter().enumerate() {
        let head = h.tq.add_chain(bufs).unwrap();
        let used = h.process();
        assert_eq!(used.len(), 1, "case {i}");
        assert_eq!(used[0].0, head);
        if i >= 2 {
            assert_eq!(used[0].1, 0, "case {i}: nothing written");
        }
    }
    let mut after = [0u8; 256];
    h.mem.read_slice(&mut after, wa).unwrap();
    // Only cases whose reply buffer was `wa` and whose request was unreadable ran; those
    // wrote nothing.
    assert!(after.iter().all(|&b| b == 0xaa), "reply buffer untouched");
    still_serves(&mut h);
}

#[test]
fn short_reply_buffer_is_not_overrun() {
    let mut h = Harness::new(false);
    let req = lookup_req(&mut h);
    let ra = h.alloc.alloc(req.len() as u32);
    h.mem.write_slice(&req, ra).unwrap();
    // 24 bytes of reply room inside a 256-byte canary area.
    let area = h.alloc.alloc(256);
    h.mem.write_slice(&[0x5a; 256], area).unwrap();
    let wa = area.unchecked_add(64);
    for cap in [0u32, 8, 16, 24] {
        h.tq.add_chain(&[Buf::readable(ra, req.len() as u32), Buf::writable(wa, cap)])
            .unwrap();
        let used = h.process();
        assert_eq!(used.len(), 1);
        assert!(used[0].1 <= cap, "used length within the buffer");
        let mut all = [0u8; 256];
        h.mem.read_slice(&mut all, area).unwrap();
        assert!(all[..64].iter().all(|&b| b == 0x5a));
        assert!(
            all[64 + cap as usize..].iter().all(|&b| b == 0x5a),
            "cap {cap}"
        );
    }
    still_serves(&mut h);
}

#[test]
fn descriptor_loops_terminate() {
    let mut h = Harness::new(false);
    let req = lookup_req(&mut h);
    let ra = h.alloc.alloc(req.len() as u32);
    h.mem.write_slice(&req, ra).unwrap();
    let wa = h.alloc.alloc(512);
    let r = ra.raw_value();
    let w = wa.raw_value();
    let len = req.len() as u32;
    // 12 -> 13 -> 12 ... (readable), 14 -> 15 -> 14 ... (writable), 10 -> 10 (self).
    h.tq.write_desc(12, r, len, F_NEXT, 13);
    h.tq.write_desc(13, r, len, F_NEXT, 12);
    h.tq.write_desc(14, r, len, F_NEXT, 15);
    h.tq.write_desc(15, w, 512, F_WRITE | F_NEXT, 14);
    h.tq.write_desc(10, w, 512, F_WRITE | F_NEXT, 10);
    // A next index past the table.
    h.tq.write_desc(11, r, len, F_NEXT, 500);
    for head in [12, 14, 10, 11] {
        h.tq.publish(head);
    }
    let used = h.process();
    let heads: Vec<u16> = used.iter().map(|u| u.0).collect();
    assert_eq!(heads, vec![12, 14, 10, 11]);
    still_serves(&mut h);
}

#[test]
fn wrong_directions_never_write_device_readable_buffers() {
    let mut h = Harness::new(false);
    let req = lookup_req(&mut h);
    let len = req.len() as u32;
    let ra = h.alloc.alloc(len);
    h.mem.write_slice(&req, ra).unwrap();
    let ro_reply = h.alloc.alloc(512);
    h.mem.write_slice(&[0x77; 512], ro_reply).unwrap();
    // Request in a writable descriptor, "reply" in a readable one.
    let rw_req = h.alloc.alloc(len);
    h.mem.write_slice(&req, rw_req).unwrap();
    h.tq.add_chain(&[Buf::writable(rw_req, len), Buf::readable(ro_reply, 512)])
        .unwrap();
    // Both readable: a request with nowhere to answer.
    h.tq.add_chain(&[Buf::readable(ra, len), Buf::readable(ro_reply, 512)])
        .unwrap();
    // Writable first, then the request: the reply room is skipped over, never read.
    h.tq.add_chain(&[Buf::writable(ro_reply, 8), Buf::readable(ra, len)])
        .unwrap();
    let used = h.process();
    assert_eq!(used.len(), 3);
    let mut after = [0u8; 512];
    h.mem.read_slice(&mut after, ro_reply).unwrap();
    assert!(
        after[8..].iter().all(|&b| b == 0x77),
        "readable buffer untouched"
    );
    // The first chain's "request" is the 0x77 filler: an unknown opcode, answered into
    // the only writable buffer it has.
    assert_eq!(used[0].1, size_of::<OutHeader>() as u32);
    let out: OutHeader = h.mem.read_obj(rw_req).unwrap();
    assert_eq!(out.error, -libc::ENOSYS);
    assert_eq!(used[1].1, 0);
    still_serves(&mut h);
}

#[test]
fn bad_indirect_tables_complete_empty() {
    let mut h = Harness::new(false);
    let table = h.alloc.alloc(64);
    // Length not a multiple of 16, table beyond memory, empty table, nested indirect.
    h.tq.write_desc(12, table.raw_value(), 17, F_INDIRECT, 0);
    h.tq.write_desc(13, 1 << 40, 64, F_INDIRECT, 0);
    h.tq.write_desc(14, table.raw_value(), 0, F_INDIRECT, 0);
    let mut nested = [0u8; 16];
    nested[0..8].copy_from_slice(&table.raw_value().to_le_bytes());
    nested[8..12].copy_from_slice(&16u32.to_le_bytes());
    nested[12..14].copy_from_slice(&F_INDIRECT.to_le_bytes());
    h.mem.write_slice(&nested, table).unwrap();
    h.tq.write_desc(15, table.raw_value(), 16, F_INDIRECT, 0);
    for head in [12, 13, 14, 15] {
        h.tq.publish(head);
    }
    let used = h.process();
    assert!(used.len() <= 4);
    assert!(used.iter().all(|u| u.1 == 0));
    // A valid indirect chain works.
    let req = lookup_req(&mut h);
    let ra = h.alloc.alloc(req.len() as u32);
    h.mem.write_slice(&req, ra).unwrap();
    let wa = h.alloc.alloc(512);
    let mut t = [0u8; 32];
    t[0..8].copy_from_slice(&ra.raw_value().to_le_bytes());
    t[8..12].copy_from_slice(&(req.len() as u32).to_le_bytes());
    t[12..14].copy_from_slice(&F_NEXT.to_le_bytes());
    t[14..16].copy_from_slice(&1u16.to_le_bytes());
    t[16..24].copy_from_slice(&wa.raw_value().to_le_bytes());
    t[24..28].copy_from_slice(&512u32.to_le_bytes());
    t[28..30].copy_from_slice(&F_WRITE.to_le_bytes());
    let table2 = h.alloc.alloc(32);
    h.mem.write_slice(&t, table2).unwrap();
    h.tq.write_desc(11, table2.raw_value(), 32, F_INDIRECT, 0);
    h.tq.publish(11);
    let used = h.process();
    let last = used.last().copied().unwrap();
    assert_eq!(last.0, 11);
    let reply_len = (size_of::<OutHeader>() + size_of::<EntryOut>()) as u32;
    assert_eq!(last.1, reply_len);
}

#[test]
fn huge_header_length_and_missing_reply_room() {
    let mut h = Harness::new(false);
    let mut req = lookup_req(&mut h);
    req[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    let (len, out) = h.raw(&req, 256);
    assert!(len == 0 || pod::<OutHeader>(&out).error < 0);
    // Request only, no writable descriptor: completes with nothing written.
    let req = lookup_req(&mut h);
    let ra = h.alloc.alloc(req.len() as u32);
    h.mem.write_slice(&req, ra).unwrap();
    h.tq.add_chain(&[Buf::readable(ra, req.len() as u32)])
        .unwrap();
    assert_eq!(h.process()[0].1, 0);
    // FORGET needs no reply room.
    let hdr = h.header(FORGET, ROOT, 8);
    let forget = args(&[hdr.as_slice(), &1u64.to_le_bytes()]);
    let fa = h.alloc.alloc(forget.len() as u32);
    h.mem.write_slice(&forget, fa).unwrap();
    h.tq.add_chain(&[Buf::readable(fa, forget.len() as u32)])
        .unwrap();
    assert_eq!(h.process()[0].1, 0);
    // Truncated header.
    let (len, _) = h.raw(&req[..10], 256);
    assert_eq!(len, 0);
    still_serves(&mut h);
}

#[test]
fn bogus_avail_index_and_rings_outside_memory_do_not_hang() {
    let mut h = Harness::new(false);
    h.tq.set_avail_idx(500);
    let _ = h.fs.process(&h.mem, &mut h.q);
    // Rings beyond guest memory: the queue is left alone.
    let mut q = Queue::new(16).unwrap();
    q.set_desc_table_address(Some(0), Some(1));
    q.set_avail_ring_address(Some(0x1000), Some(0));
    q.set_used_ring_address(Some(0x2000), Some(0));
    q.set_ready(true);
    assert!(!h.fs.process(&h.mem, &mut q).unwrap());
    // A queue not made ready is not touched.
    let mut q = Queue::new(16).unwrap();
    assert!(!h.fs.process(&h.mem, &mut q).unwrap());
}

#[test]
fn queue_reset_mid_request() {
    let mut h = Harness::new(false);
    fs::write(h.host("f"), b"x").unwrap();
    let node = h.lookup(ROOT, "f").unwrap().nodeid;
    // A request is made available, then the driver resets before the device ran.
    let req = lookup_req(&mut h);
    let ra = h.alloc.alloc(req.len() as u32);
    h.mem.write_slice(&req, ra).unwrap();
    let wa = h.alloc.alloc(256);
    h.tq.add_chain(&[Buf::readable(ra, req.len() as u32), Buf::writable(wa, 256)])
        .unwrap();
    h.q.reset();
    h.tq.reset();
    h.fs.reset().unwrap();
    // Not ready yet: nothing happens.
    assert!(!h.fs.process(&h.mem, &mut h.q).unwrap());
    assert_eq!(h.tq.used_idx(), 0);
    // The driver tore the chain down too: the zeroed table describes an empty buffer.
    h.tq.configure(&mut h.q);
    h.tq.publish(0);
    assert_eq!(h.process(), vec![(0, 0)]);
    h.q.reset();
    h.tq.reset();
    h.tq.configure(&mut h.q);
    // A new session starts with INIT; the old session's node ids are gone.
    h.init();
    assert!(h.getattr(node).is_err(), "old node id forgotten");
    assert_eq!(h.lookup(ROOT, "f").unwrap().attr.size, 1);
}

#[test]
fn garbage_requests_never_panic() {
    let mut h = Harness::new(false);
    fs::write(h.host("f"), b"some data").unwrap();
    fs::create_dir(h.host("d")).unwrap();
    let f = h.lookup(ROOT, "f").unwrap().nodeid;
    let d = h.lookup(ROOT, "d").unwrap().nodeid;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for op in 0..=52u32 {
        for round in 0..12 {
            let body_len = (rnd() % 200) as usize;
            let mut body: Vec<u8> = (0..body_len).map(|_| rnd() as u8).collect();
            // Some rounds carry plausible names so requests get past the decoders.
            if round % 3 == 0 && body_len > 4 {
                let n = body.len();
                body[n - 4..].copy_from_slice(b"zz\0\0");
            }
            let nodeid = [0, ROOT, f, d, rnd()][(rnd() % 5) as usize];
            let mut hdr = h.header(op, nodeid, body.len());
            if round % 4 == 1 {
                hdr.len = rnd() as u32;
            }
            hdr.uid = 0;
            hdr.gid = 0;
            let req = args(&[hdr.as_slice(), &body]);
            let cap = [0, 16, 100, 4096][(rnd() % 4) as usize];
            let (len, _) = h.raw(&req, cap.max(1));
            assert!(len <= cap.max(1));
        }
    }
    assert!(h.secret_intact());
    assert!(h.parent_entries().is_empty());
    still_serves(&mut h);
}

#[test]
fn random_descriptor_tables_never_panic_or_hang() {
    let mut h = Harness::new(false);
    fs::write(h.host("f"), b"data").unwrap();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // Some buffers hold real requests so that chains get past the header.
    let req = lookup_req(&mut h);
    let ra = h.alloc.alloc(req.len() as u32);
    h.mem.write_slice(&req, ra).unwrap();
    let wa = h.alloc.alloc(4096);
    let mem_end = MEM_SIZE as u64;
    let mut served = 0;
    for _ in 0..300 {
        for i in 0..16u16 {
            let addr = match rnd() % 5 {
                0 => ra.raw_value(),
                1 => wa.raw_value(),
                2 => rnd() % mem_end,
                3 => mem_end - rnd() % 64,
                _ => rnd(),
            };
            let len = match rnd() % 4 {
                0 => req.len() as u32,
                1 => 4096,
                2 => rnd() as u32,
                _ => (rnd() % 256) as u32,
            };
            let flags = (rnd() % 8) as u16;
            let next = (rnd() % 20) as u16;
            h.tq.write_desc(i, addr, len, flags, next);
        }
        for _ in 0..(rnd() % 4) {
            h.tq.publish((rnd() % 18) as u16);
        }
        let _ = h.fs.process(&h.mem, &mut h.q);
        served += h.tq.take_used().len();
    }
    assert!(served > 100, "only {served} chains served");
    // Whatever state the rings are in, a reset brings the queue back.
    h.q.reset();
    h.tq.reset();
    h.tq.configure(&mut h.q);
    still_serves(&mut h);
    assert!(h.secret_intact());
}
