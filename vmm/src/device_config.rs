//! The virtio devices a VM gets, as the command line names them:
//! `--vsock uds=PATH[,cid=N]`, `--fs tag=TAG,dir=DIR[,readonly]`,
//! `--blk path=FILE[,readonly][,id=ID]`, `--net fd=N|tap=NAME,mac=MAC`, `--rng`.
//! Values cannot contain commas.

use std::path::PathBuf;
use std::str::FromStr;

use hull_devices::net::MacAddr;
use thiserror::Error;

/// Guest CID when `--vsock` names none.
pub const DEFAULT_GUEST_CID: u64 = 3;

/// A bad device option, naming the flag, the field and the value.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("--{flag}: {problem}")]
pub struct DeviceSpecError {
    flag: &'static str,
    problem: String,
}

fn err(flag: &'static str, problem: impl Into<String>) -> DeviceSpecError {
    DeviceSpecError {
        flag,
        problem: problem.into(),
    }
}

/// `key=value` pairs and bare flags, each key at most once.
struct Fields {
    flag: &'static str,
    items: Vec<(String, Option<String>)>,
}

impl Fields {
    fn parse(flag: &'static str, s: &str, known: &[&str]) -> Result<Self, DeviceSpecError> {
        let mut items: Vec<(String, Option<String>)> = Vec::new();
        for part in s.split(',') {
            let (k, v) = match part.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (part, None),
            };
            if !known.contains(&k) {
                return Err(err(
                    flag,
                    format!("unknown field {k:?} in {s:?} (known: {})", known.join(", ")),
                ));
            }
            if items.iter().any(|(seen, _)| seen == k) {
                return Err(err(flag, format!("field {k:?} given twice in {s:?}")));
            }
            items.push((k.to_string(), v));
        }
        Ok(Fields { flag, items })
    }

    fn value(&self, key: &str) -> Result<Option<&str>, DeviceSpecError> {
        match self.items.iter().find(|(k, _)| k == key) {
            None => Ok(None),
            Some((_, Some(v))) if !v.is_empty() => Ok(Some(v)),
            Some(_) => Err(err(self.flag, format!("field {key:?} needs a value"))),
        }
    }

    fn required(&self, key: &str) -> Result<&str, DeviceSpecError> {
        self.value(key)?
            .ok_or_else(|| err(self.flag, format!("field {key:?} is required")))
    }

    fn switch(&self, key: &str) -> Result<bool, DeviceSpecError> {
        match self.items.iter().find(|(k, _)| k == key) {
            None => Ok(false),
            Some((_, None)) => Ok(true),
            Some((_, Some(v))) => Err(err(
                self.flag,
                format!("field {key:?} takes no value (got {v:?})"),
            )),
        }
    }
}

/// `--vsock uds=PATH[,cid=N]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockSpec {
    pub uds: PathBuf,
    pub cid: u64,
}

impl FromStr for VsockSpec {
    type Err = DeviceSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let f = Fields::parse("vsock", s, &["uds", "cid"])?;
        let cid = match f.value("cid")? {
            None => DEFAULT_GUEST_CID,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|c| (3..u64::from(u32::MAX)).contains(c))
                .ok_or_else(|| {
                    err(
                        "vsock",
                        format!("cid {v:?} must be a number from 3 to 2^32-2"),
                    )
                })?,
        };
        Ok(VsockSpec {
            uds: f.required("uds")?.into(),
            cid,
        })
    }
}

/// `--fs tag=TAG,dir=DIR[,readonly]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsSpec {
    pub tag: String,
    pub dir: PathBuf,
    pub readonly: bool,
}

impl FromStr for FsSpec {
    type Err = DeviceSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let f = Fields::parse("fs", s, &["tag", "dir", "readonly"])?;
        Ok(FsSpec {
            tag: f.required("tag")?.to_string(),
            dir: f.required("dir")?.into(),
            readonly: f.switch("readonly")?,
        })
    }
}

/// `--blk path=FILE[,readonly][,id=ID]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlkSpec {
    pub path: PathBuf,
    pub readonly: bool,
    pub id: Option<String>,
}

impl FromStr for BlkSpec {
    type Err = DeviceSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let f = Fields::parse("blk", s, &["path", "readonly", "id"])?;
        Ok(BlkSpec {
            path: f.required("path")?.into(),
            readonly: f.switch("readonly")?,
            id: f.value("id")?.map(str::to_string),
        })
    }
}

