//! One module per command: its clap `Args` and a `run(args, &Ctx)` that returns the report
//! the dispatcher prints (see [`crate::output`]). The option groups several commands share
//! are here.

pub mod bench;
pub mod call;
pub mod controller;
pub mod dashboard;
pub mod demo;
pub mod engine;
pub mod engines;
pub mod history;
pub mod map;
pub mod ns;
pub mod profile;
pub mod purge;
pub mod queue;
pub mod result;
pub mod scale;
pub mod start;
pub mod status;
pub mod stop;
pub mod submit;
pub mod top;
pub mod wait;

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// Seconds from a flag as a duration.
pub fn secs(s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| anyhow::anyhow!("{s} is not a valid number of seconds"))
}

/// Where a client command connects.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// Client connection file to use instead of the profile's security/client.json.
    #[arg(long, env = "CLUSTER_CLIENT_FILE")]
    pub file: Option<PathBuf>,
    /// Seconds to wait for the controller to answer [default: connect_timeout_s setting, 10].
    #[arg(long)]
    pub connect_timeout: Option<f64>,
}

/// Options of submitted tasks.
#[derive(Args, Debug, Clone)]
pub struct TaskFlags {
    /// Seconds: how long to wait for the result(s) of functions (default: no limit); for
    /// commands, the run-time limit on the engine (the program is killed at it).
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Engine ids allowed to run the task(s), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<u32>,
    /// Re-runs on another engine if the task fails or its engine dies.
    #[arg(long, default_value_t = 0)]
    pub retries: u32,
    /// Run only after these tasks (ids like 3:17, comma-separated) finished successfully.
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub after: Vec<protocol::TaskId>,
    /// Run on the engine where these tasks (ids like 3:17) ran, once they finished.
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub follow: Vec<protocol::TaskId>,
}

impl TaskFlags {
    /// The engines of `--targets`.
    pub fn target_ids(&self) -> Vec<protocol::EngineId> {
        self.targets
            .iter()
            .map(|t| protocol::EngineId(*t))
            .collect()
    }

    /// A load-balanced view with these options (for functions).
    pub fn view(&self, client: &client::Client) -> client::LoadBalancedView {
        let mut view = client.load_balanced_view().retries(self.retries);
        let ids = self.target_ids();
        if !ids.is_empty() {
            view = view.targets(&ids);
        }
        if !self.after.is_empty() {
            view = view.after(&self.after);
        }
        if !self.follow.is_empty() {
            view = view.follow(&self.follow);
        }
        view
    }

    /// `--timeout` as a duration.
    pub fn timeout(&self) -> Result<Option<Duration>> {
        self.timeout.map(secs).transpose()
    }
}

/// Options of command tasks (`map --`, `submit`).
#[derive(Args, Debug, Clone)]
pub struct CommandFlags {
    /// Working directory of the command on the engine.
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// Environment variable for the command: K=V, or K to pass on this shell's value.
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Run the command line with `sh -c` (values are quoted). Automatic when the command is
    /// one word holding spaces, like 'sort {} | uniq -c'.
    #[arg(long)]
    pub shell: bool,
}

impl CommandFlags {
    /// Shell mode: asked for, or a one-word command line holding spaces (`'sort {} | uniq'`).
    pub fn shell_mode(&self, words: &[String]) -> bool {
        self.shell || (words.len() == 1 && words[0].contains(char::is_whitespace))
    }

    /// The options of the command tasks, with the task flags.
    pub fn options(&self, task: &TaskFlags) -> Result<crate::tasks::CommandOptions> {
        Ok(crate::tasks::CommandOptions {
            timeout: task.timeout()?,
            retries: task.retries,
            targets: task.target_ids(),
            cwd: self.cwd.clone(),
            env: crate::tasks::parse_env(&self.env)?,
        })
    }
}

/// Settings a flag can override (each also has a CLUSTER_* twin and a cluster.toml key).
#[derive(Args, Debug, Default, Clone)]
pub struct SettingFlags {
    /// Address the controller listens on.
    #[arg(long, env = "CLUSTER_IP")]
    pub ip: Option<String>,
    /// Scheduler: lru, plainrandom, twobin, leastload (the default) or weighted.
    #[arg(long, env = "CLUSTER_SCHEDULER")]
    pub scheduler: Option<String>,
    /// Outstanding tasks per engine: auto, or a number (0 = unlimited).
    #[arg(long, env = "CLUSTER_HWM")]
    pub hwm: Option<String>,
}

