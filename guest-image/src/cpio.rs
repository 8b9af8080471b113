//! The "newc" cpio format (`070701`), as the kernel's initramfs unpacker reads it.
//!
//! Each entry is a 110-byte ASCII header (magic + 13 fields of 8 hex digits), the
//! NUL-terminated name padded to a multiple of 4 bytes (counting the header), then the
//! data padded to 4 bytes. `TRAILER!!!` ends the archive.

use std::io::{self, Read, Write};

/// Magic of a newc header without checksums.
pub const MAGIC: &[u8; 6] = b"070701";
/// Name of the entry that ends an archive.
pub const TRAILER: &str = "TRAILER!!!";
/// Size of a newc header.
pub const HEADER_LEN: usize = 110;

/// File-type bits of `st_mode`.
pub const S_IFMT: u32 = 0o170000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFBLK: u32 = 0o060000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("write: {0}")]
    Io(#[from] io::Error),
    #[error("invalid entry name {0:?}")]
    BadName(String),
    #[error("{what} of {name:?} does not fit the format: {value}")]
    TooLarge {
        name: String,
        what: &'static str,
        value: u64,
    },
    #[error("corrupt archive at byte {offset}: {reason}")]
    Corrupt { offset: usize, reason: String },
}

/// Metadata of one entry. Names are relative (`dev/console`, not `/dev/console`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub ino: u32,
    /// File type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub file_size: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Device number of a character or block device node.
    pub rdev_major: u32,
    pub rdev_minor: u32,
}

impl Header {
    /// A header with the given name and mode, owned by root, everything else zero.
    pub fn new(name: &str, mode: u32) -> Self {
        Header {
            name: name.to_string(),
            ino: 0,
            mode,
            uid: 0,
            gid: 0,
            nlink: if mode & S_IFMT == S_IFDIR { 2 } else { 1 },
            mtime: 0,
            file_size: 0,
            dev_major: 0,
            dev_minor: 0,
            rdev_major: 0,
            rdev_minor: 0,
        }
    }
}

fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Streams entries into a newc archive. Entries are written in the order given: the
/// kernel creates them in that order, so parents must come first.
pub struct Writer<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Writer {
            out,
            written: 0,
            // Inode numbers only tell hard links apart; start above 0, which some
            // readers treat as "no inode".
            next_ino: 1,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = pad4(self.written as usize);
        self.put(&[0u8; 3][..n])
    }

    /// Writes one entry whose data comes from `data`; `header.file_size` must be its
    /// length. A zero `ino` gets the next free inode number.
    pub fn write_entry(&mut self, header: &Header, data: &mut dyn Read) -> Result<(), Error> {
        let name = &header.name;
        if name.is_empty() || name.starts_with('/') || name.contains('\0') {
            return Err(Error::BadName(name.clone()));
        }
        let mut h = header.clone();
        if h.ino == 0 {
            h.ino = self.next_ino;
            self.next_ino += 1;
        }
        let namesize = name.len() as u64 + 1;
        let namesize = u32::try_from(namesize).map_err(|_| Error::TooLarge {
            name: name.clone(),
            what: "name",
            value: namesize,
        })?;
        let fields = [
            h.ino,
            h.mode,
            h.uid,
            h.gid,
            h.nlink,
            h.mtime,
            h.file_size,
            h.dev_major,
            h.dev_minor,
            h.rdev_major,
            h.rdev_minor,
            namesize,
            0, // check: only used by the 070702 variant
        ];
        let mut text = String::with_capacity(HEADER_LEN);
        text.push_str(std::str::from_utf8(MAGIC).expect("ascii magic"));
        for f in fields {
            text.push_str(&format!("{f:08x}"));
        }
        debug_assert_eq!(text.len(), HEADER_LEN);
        self.put(text.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        let copied = io::copy(
            &mut data.take(u64::from(h.file_size)),
            &mut CountingWriter(self),
        )?;
        if copied != u64::from(h.file_size) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name}: {copied} of {} bytes", h.file_size),
            )
            .into());
        }
        self.pad()?;
        Ok(())
    }

    /// Writes a directory.
    pub fn dir(&mut self, name: &str, perm: u32) -> Result<(), Error> {
        self.write_entry(&Header::new(name, S_IFDIR | perm), &mut io::empty())
    }

    /// Writes a regular file with the given contents.
    pub fn file(&mut self, name: &str, perm: u32, mut data: &[u8]) -> Result<(), Error> {
        let mut h = Header::new(name, S_IFREG | perm);
        h.file_size = size_u32(name, data.len() as u64)?;
        self.write_entry(&h, &mut data)
    }

    /// Writes a regular file of `len` bytes read from `data`.
    pub fn file_from(
        &mut self,
        name: &str,
        perm: u32,
        len: u64,
        data: &mut dyn Read,
    ) -> Result<(), Error> {
        let mut h = Header::new(name, S_IFREG | perm);
        h.file_size = size_u32(name, len)?;
        self.write_entry(&h, data)
    }

    /// Writes a symbolic link; its data is the target.
    pub fn symlink(&mut self, name: &str, target: &str) -> Result<(), Error> {
        let mut h = Header::new(name, S_IFLNK | 0o777);
        h.file_size = size_u32(name, target.len() as u64)?;
        self.write_entry(&h, &mut target.as_bytes())
    }

    /// Writes a character device node.
    pub fn char_device(
        &mut self,
        name: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), Error> {
        let mut h = Header::new(name, S_IFCHR | perm);
        h.rdev_major = major;
        h.rdev_minor = minor;
        self.write_entry(&h, &mut io::empty())
    }

    /// Writes the trailer, pads to a 512-byte block as cpio(1) does, and returns the
    /// output.
    pub fn finish(mut self) -> Result<W, Error> {
        self.write_entry(&Header::new(TRAILER, 0), &mut io::empty())?;
        let n = (512 - self.written % 512) % 512;
        self.put(&vec![0u8; n as usize])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn size_u32(name: &str, len: u64) -> Result<u32, Error> {
    u32::try_from(len).map_err(|_| Error::TooLarge {
        name: name.to_string(),
        what: "size",
        value: len,
    })
}

// Lets io::copy write through the writer's byte count.
struct CountingWriter<'a, W: Write>(&'a mut Writer<W>);

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.out.write(buf)?;
        self.0.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.out.flush()
    }
}

