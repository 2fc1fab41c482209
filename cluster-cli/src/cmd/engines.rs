//! `cluster engines`: more engines for the running cluster, locally or over ssh.

use super::{secs, LaunchFlags};
use crate::ctx::Ctx;
use crate::launch::{self, EngineLaunch, EngineProgram};
use crate::output::EnginesAdded;
use anyhow::{bail, Result};
use std::path::PathBuf;

/// Add engines to the running cluster.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Engines to add [default: 1 locally; over ssh, the host list's counts].
    #[arg(short = 'n', long = "engines")]
    pub n: Option<usize>,
    #[command(flatten)]
    pub hosts: LaunchFlags,
    /// Program to launch instead of the stock engine (called with `--file PATH`)
    /// [default: the program `cluster start` launched].
    #[arg(long, env = "CLUSTER_ENGINE_PROGRAM")]
    pub engine_program: Option<PathBuf>,
    /// Launch the stock engine (`cluster engine`), even on a cluster started with
    /// `--engine-program`.
    #[arg(long, conflicts_with = "engine_program")]
    pub stock_engine: bool,
    /// Seconds to wait for them to register.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Print what was added as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Launches the engines and waits for them to register.
pub fn run(args: Args, ctx: &Ctx) -> Result<EnginesAdded> {
    let profile = ctx.open_profile()?;
    let settings = profile.settings(&[])?;
    if launch::running_controller(&profile)?.is_none() {
        if let Some(pid) = launch::dead_controller(&profile) {
            bail!(crate::ctx::dead_controller_message(&profile, pid));
        }
        bail!(
            "no controller is running for profile {:?}; start one with `cluster start`",
            profile.name()
        );
    }
    let before = client::Client::connect_file(profile.client_file())?
        .ids()?
        .len();
    if let Some(kind) = args.hosts.batch() {
        // The program the cluster was started with, unless told otherwise (with
        // --stock-engine: the settings' engine_program, else the stock engine).
        let program = match args.engine_program {
            Some(p) => Some(p),
            None if args.stock_engine => None,
            None => match EngineProgram::recorded(&profile) {
                EngineProgram::Custom(p) => Some(p),
                _ => None,
            },
        };
        let launched = crate::batch::add_engines(
            &profile,
            &settings,
            kind,
            args.n.unwrap_or(1),
            args.hosts.jobs,
            program,
            secs(args.timeout)?,
            before,
        )?;
        return Ok(EnginesAdded::Batch(launched));
    }
    if args.hosts.ssh() {
        let hosts = args.hosts.hosts(&settings, args.n)?;
        let launch = args.hosts.ssh_launch(&profile, &settings, args.timeout)?;
        let report = crate::ssh::launch(&profile, &launch, &hosts, before)?;
        return Ok(EnginesAdded::Ssh(report));
    }
    // Engines of the kind the cluster was started with, unless told otherwise.
    let program = match (args.stock_engine, args.engine_program) {
        (true, _) => EngineProgram::Stock,
        (false, Some(p)) => EngineProgram::Custom(p),
        (false, None) => EngineProgram::recorded(&profile),
    };
    let engines = EngineLaunch {
        count: args.n.unwrap_or(1),
        program,
        timeout: secs(args.timeout)?,
    };
    let pids = launch::launch_engines(&profile, &settings, &engines, before)?;
    Ok(EnginesAdded::Local {
        registered: before + pids.len(),
        pids,
    })
}

impl EnginesAdded {
    /// After printing: ssh hosts that failed make the command fail.
    pub fn outcome(&self) -> Result<()> {
        match self {
            EnginesAdded::Ssh(r) => match r.failure_message() {
                Some(msg) => Err(anyhow::anyhow!(msg)),
                None => Ok(()),
            },
            EnginesAdded::Local { .. } | EnginesAdded::Batch(_) => Ok(()),
        }
    }
}
