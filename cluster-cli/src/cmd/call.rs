//! `cluster call`: one task, its result printed.

use super::{Conn, TaskFlags};
use crate::ctx::Ctx;
use crate::output::CallShown;
use anyhow::Result;
use std::time::{Duration, Instant};

/// Run one task and print its result.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Function name (e.g. nth_prime).
    pub function: String,
    /// Arguments: JSON or plain words; several make a tuple.
    pub args: Vec<String>,
    #[command(flatten)]
    pub conn: Conn,
    #[command(flatten)]
    pub task: TaskFlags,
    /// Print result, engine and run time as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Submits the task and waits for it (Ctrl-C aborts it if still queued).
pub fn run(args: Args, ctx: &Ctx) -> Result<CallShown> {
    let arg = crate::args::call_argument(&args.args);
    crate::signatures::check(&args.function, &arg).map_err(crate::exit::Usage)?;
    let client = ctx.connect(&args.conn)?;
    let ar = args
        .task
        .view(&client)
        .apply::<serde_json::Value, serde_json::Value>(&args.function, &arg)?;
    let timeout = args.task.timeout()?;
    let id = ar.id();
    let abort = || crate::interrupt::summary("cluster call", client.abort(&[id]));
    let mut watch = crate::noengines::NoEngines::default();
    let deadline = timeout.map(|t| Instant::now() + t);
    let done = crate::interrupt::abort_on_interrupt(abort, || -> std::io::Result<bool> {
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let step = left.map_or(Duration::from_secs(1), |l| l.min(Duration::from_secs(1)));
            if ar.wait(Some(step)) {
                return Ok(true);
            }
            if left.is_some_and(|l| l <= step) {
                return Ok(false);
            }
            watch.check(&client, &ctx.out)?;
        }
    })??;
    if !done {
        return Err(watch.timeout(format!("task {id}")).into());
    }
    Ok(CallShown {
        task: id,
        engine: ar.engine(),
        elapsed_s: ar.elapsed().map(|d| d.as_secs_f64()),
        result: ar.get(Some(Duration::ZERO))?,
    })
}
