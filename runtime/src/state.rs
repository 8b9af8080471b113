//! On-disk container state under `--root`: one directory per container, every file
//! written atomically (temp file + rename), so each command can run in a fresh process
//! and a crash never leaves a half-written record.

use std::collections::HashMap;
use std::fs::{self, DirBuilder, File};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use hull_protocol::ExitStatus;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sandbox::SandboxKind;

/// The record of one container, written by `create`.
const RECORD: &str = "state.json";
/// The container's exit status, written by the supervisor when init exits.
const EXIT: &str = "exit.json";
/// A copy of the bundle's config.json as it was at create time.
pub const SPEC: &str = "config.json";

/// Refuses ids that could escape `--root` or confuse tools: runc's rule
/// (`[A-Za-z0-9_+.-]+`, not `.` or `..`), with a length cap.
pub fn validate_id(id: &str) -> Result<()> {
    let bad = |why| {
        Err(Error::InvalidId {
            id: id.to_string(),
            why,
        })
    };
    if id.is_empty() {
        return bad("it is empty");
    }
    if id == "." || id == ".." {
        return bad("it names a directory");
    }
    if id.len() > 1024 {
        return bad("it is longer than 1024 bytes");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b))
    {
        return bad("only letters, digits, '_', '+', '-' and '.' are allowed");
    }
    Ok(())
}

/// What `create` records about a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub sandbox: SandboxKind,
    /// RFC 3339 creation time.
    pub created: String,
    pub owner: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// The sandbox's host process (OS sandbox: the supervisor; VM: the VMM); 0 until
    /// it is launched.
    pub host_pid: i32,
    /// Its start time (clock ticks since boot) so a recycled pid is not mistaken for it.
    pub host_start: u64,
    /// Where the agent protocol is served.
    pub socket: PathBuf,
    /// The container's init as the agent reported it; 0 until created.
    #[serde(default)]
    pub init_pid: i32,
    #[serde(default)]
    pub init_start: u64,
    /// `create` finished: the container exists in the sandbox.
    #[serde(default)]
    pub created_ok: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ExitRecord {
    pub status: ExitStatus,
}

/// The state directory tree under `--root`.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Store { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The container's directory (the id is validated first).
    pub fn dir(&self, id: &str) -> Result<PathBuf> {
        validate_id(id)?;
        Ok(self.root.join(id))
    }

    /// Creates the container's directory; fails if the id is taken. mkdir is atomic, so
    /// two concurrent creates of one id cannot both win.
    pub fn create_dir(&self, id: &str) -> Result<PathBuf> {
        let dir = self.dir(id)?;
        DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.root)
            .map_err(Error::io(format!(
                "creating state root {}",
                self.root.display()
            )))?;
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Error::Exists(id.into())),
            Err(e) => Err(Error::io(format!("creating {}", dir.display()))(e)),
        }
    }

    pub fn write_record(&self, rec: &Record) -> Result<()> {
        write_json_atomic(&self.dir(&rec.id)?.join(RECORD), rec)
    }

    /// The record, or `NotExist` when there is no such container.
    pub fn read_record(&self, id: &str) -> Result<Record> {
        let path = self.dir(id)?.join(RECORD);
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::Sandbox(format!("corrupt state file {}: {e}", path.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::NotExist(id.into())),
            Err(e) => Err(Error::io(format!("reading {}", path.display()))(e)),
        }
    }

    /// The recorded exit status, if init has exited.
    pub fn read_exit(&self, id: &str) -> Option<ExitStatus> {
        let b = fs::read(self.dir(id).ok()?.join(EXIT)).ok()?;
        serde_json::from_slice::<ExitRecord>(&b)
            .ok()
            .map(|r| r.status)
    }

    pub fn write_exit(&self, id: &str, status: ExitStatus) -> Result<()> {
        write_json_atomic(&self.dir(id)?.join(EXIT), &ExitRecord { status })
    }

    /// Removes the container's directory and everything in it; absent is fine.
    pub fn remove(&self, id: &str) -> Result<()> {
        let dir = self.dir(id)?;
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", dir.display()))(e)),
        }
    }

    /// Ids of all container directories, sorted.
    pub fn ids(&self) -> Result<Vec<String>> {
        let rd = match fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("reading {}", self.root.display()))(e)),
        };
        let mut ids: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|id| validate_id(id).is_ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

/// Writes `value` as JSON to a temp file beside `path`, syncs it and renames it over
/// `path`.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let body = serde_json::to_vec(value).expect("state serializes");
    write_atomic(path, &body)
}

pub fn write_atomic(path: &Path, body: &[u8]) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.map_err(Error::io(format!("writing {}", path.display())))
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let b = fs::read(path).map_err(Error::io(format!("reading {}", path.display())))?;
    serde_json::from_slice(&b)
        .map_err(|e| Error::Sandbox(format!("corrupt file {}: {e}", path.display())))
}

/// A process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or
/// None when it is gone or a zombie.
pub fn process_start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3 (state); starttime is field 22.
    fields.nth(18)?.parse().ok()
}

/// Whether `pid` is still the process that started at `start`.
pub fn process_alive(pid: i32, start: u64) -> bool {
    process_start_time(pid).is_some_and(|s| s == start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_escape_the_root_are_refused() {
        for bad in ["", ".", "..", "a/b", "../x", "/abs", "a b", "x\0y", "é"] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "c-1", "my_container.2", "A+B", "..a", "0123abc"] {
            validate_id(good).unwrap();
        }
        assert!(validate_id(&"a".repeat(1025)).is_err());
    }

    fn record(id: &str) -> Record {
        Record {
            id: id.into(),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            sandbox: SandboxKind::Os,
            created: "2026-01-01T00:00:00Z".into(),
            owner: "root".into(),
            annotations: HashMap::new(),
            host_pid: 0,
            host_start: 0,
            socket: "/s".into(),
            init_pid: 0,
            init_start: 0,
            created_ok: false,
        }
    }

    #[test]
    fn store_round_trip_and_exclusive_create() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path().join("root"));
        assert!(store.ids().unwrap().is_empty());
        store.create_dir("c1").unwrap();
        assert!(matches!(store.create_dir("c1"), Err(Error::Exists(_))));
        assert!(matches!(store.read_record("c1"), Err(Error::NotExist(_))));
        store.write_record(&record("c1")).unwrap();
        assert_eq!(
            store.read_record("c1").unwrap().rootfs,
            Path::new("/b/rootfs")
        );
        assert!(store.read_exit("c1").is_none());
        store.write_exit("c1", ExitStatus::Signal(9)).unwrap();
        assert_eq!(store.read_exit("c1"), Some(ExitStatus::Signal(9)));
        store.create_dir("c0").unwrap();
        assert_eq!(store.ids().unwrap(), ["c0", "c1"]);
        store.remove("c1").unwrap();
        store.remove("c1").unwrap();
        assert_eq!(store.ids().unwrap(), ["c0"]);
        // No temp files are left behind.
        assert_eq!(fs::read_dir(store.dir("c0").unwrap()).unwrap().count(), 0);
    }

    #[test]
    fn own_process_is_alive_and_start_time_is_checked() {
        let me = std::process::id() as i32;
        let start = process_start_time(me).unwrap();
        assert!(process_alive(me, start));
        assert!(!process_alive(me, start + 1));
        assert!(process_start_time(0).is_none());
    }
}
