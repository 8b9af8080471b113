//! Median, min and max over a row's samples.

/// What one cell of the table shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Summary {
    /// `None` for no samples (a row that could not run at all).
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Summary {
            median,
            min: v[0],
            max: v[n - 1],
            runs: n,
        })
    }
}

/// A measured row side: its summary, or why it could not be measured.
pub type Measured = Result<Summary, String>;

/// Runs `sample` `runs` times (after `warmup` discarded runs); the first failure
/// ends the row with its reason.
pub fn measure<F>(runs: usize, warmup: usize, mut sample: F) -> Measured
where
    F: FnMut() -> Result<f64, String>,
{
    for _ in 0..warmup {
        sample()?;
    }
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        v.push(sample()?);
    }
    Summary::of(&v).ok_or_else(|| "no samples".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_and_even_medians() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.runs), (2.0, 1.0, 3.0, 3));
        let s = Summary::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn first_failure_ends_the_row() {
        let mut n = 0;
        let r = measure(5, 0, || {
            n += 1;
            if n == 3 {
                Err("boom".into())
            } else {
                Ok(n as f64)
            }
        });
        assert_eq!(r, Err("boom".to_string()));
        assert_eq!(n, 3);
    }

    #[test]
    fn warmup_is_discarded() {
        let mut n = 0.0;
        let r = measure(2, 1, || {
            n += 1.0;
            Ok(n)
        })
        .unwrap();
        assert_eq!((r.min, r.max, r.runs), (2.0, 3.0, 2));
    }
}
