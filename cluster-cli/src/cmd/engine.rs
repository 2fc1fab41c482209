//! `cluster engine`: one stock engine in the foreground (what `cluster start` launches).

use super::secs;
use crate::connfile::{check, Role, Source};
use crate::ctx::Ctx;
use crate::output::Nothing;
use anyhow::Result;
use std::path::PathBuf;

/// Run one stock engine in the foreground (what `start` launches).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Engine connection file [default: the profile's security/engine.json].
    #[arg(long, env = "CLUSTER_ENGINE_FILE")]
    pub file: Option<PathBuf>,
    /// Seconds without a heartbeat before the engine gives up on its controller and exits
    /// (meanwhile it keeps registering again) [default: 60].
    #[arg(long, env = "CLUSTER_LONELY_TIMEOUT", value_name = "SECS")]
    pub lonely_timeout: Option<f64>,
}

/// Runs the engine until it is told to stop.
pub fn run(args: Args, ctx: &Ctx) -> Result<Nothing> {
    crate::cli::init_logging("info");
    let file = match args.file {
        Some(f) => {
            check(&f, Role::Engine, Source::Given)?;
            f
        }
        None => {
            let file = ctx.open_profile()?.engine_file();
            check(&file, Role::Engine, Source::Profile(&ctx.profile))?;
            file
        }
    };
    let engine = engine::Engine::builder().stock_functions().build();
    let mut options = engine::EngineOptions::new(file);
    if let Some(s) = args.lonely_timeout {
        options.lonely_timeout = secs(s)?;
    }
    engine.run(options)?;
    Ok(Nothing)
}
