//! `cluster stop`: everything the profile started, local and over ssh.

use super::secs;
use crate::ctx::Ctx;
use crate::output::StopShown;
use anyhow::{bail, Result};

/// Stop everything this profile started (shutdown request, then SIGTERM, then SIGKILL).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds to wait after SIGTERM before SIGKILL [default: stop_grace_s setting, 5].
    #[arg(long)]
    pub grace: Option<f64>,
    /// Print what was stopped as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Stops the cluster; ssh hosts that could not be stopped are an error after the report.
pub fn run(args: Args, ctx: &Ctx) -> Result<StopShown> {
    let profile = ctx.open_profile()?;
    let grace = secs(args.grace.unwrap_or(profile.settings(&[])?.stop_grace_s))?;
    // Read before the local stop clears the run folder.
    let remote = profile.ssh_host_records()?;
    // The autoscaler first, so that it starts nothing while the cluster stops.
    let mut batch: Vec<String> = crate::scale::stop(&profile).into_iter().collect();
    batch.extend(crate::batch::stop(&profile));
    super::dashboard::stop_for_stop(&profile, grace);
    let local = crate::launch::stop(&profile, grace)?;
    let hosts = crate::ssh::stop_hosts(&remote, grace);
    Ok(StopShown {
        profile: profile.name().to_owned(),
        local,
        remote_engines: remote.iter().map(|r| r.pids.len()).sum(),
        hosts,
        batch,
    })
}

impl StopShown {
    /// After printing: ssh hosts that could not be stopped make the command fail.
    pub fn outcome(&self) -> Result<()> {
        let errors: Vec<String> = self
            .hosts
            .iter()
            .filter_map(|h| h.error.as_ref().map(|e| format!("{}: {e}", h.destination)))
            .collect();
        if !errors.is_empty() {
            bail!(
                "some ssh hosts could not be stopped:\n  {}",
                errors.join("\n  ")
            );
        }
        Ok(())
    }
}
