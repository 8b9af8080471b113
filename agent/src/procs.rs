//! What `ps -ef` shows of a process, read from /proc: for hosts that cannot look into
//! the agent's pid namespace (the VM sandbox's guest).

use std::fs;

use hull_protocol::ProcessInfo;

/// The process `pid`, or `None` once it is gone.
pub fn info(pid: i32) -> Option<ProcessInfo> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ..." where comm may hold spaces and parentheses.
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after comm, 0-based: 1 ppid, 11 utime, 12 stime, 19 starttime (ticks).
    let ppid = f.get(1)?.parse().ok()?;
    let ticks = ticks_per_second();
    let cpu = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let start_ticks: u64 = f.get(19)?.parse().ok()?;
    let uid = fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmd = if cmdline.is_empty() {
        format!("[{comm}]")
    } else {
        String::from_utf8_lossy(&cmdline)
            .trim_end_matches('\0')
            .replace('\0', " ")
    };
    Some(ProcessInfo {
        pid,
        ppid,
        uid,
        start_time: boot_time().unwrap_or(0) + start_ticks / ticks,
        cpu_seconds: cpu / ticks,
        cmd,
    })
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Boot time, seconds since the epoch (`btime` of /proc/stat).
fn boot_time() -> Option<u64> {
    fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_described() {
        let me = info(std::process::id() as i32).unwrap();
        assert_eq!(me.pid, std::process::id() as i32);
        assert_eq!(me.ppid, nix::unistd::getppid().as_raw());
        assert_eq!(me.uid, nix::unistd::getuid().as_raw());
        assert!(me.cmd.contains("procs") || !me.cmd.is_empty(), "{}", me.cmd);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(me.start_time <= now && me.start_time + 3600 > now);
        assert!(info(i32::MAX).is_none());
    }
}
