//! `hull ps`: the container's processes, as `ps` shows them or as a JSON list of pids.

use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use hull_protocol::{ProcessInfo, Request, Response, Status};

use super::{unexpected, Container, GlobalOpts};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PsFormat {
    Table,
    Json,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Ps {
    /// Select one of: table or json
    #[arg(short, long, value_enum, default_value = "table")]
    pub format: PsFormat,
    pub container_id: String,
    /// Options passed to ps (default -ef)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

pub fn ps(g: &GlobalOpts, args: &Ps) -> Result<()> {
    let c = Container::load(&g.store(), &args.container_id)?;
    c.require(
        &[Status::Created, Status::Running, Status::Paused],
        "list processes of",
    )?;
    if args.format == PsFormat::Table && !c.sandbox.host_sees_processes() {
        // The host's ps cannot see into a guest: the agent describes them.
        if !args.ps_args.is_empty() {
            return Err(Error::Usage(format!(
                "ps options ({}) are not supported for container \"{}\": its processes \
                 run in a VM, shown as `ps -ef` shows them",
                args.ps_args.join(" "),
                c.id()
            )));
        }
        let procs = match c.call(&Request::ProcessList {
            id: c.id().to_string(),
        })? {
            Response::Processes(p) => p,
            other => return Err(unexpected(c.id(), other)),
        };
        print!("{}", ps_ef_table(&procs));
        return Ok(());
    }
    let pids = match c.call(&Request::Ps {
        id: c.id().to_string(),
    })? {
        Response::Pids(p) => p,
        other => return Err(unexpected(c.id(), other)),
    };
    if args.format == PsFormat::Json {
        println!("{}", serde_json::to_string(&pids).expect("pids serialize"));
        return Ok(());
    }
    let ps_args = if args.ps_args.is_empty() {
        vec!["-ef".to_string()]
    } else {
        args.ps_args.clone()
    };
    let out = Command::new("ps")
        .args(&ps_args)
        .output()
        .map_err(Error::io("running ps"))?;
    if !out.status.success() {
        return Err(Error::Usage(format!(
            "ps {}: {}",
            ps_args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    print!(
        "{}",
        filter_ps(&String::from_utf8_lossy(&out.stdout), &pids)?
    );
    Ok(())
}

/// The processes in `ps -ef`'s columns.
fn ps_ef_table(procs: &[ProcessInfo]) -> String {
    let mut out = String::from("UID          PID    PPID  C STIME TTY          TIME CMD\n");
    for p in procs {
        let user = match p.uid {
            0 => "root".to_string(),
            u => u.to_string(),
        };
        let stime = UNIX_EPOCH + Duration::from_secs(p.start_time);
        let stime = crate::logging::rfc3339(stime);
        // "2026-12-01T11:13:05..." -> "11:13"
        let hhmm = stime.get(11..16).unwrap_or("?");
        let t = p.cpu_seconds;
        out.push_str(&format!(
            "{user:<8} {:>7} {:>7}  0 {hhmm} ?        {:02}:{:02}:{:02} {}\n",
            p.pid,
            p.ppid,
            t / 3600,
            t / 60 % 60,
            t % 60,
            p.cmd
        ));
    }
    out
}

/// Keeps `ps`'s header and the lines whose PID column is one of `pids`.
fn filter_ps(out: &str, pids: &[i32]) -> Result<String> {
    let mut lines = out.lines();
    let header = lines.next().unwrap_or_default();
    let col = header
        .split_whitespace()
        .position(|c| c == "PID")
        .ok_or_else(|| Error::Usage("ps output has no PID column".into()))?;
    let mut res = format!("{header}\n");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse().ok());
        if pid.is_some_and(|p: i32| pids.contains(&p)) {
            res.push_str(line);
            res.push('\n');
        }
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_header_and_container_pids() {
        let out = "UID  PID PPID C CMD\nroot 1 0 0 init\nroot 42 1 0 sh\nroot 420 1 0 x\n";
        assert_eq!(
            filter_ps(out, &[42]).unwrap(),
            "UID  PID PPID C CMD\nroot 42 1 0 sh\n"
        );
        assert!(filter_ps("USER X\n", &[1]).is_err());
    }

    #[test]
    fn guest_processes_in_ps_ef_columns() {
        let t = ps_ef_table(&[ProcessInfo {
            pid: 1,
            ppid: 0,
            uid: 1000,
            start_time: 0,
            cpu_seconds: 3723,
            cmd: "sleep 1000".into(),
        }]);
        let mut lines = t.lines();
        assert!(lines.next().unwrap().ends_with("TIME CMD"));
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(row[..3], ["1000", "1", "0"]);
        assert_eq!(row[6], "01:02:03");
        assert_eq!(row[7..], ["sleep", "1000"]);
    }
}
