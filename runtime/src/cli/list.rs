//! `hull list`: all containers under --root.

use std::io::Write;

use super::state::OciState;
use super::{Container, GlobalOpts};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(clap::Args, Debug, Clone)]
pub struct List {
    /// Select one of: table or json
    #[arg(short, long, value_enum, default_value = "table")]
    pub format: ListFormat,
    /// Display only container IDs
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn list(g: &GlobalOpts, args: &List) -> Result<()> {
    let store = g.store();
    let mut states = Vec::new();
    for id in store.ids()? {
        match Container::load(&store, &id) {
            Ok(c) => states.push(OciState::of(&c)),
            // Half-created or just deleted: not a container (yet / any more).
            Err(Error::NotExist(_)) => {}
            Err(e) => log::warn!("container {id:?}: {e}"),
        }
    }
    let mut out = std::io::stdout().lock();
    let res = if args.quiet {
        states.iter().try_for_each(|s| writeln!(out, "{}", s.id))
    } else if args.format == ListFormat::Json {
        writeln!(
            out,
            "{}",
            serde_json::to_string(&states).expect("states serialize")
        )
    } else {
        write!(out, "{}", table(&states))
    };
    res.map_err(Error::io("writing to stdout"))
}

/// runc's layout: tab-separated columns padded to a minimum width of 12 plus 3.
fn table(states: &[OciState]) -> String {
    let mut rows = vec![["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from)];
    for s in states {
        rows.push([
            s.id.clone(),
            s.pid.to_string(),
            s.status.clone(),
            s.bundle.clone(),
            s.created.clone(),
            s.owner.clone(),
        ]);
    }
    let mut widths = [0usize; 6];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for r in &rows {
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                out.push_str(cell);
            } else {
                let w = (widths[i] + 3).max(12);
                out.push_str(&format!("{cell:<w$}"));
            }
        }
        out.push('\n');
    }
    out
}
