//! `cluster result ID…`: the outcome of submitted tasks, from the controller's store.

use super::{secs, Conn};
use crate::ctx::Ctx;
use crate::exit::{NotFinished, TasksFailed};
use crate::output::{ids_text, Nothing};
use crate::tasks::Summary;
use anyhow::{bail, Result};
use protocol::TaskId;

/// Print the outcome of submitted tasks (stdout, stderr; exit status 0 if all succeeded).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Task ids as printed by `cluster submit` (like 3:1).
    #[arg(required = true)]
    pub ids: Vec<TaskId>,
    /// Wait for tasks still running (without it, exit status 5 when one is not done).
    #[arg(long)]
    pub wait: bool,
    /// Seconds to wait at most with --wait.
    #[arg(long)]
    pub timeout: Option<f64>,
    #[command(flatten)]
    pub conn: Conn,
    /// One JSON object per task.
    #[arg(long)]
    pub json: bool,
}

/// Looks the tasks up (waiting with `--wait`) and prints each as it is found.
pub fn run(args: Args, ctx: &Ctx) -> Result<Nothing> {
    let client = ctx.connect(&args.conn)?;
    let mut store =
        client::ResultStore::open(client.connection_file(), store_timeout(&args.conn)?)?;
    // Tasks the ledger knows get their command lines (and come back after a restart).
    let ledger = client::Ledger::of_profile(&ctx.profile()?);
    let timeout = args.timeout.map(secs).transpose()?;
    let found = ledger.wait(&mut store, &client, &args.ids, args.wait, timeout)?;
    note_resubmitted(ctx, &found.resubmitted)?;
    let mut summary = Summary::default();
    for rec in crate::tasks::records(&found.done, &ledger.labels()?, &client) {
        ctx.out.record(&rec)?;
        summary.total += 1;
        summary.add(&rec);
    }
    ctx.out.flush()?;
    if !found.unknown.is_empty() {
        bail!(
            "the controller has no record of task(s) {}: never submitted to this cluster, purged, or from an earlier controller",
            ids_text(&found.unknown)
        );
    }
    if !found.pending.is_empty() {
        if args.wait {
            return Err(client::Error::Timeout {
                what: format!("task(s) {}", ids_text(&found.pending)),
            }
            .into());
        }
        return Err(NotFinished(format!(
            "task(s) {} still queued or running; add --wait to wait for them",
            ids_text(&found.pending)
        ))
        .into());
    }
    if summary.failed() > 0 {
        return Err(TasksFailed(summary.failure_line("cluster result")).into());
    }
    Ok(Nothing)
}

/// How long one look-up may take.
pub fn store_timeout(conn: &Conn) -> Result<std::time::Duration> {
    secs(conn.connect_timeout.unwrap_or(10.0))
}

/// Says on stderr which tasks a restarted controller had forgotten and got again.
pub fn note_resubmitted(ctx: &Ctx, again: &[TaskId]) -> Result<()> {
    if !again.is_empty() {
        ctx.out.note(&format!(
            "the controller restarted and had forgotten {} task(s); submitted them again: {}",
            again.len(),
            ids_text(again)
        ))?;
    }
    Ok(())
}
