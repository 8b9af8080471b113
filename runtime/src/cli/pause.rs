//! `hull pause` / `hull resume`: freeze and thaw all of the container's processes.

use hull_protocol::{Request, Status};

use super::{Container, GlobalOpts};
use crate::error::Result;

#[derive(clap::Args, Debug, Clone)]
pub struct Pause {
    pub container_id: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Resume {
    pub container_id: String,
}

pub fn pause(g: &GlobalOpts, args: &Pause) -> Result<()> {
    let c = Container::load(&g.store(), &args.container_id)?;
    c.require(&[Status::Running], "pause")?;
    c.call_ok(&Request::Pause {
        id: c.id().to_string(),
    })
}

pub fn resume(g: &GlobalOpts, args: &Resume) -> Result<()> {
    let c = Container::load(&g.store(), &args.container_id)?;
    c.require(&[Status::Paused], "resume")?;
    c.call_ok(&Request::Resume {
        id: c.id().to_string(),
    })
}
