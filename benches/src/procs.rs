//! The host processes one container costs, and their memory.
//!
//! The bench makes itself a child subreaper, so whatever a runtime daemonizes (a
//! supervisor, a VMM, device backends) is reparented to it instead of to init: the
//! processes a container costs are then exactly the bench's descendants while the
//! container runs and no other child of the bench is alive.

use std::collections::HashMap;
use std::fs;
use std::io;

/// Makes orphaned descendants reparent to this process.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument and touches no memory.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The parent pid from /proc/<pid>/stat (the comm field may hold spaces and parens).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The process's state letter (R running, S sleeping, Z zombie, ...).
pub fn state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Every live descendant of `root`, zombies included.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = parent_of(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            out.push(c);
            todo.push(c);
        }
    }
    out.sort_unstable();
    out
}

/// The process's name (at most 15 bytes, as the kernel keeps it).
pub fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

pub fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Proportional set size in KiB: shared pages (guest memory shared with backends,
/// libraries) split among the processes that map them, so a sum counts them once.
pub fn pss_kib(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines().find_map(|l| {
        let v = l.strip_prefix("Pss:")?;
        v.split_whitespace().next()?.parse().ok()
    })
}

/// Resident KiB of `pid` outside the mapping that holds guest RAM: the mappings whose
/// size is `guest_mib` up to 8 MiB more (QEMU pads RAM blocks for alignment).
pub fn rss_excluding_guest_kib(pid: u32, guest_mib: u64) -> Option<u64> {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    Some(rss_excluding(&smaps, guest_mib * 1024))
}

fn rss_excluding(smaps: &str, guest_kib: u64) -> u64 {
    let (mut total, mut size) = (0u64, 0u64);
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        match (f.next(), f.next()) {
            (Some("Size:"), Some(v)) => size = v.parse().unwrap_or(0),
            (Some("Rss:"), Some(v)) => {
                let guest_ram = size >= guest_kib && size <= guest_kib + 8 * 1024;
                if !guest_ram {
                    total += v.parse::<u64>().unwrap_or(0);
                }
            }
            _ => {}
        }
    }
    total
}

/// Guest RAM in MiB from a VMM's command line: QEMU's `-m 256M` / `-m size=256M`,
/// hull-vmm's `--memory 256`.
pub fn guest_mib_from_cmdline(args: &[String]) -> Option<u64> {
    let value = args
        .windows(2)
        .find(|w| w[0] == "-m" || w[0] == "--memory")
        .map(|w| w[1].as_str())
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix("--memory=").or(a.strip_prefix("-m=")))
        })?;
    let value = value
        .split(',')
        .find_map(|p| p.strip_prefix("size="))
        .unwrap_or_else(|| value.split(',').next().unwrap_or(value));
    parse_mib(value)
}

/// `256`, `256M`, `1G`, `1024k` (QEMU's default unit is MiB, hull-vmm's too).
fn parse_mib(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, mult_kib) = match v.chars().last()? {
        'k' | 'K' => (&v[..v.len() - 1], 1),
        'm' | 'M' => (&v[..v.len() - 1], 1024),
        'g' | 'G' => (&v[..v.len() - 1], 1024 * 1024),
        _ => (v, 1024),
    };
    Some(num.parse::<u64>().ok()? * mult_kib / 1024)
}

/// Reaps every exited child of this process. Call only while no `std::process::Child`
/// is waiting to be reaped by its owner.
pub fn reap_orphans() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only the status integer we pass.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r <= 0 {
            break;
        }
    }
}

/// SIGKILLs `pids` (processes this bench started, directly or through a runtime).
pub fn kill_all(pids: &[u32]) {
    for &p in pids {
        // SAFETY: kill(2) with a pid we found among our own descendants.
        unsafe { libc::kill(p as libc::pid_t, libc::SIGKILL) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_memory_from_vmm_command_lines() {
        let a = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(guest_mib_from_cmdline(&a("qemu -m 256M -smp 1")), Some(256));
        assert_eq!(
            guest_mib_from_cmdline(&a("qemu -m size=1G,slots=2")),
            Some(1024)
        );
        assert_eq!(
            guest_mib_from_cmdline(&a("hull-vmm --memory 128")),
            Some(128)
        );
        assert_eq!(guest_mib_from_cmdline(&a("hull-vmm --memory=64")), Some(64));
        assert_eq!(guest_mib_from_cmdline(&a("qemu -smp 1")), None);
    }

    #[test]
    fn guest_ram_mapping_is_left_out() {
        let smaps = "\
7f00-7f01 rw-s 0 0:1 1 /memfd:mem (deleted)
Size:             262144 kB
Rss:              100000 kB
7f02-7f03 r-xp 0 0:1 2 /usr/bin/qemu
Size:              20000 kB
Rss:                3000 kB
7f04-7f05 rw-p 0 0:0 0
Size:               1024 kB
Rss:                 512 kB
";
        assert_eq!(rss_excluding(smaps, 256 * 1024), 3512);
    }

    #[test]
    fn our_own_children_are_descendants() {
        let mut c = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let me = std::process::id();
        // The test harness's main thread runs or waits for this test.
        assert!(matches!(state(me), Some('R' | 'S')), "{:?}", state(me));
        assert!(descendants(me).contains(&c.id()));
        assert!(pss_kib(c.id()).is_some_and(|k| k > 0));
        c.kill().unwrap();
        c.wait().unwrap();
        assert!(!descendants(me).contains(&c.id()));
        assert_eq!(state(c.id()), None);
    }
}
