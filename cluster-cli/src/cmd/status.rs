//! `cluster status`: the controller, its engines, task counts, dropped messages.

use super::Conn;
use crate::ctx::Ctx;
use crate::output::StatusShown;
use anyhow::Result;

/// Show the controller, its engines, task counts, dropped messages and shared objects.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub conn: Conn,
    /// One JSON object, for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Asks the controller.
pub fn run(args: Args, ctx: &Ctx) -> Result<StatusShown> {
    let client = ctx.connect(&args.conn)?;
    let status = client.status()?;
    // Older controllers do not answer it; the status alone is still worth showing.
    let queue = client.queue_status().ok();
    let profile = ctx.open_profile().ok();
    let hosts = profile
        .as_ref()
        .and_then(|p| p.ssh_host_records().ok())
        .unwrap_or_default();
    let jobs = profile
        .as_ref()
        .map(crate::batch::status)
        .unwrap_or((String::new(), serde_json::Value::Null));
    let scale = profile.as_ref().and_then(crate::scale::running);
    let dashboard = profile.as_ref().and_then(super::dashboard::running);
    // Older controllers do not answer it either.
    let objects = client.objects().ok();
    Ok(StatusShown {
        status,
        queue,
        hosts,
        jobs,
        scale,
        dashboard,
        objects,
    })
}
