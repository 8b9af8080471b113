//! Pods: which shim process and which sandbox a container belongs to.
//!
//! containerd's CRI plugin marks a pod's containers with the pod sandbox's id. As
//! with runc.v2, all containers of one pod are served by one shim process (the
//! socket address is derived from the group id, so a later `start` finds the
//! running shim). That shim runs every `hull create` of the pod with one `--root`,
//! where hull itself reads the same annotations and puts a `container` into its
//! sandbox container's VM.

use std::collections::HashMap;
use std::path::Path;

pub use crate::bundle::SANDBOX_ANNOTATION as HULL_SANDBOX;
pub use crate::sandbox::vm::pod::{
    CONTAINER_TYPE_ANNOTATION as CONTAINER_TYPE, SANDBOX_ID_ANNOTATION as SANDBOX_ID,
};

/// The OCI annotations in `<bundle>/config.json` (none if it has none).
pub fn read_annotations(bundle: &Path) -> Result<HashMap<String, String>, String> {
    let path = bundle.join("config.json");
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))?;
    let mut out = HashMap::new();
    if let Some(map) = v.get("annotations").and_then(|a| a.as_object()) {
        for (k, val) in map {
            if let Some(s) = val.as_str() {
                out.insert(k.clone(), s.to_string());
            }
        }
    }
    Ok(out)
}

/// The id the shim process is grouped by: the pod's sandbox id, else the container's.
pub fn shim_group(id: &str, annotations: &HashMap<String, String>) -> String {
    annotations
        .get(SANDBOX_ID)
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pod_containers_share_the_sandbox_shim() {
        let pause = ann(&[(CONTAINER_TYPE, "sandbox"), (SANDBOX_ID, "pod1")]);
        let app = ann(&[(CONTAINER_TYPE, "container"), (SANDBOX_ID, "pod1")]);
        assert_eq!(shim_group("pod1", &pause), "pod1");
        assert_eq!(shim_group("app", &app), "pod1");
        assert_eq!(shim_group("plain", &ann(&[])), "plain");
    }

    #[test]
    fn annotations_come_from_the_bundle_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"ociVersion":"1.0.2","annotations":{"io.hull.sandbox":"os"}}"#,
        )
        .unwrap();
        let a = read_annotations(dir.path()).unwrap();
        assert_eq!(a.get(HULL_SANDBOX).map(String::as_str), Some("os"));
        let e = read_annotations(&dir.path().join("nope")).unwrap_err();
        assert!(e.contains("nope/config.json"), "{e}");
    }
}
