//! The shim's runtime options: where hull keeps state, which `hull` to run, and
//! which sandbox to use when a container does not say (`io.hull.sandbox`).
//!
//! containerd sends them with Create as a protobuf `Any`:
//! - `runtimeoptions.v1.Options{type_url, config_path, config_body}`, what the CRI
//!   plugin (and `ctr run --runtime-config-path`) sends a non-runc runtime; the config
//!   file (or body) is JSON or flat TOML, e.g. `sandbox = "os"`;
//! - `containerd.runc.v1.Options`, whose `root` and `binary_name` are honoured.

use std::path::{Path, PathBuf};

use containerd_shim::api::Options as RuncOptions;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{CodedInputStream, Message};
use serde::{Deserialize, Serialize};

use crate::sandbox::SandboxKind;

/// Where hull's state lives unless the options say otherwise (runc.v2 uses
/// `/run/containerd/runc/<namespace>`).
pub const DEFAULT_ROOT: &str = "/run/containerd/hull";

const RUNTIME_OPTIONS: &str = "runtimeoptions.v1.Options";
const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShimOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxKind>,
    /// hull's `--root`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// The `hull` binary to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<PathBuf>,
}

impl ShimOptions {
    /// The options in a Create request; an empty `Any` means none.
    pub fn from_any(any: &Any) -> Result<ShimOptions, String> {
        let kind = any.type_url.rsplit('/').next().unwrap_or_default();
        match kind {
            "" => Ok(ShimOptions::default()),
            RUNTIME_OPTIONS => {
                let (config_path, config_body) = decode_runtime_options(&any.value)?;
                if !config_body.is_empty() {
                    return ShimOptions::parse(&config_body, "the options' config_body");
                }
                if config_path.is_empty() {
                    return Ok(ShimOptions::default());
                }
                ShimOptions::from_file(Path::new(&config_path))
            }
            RUNC_OPTIONS => {
                let o = RuncOptions::parse_from_bytes(&any.value)
                    .map_err(|e| format!("runtime options {RUNC_OPTIONS}: {e}"))?;
                let nonempty = |s: &str| (!s.is_empty()).then(|| PathBuf::from(s));
                Ok(ShimOptions {
                    sandbox: None,
                    root: nonempty(&o.root),
                    binary: nonempty(&o.binary_name),
                })
            }
            other => Err(format!(
                "runtime options of type {other:?} are not understood by hull's shim \
                 (expected {RUNTIME_OPTIONS} or {RUNC_OPTIONS})"
            )),
        }
    }

    pub fn from_file(path: &Path) -> Result<ShimOptions, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("runtime config {}: {e}", path.display()))?;
        ShimOptions::parse(&text, &path.display().to_string())
    }

    /// JSON if it looks like JSON, else flat TOML (`key = "value"` lines, `#`
    /// comments).
    pub fn parse(text: &str, origin: &str) -> Result<ShimOptions, String> {
        if text.trim_start().starts_with('{') {
            return serde_json::from_str(text).map_err(|e| format!("{origin}: {e}"));
        }
        let mut map = serde_json::Map::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let bad = || {
                format!(
                    "{origin}: line {}: expected key = \"value\", got {raw:?}",
                    n + 1
                )
            };
            let (key, value) = line.split_once('=').ok_or_else(bad)?;
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or_else(bad)?;
            map.insert(key.trim().to_string(), value.into());
        }
        serde_json::from_value(map.into()).map_err(|e| format!("{origin}: {e}"))
    }
}

