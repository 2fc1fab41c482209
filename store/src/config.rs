//! The store's settings and the parsing of their string forms (`"7d"`, `"500mb"`).

use crate::StoreError;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Where task records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreKind {
    /// A SQLite file on disk (WAL): survives restarts and crashes. The default.
    #[default]
    Sqlite,
    /// An in-memory SQLite database with the same schema and queries: history while the
    /// controller runs, nothing on disk, nothing after a restart.
    Memory,
    /// No store: records are discarded, queries answer [`StoreError::Disabled`].
    None,
}

impl FromStr for StoreKind {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sqlite" => Ok(StoreKind::Sqlite),
            "memory" => Ok(StoreKind::Memory),
            "none" | "off" => Ok(StoreKind::None),
            _ => Err(bad("db", s, "use \"sqlite\", \"memory\" or \"none\"")),
        }
    }
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Memory => "memory",
            StoreKind::None => "none",
        })
    }
}

/// Everything [`crate::Store::open`] needs. Build it with [`StoreConfig::new`], then change
/// fields or apply `cluster.toml` strings with [`StoreConfig::set`].
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Which store (`db` setting).
    pub kind: StoreKind,
    /// The database file for [`StoreKind::Sqlite`] (`db_path`); its folder is created. The
    /// lock file `<path>.lock` sits beside it.
    pub path: PathBuf,
    /// Longest time a record waits in the writer before its transaction commits
    /// (`db_commit_interval`, default 100 ms): what a `kill -9` can lose at most.
    pub commit_interval: Duration,
    /// Largest argument or result payload kept (`store_payload_max_bytes`, default 1 MiB);
    /// a larger one keeps its size only, and the record says so.
    pub payload_max_bytes: u64,
    /// Finished records older than this are deleted (`retention`, for example `"7d"`);
    /// `None` keeps them until purged.
    pub retention: Option<Duration>,
    /// The oldest finished records are deleted while the database holds more than this many
    /// bytes (`max_db_mb`); `None` for no limit. Unfinished tasks are never deleted.
    pub max_db_bytes: Option<u64>,
    /// How often the writer enforces `retention` and `max_db_bytes` (default 60 s).
    pub retention_check: Duration,
    /// Records sent but not yet committed, at most (default 200,000: about 2 s of one-item
    /// tasks at 50k tasks/s, some 300 bytes each, so ~60 MB). Past it, records are dropped
    /// and counted ([`crate::Counters::dropped_records`]) and health says so: this bounds the
    /// writer's memory when the disk fails or cannot keep up.
    pub backlog_max_records: usize,
    /// Payload bytes sent but not yet committed, at most (default 64 MiB). Past it, records
    /// keep their metadata only ([`crate::PayloadState::Backlog`]).
    pub backlog_max_bytes: u64,
    /// How long opening waits for another program's lock on the database before refusing
    /// (default 2 s).
    pub busy_timeout: Duration,
}

/// Default [`StoreConfig::commit_interval`].
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(100);
/// Default [`StoreConfig::payload_max_bytes`].
pub const DEFAULT_PAYLOAD_MAX_BYTES: u64 = 1 << 20;

