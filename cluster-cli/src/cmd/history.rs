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

/// An RFC 3339 time (`2026-01-31T12:00:00Z`, `…T13:00:00.5+01:00`) in µs since the epoch.
fn parse_rfc3339(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1000).ok()
}

/// A time in µs since the epoch as RFC 3339 UTC, to the second.
pub fn format_time(us: u64) -> String {
    let secs = i64::try_from(us / 1_000_000).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{us} µs"))
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
