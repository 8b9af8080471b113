//! Stats: `hull events --stats` (runc's JSON) as containerd's cgroups v1 `Metrics`,
//! the type `ctr task metrics` and the CRI plugin decode.

use containerd_shim_protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;

const METRICS_TYPE: &str = "io.containerd.cgroups.v1.Metrics";

fn num(v: &serde_json::Value, path: &[&str]) -> u64 {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_u64()
        .unwrap_or_default()
}

pub fn metrics(stats_event: &serde_json::Value) -> Metrics {
    let d = &stats_event["data"];
    let mut m = Metrics::new();
    m.cpu = Some(CPUStat {
        usage: Some(CPUUsage {
            total: num(d, &["cpu", "usage", "total"]),
            user: num(d, &["cpu", "usage", "user"]),
            kernel: num(d, &["cpu", "usage", "kernel"]),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    })
    .into();
    m.memory = Some(MemoryStat {
        usage: Some(MemoryEntry {
            usage: num(d, &["memory", "usage", "usage"]),
            limit: num(d, &["memory", "usage", "limit"]),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    })
    .into();
    m.pids = Some(PidsStat {
        current: num(d, &["pids", "current"]),
        limit: num(d, &["pids", "limit"]),
        ..Default::default()
    })
    .into();
    m
}

pub fn metrics_any(stats_event: &serde_json::Value) -> Any {
    Any {
        type_url: METRICS_TYPE.to_string(),
        value: metrics(stats_event)
            .write_to_bytes()
            .expect("encoding cgroup metrics"),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_stats_become_cgroup_metrics() {
        let ev = serde_json::json!({"type":"stats","id":"c","data":{
            "cpu":{"usage":{"total":5000,"user":3000,"kernel":2000}},
            "memory":{"usage":{"usage":4096,"limit":null}},
            "pids":{"current":3,"limit":64}}});
        let any = metrics_any(&ev);
        assert_eq!(any.type_url, METRICS_TYPE);
        let m = Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.cpu.usage.total, 5000);
        assert_eq!(m.cpu.usage.kernel, 2000);
        assert_eq!(m.memory.usage.usage, 4096);
        assert_eq!(m.memory.usage.limit, 0);
        assert_eq!((m.pids.current, m.pids.limit), (3, 64));
    }
}
