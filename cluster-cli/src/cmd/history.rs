//! `cluster history`: the task store's records (any client's tasks, across restarts),
//! newest first, filtered like IPyparallel's `db_query`.

use super::Conn;
use crate::ctx::Ctx;
use crate::output::HistoryShown;
use anyhow::{anyhow, Result};
use protocol::{ClientId, EngineId, HistoryFilter, RecordState};

/// List task records from the controller's task store, newest first.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only tasks in this state.
    #[arg(long, value_parser = parse_state, value_name = "failed|ok|running|queued")]
    pub status: Option<RecordState>,
    /// Only tasks of this function (or program, for commands).
    #[arg(long, value_name = "NAME")]
    pub function: Option<String>,
    /// Only tasks that ran on this engine.
    #[arg(long, value_name = "N")]
    pub engine: Option<u32>,
    /// Only tasks of this client id (the number before the colon of a task id).
    #[arg(long, value_name = "ID")]
    pub client: Option<u32>,
    /// Only tasks submitted since TIME: an age like 10m, 2h, 7d, or an RFC 3339 time
    /// (2026-01-31T12:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// At most N records (the newest).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: u64,
    #[command(flatten)]
    pub conn: Conn,
    /// One JSON object per record.
    #[arg(long)]
    pub json: bool,
}

fn parse_state(s: &str) -> Result<RecordState, String> {
    match s {
        "queued" => Ok(RecordState::Queued),
        "running" => Ok(RecordState::Running),
        "ok" => Ok(RecordState::Ok),
        "failed" => Ok(RecordState::Failed),
        _ => Err(format!("{s:?}: use failed, ok, running or queued")),
    }
}

/// Asks the controller.
pub fn run(args: Args, ctx: &Ctx) -> Result<HistoryShown> {
    let client = ctx.connect(&args.conn)?;
    let now = store::now_us();
    let filter = HistoryFilter {
        state: args.status,
        function: args.function,
        engine: args.engine.map(EngineId),
        client: args.client.map(ClientId),
        since_us: args
            .since
            .as_deref()
            .map(|t| parse_time(t, now))
            .transpose()?,
        limit: Some(args.limit),
    };
    let records = client.history(filter)?;
    Ok(HistoryShown { records })
}

/// A time given on the command line, in µs since the epoch: an age (`10m`, `2h`, `7d`: that
/// long before `now_us`) or an RFC 3339 time.
pub fn parse_time(s: &str, now_us: u64) -> Result<u64> {
    if s.contains('-') && s.contains(':') {
        return parse_rfc3339(s).ok_or_else(|| {
            anyhow!("{s:?} is not an RFC 3339 time (like 2026-01-31T12:00:00Z or 2026-01-31T13:00:00+01:00)")
        });
    }
    let age = store::parse_duration("TIME", s)
        .map_err(|_| anyhow!("{s:?} is not a time: give an age like 10m, 2h or 7d, or an RFC 3339 time like 2026-01-31T12:00:00Z"))?;
    Ok(now_us.saturating_sub(u64::try_from(age.as_micros()).unwrap_or(u64::MAX)))
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.frac](Z|±HH:MM)` in µs since the epoch.
fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &s[start..i.min(start + 6)];
        micros = digits.parse::<i64>().ok()? * 10i64.pow(6 - digits.len() as u32);
    }
    let offset_s = match s.get(i..)? {
        "Z" | "z" => 0,
        rest if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            sign * (num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_s;
    u64::try_from(secs * 1_000_000 + micros).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A time in µs since the epoch as RFC 3339 UTC, to the second.
pub fn format_time(us: u64) -> String {
    let secs = (us / 1_000_000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_ages_and_rfc3339() {
        let now = 1_000_000_000_000_000;
        assert_eq!(parse_time("10m", now).unwrap(), now - 600_000_000);
        assert_eq!(parse_time("7d", now).unwrap(), now - 7 * 86_400_000_000);
        assert_eq!(parse_time("1970-01-01T00:00:10Z", now).unwrap(), 10_000_000);
        assert_eq!(
            parse_time("2026-01-31T13:00:00.5+01:00", now).unwrap(),
            parse_time("2026-01-31T12:00:00Z", now).unwrap() + 500_000
        );
        let t = parse_time("2026-12-01T15:07:07Z", now).unwrap();
        assert_eq!(format_time(t), "2026-12-01T15:07:07Z");
        for bad in [
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-01-01T00:00:00",
            "-5m",
        ] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }
}
