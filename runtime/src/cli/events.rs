//! `hull events`: the container's resource usage as runc-style `stats` events, once
//! (`--stats`) or every `--interval` until the container stops.

use std::thread::sleep;
use std::time::Duration;

use hull_protocol::{Request, Response, Stats, Status};
use serde_json::json;

use super::{unexpected, Container, GlobalOpts};
use crate::error::{Error, Result};

#[derive(clap::Args, Debug, Clone)]
pub struct Events {
    /// Set the stats collection interval
    #[arg(long, default_value = "5s")]
    pub interval: String,
    /// Display the container's stats then exit
    #[arg(long)]
    pub stats: bool,
    pub container_id: String,
}

pub fn events(g: &GlobalOpts, args: &Events) -> Result<()> {
    let interval = parse_duration(&args.interval)?;
    let store = g.store();
    loop {
        let c = Container::load(&store, &args.container_id)?;
        if c.status == Status::Stopped {
            if args.stats {
                return Err(Error::InvalidState(format!(
                    "container \"{}\" is stopped",
                    c.id()
                )));
            }
            return Ok(());
        }
        let stats = match c.call(&Request::Stats {
            id: c.id().to_string(),
        })? {
            Response::Stats(s) => s,
            other => return Err(unexpected(c.id(), other)),
        };
        println!("{}", event(c.id(), &stats));
        if args.stats {
            return Ok(());
        }
        sleep(interval);
    }
}

/// runc's `{"type":"stats","id":...,"data":{...}}` with the counters we have.
fn event(id: &str, s: &Stats) -> serde_json::Value {
    json!({
        "type": "stats",
        "id": id,
        "data": {
            "cpu": {"usage": {
                "total": s.cpu_usage_usec.map(|u| u * 1000),
                "user": s.cpu_user_usec.map(|u| u * 1000),
                "kernel": s.cpu_system_usec.map(|u| u * 1000),
            }},
            "memory": {
                "usage": {"usage": s.memory_current, "limit": s.memory_max},
                "oom_kill": s.memory_oom_kills,
            },
            "pids": {"current": s.pids_current, "limit": s.pids_max},
        }
    })
}

/// Go-style durations as runc takes them: `5s`, `500ms`, `1m`, `2h`, `1m30s`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let bad = || Error::Usage(format!("invalid duration {s:?} (e.g. 5s, 500ms, 1m)"));
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let n: f64 = rest[..end].parse().map_err(|_| bad())?;
        let unit_end = rest[end..]
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest.len(), |i| end + i);
        let secs = match &rest[end..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::from_secs_f64(n * secs);
        rest = &rest[unit_end..];
    }
    if total.is_zero() {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        for bad in ["", "5", "x", "0s", "3d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