/// Where a virtio-net device's frames go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetBackend {
    /// An inherited fd of a tap opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR.
    Fd(i32),
    /// A tap interface opened (or created) by name.
    Tap(String),
}

/// `--net fd=N,mac=MAC` or `--net tap=NAME,mac=MAC`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetSpec {
    pub backend: NetBackend,
    pub mac: MacAddr,
}

impl FromStr for NetSpec {
    type Err = DeviceSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let f = Fields::parse("net", s, &["fd", "tap", "mac"])?;
        let backend = match (f.value("fd")?, f.value("tap")?) {
            (Some(fd), None) => NetBackend::Fd(
                fd.parse::<i32>()
                    .ok()
                    .filter(|&n| n > 2)
                    .ok_or_else(|| err("net", format!("fd {fd:?} must be a number above 2")))?,
            ),
            (None, Some(tap)) => NetBackend::Tap(tap.to_string()),
            _ => return Err(err("net", format!("exactly one of fd= and tap= in {s:?}"))),
        };
        let mac = f.required("mac")?;
        Ok(NetSpec {
            backend,
            mac: mac.parse().map_err(|e| err("net", e))?,
        })
    }
}

/// Every virtio device of a VM, in the order they get MMIO slots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceConfig {
    pub vsock: Option<VsockSpec>,
    pub fs: Vec<FsSpec>,
    pub blk: Vec<BlkSpec>,
    pub net: Vec<NetSpec>,
    pub rng: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vsock_specs() {
        assert_eq!(
            "uds=/run/v.sock".parse(),
            Ok(VsockSpec {
                uds: "/run/v.sock".into(),
                cid: 3
            })
        );
        assert_eq!("uds=/v,cid=42".parse::<VsockSpec>().unwrap().cid, 42);
        let e = "uds=/v,cid=2".parse::<VsockSpec>().unwrap_err().to_string();
        assert!(e.contains("--vsock") && e.contains("\"2\""), "{e}");
        let e = "cid=5".parse::<VsockSpec>().unwrap_err().to_string();
        assert!(e.contains("\"uds\" is required"), "{e}");
        let e = "uds=/v,port=5"
            .parse::<VsockSpec>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field \"port\""), "{e}");
        assert!("uds=/a,uds=/b".parse::<VsockSpec>().is_err());
        assert!("uds=".parse::<VsockSpec>().is_err());
    }

    #[test]
    fn fs_specs() {
        assert_eq!(
            "tag=rootfs,dir=/b/rootfs,readonly".parse(),
            Ok(FsSpec {
                tag: "rootfs".into(),
                dir: "/b/rootfs".into(),
                readonly: true
            })
        );
        assert!(!"tag=t,dir=/d".parse::<FsSpec>().unwrap().readonly);
        let e = "tag=t,dir=/d,readonly=yes"
            .parse::<FsSpec>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("takes no value"), "{e}");
        assert!("dir=/d".parse::<FsSpec>().is_err());
    }

    #[test]
    fn blk_specs() {
        assert_eq!(
            "path=/i.img,readonly,id=root".parse(),
            Ok(BlkSpec {
                path: "/i.img".into(),
                readonly: true,
                id: Some("root".into())
            })
        );
        assert!("readonly".parse::<BlkSpec>().is_err());
    }

    #[test]
    fn net_specs() {
        let n: NetSpec = "fd=7,mac=02:00:00:00:00:01".parse().unwrap();
        assert_eq!(n.backend, NetBackend::Fd(7));
        let n: NetSpec = "tap=tap0,mac=02:00:00:00:00:01".parse().unwrap();
        assert_eq!(n.backend, NetBackend::Tap("tap0".into()));
        for bad in [
            "fd=7,tap=t,mac=02:00:00:00:00:01",
            "mac=02:00:00:00:00:01",
            "fd=1,mac=02:00:00:00:00:01",
            "fd=x,mac=02:00:00:00:00:01",
            "tap=t",
            "tap=t,mac=zz",
        ] {
            let e = bad.parse::<NetSpec>().unwrap_err().to_string();
            assert!(e.starts_with("--net: "), "{bad}: {e}");
        }
    }
}
