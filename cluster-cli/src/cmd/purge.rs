//! `cluster purge`: forget stored results, in the controller's memory and in its task store.

use super::Conn;
use crate::ctx::Ctx;
use crate::output::PurgeShown;
use anyhow::{bail, Result};
use protocol::TaskId;

/// Remove finished tasks' results and records (memory and the task store's database).
/// Unfinished tasks are never removed.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Tasks to remove (ids like 3:1).
    pub ids: Vec<TaskId>,
    /// Remove the tasks submitted before TIME: an age like 10m, 2h, 7d, or an RFC 3339 time.
    #[arg(long, value_name = "TIME", conflicts_with = "all")]
    pub before: Option<String>,
    /// Remove every finished task.
    #[arg(long, conflicts_with = "ids")]
    pub all: bool,
    #[command(flatten)]
    pub conn: Conn,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Asks the controller.
pub fn run(args: Args, ctx: &Ctx) -> Result<PurgeShown> {
    if args.ids.is_empty() && args.before.is_none() && !args.all {
        bail!("say what to purge: task ids, --before TIME, or --all");
    }
    let client = ctx.connect(&args.conn)?;
    let mut shown = PurgeShown::default();
    if args.all {
        client.purge()?;
        shown.all = true;
    }
    if !args.ids.is_empty() {
        client.purge_tasks(&args.ids)?;
        shown.ids = args.ids;
    }
    if let Some(t) = &args.before {
        let before = super::history::parse_time(t, store::now_us())?;
        client.purge_before(before)?;
        shown.before_us = Some(before);
    }
    Ok(shown)
}