impl SettingFlags {
    /// The flags given, as setting overrides.
    pub fn overrides(&self) -> Vec<(&'static str, String)> {
        [
            ("ip", &self.ip),
            ("scheduler", &self.scheduler),
            ("hwm", &self.hwm),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.clone()?)))
        .collect()
    }
}

/// Fixed ports of the controller (`start` passes them on to the controller it launches).
#[derive(Args, Debug, Default, Clone)]
pub struct PortFlags {
    /// Port for engines (0 = free).
    #[arg(long, env = "CLUSTER_ENGINE_PORT")]
    pub engine_port: Option<u16>,
    /// Port for clients (0 = free).
    #[arg(long, env = "CLUSTER_CLIENT_PORT")]
    pub client_port: Option<u16>,
    /// Port for heartbeats (0 = free).
    #[arg(long, env = "CLUSTER_HEARTBEAT_PORT")]
    pub heartbeat_port: Option<u16>,
    /// Port for notifications (0 = free).
    #[arg(long, env = "CLUSTER_NOTIFY_PORT")]
    pub notify_port: Option<u16>,
}

impl PortFlags {
    /// The ports given, as setting overrides.
    pub fn overrides(&self) -> Vec<(&'static str, String)> {
        [
            ("engine_port", self.engine_port),
            ("client_port", self.client_port),
            ("heartbeat_port", self.heartbeat_port),
            ("notify_port", self.notify_port),
        ]
        .into_iter()
        .filter_map(|(k, p)| Some((k, p?.to_string())))
        .collect()
    }
}

/// Where engines run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Launcher {
    /// On this machine.
    #[default]
    Local,
    /// On other machines, started over ssh.
    Ssh,
    /// In Slurm jobs (`[slurm]` in cluster.toml: partition, account, time…).
    Slurm,
    /// Through `mpiexec -n N` (Open MPI or MPICH; `[mpi]` in cluster.toml).
    Mpi,
}

/// Where `start` and `engines` put engines.
#[derive(Args, Debug, Clone)]
pub struct LaunchFlags {
    /// Where engines run: local, ssh (on --hosts / --hostfile / the [ssh] hosts setting),
    /// slurm (jobs, see [slurm]) or mpi (mpiexec, see [mpi]).
    #[arg(long, value_enum, default_value_t = Launcher::Local, env = "CLUSTER_LAUNCHER")]
    pub launcher: Launcher,
    /// ssh hosts as HOST[:ENGINES],… (`node1:4,node2:4`; user@host works too); implies
    /// `--launcher ssh`.
    #[arg(long, value_name = "HOSTS")]
    pub hosts: Option<String>,
    /// File of ssh hosts, one a line: `host`, `host:4`, `host 4` or `host slots=4`; implies
    /// `--launcher ssh`.
    #[arg(long, value_name = "FILE")]
    pub hostfile: Option<PathBuf>,
    /// Send this machine's cluster binary to each host (same system and architecture) and
    /// run that, instead of the `cluster_path` of [ssh].
    #[arg(long)]
    pub copy_binary: bool,
    /// With `--launcher slurm`: split the engines into this many jobs [default: the jobs
    /// setting of [slurm], 1].
    #[arg(long, value_name = "K")]
    pub jobs: Option<usize>,
}

impl LaunchFlags {
    /// The batch launcher asked for, if any.
    pub fn batch(&self) -> Option<crate::batch::Kind> {
        match self.launcher {
            Launcher::Slurm => Some(crate::batch::Kind::Slurm),
            Launcher::Mpi => Some(crate::batch::Kind::Mpi),
            _ => None,
        }
    }

    /// Engines go over ssh: asked for, or implied by a host list.
    pub fn ssh(&self) -> bool {
        self.launcher == Launcher::Ssh || self.hosts.is_some() || self.hostfile.is_some()
    }

    /// The hosts and their engine counts (`total` spread over them when given).
    pub fn hosts(
        &self,
        settings: &profiles::Settings,
        total: Option<usize>,
    ) -> Result<Vec<(String, usize)>> {
        let specs = crate::ssh_start::host_specs(
            self.hosts.as_deref(),
            self.hostfile.as_deref(),
            settings,
        )?;
        crate::ssh::assign_counts(&specs, total)
    }

    /// How to reach the hosts.
    pub fn ssh_launch(
        &self,
        profile: &profiles::Profile,
        settings: &profiles::Settings,
        timeout: f64,
    ) -> Result<crate::ssh::SshLaunch> {
        Ok(crate::ssh::SshLaunch {
            settings: settings.ssh.clone(),
            profile: profile.name().to_owned(),
            copy_binary: self.copy_binary,
            timeout: secs(timeout)?,
        })
    }
}
