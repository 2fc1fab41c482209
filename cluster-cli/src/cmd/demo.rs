//! `cluster demo`: the seed examples on a throw-away cluster (see [`crate::demo`]).

use crate::ctx::Ctx;
use crate::output::Nothing;
use anyhow::Result;

/// Start a throw-away cluster, run the seed examples (primes, sums) here and there, print
/// timings beside this machine's own ceiling, stop.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Engines to start.
    #[arg(short = 'n', long = "engines", default_value_t = 4)]
    pub engines: usize,
}

/// Runs the demo.
pub fn run(args: Args, ctx: &Ctx) -> Result<Nothing> {
    crate::demo::demo(args.engines, &ctx.out)?;
    Ok(Nothing)
}
