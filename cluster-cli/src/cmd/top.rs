//! `cluster top`: the dashboard's numbers in the terminal (see `dashboard::top`).

use super::Conn;
use crate::ctx::Ctx;
use anyhow::{Context as _, Result};
use std::time::Duration;

/// Show engines, queue and throughput in the terminal, refreshed every second (q quits).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub conn: Conn,
}

/// Runs until `q`.
pub fn run(args: Args, ctx: &Ctx) -> Result<()> {
    let file = super::dashboard::client_file(&args.conn, ctx)?;
    let poller = dashboard::Poller::spawn(file, Duration::from_secs(1))
        .context("cannot start the poller thread")?;
    dashboard::top::run(&poller).context("cannot draw on the terminal")
}
