//! Profile folders, settings and run state.
//!
//! A profile is a folder `<root>/profile_<name>/` where `<root>` is `$CLUSTER_DIR` or
//! `~/.cluster`:
//!
//! ```text
//! cluster.toml        settings, written with commented defaults by `cluster profile create`
//! security/  (0700)   client.json and engine.json, the connection files (0600)
//! log/                controller.log, engine-<id>.log (by engine id; the previous file of
//!                     each name kept as .1, at most 64 engine logs in all; see the CLI's
//!                     launch.rs)
//! run/                controller.json, engine-<pid>.json (engine-<host>-<pid>.json for
//!                     engines on other hosts) and ssh-<host>.json: what `cluster stop` must
//!                     stop; launch.json: the engine program `cluster start` used;
//!                     submitted.jsonl: tasks `cluster submit` sent
//! ```
//!
//! [`Settings`] resolve as built-in defaults < `cluster.toml` < `CLUSTER_*` environment <
//! command-line flags (given to [`Profile::settings`] as overrides).

use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// Problems with profiles and their files.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The named profile has no folder.
    #[error("profile {name:?} does not exist at {dir}; create it with `cluster profile create {name}` (or `cluster start`, which creates it)")]
    NotFound {
        /// Profile name.
        name: String,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// The name has characters that do not belong in a folder name.
    #[error("invalid profile name {0:?}: use letters, digits, '-', '_' and '.'")]
    BadName(String),
    /// A file or folder could not be made or read.
    #[error("{path}: {error}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error (in the message, so not also a `source()`: a printed chain says it once).
        error: std::io::Error,
    },
    /// `cluster.toml` or the environment holds an invalid setting.
    #[error("invalid settings (from {file}, CLUSTER_* variables or flags): {message}")]
    Settings {
        /// The settings file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A run-state file is not valid JSON.
    #[error("run-state file {path} is corrupt: {message}")]
    CorruptState {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ProfileError + '_ {
    move |error| ProfileError::Io {
        path: path.to_owned(),
        error,
    }
}

/// The folder holding all profiles: `$CLUSTER_DIR`, else `~/.cluster`.
pub fn root() -> PathBuf {
    if let Some(dir) = std::env::var_os("CLUSTER_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cluster")
}

/// Settings of a cluster, after layering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Address the controller listens on.
    pub ip: String,
    /// Port of the engine socket (0: a free one).
    pub engine_port: u16,
    /// Port of the heartbeat socket (0: a free one).
    pub heartbeat_port: u16,
    /// Port of the client socket (0: a free one).
    pub client_port: u16,
    /// Port of the notification socket (0: a free one).
    pub notify_port: u16,
    /// Scheduler name.
    pub scheduler: String,
    /// Outstanding tasks per engine: `auto`, or a number (0 = unlimited).
    pub hwm: String,
    /// Heartbeat period in milliseconds.
    pub heartbeat_period_ms: u64,
    /// Heartbeats an engine may miss before it is declared dead.
    pub heartbeat_misses: u32,
    /// Messages stamped further than this from the receiver's clock are refused as replays
    /// (seconds, 0 = no time limit); written into the connection files for every peer.
    pub replay_window_s: u64,
    /// Encrypt message bodies (AES-256-GCM under a key derived from the cluster key); written into the
    /// connection files for every peer.
    pub encrypt: bool,
    /// Seconds a client waits for the controller to answer before giving up.
    pub connect_timeout_s: f64,
    /// Engines `cluster start` launches when `-n` is not given (0: physical cores).
    pub engines: usize,
    /// Program launched for engines instead of the stock `cluster engine`.
    pub engine_program: Option<String>,
    /// Python interpreter of the engines' Python tasks (default `python3`); it needs
    /// cloudpickle. Local engines get it as `CLUSTER_PYTHON`.
    pub python: Option<String>,
    /// Seconds `cluster stop` waits after SIGTERM before SIGKILL.
    pub stop_grace_s: f64,
    /// `cluster start` also runs `cluster dashboard` (stopped by `cluster stop`).
    pub dashboard: bool,
    /// The TCP port of the dashboard `cluster start` runs (0 picks a free one).
    pub dashboard_port: u16,
    /// Task store: `sqlite` (records and results on disk, the default), `memory` (the same
    /// rules, in memory) or `none` (results in the controller's memory until purged).
    pub db: String,
    /// The SQLite file (default `<profile>/db/tasks.db`).
    pub db_path: Option<String>,
    /// Longest time between commits of the store (`100ms`).
    pub db_commit_interval: String,
    /// Results (and arguments) larger than this keep their size only in the store.
    pub store_payload_max_bytes: String,
    /// Memory (MiB) for recent results in the controller; older ones are read from the store.
    pub result_cache_mb: u64,
    /// Records older than this are deleted (`7d`, `12h`; empty: kept until purged).
    pub retention: String,
    /// Oldest records are deleted past this database size in MiB (0: no limit).
    pub max_db_mb: u64,
    /// Bytes one shared object (queue, namespace) may hold (`64mb`; a bare number is bytes).
    pub object_max_bytes: String,
    /// Bytes all shared objects together may hold (`256mb`).
    pub objects_max_bytes: String,
    /// Shared objects that may exist at once.
    pub objects_max: u64,
    /// How to reach other machines for `--launcher ssh` (the `[ssh]` table).
    pub ssh: SshSettings,
}

