//! `hull spec`: write a default config.json into the bundle directory.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;

use oci_spec::runtime::Spec;

use crate::error::{Error, Result};

#[derive(clap::Args, Debug, Clone)]
pub struct SpecCmd {
    /// Path to the root of the bundle directory
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Generate a configuration for a rootless container
    #[arg(long)]
    pub rootless: bool,
}

/// runc's default: an interactive `sh` in `rootfs`.
pub fn default_spec(rootless: bool) -> Spec {
    let mut spec = if rootless {
        Spec::rootless(
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    } else {
        Spec::default()
    };
    spec.set_hostname(Some("hull".into()));
    if let Some(p) = spec.process_mut() {
        p.set_terminal(Some(true));
    }
    spec
}

pub fn spec(args: &SpecCmd) -> Result<()> {
    let path = args.bundle.join("config.json");
    let body = serde_json::to_string_pretty(&default_spec(args.rootless)).expect("spec serializes");
    let mut f = match OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(Error::Usage(format!(
                "{} exists; remove it first",
                path.display()
            )))
        }
        Err(e) => return Err(Error::io(format!("creating {}", path.display()))(e)),
    };
    f.write_all(body.as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .map_err(Error::io(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_and_refuses_to_overwrite() {
        let d = tempfile::tempdir().unwrap();
        let args = SpecCmd {
            bundle: d.path().into(),
            rootless: false,
        };
        spec(&args).unwrap();
        let s: Spec =
            serde_json::from_slice(&std::fs::read(d.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(s.root().as_ref().unwrap().path(), &PathBuf::from("rootfs"));
        assert_eq!(s.hostname().as_deref(), Some("hull"));
        assert!(spec(&args).unwrap_err().to_string().contains("exists"));
        assert!(default_spec(true)
            .linux()
            .as_ref()
            .unwrap()
            .uid_mappings()
            .is_some());
    }
}
