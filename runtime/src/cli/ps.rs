//! `hull ps`: the container's processes, as `ps` shows them or as a JSON list of pids.

use std::process::Command;

use hull_protocol::{Request, Response, Status};

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
}