/// `config_path` (field 2) and `config_body` (field 3) of runtimeoptions.v1.Options;
/// decoded by hand since the crate ships no binding for that CRI message.
fn decode_runtime_options(bytes: &[u8]) -> Result<(String, String), String> {
    let bad = |e: containerd_shim_protos::protobuf::Error| {
        format!("runtime options {RUNTIME_OPTIONS}: {e}")
    };
    let mut input = CodedInputStream::from_bytes(bytes);
    let (mut path, mut body) = (String::new(), String::new());
    while let Some(tag) = input.read_raw_tag_or_eof().map_err(bad)? {
        match tag {
            // (field << 3) | wire type 2 (length-delimited)
            0x12 => path = input.read_string().map_err(bad)?,
            0x1a => body = String::from_utf8_lossy(&input.read_bytes().map_err(bad)?).into(),
            // Other fields (type_url among them) are skipped by wire type.
            _ => match tag & 7 {
                0 => drop(input.read_uint64().map_err(bad)?),
                1 => drop(input.read_fixed64().map_err(bad)?),
                2 => drop(input.read_bytes().map_err(bad)?),
                5 => drop(input.read_fixed32().map_err(bad)?),
                w => return Err(format!("runtime options {RUNTIME_OPTIONS}: wire type {w}")),
            },
        }
    }
    Ok((path, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::CodedOutputStream;

    fn runtime_options(path: &str, body: &str) -> Any {
        let mut value = Vec::new();
        {
            let mut out = CodedOutputStream::vec(&mut value);
            out.write_string(1, "io.hull.options").unwrap();
            out.write_string(2, path).unwrap();
            out.write_bytes(3, body.as_bytes()).unwrap();
            out.flush().unwrap();
        }
        Any {
            type_url: format!("type.googleapis.com/{RUNTIME_OPTIONS}"),
            value,
            ..Default::default()
        }
    }

    #[test]
    fn cri_runtime_options_point_at_a_toml_or_json_file() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("hull.toml");
        std::fs::write(
            &toml,
            "# hull\nsandbox = \"os\"\nroot = \"/run/x\"  # state\n",
        )
        .unwrap();
        let o = ShimOptions::from_any(&runtime_options(toml.to_str().unwrap(), "")).unwrap();
        assert_eq!(o.sandbox, Some(SandboxKind::Os));
        assert_eq!(o.root.as_deref(), Some(Path::new("/run/x")));
        let o = ShimOptions::from_any(&runtime_options("", "{\"sandbox\":\"vm\"}")).unwrap();
        assert_eq!(o.sandbox, Some(SandboxKind::Vm));
        assert_eq!(
            ShimOptions::from_any(&runtime_options("", "")).unwrap(),
            ShimOptions::default()
        );
    }

    #[test]
    fn bad_options_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hull.toml");
        std::fs::write(&f, "sandbox = \"lxc\"\n").unwrap();
        let e = ShimOptions::from_any(&runtime_options(f.to_str().unwrap(), "")).unwrap_err();
        assert!(e.contains("hull.toml") && e.contains("lxc"), "{e}");
        std::fs::write(&f, "sandbox os\n").unwrap();
        let e = ShimOptions::from_file(&f).unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        std::fs::write(&f, "sandox = \"os\"\n").unwrap();
        let e = ShimOptions::from_file(&f).unwrap_err();
        assert!(e.contains("sandox"), "{e}");
        let e = ShimOptions::from_file(&dir.path().join("missing.toml")).unwrap_err();
        assert!(e.contains("missing.toml"), "{e}");
        let any = Any {
            type_url: "example.Other".into(),
            ..Default::default()
        };
        assert!(ShimOptions::from_any(&any)
            .unwrap_err()
            .contains("example.Other"));
    }

    #[test]
    fn runc_options_give_root_and_binary() {
        let o = RuncOptions {
            root: "/run/r".into(),
            binary_name: "/usr/bin/hull".into(),
            ..Default::default()
        };
        let any = Any {
            type_url: RUNC_OPTIONS.into(),
            value: o.write_to_bytes().unwrap(),
            ..Default::default()
        };
        let got = ShimOptions::from_any(&any).unwrap();
        assert_eq!(got.root.as_deref(), Some(Path::new("/run/r")));
        assert_eq!(got.binary.as_deref(), Some(Path::new("/usr/bin/hull")));
    }
}
