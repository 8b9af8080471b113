//! Kata's "tcfilter" model: an ingress qdisc on each side and a u32 match-all filter
//! whose mirred action redirects every frame to the other side's egress, so the tap
//! and the container's interface behave as one wire.

use super::iproute;

/// Redirects `a`'s incoming frames out of `b` and `b`'s out of `a`.
pub(crate) fn connect(a: &str, b: &str) -> Result<(), String> {
    redirect(a, b)?;
    redirect(b, a)
}

fn redirect(from: &str, to: &str) -> Result<(), String> {
    if has_ingress_qdisc(from)? {
        return Err(format!(
            "interface {from} already has an ingress qdisc (another VM's tc redirect, or the netns creator's own filters)"
        ));
    }
    iproute::run("tc", &["qdisc", "add", "dev", from, "ingress"])?;
    iproute::run(
        "tc",
        &[
            "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32", "match",
            "u8", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
        ],
    )?;
    Ok(())
}

fn has_ingress_qdisc(dev: &str) -> Result<bool, String> {
    Ok(iproute::json("tc", &["qdisc", "show", "dev", dev])?
        .iter()
        .any(|q| q["kind"].as_str() == Some("ingress")))
}

/// The devices `dev`'s ingress filters redirect to.
pub(crate) fn targets(dev: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for f in iproute::json("tc", &["filter", "show", "dev", dev, "ingress"])? {
        for a in f["options"]["actions"].as_array().into_iter().flatten() {
            if a["kind"].as_str() == Some("mirred") {
                if let Some(to) = a["to_dev"].as_str() {
                    out.push(to.to_string());
                }
            }
        }
    }
    Ok(out)
}

/// Removes `dev`'s ingress qdisc and with it every filter on it.
pub(crate) fn disconnect(dev: &str) -> Result<(), String> {
    if has_ingress_qdisc(dev)? {
        iproute::run("tc", &["qdisc", "del", "dev", dev, "ingress"])?;
    }
    Ok(())
}
