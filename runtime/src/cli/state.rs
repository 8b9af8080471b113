//! `hull state`: the OCI state of a container, as JSON.

use std::collections::HashMap;

use serde::Serialize;

use super::{Container, GlobalOpts};
use crate::error::Result;

#[derive(clap::Args, Debug, Clone)]
pub struct State {
    pub container_id: String,
}

/// The OCI runtime spec's state, plus runc's `rootfs`, `created` and `owner`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: String,
    pub bundle: String,
    pub rootfs: String,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

impl OciState {
    pub fn of(c: &Container) -> OciState {
        OciState {
            oci_version: "1.0.2".into(),
            id: c.rec.id.clone(),
            pid: c.pid,
            status: c.status.to_string(),
            bundle: c.rec.bundle.to_string_lossy().into_owned(),
            rootfs: c.rec.rootfs.to_string_lossy().into_owned(),
            created: c.rec.created.clone(),
            owner: c.rec.owner.clone(),
            annotations: c.rec.annotations.clone(),
        }
    }
}

pub fn state(g: &GlobalOpts, args: &State) -> Result<()> {
    let c = Container::load(&g.store(), &args.container_id)?;
    let s = serde_json::to_string_pretty(&OciState::of(&c)).expect("state serializes");
    println!("{s}");
    Ok(())
}
