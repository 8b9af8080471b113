//! What the table was measured on: CPU, memory, kernel, KVM kind, peer versions.

use std::path::Path;
use std::process::Command;

fn first_line_of(cmd: &Path, arg: &str) -> Option<String> {
    let out = Command::new(cmd).arg(arg).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().next().map(|l| l.trim().to_string())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn mem_total_gib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .split_whitespace()
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
        })
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0)
}

/// Lines describing the machine, for the table's heading.
pub fn describe(qemu: Option<&Path>, runc: Option<&Path>, crun: Option<&Path>) -> Vec<String> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let kvm = match hull_vmm::kvm::hardware_kvm_usable() {
        Ok(()) => "hardware KVM".to_string(),
        Err(why) => format!("no hardware KVM ({why})"),
    };
    let mut lines = vec![format!(
        "machine: {}, {cores} cores, {:.1} GiB RAM, Linux {kernel}, {kvm}",
        cpu_model(),
        mem_total_gib()
    )];
    let version = |p: Option<&Path>, name: &str| match p {
        Some(p) => {
            first_line_of(p, "--version").unwrap_or_else(|| format!("{name} (version unknown)"))
        }
        None => format!("{name}: not installed"),
    };
    lines.push(format!(
        "peers: {}; {}; {}",
        version(qemu, "qemu-system-x86_64"),
        version(runc, "runc"),
        version(crun, "crun")
    ));
    lines
}