/// The `[ssh]` table of `cluster.toml`: engines on other machines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SshSettings {
    /// Hosts as `HOST` or `HOST:ENGINES` (`[user@]host`), used when `--hosts` and
    /// `--hostfile` are not given.
    pub hosts: Vec<String>,
    /// Remote user (default: ssh's own default).
    pub user: Option<String>,
    /// Remote ssh port (default: ssh's own default, 22).
    pub port: Option<u16>,
    /// Private key file (`ssh -i`).
    pub identity_file: Option<String>,
    /// Extra ssh options, each given as `-o OPTION` (`StrictHostKeyChecking=accept-new`).
    pub options: Vec<String>,
    /// The `cluster` program on the remote hosts: a path, or a name looked up in the remote
    /// `PATH`.
    pub cluster_path: String,
    /// Folder on the remote hosts for the engine connection file, logs and a copied binary
    /// (relative paths start in the remote home; default `.cluster/remote/<profile>`).
    pub remote_dir: Option<String>,
    /// Address of this machine that the hosts can reach, written into the engine connection
    /// file when the controller listens on every interface (0.0.0.0). Default: the address the
    /// host sees the ssh connection come from.
    pub controller_address: Option<String>,
    /// Seconds ssh may take to connect to a host.
    pub connect_timeout_s: u64,
}

impl Default for SshSettings {
    fn default() -> Self {
        SshSettings {
            hosts: Vec::new(),
            user: None,
            port: None,
            identity_file: None,
            options: Vec::new(),
            cluster_path: "cluster".into(),
            remote_dir: None,
            controller_address: None,
            connect_timeout_s: 10,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ip: "127.0.0.1".into(),
            engine_port: 0,
            heartbeat_port: 0,
            client_port: 0,
            notify_port: 0,
            scheduler: "leastload".into(),
            hwm: "auto".into(),
            heartbeat_period_ms: 1000,
            heartbeat_misses: 3,
            replay_window_s: 300,
            encrypt: true,
            connect_timeout_s: 10.0,
            engines: 0,
            engine_program: None,
            python: None,
            stop_grace_s: 5.0,
            dashboard: false,
            dashboard_port: 8787,
            db: "sqlite".into(),
            db_path: None,
            db_commit_interval: "100ms".into(),
            store_payload_max_bytes: "1048576".into(),
            result_cache_mb: 32,
            retention: String::new(),
            max_db_mb: 0,
            object_max_bytes: "64mb".into(),
            objects_max_bytes: "256mb".into(),
            objects_max: 100_000,
            ssh: SshSettings::default(),
        }
    }
}

/// `cluster.toml` as `cluster profile create` writes it: every setting, commented, at its
/// default.
pub const DEFAULT_CONFIG: &str = r#"# Settings of this cluster profile.
# Precedence: built-in defaults < this file < CLUSTER_* environment variables < flags.
# Uncomment a line to change it.

# Address the controller listens on. Use an address other machines can reach
# (or 0.0.0.0) when engines run elsewhere.
# ip = "127.0.0.1"

# Ports of the controller's sockets; 0 picks free ones each start.
# engine_port = 0
# heartbeat_port = 0
# client_port = 0
# notify_port = 0

