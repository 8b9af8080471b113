//! `hull update`: change the container's resource limits, from a JSON file (`-r`,
//! `-` for stdin) or from runc's individual flags.

use std::io::Read;
use std::path::PathBuf;

use hull_protocol::{Request, Status};
use oci_spec::runtime::LinuxResources;
use serde_json::{json, Map, Value};

use super::{Container, GlobalOpts};
use crate::error::{Error, Result};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct Update {
    /// Path to a file containing the resources to update, or '-' to read from stdin
    #[arg(short, long)]
    pub resources: Option<PathBuf>,
    /// Specifies per cgroup weight, range is from 10 to 1000
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    /// CPU CFS period to be used for hardcapping (in usecs)
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CPU CFS hardcap limit (in usecs). Allowed cpu time in a given period
    #[arg(long)]
    pub cpu_quota: Option<i64>,
    /// CPU shares (relative weight vs. other containers)
    #[arg(long)]
    pub cpu_share: Option<u64>,
    /// CPU realtime period to be used for hardcapping (in usecs)
    #[arg(long)]
    pub cpu_rt_period: Option<u64>,
    /// CPU realtime hardcap limit (in usecs)
    #[arg(long)]
    pub cpu_rt_runtime: Option<i64>,
    /// CPU(s) to use
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory node(s) to use
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Kernel memory limit (in bytes); ignored, as by runc
    #[arg(long)]
    pub kernel_memory: Option<String>,
    /// Kernel memory limit for tcp buffer (in bytes)
    #[arg(long)]
    pub kernel_memory_tcp: Option<String>,
    /// Memory limit (in bytes, or with a k/m/g suffix)
    #[arg(long)]
    pub memory: Option<String>,
    /// Memory reservation or soft_limit (in bytes)
    #[arg(long)]
    pub memory_reservation: Option<String>,
    /// Total memory usage (memory + swap); set '-1' to enable unlimited swap
    #[arg(long)]
    pub memory_swap: Option<String>,
    /// Maximum number of pids allowed in the container
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// The string of Intel RDT/CAT L3 cache schema
    #[arg(long)]
    pub l3_cache_schema: Option<String>,
    /// The string of Intel RDT/MBA memory bandwidth schema
    #[arg(long)]
    pub mem_bw_schema: Option<String>,
    pub container_id: String,
}

pub fn update(g: &GlobalOpts, args: &Update) -> Result<()> {
    let resources = resources(args)?;
    let c = Container::load(&g.store(), &args.container_id)?;
    c.require(
        &[Status::Created, Status::Running, Status::Paused],
        "update",
    )?;
    c.call_ok(&Request::Update {
        id: c.id().to_string(),
        resources: Box::new(resources),
    })
}

/// The resources the flags (or the file) ask for.
pub fn resources(args: &Update) -> Result<LinuxResources> {
    if let Some(path) = &args.resources {
        let mut body = Vec::new();
        if path.as_os_str() == "-" {
            std::io::stdin()
                .read_to_end(&mut body)
                .map_err(Error::io("reading resources from stdin"))?;
        } else {
            body = std::fs::read(path).map_err(Error::io(format!("reading {}", path.display())))?;
        }
        return serde_json::from_slice(&body)
            .map_err(|e| Error::Usage(format!("{}: invalid resources JSON: {e}", path.display())));
    }
    if args.l3_cache_schema.is_some() || args.mem_bw_schema.is_some() {
        return Err(Error::Usage("Intel RDT is not supported".into()));
    }
    let mut memory = Map::new();
    let put = |m: &mut Map<String, Value>, k: &str, v: &Option<String>| -> Result<()> {
        if let Some(v) = v {
            m.insert(k.into(), json!(parse_bytes(v)?));
        }
        Ok(())
    };
    put(&mut memory, "limit", &args.memory)?;
    put(&mut memory, "reservation", &args.memory_reservation)?;
    put(&mut memory, "swap", &args.memory_swap)?;
    put(&mut memory, "kernelTCP", &args.kernel_memory_tcp)?;
    if args.kernel_memory.is_some() {
        log::warn!("--kernel-memory is deprecated and ignored");
    }
    let mut cpu = Map::new();
    let mut set = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            cpu.insert(k.into(), v);
        }
    };
    set("shares", args.cpu_share.map(|v| json!(v)));
    set("quota", args.cpu_quota.map(|v| json!(v)));
    set("period", args.cpu_period.map(|v| json!(v)));
    set("realtimeRuntime", args.cpu_rt_runtime.map(|v| json!(v)));
    set("realtimePeriod", args.cpu_rt_period.map(|v| json!(v)));
    set("cpus", args.cpuset_cpus.as_ref().map(|v| json!(v)));
    set("mems", args.cpuset_mems.as_ref().map(|v| json!(v)));
    let mut r = Map::new();
    if !memory.is_empty() {
        r.insert("memory".into(), Value::Object(memory));
    }
    if !cpu.is_empty() {
        r.insert("cpu".into(), Value::Object(cpu));
    }
    if let Some(p) = args.pids_limit {
        r.insert("pids".into(), json!({ "limit": p }));
    }
    if let Some(w) = args.blkio_weight {
        r.insert("blockIO".into(), json!({ "weight": w }));
    }
    serde_json::from_value(Value::Object(r))
        .map_err(|e| Error::Usage(format!("invalid resources: {e}")))
}

/// Bytes with an optional binary suffix (`512k`, `64m`, `1g`, `64MiB`); `-1` means
/// unlimited.
pub fn parse_bytes(s: &str) -> Result<i64> {
    let bad = || {
        Error::Usage(format!(
            "invalid size {s:?}: expected bytes, e.g. 67108864 or 64m"
        ))
    };
    let t = s.trim();
    if t == "-1" {
        return Ok(-1);
    }
    let lower = t.to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(digits_end);
    let num: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0f64.powi(4),
        _ => return Err(bad()),
    };
    Ok((num * mult) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1G").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("512KiB").unwrap(), 512 << 10);
        assert_eq!(parse_bytes("-1").unwrap(), -1);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("12q").is_err());
    }

    #[test]
    fn flags_become_resources() {
        let args = Update {
            memory: Some("32m".into()),
            cpu_quota: Some(50_000),
            cpuset_cpus: Some("0".into()),
            pids_limit: Some(10),
            container_id: "c".into(),
            ..Default::default()
        };
        let r = resources(&args).unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(32 << 20));
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(50_000));
        assert_eq!(r.cpu().as_ref().unwrap().cpus().as_deref(), Some("0"));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 10);
    }
}