impl StoreConfig {
    /// A SQLite store at `path` with the default settings.
    pub fn new(path: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            kind: StoreKind::Sqlite,
            path: path.into(),
            commit_interval: DEFAULT_COMMIT_INTERVAL,
            payload_max_bytes: DEFAULT_PAYLOAD_MAX_BYTES,
            retention: None,
            max_db_bytes: None,
            retention_check: Duration::from_secs(60),
            backlog_max_records: 200_000,
            backlog_max_bytes: 64 << 20,
            busy_timeout: Duration::from_secs(2),
        }
    }

    /// An in-memory store (tests, `db = "memory"`).
    pub fn memory() -> StoreConfig {
        StoreConfig {
            kind: StoreKind::Memory,
            ..StoreConfig::new(":memory:")
        }
    }

    /// No store (`db = "none"`).
    pub fn none() -> StoreConfig {
        StoreConfig {
            kind: StoreKind::None,
            ..StoreConfig::new("")
        }
    }

    /// Applies one setting given as a string, as `cluster.toml` and the `CLUSTER_*`
    /// environment give them: `db`, `db_path`, `db_commit_interval`,
    /// `store_payload_max_bytes`, `retention`, `max_db_mb`. An unknown key or a bad value is
    /// an error naming the setting.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        match key {
            "db" => self.kind = value.parse()?,
            "db_path" => {
                if value.trim().is_empty() {
                    return Err(bad(key, value, "give the database file's path"));
                }
                self.path = PathBuf::from(value);
            }
            "db_commit_interval" => {
                let d = parse_duration(key, value)?;
                if d.is_zero() {
                    return Err(bad(key, value, "must be more than zero, e.g. \"100ms\""));
                }
                self.commit_interval = d;
            }
            "store_payload_max_bytes" => self.payload_max_bytes = parse_size(key, value, 1)?,
            "retention" => self.retention = parse_optional_duration(key, value)?,
            "max_db_mb" => {
                let n = parse_size(key, value, 1 << 20)?;
                self.max_db_bytes = (n > 0).then_some(n);
            }
            _ => {
                return Err(bad(
                    key,
                    value,
                    "unknown store setting (known: db, db_path, db_commit_interval, \
                     store_payload_max_bytes, retention, max_db_mb)",
                ))
            }
        }
        Ok(())
    }
}

fn bad(setting: &str, value: &str, reason: &str) -> StoreError {
    StoreError::Setting {
        setting: setting.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Splits `"12.5 h"` into `(12.5, "h")`.
fn split_number(s: &str) -> Option<(f64, String)> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let number: f64 = s[..end].parse().ok()?;
    if !number.is_finite() || number < 0.0 {
        return None;
    }
    Some((number, s[end..].trim().to_ascii_lowercase()))
}

/// Parses a duration such as `"100ms"`, `"30s"`, `"15m"`, `"12h"`, `"7d"`, `"2w"` (a bare
/// number is seconds). `setting` names the setting in the error.
pub fn parse_duration(setting: &str, value: &str) -> Result<Duration, StoreError> {
    let Some((n, unit)) = split_number(value) else {
        return Err(bad(
            setting,
            value,
            "expected a number and a unit, e.g. \"100ms\", \"30s\", \"12h\" or \"7d\"",
        ));
    };
    let seconds = match unit.as_str() {
        "ms" => 0.001,
        "" | "s" | "sec" | "secs" => 1.0,
        "m" | "min" | "mins" => 60.0,
        "h" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86_400.0,
        "w" | "week" | "weeks" => 604_800.0,
        _ => {
            return Err(bad(
                setting,
                value,
                &format!("unknown unit {unit:?} (use ms, s, m, h, d or w, e.g. \"7d\")"),
            ))
        }
    };
    Duration::try_from_secs_f64(n * seconds).map_err(|_| bad(setting, value, "too long"))
}

/// Like [`parse_duration`], where `"0"`, `"none"`, `"off"` and `"forever"` mean no limit.
pub fn parse_optional_duration(setting: &str, value: &str) -> Result<Option<Duration>, StoreError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "none" | "off" | "forever" | "never" => Ok(None),
        _ => {
            let d = parse_duration(setting, value)?;
            Ok((!d.is_zero()).then_some(d))
        }
    }
}