/// One entry read back from an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub header: Header,
    pub data: Vec<u8>,
}

/// Parses a whole newc archive, up to and excluding the trailer.
pub fn read_all(bytes: &[u8]) -> Result<Vec<Entry>, Error> {
    let corrupt = |offset: usize, reason: &str| Error::Corrupt {
        offset,
        reason: reason.to_string(),
    };
    let mut entries = Vec::new();
    let mut pos = 0;
    loop {
        let start = pos;
        let head = bytes
            .get(pos..pos + HEADER_LEN)
            .ok_or_else(|| corrupt(pos, "truncated header (no trailer?)"))?;
        if &head[..6] != MAGIC {
            return Err(corrupt(pos, "bad magic"));
        }
        let mut fields = [0u32; 13];
        for (i, f) in fields.iter_mut().enumerate() {
            let hex = std::str::from_utf8(&head[6 + i * 8..14 + i * 8])
                .map_err(|_| corrupt(pos, "non-ASCII header"))?;
            *f = u32::from_str_radix(hex, 16).map_err(|_| corrupt(pos, "bad hex field"))?;
        }
        pos += HEADER_LEN;
        let namesize = fields[11] as usize;
        let name = bytes
            .get(pos..pos + namesize)
            .ok_or_else(|| corrupt(pos, "truncated name"))?;
        if namesize == 0 || name[namesize - 1] != 0 {
            return Err(corrupt(pos, "name not NUL-terminated"));
        }
        let name = std::str::from_utf8(&name[..namesize - 1])
            .map_err(|_| corrupt(pos, "non-UTF-8 name"))?
            .to_string();
        pos += namesize;
        pos += pad4(pos - start);
        if name == TRAILER {
            return Ok(entries);
        }
        let size = fields[6] as usize;
        let data = bytes
            .get(pos..pos + size)
            .ok_or_else(|| corrupt(pos, "truncated data"))?
            .to_vec();
        pos += size;
        pos += pad4(pos);
        entries.push(Entry {
            header: Header {
                name,
                ino: fields[0],
                mode: fields[1],
                uid: fields[2],
                gid: fields[3],
                nlink: fields[4],
                mtime: fields[5],
                file_size: fields[6],
                dev_major: fields[7],
                dev_minor: fields[8],
                rdev_major: fields[9],
                rdev_minor: fields[10],
            },
            data,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        w.dir("dev", 0o755).unwrap();
        w.char_device("dev/console", 0o600, 5, 1).unwrap();
        w.file("init", 0o755, b"#!/bin/sh\necho hi\n").unwrap();
        w.dir("bin", 0o755).unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        w.file("empty", 0o644, b"").unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn header_layout_matches_newc() {
        let mut w = Writer::new(Vec::new());
        w.file("a", 0o644, b"xyz").unwrap();
        let out = w.finish().unwrap();
        let head = std::str::from_utf8(&out[..HEADER_LEN]).unwrap();
        // magic, ino 1, mode 0100644, uid, gid, nlink 1, mtime, size 3, dev x2,
        // rdev x2, namesize 2 ("a\0"), check.
        let expected = concat!(
            "070701", "00000001", "000081a4", "00000000", "00000000", "00000001", "00000000",
            "00000003", "00000000", "00000000", "00000000", "00000000", "00000002", "00000000"
        );
        assert_eq!(head, expected);
        // 110 + 2 = 112 is aligned: the data follows at once, then one pad byte.
        assert_eq!(&out[112..116], b"xyz\0");
        assert_eq!(&out[116..122], b"070701");
    }

    #[test]
    fn every_record_is_four_byte_aligned_and_archive_is_block_padded() {
        let out = sample();
        assert_eq!(out.len() % 512, 0);
        let mut pos = 0;
        let mut seen = 0;
        while let Some(off) = out[pos..].windows(6).position(|w| w == MAGIC) {
            assert_eq!((pos + off) % 4, 0, "header at {} is misaligned", pos + off);
            pos += off + 6;
            seen += 1;
        }
        assert_eq!(seen, 7, "six entries and the trailer");
        let trailer = out
            .windows(TRAILER.len())
            .position(|w| w == TRAILER.as_bytes());
        assert!(trailer.is_some());
    }

    #[test]
    fn parses_back_what_it_wrote() {
        let entries = read_all(&sample()).unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.header.name.as_str()).collect();
        assert_eq!(
            names,
            ["dev", "dev/console", "init", "bin", "bin/sh", "empty"]
        );
        let console = &entries[1].header;
        assert_eq!(console.mode, S_IFCHR | 0o600);
        assert_eq!((console.rdev_major, console.rdev_minor), (5, 1));
        assert_eq!(entries[0].header.mode, S_IFDIR | 0o755);
        assert_eq!(entries[0].header.nlink, 2);
        assert_eq!(entries[2].data, b"#!/bin/sh\necho hi\n");
        assert_eq!(entries[2].header.mode, S_IFREG | 0o755);
        assert_eq!(entries[4].header.mode & S_IFMT, S_IFLNK);
        assert_eq!(entries[4].data, b"busybox");
        assert!(entries[5].data.is_empty());
        let mut inos: Vec<_> = entries.iter().map(|e| e.header.ino).collect();
        inos.dedup();
        assert_eq!(inos.len(), entries.len(), "inode numbers are distinct");
    }

    #[test]
    fn names_of_every_length_stay_aligned() {
        let mut w = Writer::new(Vec::new());
        let names: Vec<String> = (1..=9).map(|n| "n".repeat(n)).collect();
        for (i, n) in names.iter().enumerate() {
            w.file(n, 0o644, &vec![b'x'; i]).unwrap();
        }
        let entries = read_all(&w.finish().unwrap()).unwrap();
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.header.name, names[i]);
            assert_eq!(e.data.len(), i);
        }
    }

    #[test]
    fn rejects_absolute_and_empty_names() {
        let mut w = Writer::new(Vec::new());
        assert!(matches!(w.dir("/dev", 0o755), Err(Error::BadName(_))));
        assert!(matches!(w.dir("", 0o755), Err(Error::BadName(_))));
    }

    #[test]
    fn short_data_is_an_error() {
        let mut w = Writer::new(Vec::new());
        let err = w.file_from("f", 0o644, 10, &mut &b"abc"[..]).unwrap_err();
        assert!(matches!(err, Error::Io(_)), "{err}");
    }

    #[test]
    fn truncated_archive_is_corrupt() {
        let out = sample();
        assert!(matches!(read_all(&out[..200]), Err(Error::Corrupt { .. })));
        assert!(matches!(read_all(b"hello"), Err(Error::Corrupt { .. })));
    }

    // The system's cpio, when installed, must list exactly what we wrote.
    #[test]
    fn system_cpio_lists_the_archive() {
        let Ok(out) = std::process::Command::new("cpio").arg("--version").output() else {
            eprintln!("skipped: cpio(1) not installed");
            return;
        };
        assert!(out.status.success());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.cpio");
        std::fs::write(&path, sample()).unwrap();
        let out = std::process::Command::new("cpio")
            .args(["-t", "-v", "--quiet", "-F"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8(out.stdout).unwrap();
        let names: Vec<_> = listing
            .lines()
            .map(|l| l.split_whitespace().last().unwrap())
            .collect();
        // `ls -l` style: a symlink's line ends with "-> target".
        assert_eq!(
            names,
            ["dev", "dev/console", "init", "bin", "busybox", "empty"]
        );
        assert!(listing.contains("crw-------"), "{listing}");
        assert!(listing.contains("bin/sh -> busybox"), "{listing}");
    }
}
