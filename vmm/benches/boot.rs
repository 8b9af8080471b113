//! Boot benchmark: hull-vmm against QEMU microvm (TCG) on the same kernel and command
//! line, in one run. For each VMM, the median over several runs of
//!   - time from spawning the VMM to the first byte on the guest serial console,
//!   - time to the kernel's "Command line:" line,
//!   - VMM resident memory excluding guest RAM, sampled at that line.
//!
//! `cargo bench -p hull-vmm --bench boot`; HULL_BENCH_RUNS (default 5) and
//! HULL_TEST_KERNEL (default: the assets dir's vmlinux) adjust it.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const MEMORY_MIB: u64 = 128;
const CMDLINE: &str = "earlyprintk=serial console=ttyS0 reboot=k panic=1";
const QEMU: &str = "/usr/bin/qemu-system-x86_64";
const RUN_LIMIT: Duration = Duration::from_secs(60);

struct Sample {
    first_byte: Duration,
    cmdline: Duration,
    rss_kib: u64,
}

/// Resident KiB of `pid` outside mappings the size of guest RAM (the guest's memory;
/// QEMU may pad its RAM block by up to a few MiB for alignment).
fn rss_excluding_guest(pid: u32) -> Option<u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let guest = MEMORY_MIB * 1024;
    let (mut total, mut size) = (0u64, 0u64);
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        match (f.next(), f.next()) {
            (Some("Size:"), Some(v)) => size = v.parse().unwrap_or(0),
            (Some("Rss:"), Some(v)) => {
                let is_guest_ram = size >= guest && size <= guest + 8 * 1024;
                if !is_guest_ram {
                    total += v.parse::<u64>().unwrap_or(0);
                }
            }
            _ => {}
        }
    }
    Some(total)
}

fn measure(mut cmd: Command) -> Result<Sample, String> {
    let start = Instant::now();
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let pid = child.id();
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((start.elapsed(), buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut first_byte = None;
    let mut text = Vec::new();
    let result = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((t, bytes)) => {
                first_byte.get_or_insert(t);
                text.extend_from_slice(&bytes);
                let s = String::from_utf8_lossy(&text);
                if let Some(i) = s.find("Command line:") {
                    if s[i..].contains('\n') {
                        let rss = rss_excluding_guest(pid).ok_or("cannot read smaps")?;
                        break Ok(Sample {
                            first_byte: first_byte.unwrap(),
                            cmdline: t,
                            rss_kib: rss,
                        });
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) if start.elapsed() < RUN_LIMIT => {}
            Err(_) => {
                break Err(format!(
                    "no 'Command line:' on the console within {RUN_LIMIT:?} ({} bytes seen)",
                    text.len()
                ))
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct Row {
    name: &'static str,
    result: Result<(f64, f64, f64), String>,
}

fn bench(name: &'static str, runs: usize, make: impl Fn() -> Result<Command, String>) -> Row {
    let mut samples = Vec::new();
    for _ in 0..runs {
        match make().and_then(measure) {
            Ok(s) => samples.push(s),
            Err(e) => {
                return Row {
                    name,
                    result: Err(e),
                }
            }
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Row {
        name,
        result: Ok((
            median(samples.iter().map(|s| ms(s.first_byte)).collect()),
            median(samples.iter().map(|s| ms(s.cmdline)).collect()),
            median(samples.iter().map(|s| s.rss_kib as f64 / 1024.0).collect()),
        )),
    }
}

fn hull_cmd(kernel: &Path) -> Result<Command, String> {
    hull_vmm::kvm::kvm_usable()?;
    let mut c = Command::new(env!("CARGO_BIN_EXE_hull-vmm"));
    c.args(["--kernel", &kernel.display().to_string()]).args([
        "--memory",
        &MEMORY_MIB.to_string(),
        "--cmdline",
        CMDLINE,
    ]);
    Ok(c)
}

/// A PVH guest that prints a "Command line:" line and spins: what the VMM itself
/// costs, without the guest kernel's (on PVM, emulated) early boot.
fn tiny_guest(dir: &Path) -> PathBuf {
    let mut a = common::Asm::new();
    a.print("Command line: tiny\n").bytes(&[0xeb, 0xfe]);
    common::write_guest(dir, "tiny.elf", &a.finish())
}

fn qemu_cmd(kernel: &Path) -> Result<Command, String> {
    if !Path::new(QEMU).exists() {
        return Err(format!("{QEMU} not installed"));
    }
    let mut c = Command::new(QEMU);
    c.args(["-M", "microvm,acpi=off", "-accel", "tcg", "-cpu", "max"])
        .args(["-m", &format!("{MEMORY_MIB}M"), "-smp", "1"])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-serial", "stdio", "-kernel", &kernel.display().to_string()])
        .args(["-append", CMDLINE]);
    Ok(c)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing we need.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("HULL_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let kernel: PathBuf = std::env::var_os("HULL_TEST_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(hull_vmm::assets::kernel_path);
    println!(
        "boot benchmark: kernel {}, {MEMORY_MIB} MiB, 1 vCPU, cmdline \"{CMDLINE}\", median of {runs} runs",
        kernel.display()
    );
    let kvm_kind = match hull_vmm::kvm::hardware_kvm_usable() {
        Ok(()) => "hardware KVM".to_string(),
        Err(why) => format!("not hardware KVM ({why})"),
    };
    println!("host KVM: {kvm_kind}");
    let dir = std::env::temp_dir().join(format!("hull-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let tiny = tiny_guest(&dir);
    let tiny_row = bench("hull-vmm, tiny guest", runs, || hull_cmd(&tiny));
    let _ = std::fs::remove_dir_all(&dir);
    let rows = if kernel.exists() {
        vec![
            bench("hull-vmm (KVM)", runs, || hull_cmd(&kernel)),
            bench("qemu microvm (TCG)", runs, || qemu_cmd(&kernel)),
        ]
    } else {
        let why = format!("no kernel at {}", kernel.display());
        vec![
            Row {
                name: "hull-vmm (KVM)",
                result: Err(why.clone()),
            },
            Row {
                name: "qemu microvm (TCG)",
                result: Err(why),
            },
        ]
    };
    println!();
    println!(
        "| {:<22} | {:>16} | {:>22} | {:>22} |",
        "VMM", "first byte (ms)", "'Command line:' (ms)", "RSS - guest RAM (MiB)"
    );
    println!("|{:-<24}|{:->18}|{:->24}|{:->24}|", "", "", "", "");
    let print_row = |r: &Row| match &r.result {
        Ok((fb, cl, rss)) => println!("| {:<22} | {fb:>16.1} | {cl:>22.1} | {rss:>22.2} |", r.name),
        Err(why) => println!("| {:<22} | cannot run: {why}", r.name),
    };
    rows.iter().for_each(print_row);
    let ratio = (rows.len() >= 2).then(|| (&rows[0].result, &rows[1].result));
    if let Some((Ok(h), Ok(q))) = ratio {
        println!(
            "| {:<22} | {:>15.1}x | {:>21.1}x | {:>21.1}x |",
            "qemu / hull-vmm",
            q.0 / h.0,
            q.1 / h.1,
            q.2 / h.2
        );
    }
    print_row(&tiny_row);
}
