//! `cluster scale`: keeps engines (local processes or Slurm jobs) matched to the queue (see
//! [`crate::scale`]).

use crate::ctx::Ctx;
use crate::output::ScaleStarted;
use anyhow::{bail, Result};
use launcher::scale::ScaleSettings;

/// Start engines when tasks wait and none is free; release engines idle for a while.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where engines start: local (processes here) or slurm (one job per start, with the
    /// [slurm] settings) [default: `[scale] launcher`, local].
    #[arg(long, value_name = "LAUNCHER", value_parser = ["local", "slurm"])]
    pub launcher: Option<String>,
    /// Engines kept even when idle [default: `[scale] min`, 0].
    #[arg(long)]
    pub min: Option<usize>,
    /// Engines never exceeded [default: `[scale] max`, 16].
    #[arg(long)]
    pub max: Option<usize>,
    /// Idle time after which an engine is released: seconds, or with a unit (90s, 5m, 1h)
    /// [default: `[scale] idle_timeout_s`, 300].
    #[arg(long, value_name = "DURATION", value_parser = crate::scale::parse_duration)]
    pub idle_timeout: Option<std::time::Duration>,
    /// Launches whose engines have not registered yet, at most [default: `[scale] backlog`, 2].
    #[arg(long)]
    pub backlog: Option<usize>,
    /// Milliseconds between two decisions [default: `[scale] interval_ms`, 1000].
    #[arg(long)]
    pub interval_ms: Option<u64>,
    /// Start engines that die again (local, ssh, Slurm jobs): never, on-failure or always
    /// [default: `[restart] mode`, never].
    #[arg(long, value_name = "MODE")]
    pub restart: Option<String>,
    /// Run the loop in this process instead of detached (what `cluster scale` starts).
    #[arg(long, hide = true)]
    pub foreground: bool,
    /// Only restart engines that die, no scaling (what `cluster start --restart` starts).
    #[arg(long, hide = true)]
    pub watch_only: bool,
    /// The ssh engines run the binary `--copy-binary` sent (restarts run it too).
    #[arg(long, hide = true)]
    pub ssh_copied_binary: bool,
    /// Print what was started as JSON.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    /// The flags given, as `[scale]` overrides.
    fn overrides(&self) -> Vec<(&'static str, String)> {
        let mut o = Vec::new();
        if let Some(v) = &self.launcher {
            o.push(("launcher", v.clone()));
        }
        if let Some(v) = self.min {
            o.push(("min", v.to_string()));
        }
        if let Some(v) = self.max {
            o.push(("max", v.to_string()));
        }
        if let Some(v) = self.idle_timeout {
            // Whole seconds in the table; a shorter timeout (tests) rounds up to 1 s.
            o.push((
                "idle_timeout_s",
                v.as_secs_f64().ceil().max(0.0).to_string(),
            ));
        }
        if let Some(v) = self.backlog {
            o.push(("backlog", v.to_string()));
        }
        if let Some(v) = self.interval_ms {
            o.push(("interval_ms", v.to_string()));
        }
        o
    }

    /// The same flags again, for the detached loop.
    fn passed_on(&self) -> Vec<String> {
        let mut flags: Vec<String> = self
            .overrides()
            .into_iter()
            .map(|(k, v)| {
                let flag = match k {
                    "idle_timeout_s" => "idle-timeout".to_owned(),
                    other => other.replace('_', "-"),
                };
                format!("--{flag}={v}")
            })
            .collect();
        if let Some(mode) = &self.restart {
            flags.push(format!("--restart={mode}"));
        }
        if self.watch_only {
            flags.push("--watch-only".into());
        }
        if self.ssh_copied_binary {
            flags.push("--ssh-copied-binary".into());
        }
        flags
    }
}

/// The `[restart]` policy, with `mode` from a flag on top.
pub fn restart_policy(
    profile: &profiles::Profile,
    mode: Option<&str>,
) -> Result<launcher::restart::RestartPolicy> {
    let mut overrides = Vec::new();
    if let Some(m) = mode {
        if !matches!(m, "never" | "on-failure" | "always") {
            bail!("--restart {m:?}: expected never, on-failure or always");
        }
        overrides.push(("mode", m.to_owned()));
    }
    Ok(launcher::restart::RestartSettings::load(profile, &overrides)?.policy())
}

/// Starts the loop detached (or runs it, with `--foreground`).
pub fn run(args: Args, ctx: &Ctx) -> Result<ScaleStarted> {
    let profile = ctx.open_profile()?;
    let overrides = args.overrides();
    let refs: Vec<(&str, String)> = overrides.iter().map(|(k, v)| (*k, v.clone())).collect();
    let scale = ScaleSettings::load(&profile, &refs)?;
    scale.policy().map_err(anyhow::Error::msg)?;
    if crate::launch::running_controller(&profile)?.is_none() {
        bail!(
            "no controller is running for profile {:?}; start one with `cluster start -n 0` before `cluster scale`",
            profile.name()
        );
    }
    let restart = restart_policy(&profile, args.restart.as_deref())?;
    if args.foreground {
        let options = crate::scale::Options {
            scaling: !args.watch_only,
            restart,
            ssh_copied_binary: args.ssh_copied_binary,
        };
        crate::scale::run_foreground(&profile, &scale, options)?;
        return Ok(ScaleStarted::Ran);
    }
    let pid = crate::scale::spawn(&profile, &args.passed_on())?;
    Ok(ScaleStarted::Detached {
        pid,
        min: scale.min,
        max: scale.max,
        log: profile.log_dir().join("scale.log"),
    })
}
