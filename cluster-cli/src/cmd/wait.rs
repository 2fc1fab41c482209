//! `cluster wait`: every task `cluster submit` sent in this profile, then a summary.

use super::{secs, Conn};
use crate::cmd::result::{note_resubmitted, store_timeout};
use crate::ctx::Ctx;
use crate::exit::TasksFailed;
use crate::output::{ids_text, WaitShown};
use crate::tasks::Summary;
use anyhow::{bail, Result};

/// Wait for every task `cluster submit` sent in this profile, then print a summary.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds to wait at most (exit status 5 when tasks are still running then).
    #[arg(long)]
    pub timeout: Option<f64>,
    #[command(flatten)]
    pub conn: Conn,
    /// One JSON object per task, then the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Waits, printing failures (or every task as JSON) as they are found.
pub fn run(args: Args, ctx: &Ctx) -> Result<WaitShown> {
    let ledger = client::Ledger::of_profile(&ctx.open_profile()?);
    let ids = ledger.ids()?;
    let client = ctx.connect(&args.conn)?;
    let mut store =
        client::ResultStore::open(client.connection_file(), store_timeout(&args.conn)?)?;
    let timeout = args.timeout.map(secs).transpose()?;
    let t0 = std::time::Instant::now();
    let found = ledger.wait(&mut store, &client, &ids, true, timeout)?;
    note_resubmitted(ctx, &found.resubmitted)?;
    let mut summary = Summary::default();
    for rec in crate::tasks::records(&found.done, &ledger.labels()?, &client) {
        summary.total += 1;
        summary.add(&rec);
        if ctx.out.json() {
            ctx.out.record(&rec)?;
        } else if let Some(line) = rec.failure_line() {
            ctx.out.note(&line)?;
        }
    }
    summary.seconds = t0.elapsed().as_secs_f64();
    // Reported now: the next `cluster wait` waits only for what is still to come.
    let reported: Vec<_> = found
        .done
        .iter()
        .map(|(o, _)| o.id)
        .chain(found.unknown.iter().copied())
        .collect();
    ledger.forget(&reported)?;
    Ok(WaitShown {
        submitted: ids.len(),
        summary,
        pending: found.pending,
        unknown: found.unknown,
    })
}

impl WaitShown {
    /// After printing: tasks still running, unknown or failed set the exit status.
    pub fn outcome(&self) -> Result<()> {
        if !self.pending.is_empty() {
            return Err(client::Error::Timeout {
                what: format!("task(s) {}", ids_text(&self.pending)),
            }
            .into());
        }
        if !self.unknown.is_empty() {
            bail!(
                "the controller has no record of task(s) {}: purged, or from an earlier controller",
                ids_text(&self.unknown)
            );
        }
        if self.summary.failed() > 0 {
            return Err(TasksFailed(self.summary.failure_line("cluster wait")).into());
        }
        Ok(())
    }
}
