//! `cluster start`: a controller and engines in the background, locally or over ssh.

use super::{secs, LaunchFlags, PortFlags, SettingFlags};
use crate::ctx::Ctx;
use crate::launch::{self, EngineLaunch, EngineProgram};
use crate::output::Report;
use anyhow::Result;
use std::path::PathBuf;

/// Start a controller and engines in the background; returns when the engines are ready.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Engines to start [default: engines setting, else the number of physical cores].
    #[arg(short = 'n', long = "engines", env = "CLUSTER_ENGINES")]
    pub n: Option<usize>,
    #[command(flatten)]
    pub settings: SettingFlags,
    #[command(flatten)]
    pub ports: PortFlags,
    /// Program to launch instead of the stock engine (called with `--file PATH`).
    #[arg(long, env = "CLUSTER_ENGINE_PROGRAM")]
    pub engine_program: Option<PathBuf>,
    /// Seconds to wait for the engines to register.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Print what was started as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub hosts: LaunchFlags,
    /// Start engines that die (killed, out of memory, a crash) again, with a back-off and a
    /// limit: local and ssh engines one by one, a Slurm job that fails as a whole: never,
    /// on-failure or always [default: `[restart] mode`, never].
    #[arg(long, value_name = "MODE")]
    pub restart: Option<String>,
    /// Move the task database aside (as `<file>.corrupt-<time>`) before starting, so the
    /// controller starts an empty one: for a database it refuses (corrupt, foreign, newer).
    #[arg(long)]
    pub db_reset: bool,
}

/// What `start` did, and hosts that failed (an error once the report is printed).
#[derive(Debug)]
pub enum Started {
    /// A local cluster.
    Local(launch::StartReport),
    /// A controller here and engines over ssh.
    Ssh(crate::ssh_start::SshStartReport),
    /// A controller here and engines in Slurm jobs or through mpiexec.
    Batch(launch::StartReport, crate::batch::Launched),
}

impl Report for Started {
    fn text(&self) -> String {
        match self {
            Started::Local(r) => r.text(),
            Started::Ssh(r) => r.text(),
            Started::Batch(r, b) => format!("{}{}", r.text(), b.text()),
        }
    }
    fn json(&self) -> serde_json::Value {
        match self {
            Started::Local(r) => r.json(),
            Started::Ssh(r) => r.json(),
            Started::Batch(r, b) => {
                let mut v = r.json();
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("launched".into(), b.json());
                }
                v
            }
        }
    }
}

impl Started {
    /// After printing: hosts that failed while others worked make the command fail.
    pub fn outcome(&self) -> Result<()> {
        match self {
            Started::Ssh(r) => match r.hosts.failure_message() {
                Some(msg) => Err(anyhow::anyhow!(msg)),
                None => Ok(()),
            },
            Started::Local(_) | Started::Batch(..) => Ok(()),
        }
    }
}

/// Starts the cluster.
pub fn run(args: Args, ctx: &Ctx) -> Result<Started> {
    let profile = ctx.create_profile()?;
    let mut overrides = args.settings.overrides();
    overrides.extend(args.ports.overrides());
    let settings = profile.settings(&overrides)?;
    if args.db_reset {
        let store = crate::controller_process::store_config(&profile, &settings)?;
        if let Some(aside) = store::Store::reset(&store)? {
            eprintln!(
                "moved the task database {} aside to {}",
                store.path.display(),
                aside.display()
            );
        }
    }
    let restart = super::scale::restart_policy(&profile, args.restart.as_deref())?;
    if args.hosts.ssh() {
        let hosts = args.hosts.hosts(&settings, args.n)?;
        let launch = args.hosts.ssh_launch(&profile, &settings, args.timeout)?;
        let report = crate::ssh_start::start(&profile, &overrides, &launch, &hosts)?;
        supervise(&profile, &restart, args.hosts.copy_binary)?;
        return Ok(Started::Ssh(report));
    }
    if let Some(kind) = args.hosts.batch() {
        let started = start_batch(args, &profile, &overrides, &settings, kind);
        // Jobs still pending (exit status 5) stay queued: their engines are watched too.
        let pending =
            matches!(&started, Err(e) if e.downcast_ref::<crate::exit::NotFinished>().is_some());
        if started.is_ok() || pending {
            supervise(&profile, &restart, false)?;
        }
        return started;
    }
    let n = args.n.unwrap_or(if settings.engines > 0 {
        settings.engines
    } else {
        launch::physical_cores()
    });
    let engines = EngineLaunch {
        count: n,
        program: EngineProgram::from_flag(args.engine_program),
        timeout: secs(args.timeout)?,
    };
    let report = launch::start(&profile, &overrides, &engines)
        .map_err(|e| launch::start_failed(e, &profile))?;
    supervise(&profile, &restart, false)?;
    if settings.dashboard {
        let record = super::dashboard::spawn_for_start(&profile, settings.dashboard_port)?;
        // On stderr: the start report's shape stays as it is.
        eprintln!("dashboard: {} (pid {})", record.url, record.pid);
    }
    Ok(Started::Local(report))
}

/// With a restart mode, the supervisor that starts dead engines again (local, ssh, Slurm).
fn supervise(
    profile: &profiles::Profile,
    restart: &launcher::restart::RestartPolicy,
    copied_binary: bool,
) -> Result<()> {
    if restart.mode == launcher::restart::Mode::Never {
        return Ok(());
    }
    let mode = crate::scale::mode_name(restart.mode);
    let mut flags = vec!["--watch-only".to_owned(), format!("--restart={mode}")];
    if copied_binary {
        flags.push("--ssh-copied-binary".into());
    }
    let pid = crate::scale::spawn(profile, &flags)?;
    eprintln!("engines that die are started again (restart = {mode:?}; supervisor pid {pid})");
    Ok(())
}

/// `--launcher slurm|mpi`: the controller here first, then the engines through the launcher.
/// Jobs still pending are left queued (exit status 5, and the reason); any other failure
/// stops what was started.
fn start_batch(
    args: Args,
    profile: &profiles::Profile,
    overrides: &[(&str, String)],
    settings: &profiles::Settings,
    kind: crate::batch::Kind,
) -> Result<Started> {
    let n = args.n.unwrap_or(if settings.engines > 0 {
        settings.engines
    } else {
        1
    });
    let timeout = secs(args.timeout)?;
    // No local engines; the program is recorded for `cluster engines`.
    let controller = EngineLaunch {
        count: 0,
        program: EngineProgram::from_flag(args.engine_program.clone()),
        timeout,
    };
    let mut report = launch::start(profile, overrides, &controller)?;
    let launched = crate::batch::add_engines(
        profile,
        settings,
        kind,
        n,
        args.hosts.jobs,
        args.engine_program,
        timeout,
        0,
    );
    match launched {
        Ok(b) => {
            report.engines_ready = b.registered;
            report.seconds += b.seconds;
            Ok(Started::Batch(report, b))
        }
        Err(e) if e.downcast_ref::<crate::exit::NotFinished>().is_some() => Err(e),
        Err(e) => {
            crate::batch::stop(profile);
            let _ = launch::stop(profile, std::time::Duration::from_secs(2));
            Err(e)
        }
    }
}
