//! Loading an OCI bundle: config.json and the rootfs it names, with errors that name
//! the file and the field at fault.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::error::{Error, Result};
use crate::sandbox::SandboxKind;

/// Annotation choosing the sandbox for a container (`vm` or `os`).
pub const SANDBOX_ANNOTATION: &str = "io.hull.sandbox";

#[derive(Debug, Clone)]
pub struct Bundle {
    /// Absolute bundle directory.
    pub dir: PathBuf,
    /// Absolute rootfs directory.
    pub rootfs: PathBuf,
    pub spec: Spec,
}

impl Bundle {
    /// Loads and checks `<dir>/config.json`.
    pub fn load(dir: &Path) -> Result<Bundle> {
        let dir = fs::canonicalize(dir)
            .map_err(|e| Error::Bundle(format!("bundle {}: {}", dir.display(), describe(&e))))?;
        if !dir.is_dir() {
            return Err(Error::Bundle(format!(
                "bundle {}: not a directory",
                dir.display()
            )));
        }
        let config = dir.join("config.json");
        let bytes = fs::read(&config)
            .map_err(|e| Error::Bundle(format!("{}: {}", config.display(), describe(&e))))?;
        let spec: Spec = serde_json::from_slice(&bytes).map_err(|e| {
            let what = if e.is_syntax() || e.is_eof() {
                "invalid JSON"
            } else {
                "not a valid OCI runtime spec"
            };
            Error::Bundle(format!("{}: {what}: {e}", config.display()))
        })?;
        let field =
            |name: &str, why: String| Error::Bundle(format!("{}: {name}: {why}", config.display()));
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| field("root", "missing (the container needs a rootfs)".into()))?;
        let rootfs = if root.path().is_absolute() {
            root.path().clone()
        } else {
            dir.join(root.path())
        };
        match fs::metadata(&rootfs) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(field(
                    "root.path",
                    format!("{} is not a directory", rootfs.display()),
                ))
            }
            Err(e) => {
                return Err(field(
                    "root.path",
                    format!("{}: {}", rootfs.display(), describe(&e)),
                ))
            }
        }
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| field("process", "missing".into()))?;
        if process.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(field("process.args", "must not be empty".into()));
        }
        let bundle = Bundle { dir, rootfs, spec };
        bundle.sandbox_annotation()?;
        Ok(bundle)
    }

    /// The sandbox the config asks for with `io.hull.sandbox`, if any.
    pub fn sandbox_annotation(&self) -> Result<Option<SandboxKind>> {
        let Some(v) = self
            .spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(SANDBOX_ANNOTATION))
        else {
            return Ok(None);
        };
        v.parse().map(Some).map_err(|_| {
            Error::Bundle(format!(
                "{}: annotations.\"{SANDBOX_ANNOTATION}\": unknown sandbox {v:?} (expected \"vm\" or \"os\")",
                self.dir.join("config.json").display()
            ))
        })
    }
}

fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file or directory".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_with(config: &str, rootfs: bool) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("config.json"), config).unwrap();
        if rootfs {
            fs::create_dir(d.path().join("rootfs")).unwrap();
        }
        d
    }

    fn config(extra: &str) -> String {
        format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},"process":{{"cwd":"/","user":{{"uid":0,"gid":0}},"args":["true"]}}{extra}}}"#
        )
    }

    fn err(dir: &Path) -> String {
        Bundle::load(dir).unwrap_err().to_string()
    }

    #[test]
    fn good_bundle_loads_with_absolute_paths() {
        let d = bundle_with(&config(""), true);
        let b = Bundle::load(d.path()).unwrap();
        assert!(b.rootfs.is_absolute() && b.rootfs.ends_with("rootfs"));
        assert_eq!(b.sandbox_annotation().unwrap(), None);
    }

    #[test]
    fn errors_name_file_and_field() {
        let d = tempfile::tempdir().unwrap();
        let e = err(d.path());
        assert!(
            e.contains("config.json") && e.contains("no such file"),
            "{e}"
        );
        let e = err(&d.path().join("nope"));
        assert!(e.contains("nope") && e.contains("no such file"), "{e}");

        let d = bundle_with("{not json", true);
        assert!(err(d.path()).contains("invalid JSON"), "{}", err(d.path()));

        let d = bundle_with(&config(""), false);
        let e = err(d.path());
        assert!(e.contains("root.path") && e.contains("rootfs"), "{e}");

        let d = bundle_with(r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"}}"#, true);
        assert!(err(d.path()).contains("process"));

        let d = bundle_with(&config(r#","annotations":{"io.hull.sandbox":"xen"}"#), true);
        let e = err(d.path());
        assert!(e.contains("io.hull.sandbox") && e.contains("xen"), "{e}");
    }

    #[test]
    fn sandbox_annotation_is_read() {
        let d = bundle_with(&config(r#","annotations":{"io.hull.sandbox":"os"}"#), true);
        let b = Bundle::load(d.path()).unwrap();
        assert_eq!(b.sandbox_annotation().unwrap(), Some(SandboxKind::Os));
    }
}