# Load-balancing scheduler: lru, plainrandom, twobin, leastload or weighted.
# scheduler = "leastload"

# Tasks an engine may hold at once: "auto" (pipelines short tasks, one at a time for long
# ones), or a number (1: one at a time as in IPyparallel, 0: unlimited).
# hwm = "auto"

# Heartbeat period (ms) and heartbeats an engine may miss before it is declared dead.
# heartbeat_period_ms = 1000
# heartbeat_misses = 3

# Replay protection: messages stamped further than this many seconds from the receiver's clock
# are dropped (besides repeated sequence numbers). Raise it if the machines' clocks disagree
# by minutes; 0 turns the time check off.
# replay_window_s = 300

# Encrypt what messages carry (arguments, results, commands, their output) with a key derived
# from the cluster key. Turn off only on a network you trust, to save a little CPU.
# encrypt = true

# Seconds a client waits for the controller before giving up.
# connect_timeout_s = 10.0

# Engines `cluster start` launches without -n (0 = number of physical cores).
# engines = 0

# Program to launch instead of the stock engine (a binary built with the engine crate).
# engine_program = "/path/to/my-engine"

# Python interpreter that runs the engines' Python tasks (it needs cloudpickle).
# python = "python3"

# Seconds `cluster stop` waits after SIGTERM before SIGKILL.
# stop_grace_s = 5.0

# `cluster start` also runs the web dashboard (`cluster dashboard`) on this port of
# 127.0.0.1; `cluster status` shows its URL, `cluster stop` stops it.
# dashboard = false
# dashboard_port = 8787

# Task store: "sqlite" keeps every task's record and result in db_path (history, results
# after restarts, nothing lost when the controller dies); "memory" the same in memory;
# "none" keeps results in the controller's memory until purged.
# db = "sqlite"
# The database file (default: db/tasks.db in this profile's folder).
# db_path = "/path/to/tasks.db"
# Longest time between commits (a kill -9 loses at most this much).
# db_commit_interval = "100ms"
# Results and arguments larger than this keep their size only.
# store_payload_max_bytes = 1048576
# Memory (MiB) for recent results in the controller; older ones are read from the store.
# result_cache_mb = 32
# Delete records older than this ("7d", "12h"; empty: keep until `cluster purge`).
# retention = ""
# Delete the oldest records past this database size in MiB (0: no limit).
# max_db_mb = 0

# Shared objects (queues, namespaces, locks, semaphores, events in the controller): bytes one
# object may hold, bytes all of them may hold, and how many may exist. Past a limit a request
# is refused with a clear error. With db = "sqlite" queues, namespaces and events survive a
# controller restart; with "memory" or "none" they live in memory only.
# object_max_bytes = "64mb"
# objects_max_bytes = "256mb"
# objects_max = 100000

# Engines on other machines over ssh (`cluster start --launcher ssh`). The controller must
# listen on an address those machines reach (ip above, or --ip).
# [ssh]
# hosts = ["node1:4", "node2:4"]
# user = "me"
# port = 22
# identity_file = "~/.ssh/id_ed25519"
# options = ["StrictHostKeyChecking=accept-new"]
# cluster_path = "cluster"
# remote_dir = ".cluster/remote/default"
# controller_address = "10.0.0.5"
# connect_timeout_s = 10

# Engines in Slurm jobs (`cluster start --launcher slurm -n 16 [--jobs K]`). The controller
# must listen on an address the compute nodes reach (ip above, or --ip).
# [slurm]
# partition = "debug"
# account = "myproject"
# qos = "normal"
# time = "1:00:00"                  # wall-time limit of each job
# cpus_per_engine = 1
# memory = "4G"                     # per engine; plain numbers are MB
# jobs = 1                          # jobs the engines are split into
# signal = "USR1@60"                # engines drain and hand back their tasks 60 s before the limit
# options = ["--exclusive"]         # further sbatch options
# srun_options = []                 # further srun options of the engines' step
# job_name = "cluster-default"
# template_file = "job.sh"          # your own job script, with {n}, {srun}... placeholders
# conf = "/etc/slurm/slurm.conf"    # sets SLURM_CONF for the Slurm commands
# bin_dir = "/opt/slurm/bin"        # where sbatch, squeue, sacct, scancel are, if not in PATH
# poll_interval_ms = 1000

