//! `cluster controller`: the controller in the foreground (what `cluster start` launches).

use super::{PortFlags, SettingFlags};
use crate::ctx::Ctx;
use crate::output::Nothing;
use anyhow::{Context as _, Result};

/// Run the controller in the foreground (what `start` launches).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub settings: SettingFlags,
    #[command(flatten)]
    pub ports: PortFlags,
    /// Any setting as KEY=VALUE (used by `cluster start` to pass its flags on).
    #[arg(long = "set", value_name = "KEY=VALUE", hide = true)]
    pub set: Vec<String>,
    /// Take over from a controller that died: listen on its address and ports with its key
    /// (from the profile's connection files), so that running engines and clients reconnect
    /// without being restarted.
    #[arg(long)]
    pub reuse: bool,
    /// Move the task database aside (as `<file>.corrupt-<time>`) and start an empty one:
    /// for a database the controller refuses (corrupt, foreign, newer).
    #[arg(long)]
    pub db_reset: bool,
}

impl Args {
    /// Every setting the flags give, as overrides.
    pub fn overrides(&self) -> Result<Vec<(String, String)>> {
        let mut overrides: Vec<(String, String)> = self
            .settings
            .overrides()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        overrides.extend(
            self.ports
                .overrides()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v)),
        );
        for kv in &self.set {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
            overrides.push((k.to_owned(), v.to_owned()));
        }
        Ok(overrides)
    }
}

/// Runs the controller until it is told to stop.
pub fn run(args: Args, ctx: &Ctx) -> Result<Nothing> {
    crate::cli::init_logging("info");
    let profile = ctx.create_profile()?;
    let overrides = args.overrides()?;
    let overrides: Vec<(&str, String)> = overrides
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    crate::controller_process::run(&profile, &overrides, args.reuse, args.db_reset)?;
    Ok(Nothing)
}