/// Parses a size such as `"500mb"`, `"2 GiB"`, `"64k"`, `"1024"`; units are powers of 1024
/// (`k`/`kb`/`kib`, `m`/`mb`/`mib`, `g`/`gb`/`gib`, `t`…), and a bare number is counted in
/// `bare_unit` bytes (1 for `store_payload_max_bytes`, 1 MiB for `max_db_mb`).
pub fn parse_size(setting: &str, value: &str, bare_unit: u64) -> Result<u64, StoreError> {
    let Some((n, unit)) = split_number(value) else {
        return Err(bad(
            setting,
            value,
            "expected a number and a unit, e.g. \"500mb\", \"2gb\" or \"64kb\"",
        ));
    };
    let multiplier = match unit.as_str() {
        "" => bare_unit,
        "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(bad(
                setting,
                value,
                &format!("unknown unit {unit:?} (use b, kb, mb, gb or tb, e.g. \"500mb\")"),
            ))
        }
    };
    let bytes = n * multiplier as f64;
    if bytes > u64::MAX as f64 {
        return Err(bad(setting, value, "too large"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        let d = |s| parse_duration("retention", s).unwrap();
        assert_eq!(d("100ms"), Duration::from_millis(100));
        assert_eq!(d("30"), Duration::from_secs(30));
        assert_eq!(d("15m"), Duration::from_secs(900));
        assert_eq!(d("12h"), Duration::from_secs(12 * 3600));
        assert_eq!(d("7d"), Duration::from_secs(7 * 86_400));
        assert_eq!(d(" 1.5 H "), Duration::from_secs(5400));
        assert_eq!(d("2w"), Duration::from_secs(14 * 86_400));
    }

    #[test]
    fn bad_durations_name_the_setting() {
        for v in ["7x", "", "d", "-1d", "1e9999d", "nan"] {
            let e = parse_duration("retention", v).unwrap_err().to_string();
            assert!(e.contains("retention"), "{e}");
            assert!(e.contains(&format!("{v:?}")), "{e}");
        }
        let e = parse_duration("retention", "7x").unwrap_err().to_string();
        assert!(e.contains("unknown unit \"x\""), "{e}");
    }

    #[test]
    fn optional_durations() {
        assert_eq!(parse_optional_duration("retention", "none").unwrap(), None);
        assert_eq!(parse_optional_duration("retention", "0").unwrap(), None);
        assert_eq!(
            parse_optional_duration("retention", "1d").unwrap(),
            Some(Duration::from_secs(86_400))
        );
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(
            parse_size("max_db_mb", "500mb", 1 << 20).unwrap(),
            500 << 20
        );
        assert_eq!(parse_size("max_db_mb", "500", 1 << 20).unwrap(), 500 << 20);
        assert_eq!(parse_size("max_db_mb", "2 GiB", 1 << 20).unwrap(), 2 << 30);
        assert_eq!(parse_size("x", "64k", 1).unwrap(), 64 << 10);
        assert_eq!(parse_size("x", "1024", 1).unwrap(), 1024);
        assert_eq!(parse_size("x", "0.5kb", 1).unwrap(), 512);
        let e = parse_size("max_db_mb", "5 parsecs", 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_db_mb") && e.contains("parsecs"), "{e}");
    }

    #[test]
    fn settings_apply_by_name() {
        let mut c = StoreConfig::new("/x/tasks.db");
        c.set("db", "memory").unwrap();
        assert_eq!(c.kind, StoreKind::Memory);
        c.set("retention", "7d").unwrap();
        assert_eq!(c.retention, Some(Duration::from_secs(7 * 86_400)));
        c.set("max_db_mb", "500").unwrap();
        assert_eq!(c.max_db_bytes, Some(500 << 20));
        c.set("max_db_mb", "0").unwrap();
        assert_eq!(c.max_db_bytes, None);
        c.set("store_payload_max_bytes", "64kb").unwrap();
        assert_eq!(c.payload_max_bytes, 64 << 10);
        c.set("db_commit_interval", "250ms").unwrap();
        assert_eq!(c.commit_interval, Duration::from_millis(250));
        assert!(c.set("db_commit_interval", "0s").is_err());
        let e = c.set("db", "postgres").unwrap_err().to_string();
        assert!(e.contains("db") && e.contains("sqlite"), "{e}");
        let e = c.set("colour", "blue").unwrap_err().to_string();
        assert!(e.contains("unknown store setting"), "{e}");
    }
}