# Engines started by mpiexec (`cluster start --launcher mpi -n 4`); each records its rank.
# [mpi]
# mpiexec = "mpiexec"               # or mpiexec.mpich, /opt/openmpi/bin/mpirun
# flavor = "auto"                   # auto, openmpi or mpich
# hostfile = "hosts.txt"
# options = []

# Autoscaling (`cluster scale`): local engines started when tasks wait and none is free,
# released when idle.
# [scale]
# min = 0
# max = 16
# backlog = 2                       # launches whose engines have not registered yet, at most
# idle_timeout_s = 300
# backoff_s = [1, 10, 60, 300, 900] # waits after failed starts in a row
# max_failures = 10                 # failed starts in a row that pause starting
# interval_ms = 1000

# Engines that die are started again (`cluster start --restart on-failure`): local engines,
# by the supervisor that flag starts (or `cluster scale --restart on-failure`).
# [restart]
# mode = "never"                    # never, on-failure or always
# limit = 5                         # restarts allowed within window_s: a crash loop ends
# window_s = 600
# backoff_initial_ms = 500          # doubles with each quick death
# backoff_max_ms = 60000
# stable_after_s = 60               # running this long resets the back-off
"#;

/// What `cluster start` records about the controller it launched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerRecord {
    /// Process id.
    pub pid: u32,
    /// Host it runs on.
    pub host: String,
    /// Microseconds since the epoch when it was launched.
    pub started_us: u64,
}

/// What `cluster start` / `cluster engines` record about each engine they launched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineRecord {
    /// Process id (on `host`).
    pub pid: u32,
    /// Host it runs on.
    pub host: String,
    /// How it was launched (`local`).
    pub launcher: String,
    /// Its log file.
    pub log: PathBuf,
}

/// What `cluster start` records about how it launched engines (file `run/launch.json`), so
/// that `cluster engines` adds engines of the same kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchRecord {
    /// The engine program (an absolute path, or a name looked up in `PATH`); `None`: the stock
    /// engine (`cluster engine`).
    #[serde(default)]
    pub engine_program: Option<PathBuf>,
}

/// How `cluster stop` reaches a host whose engines `cluster start --launcher ssh` started
/// (file `run/ssh-<host>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshHostRecord {
    /// The ssh destination as given (`[user@]host`).
    pub destination: String,
    /// The ssh options used (everything between `ssh` and the destination).
    pub ssh_args: Vec<String>,
    /// The remote folder holding the engine file and logs.
    pub remote_dir: String,
    /// The host's own name (`uname -n`), as its engines report it.
    pub hostname: String,
    /// Pids of the engines started there.
    pub pids: Vec<u32>,
}

/// One profile folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    name: String,
    dir: PathBuf,
}

fn check_name(name: &str) -> Result<(), ProfileError> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ProfileError::BadName(name.to_owned()))
    }
}

/// The folder holding all profiles (`~/.cluster`, `$CLUSTER_DIR`, or any folder given), and
/// the profiles in it. A program that takes the folder from a flag uses [`Profiles::at`]
/// rather than setting `CLUSTER_DIR` for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profiles {
    root: PathBuf,
}

impl Profiles {
    /// The profiles under `root`.
    pub fn at(root: impl Into<PathBuf>) -> Profiles {
        Profiles { root: root.into() }
    }

