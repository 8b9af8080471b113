//! runc-style logging: `--log FILE` with `--log-format text|json`. containerd's runc
//! shim reads the last `"level":"error"` line of that file to explain a failure.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

struct Logger {
    /// None: stderr.
    file: Option<Mutex<File>>,
    format: LogFormat,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Sets up the global logger. Without a file, warnings and debug output go to stderr.
pub fn init(log_file: Option<&Path>, format: LogFormat, debug: bool) -> Result<()> {
    let file = match log_file {
        Some(p) => Some(Mutex::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(Error::io(format!("opening log file {}", p.display())))?,
        )),
        None => None,
    };
    let logger = LOGGER.get_or_init(|| Logger { file, format });
    // A second init (tests) keeps the first logger.
    let _ = log::set_logger(logger);
    log::set_max_level(if debug {
        LevelFilter::Debug
    } else {
        LevelFilter::Warn
    });
    Ok(())
}

/// Reports a fatal error the way runc does: one line on stderr, and an error entry in
/// the log file when there is one.
pub fn report_error(msg: &str) {
    if let Some(Logger {
        file: Some(f),
        format,
    }) = LOGGER.get()
    {
        if let Ok(mut f) = f.lock() {
            let _ = f.write_all(format_line(*format, Level::Error, msg).as_bytes());
        }
    }
    eprintln!("hull: {msg}");
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = format_line(self.format, r.level(), &r.args().to_string());
        match &self.file {
            Some(f) => {
                if let Ok(mut f) = f.lock() {
                    let _ = f.write_all(line.as_bytes());
                }
            }
            None => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

fn level_name(l: Level) -> &'static str {
    match l {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

/// One log line, newline-terminated, in logrus' text or json layout.
pub fn format_line(format: LogFormat, level: Level, msg: &str) -> String {
    let time = rfc3339(SystemTime::now());
    match format {
        LogFormat::Json => {
            let v = serde_json::json!({"level": level_name(level), "msg": msg, "time": time});
            format!("{v}\n")
        }
        LogFormat::Text => format!(
            "time=\"{time}\" level={} msg={}\n",
            level_name(level),
            serde_json::Value::String(msg.to_string())
        ),
    }
}

/// RFC 3339 in UTC with nanoseconds, as Go's `time.RFC3339Nano` prints it.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, rem / 60 % 60, rem % 60);
    let mut s = format!("{y:04}-{m:02}-{day:02}T{hh:02}:{mm:02}:{ss:02}");
    let nanos = d.subsec_nanos();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::new(1_709_210_096, 120_000_000);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.12Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn json_lines_carry_level_msg_and_time() {
        let line = format_line(LogFormat::Json, Level::Error, "container \"x\" broke");
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "container \"x\" broke");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        let text = format_line(LogFormat::Text, Level::Warn, "a b");
        assert!(text.contains("level=warning msg=\"a b\""), "{text}");
    }
}
