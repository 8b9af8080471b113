//! The one table `make bench` prints: a markdown table, one figure per row, hull's
//! value beside its peer's and their ratio; reasons for missing cells as footnotes.

use crate::stats::{Measured, Summary};

pub struct Side {
    pub label: String,
    pub value: Measured,
}

impl Side {
    pub fn new(label: impl Into<String>, value: Measured) -> Self {
        Side {
            label: label.into(),
            value,
        }
    }
}

pub struct Row {
    pub figure: String,
    pub hull: Side,
    pub peer: Side,
}

/// Three significant-ish digits: 0.84, 12.3, 2150.
fn num(v: f64) -> String {
    if v.abs() < 10.0 {
        format!("{v:.2}")
    } else if v.abs() < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn range(s: &Summary) -> String {
    format!("{} – {}", num(s.min), num(s.max))
}

/// Keeps each distinct reason once and hands out its footnote number.
#[derive(Default)]
struct Notes(Vec<String>);

impl Notes {
    fn cite(&mut self, why: &str) -> String {
        let i = match self.0.iter().position(|n| n == why) {
            Some(i) => i,
            None => {
                self.0.push(why.to_string());
                self.0.len() - 1
            }
        };
        format!("n/a [{}]", i + 1)
    }
}

pub fn render(rows: &[Row]) -> String {
    let mut notes = Notes::default();
    let mut out = String::new();
    out.push_str(
        "| figure | hull | median | min – max | peer | median | min – max | hull/peer |\n",
    );
    out.push_str("|---|---|--:|--:|---|--:|--:|--:|\n");
    for r in rows {
        let mut cells = |s: &Side| match &s.value {
            Ok(v) => (num(v.median), range(v)),
            Err(why) => (notes.cite(why), String::new()),
        };
        let (hm, hr) = cells(&r.hull);
        let (pm, pr) = cells(&r.peer);
        let ratio = match (&r.hull.value, &r.peer.value) {
            (Ok(h), Ok(p)) if p.median > 0.0 => format!("{:.2}", h.median / p.median),
            _ => "–".to_string(),
        };
        out.push_str(&format!(
            "| {} | {} | {hm} | {hr} | {} | {pm} | {pr} | {ratio} |\n",
            r.figure, r.hull.label, r.peer.label
        ));
    }
    if !notes.0.is_empty() {
        out.push('\n');
        for (i, n) in notes.0.iter().enumerate() {
            out.push_str(&format!("[{}] {}\n", i + 1, n.replace('\n', " ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_and_footnotes() {
        let s = |v: &[f64]| Ok(Summary::of(v).unwrap());
        let rows = vec![
            Row {
                figure: "run (ms)".into(),
                hull: Side::new("os", s(&[40.0, 50.0, 60.0])),
                peer: Side::new("runc", s(&[100.0])),
            },
            Row {
                figure: "boot (ms)".into(),
                hull: Side::new("hull-vmm", Err("needs hardware KVM: PVM".into())),
                peer: Side::new("qemu", Err("needs hardware KVM: PVM".into())),
            },
            Row {
                figure: "pss".into(),
                hull: Side::new("vm", Err("other".into())),
                peer: Side::new("runc", s(&[1.5])),
            },
        ];
        let t = render(&rows);
        assert!(
            t.contains("| run (ms) | os | 50.0 | 40.0 – 60.0 | runc | 100 | 100 – 100 | 0.50 |"),
            "{t}"
        );
        assert!(
            t.contains("| hull-vmm | n/a [1] |  | qemu | n/a [1] |  | – |"),
            "{t}"
        );
        assert!(t.contains("| vm | n/a [2] |"), "{t}");
        assert!(
            t.contains("[1] needs hardware KVM: PVM\n[2] other\n"),
            "{t}"
        );
    }
}
