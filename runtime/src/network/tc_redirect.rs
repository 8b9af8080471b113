//! Kata's "tcfilter" model: an ingress qdisc on each side and a u32 match-all filter
//! whose mirred action redirects every frame to the other side's egress, so the tap
//! and the container's interface behave as one wire.

use super::iproute;

/// Redirects each `(interface, tap)` pair both ways, in one `tc` run.
pub(crate) fn connect_all(pairs: &[(&str, &str)]) -> Result<(), String> {
    let mut lines = Vec::new();
    let mut qdisc_of_line = Vec::new();
    for (a, b) in pairs {
        for (from, to) in [(a, b), (b, a)] {
            qdisc_of_line.push(Some(*from));
            lines.push(format!("qdisc add dev {from} ingress"));
            qdisc_of_line.push(None);
            lines.push(format!(
                "filter add dev {from} parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev {to}"
            ));
        }
    }
    iproute::batch("tc", &lines).map_err(|(line, msg)| {
        match line.and_then(|n| qdisc_of_line[n]) {
            Some(dev) if msg.contains("Exclusivity flag on") => format!(
                "interface {dev} already has an ingress qdisc (another VM's tc redirect, or the netns creator's own filters)"
            ),
            _ => msg,
        }
    })
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

/// Removes the ingress qdiscs (and with them every filter) of `devs`, in one `tc` run.
pub(crate) fn disconnect_all(devs: &[String]) -> Result<(), String> {
    if devs.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = devs
        .iter()
        .map(|d| format!("qdisc del dev {d} ingress"))
        .collect();
    iproute::batch("tc", &lines).map_err(|(_, msg)| msg)
}
