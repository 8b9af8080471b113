//! `hull-bench` (`make bench`): hull's VM and OS-level sandboxes beside runc, crun and
//! QEMU microvm, measured in one run and printed as one table: median, min and max
//! over N runs (after one discarded warm-up run) and the ratio hull/peer per row.
//!
//! `hull-bench [--runs N]`: N defaults to `$HULL_BENCH_RUNS`, else 20 (about two
//! minutes on 2 cores). Binaries: hull's next to this one unless `HULL_BIN`,
//! `HULL_VHOST_USER`, `HULL_VMM_BIN` name others; peers on the PATH unless `HULL_QEMU`,
//! `HULL_RUNC`, `HULL_CRUN`. Guest assets in `${HULL_ASSETS:-/var/lib/hull}`.
//! `HULL_BENCH_VMM` passes `--vmm` to the VM sandbox.

mod binaries;
mod guest_boot;
mod machine;
mod oci_runtime;
mod procs;
mod stats;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};

use guest_boot::{BootSample, HullVmm, QemuPeer};
use hull_tests::bundle::Bundle;
use oci_runtime::{Footprint, OciRuntime};
use stats::{measure, Measured, Summary};
use table::{Row, Side};

const DEFAULT_RUNS: usize = 20;
const WARMUP: usize = 1;
/// The process a container runs while its memory is measured.
const SLEEPING: &[&str] = &["sleep", "600"];

fn runs_from_args() -> Result<usize, String> {
    let mut runs = match std::env::var("HULL_BENCH_RUNS") {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("HULL_BENCH_RUNS={v:?} is not a number of runs"))?,
        Err(_) => DEFAULT_RUNS,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => {
                let v = args.next().ok_or("--runs needs a number")?;
                runs = v
                    .parse()
                    .map_err(|_| format!("--runs {v:?} is not a number"))?;
            }
            // `cargo bench` passes --bench.
            "--bench" => {}
            "-h" | "--help" => {
                println!("usage: hull-bench [--runs N]   (see the crate docs for the environment)");
                std::process::exit(0);
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?} (usage: hull-bench [--runs N])"
                ))
            }
        }
    }
    if runs == 0 {
        return Err("the number of runs must be at least 1".into());
    }
    Ok(runs)
}

/// A fresh container id per run: a failed delete cannot collide with the next run.
fn next_id() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "bench-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Samples a multi-valued measurement `runs` times after the warm-up.
fn samples<T>(runs: usize, mut f: impl FnMut() -> Result<T, String>) -> Result<Vec<T>, String> {
    for _ in 0..WARMUP {
        f()?;
    }
    (0..runs).map(|_| f()).collect()
}

