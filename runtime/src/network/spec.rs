//! What the OCI spec says about a container's network namespace.

use std::path::PathBuf;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::error::Result;
use super::netns;

/// The network namespace the container joins (`linux.namespaces` network with a
/// `path`); None when it gets a new, empty one or shares the caller's.
pub fn netns_path(spec: &Spec) -> Option<PathBuf> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Network)?
        .path()
        .clone()
}

/// Checks, before anything is created, that the network namespace the spec names
/// exists and is one (both sandboxes: runc's own error would not name the path).
pub fn check_netns(spec: &Spec) -> Result<()> {
    match netns_path(spec) {
        Some(p) => netns::open(&p).map(drop),
        None => Ok(()),
    }
}

/// Adjusts the spec the guest agent gets: a network namespace path is a host path,
/// and the guest NICs that stand for that namespace's interfaces live in the guest's
/// own namespace, so the container joins that one (drops the entry), as in Kata. A
/// network namespace without a path stays: the container gets a new, empty one.
pub fn guest_spec(spec: &mut Spec) {
    if netns_path(spec).is_none() {
        return;
    }
    if let Some(linux) = spec.linux_mut() {
        if let Some(ns) = linux.namespaces_mut() {
            ns.retain(|n| n.typ() != LinuxNamespaceType::Network);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(ns_json: &str) -> Spec {
        serde_json::from_str(&format!(
            r#"{{"ociVersion":"1.0.2","linux":{{"namespaces":{ns_json}}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn a_path_is_found_and_dropped_for_the_guest() {
        let mut s = spec_with(r#"[{"type":"pid"},{"type":"network","path":"/var/run/netns/x"}]"#);
        assert_eq!(netns_path(&s), Some(PathBuf::from("/var/run/netns/x")));
        guest_spec(&mut s);
        assert_eq!(netns_path(&s), None);
        let left = s.linux().as_ref().unwrap().namespaces().as_ref().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].typ(), LinuxNamespaceType::Pid);
    }

    #[test]
    fn check_netns_names_a_missing_or_wrong_path() {
        assert!(check_netns(&spec_with(r#"[{"type":"network"}]"#)).is_ok());
        let e = check_netns(&spec_with(
            r#"[{"type":"network","path":"/var/run/netns/hull-no-such-ns"}]"#,
        ))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "network namespace /var/run/netns/hull-no-such-ns does not exist"
        );
        // A namespace file of another kind, and a file that is no namespace.
        for (path, why) in [
            ("/proc/self/ns/uts", "another kind"),
            ("/proc/self/status", "not a namespace file"),
        ] {
            let e = check_netns(&spec_with(&format!(
                r#"[{{"type":"network","path":"{path}"}}]"#
            )))
            .unwrap_err()
            .to_string();
            assert!(e.contains(path) && e.contains(why), "{e}");
        }
        assert!(check_netns(&spec_with(
            r#"[{"type":"network","path":"/proc/self/ns/net"}]"#
        ))
        .is_ok());
    }

    #[test]
    fn a_new_netns_stays_new() {
        let mut s = spec_with(r#"[{"type":"network"}]"#);
        assert_eq!(netns_path(&s), None);
        guest_spec(&mut s);
        assert_eq!(
            s.linux()
                .as_ref()
                .unwrap()
                .namespaces()
                .as_ref()
                .unwrap()
                .len(),
            1
        );
    }
}