    /// The profiles under [`root`]: `$CLUSTER_DIR`, else `~/.cluster`.
    pub fn from_env() -> Profiles {
        Profiles::at(root())
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The profile `name`, whether or not it exists.
    pub fn profile(&self, name: &str) -> Result<Profile, ProfileError> {
        Profile::in_root(&self.root, name)
    }

    /// Opens an existing profile.
    pub fn open(&self, name: &str) -> Result<Profile, ProfileError> {
        let profile = self.profile(name)?;
        if !profile.dir.is_dir() {
            return Err(ProfileError::NotFound {
                name: name.to_owned(),
                dir: profile.dir,
            });
        }
        Ok(profile)
    }

    /// Creates the profile's folders and `cluster.toml` (kept if present); safe to repeat.
    pub fn create(&self, name: &str) -> Result<Profile, ProfileError> {
        let profile = self.profile(name)?;
        profile.ensure()?;
        Ok(profile)
    }

    /// All profiles, by name.
    pub fn list(&self) -> Result<Vec<Profile>, ProfileError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(ProfileError::Io {
                    path: self.root.clone(),
                    error: e,
                })
            }
        };
        let mut out: Vec<Profile> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| {
                let name = e
                    .file_name()
                    .to_string_lossy()
                    .strip_prefix("profile_")?
                    .to_owned();
                Profile::in_root(&self.root, &name).ok()
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

impl Profile {
    /// The profile `name` under [`root`], whether or not it exists.
    pub fn at(name: &str) -> Result<Profile, ProfileError> {
        Profiles::from_env().profile(name)
    }

    /// The profile `name` under `root`, whether or not it exists.
    pub fn in_root(root: &Path, name: &str) -> Result<Profile, ProfileError> {
        check_name(name)?;
        Ok(Profile {
            name: name.to_owned(),
            dir: root.join(format!("profile_{name}")),
        })
    }

    /// Opens an existing profile under [`root`] (see [`Profiles::open`] for another folder).
    pub fn open(name: &str) -> Result<Profile, ProfileError> {
        Profiles::from_env().open(name)
    }

    /// Creates the profile's folders and `cluster.toml` under [`root`] (kept if present);
    /// safe to repeat.
    pub fn create(name: &str) -> Result<Profile, ProfileError> {
        Profiles::from_env().create(name)
    }

    /// Makes any missing folder or file of this profile, and sets `security/` to 0700.
    pub fn ensure(&self) -> Result<(), ProfileError> {
        use std::os::unix::fs::PermissionsExt;
        for dir in [
            self.dir.clone(),
            self.security_dir(),
            self.log_dir(),
            self.run_dir(),
        ] {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        let sec = self.security_dir();
        fs::set_permissions(&sec, fs::Permissions::from_mode(0o700)).map_err(io_err(&sec))?;
        let cfg = self.config_file();
        if !cfg.exists() {
            fs::write(&cfg, DEFAULT_CONFIG).map_err(io_err(&cfg))?;
        }
        Ok(())
    }

    /// All profiles under [`root`], by name.
    pub fn list() -> Result<Vec<Profile>, ProfileError> {
        Profiles::from_env().list()
    }

    /// The profile's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The profile's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// `security/`.
    pub fn security_dir(&self) -> PathBuf {
        self.dir.join("security")
    }
    /// `log/`.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("log")
    }
    /// `run/`.
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    /// `cluster.toml`.
    pub fn config_file(&self) -> PathBuf {
        self.dir.join("cluster.toml")
    }
    /// `security/client.json`.
    pub fn client_file(&self) -> PathBuf {
        self.security_dir().join("client.json")
    }
    /// `security/engine.json`.
    pub fn engine_file(&self) -> PathBuf {
        self.security_dir().join("engine.json")
    }
    /// `db/tasks.db`: the task store's default database.
    pub fn db_file(&self) -> PathBuf {
        self.dir.join("db").join("tasks.db")
    }
    /// `run/controller.json`.
    pub fn controller_record_file(&self) -> PathBuf {
        self.run_dir().join("controller.json")
    }

    /// Resolves settings: defaults < `cluster.toml` < `CLUSTER_*` environment < `overrides`
    /// (flags, as setting name and value).
    pub fn settings(&self, overrides: &[(&str, String)]) -> Result<Settings, ProfileError> {
        let file = self.config_file();
        let bad = |e: config::ConfigError| ProfileError::Settings {
            file: file.clone(),
            message: e.to_string(),
        };
        let mut builder = config::Config::builder()
            .add_source(
                config::File::from(file.as_path())
                    .format(config::FileFormat::Toml)
                    .required(false),
            )
            .add_source(config::Environment::with_prefix("CLUSTER").try_parsing(true));
        for (key, value) in overrides {
            builder = builder.set_override(*key, value.as_str()).map_err(bad)?;
        }
        builder.build().map_err(bad)?.try_deserialize().map_err(bad)
    }

    /// Records the launched controller.
    pub fn write_controller_record(&self, record: &ControllerRecord) -> Result<(), ProfileError> {
        write_json(&self.controller_record_file(), record)
    }

    /// The recorded controller, if any.
    pub fn controller_record(&self) -> Result<Option<ControllerRecord>, ProfileError> {
        read_json(&self.controller_record_file())
    }

    /// `run/launch.json`.
    pub fn launch_record_file(&self) -> PathBuf {
        self.run_dir().join("launch.json")
    }

    /// Records how `cluster start` launched engines.
    pub fn write_launch_record(&self, record: &LaunchRecord) -> Result<(), ProfileError> {
        write_json(&self.launch_record_file(), record)
    }

    /// How the running cluster's engines were launched, if `cluster start` recorded it.
    pub fn launch_record(&self) -> Result<Option<LaunchRecord>, ProfileError> {
        read_json(&self.launch_record_file())
    }

    /// Records a launched engine (file `run/engine-<pid>.json`).
    pub fn write_engine_record(&self, record: &EngineRecord) -> Result<(), ProfileError> {
        write_json(
            &self.run_dir().join(format!("engine-{}.json", record.pid)),
            record,
        )
    }

    /// `run/submitted.jsonl`: tasks sent by `cluster submit`, for `cluster wait`.
    pub fn submitted_file(&self) -> PathBuf {
        self.run_dir().join("submitted.jsonl")
    }

    /// Records an engine launched on another host (file `run/engine-<host>-<pid>.json`, so
    /// that equal pids on different hosts do not collide).
    pub fn write_remote_engine_record(&self, record: &EngineRecord) -> Result<(), ProfileError> {
        write_json(
            &self.run_dir().join(format!(
                "engine-{}-{}.json",
                file_safe(&record.host),
                record.pid
            )),
            record,
        )
    }

    /// Records how to reach an ssh host (file `run/ssh-<destination>.json`).
    pub fn write_ssh_host_record(&self, record: &SshHostRecord) -> Result<(), ProfileError> {
        write_json(
            &self
                .run_dir()
                .join(format!("ssh-{}.json", file_safe(&record.destination))),
            record,
        )
    }

    /// All recorded ssh hosts.
    pub fn ssh_host_records(&self) -> Result<Vec<SshHostRecord>, ProfileError> {
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(self.run_dir()) else {
            return Ok(out);
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("ssh-") && name.ends_with(".json") {
                if let Some(record) = read_json::<SshHostRecord>(&entry.path())? {
                    out.push(record);
                }
            }
        }
        out.sort_by(|a, b| a.destination.cmp(&b.destination));
        Ok(out)
    }

    /// All recorded engines with the files that hold them.
    pub fn engine_records(&self) -> Result<Vec<(PathBuf, EngineRecord)>, ProfileError> {
        let dir = self.run_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(ProfileError::Io {
                    path: dir,
                    error: e,
                })
            }
        };
        let mut out = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("engine-") && name.ends_with(".json") {
                if let Some(record) = read_json::<EngineRecord>(&path)? {
                    out.push((path, record));
                }
            }
        }
        out.sort_by_key(|(_, r)| r.pid);
        Ok(out)
    }

    /// Removes run state and connection files (after a stop).
    pub fn clear_run_state(&self) -> Result<(), ProfileError> {
        let dir = self.run_dir();
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.filter_map(Result::ok) {
                let _ = fs::remove_file(entry.path());
            }
        }
        for f in [self.client_file(), self.engine_file()] {
            match fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ProfileError::Io { path: f, error: e }),
            }
        }
        Ok(())
    }
}