fn summarize<T>(s: &Result<Vec<T>, String>, field: impl Fn(&T) -> f64) -> Measured {
    match s {
        Ok(v) => {
            Summary::of(&v.iter().map(field).collect::<Vec<_>>()).ok_or_else(|| "no samples".into())
        }
        Err(e) => Err(e.clone()),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The bundles every runtime runs: busybox `true` for latency, `sleep` for memory.
struct Bundles {
    run_true: Bundle,
    sleeping: Bundle,
}

struct RuntimeUnderTest {
    rt: Result<OciRuntime, String>,
    root: tempfile::TempDir,
    /// The container's processes run in a guest, not on the host.
    in_guest: bool,
}

impl RuntimeUnderTest {
    fn new(rt: Result<OciRuntime, String>, in_guest: bool) -> Self {
        let root = tempfile::Builder::new()
            .prefix("hull-bench-root-")
            .tempdir()
            .expect("temp dir for runtime state");
        RuntimeUnderTest { rt, root, in_guest }
    }

    fn latency(&self, bundles: &Result<Bundles, String>, runs: usize) -> Measured {
        let rt = self.rt.as_ref().map_err(Clone::clone)?;
        let b = bundles.as_ref().map_err(Clone::clone)?;
        eprintln!("bench: {} run `true` x{}", rt.name, runs + WARMUP);
        measure(runs, WARMUP, || {
            rt.run_to_exit(self.root.path(), b.run_true.path(), &next_id())
        })
    }

    fn footprints(
        &self,
        bundles: &Result<Bundles, String>,
        runs: usize,
    ) -> Result<Vec<Footprint>, String> {
        let rt = self.rt.as_ref().map_err(Clone::clone)?;
        let b = bundles.as_ref().map_err(Clone::clone)?;
        eprintln!(
            "bench: {} running container footprint x{}",
            rt.name,
            runs + WARMUP
        );
        // Under a VM sandbox the workload runs in the guest: nothing to wait for.
        let host_workload = (!self.in_guest).then_some(SLEEPING[0]);
        samples(runs, || {
            rt.footprint(
                self.root.path(),
                b.sleeping.path(),
                &next_id(),
                host_workload,
            )
        })
    }
}

fn hull_runtime(sandbox: &str) -> Result<OciRuntime, String> {
    let bin = binaries::hull_binary("hull", "HULL_BIN", "hull-runtime")?;
    let mut global = vec!["--sandbox", sandbox];
    let vmm = std::env::var("HULL_BENCH_VMM").ok();
    if let (Some(v), "vm") = (vmm.as_deref(), sandbox) {
        global.extend(["--vmm", v]);
    }
    Ok(OciRuntime::new(
        &format!("hull --sandbox {sandbox}"),
        bin,
        &global,
    ))
}

fn peer_runtime(name: &str, var: &str) -> Result<OciRuntime, String> {
    let bin = binaries::peer(name, var).ok_or_else(|| format!("{name} is not installed"))?;
    Ok(OciRuntime::new(name, bin, &[]))
}

fn guest_assets() -> Result<(PathBuf, PathBuf), String> {
    let (k, i) = (
        hull_vmm::assets::kernel_path(),
        hull_vmm::assets::initramfs_path(),
    );
    for p in [&k, &i] {
        if !p.is_file() {
            return Err(format!(
                "guest asset {} is missing (make guest)",
                p.display()
            ));
        }
    }
    Ok((k, i))
}

fn make_bundles() -> Result<Bundles, String> {
    if let Some(why) = hull_tests::bundle::unavailable() {
        return Err(why);
    }
    Ok(Bundles {
        run_true: Bundle::busybox("os", &["true"]),
        sleeping: Bundle::busybox("os", SLEEPING),
    })
}

fn main() -> ExitCode {
    let runs = match runs_from_args() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hull-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = procs::become_subreaper() {
        eprintln!("hull-bench: cannot become a child subreaper: {e}");
        return ExitCode::FAILURE;
    }
    let hardware_kvm = hull_vmm::kvm::hardware_kvm_usable();
    let qemu_bin = binaries::peer("qemu-system-x86_64", "HULL_QEMU");
    let runc = peer_runtime("runc", "HULL_RUNC");
    let crun = peer_runtime("crun", "HULL_CRUN");
    let started = std::time::Instant::now();

    // Guest boot to agent-ready: hull-vmm (boot-timer) and QEMU microvm (vsock).
    let assets = guest_assets();
    let hull_boot: Result<Vec<BootSample>, String> = assets.clone().and_then(|(kernel, initrd)| {
        let vmm = HullVmm {
            bin: binaries::hull_binary("hull-vmm", "HULL_VMM_BIN", "hull-vmm")?,
            kernel,
            initrd,
        };
        eprintln!("bench: hull-vmm boot x{}", runs + WARMUP);
        samples(runs, || vmm.boot())
    });
    let accel = if hardware_kvm.is_ok() { "kvm" } else { "tcg" };
    let qemu_boot: Result<Vec<BootSample>, String> = assets.and_then(|(kernel, initrd)| {
        let peer = QemuPeer {
            qemu: qemu_bin
                .clone()
                .ok_or("qemu-system-x86_64 is not installed")?,
            vhost_user: binaries::hull_binary(
                "hull-vhost-user",
                "HULL_VHOST_USER",
                "hull-devices",
            )?,
            kernel,
            initrd,
            accel,
        };
        eprintln!("bench: qemu microvm ({accel}) boot x{}", runs + WARMUP);
        samples(runs, || peer.boot())
    });

    // create -> start -> exit, and what a running container costs.
    let bundles = make_bundles();
    let vm = RuntimeUnderTest::new(hull_runtime("vm"), true);
    let os = RuntimeUnderTest::new(hull_runtime("os"), false);
    let runc = RuntimeUnderTest::new(runc, false);
    let crun = RuntimeUnderTest::new(crun, false);
    let vm_run = vm.latency(&bundles, runs);
    let os_run = os.latency(&bundles, runs);
    let runc_run = runc.latency(&bundles, runs);
    let crun_run = crun.latency(&bundles, runs);
    let vm_fp = vm.footprints(&bundles, runs);
    let os_fp = os.footprints(&bundles, runs);
    let runc_fp = runc.footprints(&bundles, runs);

    // Named after the VMM really found among the container's processes, where one was.
    let seen_vmm = vm_fp.as_ref().ok().and_then(|v| v.first()).and_then(|f| {
        f.processes
            .iter()
            .find(|p| p.starts_with("qemu-system") || p.starts_with("hull-vmm"))
            .cloned()
    });
    let vm_label = match (seen_vmm, &hardware_kvm) {
        (Some(q), Err(_)) if q.starts_with("qemu") => {
            "VM sandbox (QEMU TCG + hull's vhost-user devices)".to_string()
        }
        (Some(v), _) => format!("VM sandbox ({v})"),
        (None, Ok(())) => "VM sandbox (--vmm auto: hull-vmm)".to_string(),
        (None, Err(_)) => "VM sandbox (--vmm auto: QEMU TCG)".to_string(),
    };
    let qemu_label = format!("qemu microvm ({accel}), same kernel + initramfs");
    let run_fig = "run busybox `true`: create → start → exit → delete (ms)";
    let pss_fig = "PSS of one running container, all its host processes (MiB)";
    let rows = vec![
        Row {
            figure: "guest boot: VMM start → agent ready (ms)".into(),
            hull: Side::new(
                "hull-vmm (boot-timer)",
                summarize(&hull_boot, |s| s.ready_ms),
            ),
            peer: Side::new(
                format!("{qemu_label} (vsock handshake)"),
                summarize(&qemu_boot, |s| s.ready_ms),
            ),
        },
        Row {
            figure: "VMM RSS excluding guest RAM, guest at agent ready (MiB)".into(),
            hull: Side::new("hull-vmm", summarize(&hull_boot, |s| mib(s.vmm_rss_kib))),
            peer: Side::new(
                qemu_label.clone(),
                summarize(&qemu_boot, |s| mib(s.vmm_rss_kib)),
            ),
        },
        Row {
            figure: "PSS of the VM at agent ready: VMM + device backends (MiB)".into(),
            hull: Side::new("hull-vmm", summarize(&hull_boot, |s| mib(s.pss_kib))),
            peer: Side::new(
                format!("qemu microvm ({accel}) + hull-vhost-user vsock"),
                summarize(&qemu_boot, |s| mib(s.pss_kib)),
            ),
        },
        Row {
            figure: run_fig.into(),
            hull: Side::new(vm_label.clone(), vm_run.clone()),
            peer: Side::new("runc", runc_run.clone()),
        },
        Row {
            figure: run_fig.into(),
            hull: Side::new("OS sandbox", os_run.clone()),
            peer: Side::new("runc", runc_run.clone()),
        },
        Row {
            figure: run_fig.into(),
            hull: Side::new("OS sandbox", os_run.clone()),
            peer: Side::new("crun", crun_run),
        },
        Row {
            figure: run_fig.into(),
            hull: Side::new(vm_label.clone(), vm_run),
            peer: Side::new("hull OS sandbox", os_run),
        },
        Row {
            figure: "VMM RSS excluding guest RAM, running container (MiB)".into(),
            hull: Side::new(
                vm_label.clone(),
                vm_fp.as_ref().map_err(Clone::clone).and_then(|v| {
                    let rss: Option<Vec<f64>> = v.iter().map(|f| f.vmm_rss_kib.map(mib)).collect();
                    let rss = rss.ok_or("no VMM process among the container's host processes")?;
                    Summary::of(&rss).ok_or_else(|| "no samples".to_string())
                }),
            ),
            peer: Side::new(qemu_label, summarize(&qemu_boot, |s| mib(s.vmm_rss_kib))),
        },
        Row {
            figure: pss_fig.into(),
            hull: Side::new(vm_label.clone(), summarize(&vm_fp, |f| mib(f.pss_kib))),
            peer: Side::new("runc", summarize(&runc_fp, |f| mib(f.pss_kib))),
        },
        Row {
            figure: pss_fig.into(),
            hull: Side::new("OS sandbox", summarize(&os_fp, |f| mib(f.pss_kib))),
            peer: Side::new("runc", summarize(&runc_fp, |f| mib(f.pss_kib))),
        },
    ];

    println!("hull bench: median, min and max of {runs} runs after {WARMUP} warm-up, one run of `hull-bench`");
    for l in machine::describe(
        qemu_bin.as_deref(),
        runc.rt.as_ref().ok().map(|r| r.bin.as_path()),
        crun.rt.as_ref().ok().map(|r| r.bin.as_path()),
    ) {
        println!("{l}");
    }
    if cfg!(debug_assertions) {
        println!("note: hull-bench is a debug build; `make bench` measures release builds");
    }
    println!(
        "guest: {} MiB, 1 vCPU, cmdline \"{}\"",
        guest_boot::GUEST_MIB,
        guest_boot::CMDLINE
    );
    for (name, fp) in [
        ("VM sandbox", &vm_fp),
        ("OS sandbox", &os_fp),
        ("runc", &runc_fp),
    ] {
        if let Ok(Some(f)) = fp.as_ref().map(|v| v.first()) {
            println!("{name} host processes: {}", f.processes.join(", "));
        }
    }
    println!();
    print!("{}", table::render(&rows));
    println!();
    println!("whole bench: {:.0} s", started.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}