/// `name` with every character that does not belong in a file name replaced by `_`.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ProfileError> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(value).expect("records serialise");
    fs::write(&tmp, text).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, ProfileError> {
    match fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ProfileError::CorruptState {
                path: path.to_owned(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ProfileError::Io {
            path: path.to_owned(),
            error: e,
        }),
    }
}

/// True when a process with this pid exists on this machine (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let exists = unsafe { libc::kill(pid as i32, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    // A zombie (exited, not yet reaped by its parent) counts as gone.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_makes_folders_with_modes_and_commented_config() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let p = Profile::in_root(root.path(), "demo").unwrap();
        p.ensure().unwrap();
        assert!(p.log_dir().is_dir() && p.run_dir().is_dir());
        let mode = fs::metadata(p.security_dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let text = fs::read_to_string(p.config_file()).unwrap();
        assert!(text.contains("# hwm = \"auto\""));
        // Every commented default parses back to the built-in defaults.
        let uncommented: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                // Each table's keys stay in their table ([ssh], [slurm], [mpi], [scale]...).
                (l.starts_with('[') && l.ends_with(']'))
                    || l.split_once(" = ")
                        .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let parsed: Settings = config::Config::builder()
            .add_source(config::File::from_str(
                &uncommented,
                config::FileFormat::Toml,
            ))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        let expected = Settings {
            engine_program: Some("/path/to/my-engine".into()),
            python: Some("python3".into()),
            db_path: Some("/path/to/tasks.db".into()),
            ssh: SshSettings {
                hosts: vec!["node1:4".into(), "node2:4".into()],
                user: Some("me".into()),
                port: Some(22),
                identity_file: Some("~/.ssh/id_ed25519".into()),
                options: vec!["StrictHostKeyChecking=accept-new".into()],
                remote_dir: Some(".cluster/remote/default".into()),
                controller_address: Some("10.0.0.5".into()),
                ..SshSettings::default()
            },
            ..Settings::default()
        };
        assert_eq!(parsed, expected);
    }

    #[test]
    fn layering_file_then_overrides() {
        let root = tempfile::tempdir().unwrap();
        let p = Profile::in_root(root.path(), "x").unwrap();
        p.ensure().unwrap();
        fs::write(
            p.config_file(),
            "hwm = \"4\"\nscheduler = \"leastload\"\nengine_port = 7000\n",
        )
        .unwrap();
        let s = p.settings(&[("engine_port", "7001".into())]).unwrap();
        assert_eq!(s.hwm, "4");
        assert_eq!(s.engine_port, 7001);
        assert_eq!(s.ip, "127.0.0.1");
        fs::write(p.config_file(), "engine_port = \"many\"\n").unwrap();
        let err = p.settings(&[]).unwrap_err().to_string();
        assert!(err.contains("cluster.toml"), "{err}");
    }

    #[test]
    fn profiles_live_in_the_folder_given() {
        let root = tempfile::tempdir().unwrap();
        let profiles = Profiles::at(root.path());
        assert!(matches!(
            profiles.open("a"),
            Err(ProfileError::NotFound { .. })
        ));
        let a = profiles.create("a").unwrap();
        assert_eq!(a.dir(), root.path().join("profile_a"));
        profiles.create("b").unwrap();
        let names: Vec<String> = profiles
            .list()
            .unwrap()
            .iter()
            .map(|p| p.name().to_owned())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(profiles.open("a").unwrap(), a);
    }

    #[test]
    fn names_are_checked() {
        assert!(Profile::in_root(Path::new("/tmp"), "../etc").is_err());
        assert!(Profile::in_root(Path::new("/tmp"), "").is_err());
        assert!(Profile::in_root(Path::new("/tmp"), "ok-name_1.2").is_ok());
    }

    #[test]
    fn run_records_round_trip() {
        let root = tempfile::tempdir().unwrap();
        let p = Profile::in_root(root.path(), "r").unwrap();
        p.ensure().unwrap();
        let rec = EngineRecord {
            pid: 42,
            host: "h".into(),
            launcher: "local".into(),
            log: "l".into(),
        };
        p.write_engine_record(&rec).unwrap();
        assert_eq!(p.engine_records().unwrap()[0].1, rec);
        assert_eq!(p.launch_record().unwrap(), None);
        let launch = LaunchRecord {
            engine_program: Some("/opt/my-engine".into()),
        };
        p.write_launch_record(&launch).unwrap();
        assert_eq!(p.launch_record().unwrap(), Some(launch));
        // The launch record is not an engine record.
        assert_eq!(p.engine_records().unwrap().len(), 1);
        p.clear_run_state().unwrap();
        assert!(p.engine_records().unwrap().is_empty());
        assert_eq!(p.launch_record().unwrap(), None);
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(0));
    }

    /// Regression: the I/O error was in the message and again its `source()`.
    #[test]
    fn io_errors_say_their_cause_once() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("file");
        fs::write(&file, "").unwrap();
        let err = Profile::in_root(&file, "p").unwrap().ensure().unwrap_err();
        assert!(std::error::Error::source(&err).is_none());
        assert_eq!(
            err.to_string(),
            format!(
                "{}: Not a directory (os error 20)",
                file.join("profile_p").display()
            )
        );
    }
}
