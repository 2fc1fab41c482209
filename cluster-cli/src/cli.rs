//! The `cluster` command line: argument parsing, dispatch and exit codes, as a library so
//! that another program (the Python wheel's `python -m ferrocluster`) can run the whole CLI
//! through [`main_with`].

use crate::{
    args, bench_commands, bench_controller, demo, interrupt, launch, render, ssh, tasks, template,
};
use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};
use profiles::Profile;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Exit codes that mean something to scripts.
mod exit {
    /// A task failed on an engine (remote error, unknown function, engine lost).
    pub const TASK_FAILED: u8 = 3;
    /// The controller cannot be reached, or its connection file is missing or bad.
    pub const NO_CONTROLLER: u8 = 4;
    /// A wait ran out of time.
    pub const TIMEOUT: u8 = 5;
}

#[derive(Parser, Debug)]
#[command(
    name = "cluster",
    version,
    about = "An IPyparallel-style compute cluster: a controller, engines, and load-balanced tasks",
    after_help = "Exit status: 0 success, 1 error, 2 usage, 3 a task failed, 4 controller unreachable or connection file bad, 5 timeout.\nLogs: CLUSTER_LOG=debug (or RUST_LOG) sets the log level."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct Global {
    /// Profile to use (folder <cluster dir>/profile_<NAME>).
    #[arg(
        long,
        global = true,
        env = "CLUSTER_PROFILE",
        default_value = "default"
    )]
    profile: String,
    /// Folder holding the profiles [default: ~/.cluster].
    #[arg(long, global = true, env = "CLUSTER_DIR", value_name = "DIR")]
    cluster_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create, list and locate profiles.
    #[command(subcommand)]
    Profile(ProfileCmd),
    /// Start a controller and engines in the background; returns when the engines are ready.
    Start(StartArgs),
    /// Stop everything this profile started (shutdown request, then SIGTERM, then SIGKILL).
    Stop {
        /// Seconds to wait after SIGTERM before SIGKILL [default: stop_grace_s setting, 5].
        #[arg(long)]
        grace: Option<f64>,
        /// Print what was stopped as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the controller, its engines, task counts and dropped messages.
    Status {
        #[command(flatten)]
        conn: Conn,
        /// One JSON object, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Add local engines to the running cluster.
    Engines {
        /// Engines to add [default: 1 locally; over ssh, the host list's counts].
        #[arg(short = 'n', long = "engines")]
        n: Option<usize>,
        #[command(flatten)]
        hosts: LaunchFlags,
        /// Program to launch instead of the stock engine (called with `--file PATH`).
        #[arg(long, env = "CLUSTER_ENGINE_PROGRAM")]
        engine_program: Option<PathBuf>,
        /// Seconds to wait for them to register.
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
    },
    /// Run one task and print its result.
    Call {
        /// Function name (e.g. nth_prime).
        function: String,
        /// Arguments: JSON or plain words; several make a tuple.
        args: Vec<String>,
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        task: TaskFlags,
        /// Print result, engine and run time as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Load-balanced map of a function (`--function NAME ITEMS…`) or of a command
    /// (`-- COMMAND TEMPLATE ::: ARG…`, GNU-parallel style).
    #[command(
        after_help = "Command maps: `cluster map -- convert {} {.}.png ::: *.jpg` runs one task per argument; arguments come after `:::` (several `:::` groups combine), from --args-file FILE, or from stdin, one per line.\nPlaceholders: {} argument, {.} without extension, {/} basename, {//} directory, {/.} basename without extension, {#} task number, {N} (and {N.} {N/}…) column N of the argument set. Without any placeholder the arguments are appended.\nEach task's stdout and stderr are printed as a block, in input order (or as they finish with --unordered); exit status 0 only when every task exited 0."
    )]
    Map {
        /// Function to apply to each item (a function map); without it, a command map.
        #[arg(long)]
        function: Option<String>,
        /// Function map: items (ranges like 0..1000, JSON values or plain words). Command map:
        /// the command template, then `:::` and arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        items: Vec<String>,
        /// Items per task (0 = automatic; function maps).
        #[arg(long, default_value_t = 0)]
        chunksize: usize,
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        task: TaskFlags,
        #[command(flatten)]
        cmd: CommandFlags,
        /// Command maps: read argument sets from FILE, one per line (`-` for stdin).
        #[arg(long, short = 'a', value_name = "FILE")]
        args_file: Option<PathBuf>,
        /// Command maps: split each input line into columns {1} {2}… at SEP.
        #[arg(long, value_name = "SEP", default_value = "\t")]
        colsep: String,
        /// Command maps: print each task's output as soon as it finishes, not in input order.
        #[arg(long)]
        unordered: bool,
        /// Command maps: no progress bar (it shows only when stderr is a terminal anyway).
        #[arg(long)]
        no_progress: bool,
        /// Print JSON lines: `{"item","result"}` for function maps; for command maps one
        /// object per task (argument, engine, host, exit_status, stdout, stderr, start, end…).
        #[arg(long)]
        json: bool,
    },
    /// Submit one command and print its task id at once; see `cluster result` and `cluster wait`.
    Submit {
        /// The command and its arguments (after `--`).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        task: TaskFlags,
        #[command(flatten)]
        cmd: CommandFlags,
    },
    /// Print the outcome of submitted tasks (stdout, stderr; exit status 0 if all succeeded).
    Result {
        /// Task ids as printed by `cluster submit` (like 3:1).
        #[arg(required = true)]
        ids: Vec<String>,
        /// Wait for tasks still running (without it, exit status 5 when one is not done).
        #[arg(long)]
        wait: bool,
        /// Seconds to wait at most with --wait.
        #[arg(long)]
        timeout: Option<f64>,
        #[command(flatten)]
        conn: Conn,
        /// One JSON object per task.
        #[arg(long)]
        json: bool,
    },
    /// Wait for every task `cluster submit` sent in this profile, then print a summary.
    Wait {
        /// Seconds to wait at most (exit status 5 when tasks are still running then).
        #[arg(long)]
        timeout: Option<f64>,
        #[command(flatten)]
        conn: Conn,
        /// One JSON object per task, then the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the controller in the foreground (what `start` launches).
    Controller(ControllerArgs),
    /// Run one stock engine in the foreground (what `start` launches).
    Engine {
        /// Engine connection file [default: the profile's security/engine.json].
        #[arg(long, env = "CLUSTER_ENGINE_FILE")]
        file: Option<PathBuf>,
        /// Seconds without a heartbeat before the engine gives up on its controller and exits
        /// (meanwhile it keeps registering again) [default: 60].
        #[arg(long, env = "CLUSTER_LONELY_TIMEOUT", value_name = "SECS")]
        lonely_timeout: Option<f64>,
        /// Python interpreter for Python tasks (needs cloudpickle) [default: python3].
        #[arg(long, env = "CLUSTER_PYTHON", value_name = "PATH")]
        python: Option<PathBuf>,
    },
    /// Start a throw-away cluster, run the seed examples (primes, sums), print timings, stop.
    Demo {
        /// Engines to start.
        #[arg(short = 'n', long = "engines", default_value_t = 4)]
        engines: usize,
    },
    /// Measure start-up, round trip and task rates on throw-away local clusters.
    Bench {
        /// Engines for the task figures.
        #[arg(short = 'n', long = "engines", default_value_t = 2)]
        engines: usize,
        /// Sequential apply calls for the round-trip figures.
        #[arg(long, default_value_t = 2000)]
        calls: usize,
        /// Items of the map and apply-many figures.
        #[arg(long, default_value_t = 10_000)]
        items: usize,
        /// Start-up runs (`start -n 4`) to take the median of.
        #[arg(long, default_value_t = 3)]
        start_runs: usize,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Only compare `cluster map -- true` with `xargs -P` for these numbers of commands
        /// (e.g. 1000,10000), on -n engines.
        #[arg(long, value_delimiter = ',', value_name = "N,…")]
        commands: Vec<usize>,
        /// Runs per figure of --commands (the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Only time engine deaths: kill -9 → EngineLeft, SIGSTOP → unregistered, SIGCONT →
        /// back (--runs times each).
        #[arg(long)]
        failover: bool,
        /// Only the scale run: this many simulated engines on a real controller
        /// (registration time, idle CPU with heartbeats, task rates; --items one-item tasks).
        #[arg(long, value_name = "N")]
        scale: Option<usize>,
        /// Seconds of the idle CPU measurement of --scale.
        #[arg(long, default_value_t = 10.0)]
        idle: f64,
    },
}

#[derive(Subcommand, Debug)]
enum ProfileCmd {
    /// Create a profile folder with cluster.toml (commented defaults), security/, log/, run/.
    Create {
        /// Profile name [default: --profile].
        name: Option<String>,
    },
    /// List profiles and whether a cluster runs in each.
    List {
        /// JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Print a profile's folder.
    Locate {
        /// Profile name [default: --profile].
        name: Option<String>,
    },
}

/// Where a client command connects.
#[derive(Args, Debug)]
struct Conn {
    /// Client connection file to use instead of the profile's security/client.json.
    #[arg(long, env = "CLUSTER_CLIENT_FILE")]
    file: Option<PathBuf>,
    /// Seconds to wait for the controller to answer [default: connect_timeout_s setting, 10].
    #[arg(long)]
    connect_timeout: Option<f64>,
}

/// Options of submitted tasks.
#[derive(Args, Debug)]
struct TaskFlags {
    /// Seconds: how long to wait for the result(s) of functions (default: no limit); for
    /// commands, the run-time limit on the engine (the program is killed at it).
    #[arg(long)]
    timeout: Option<f64>,
    /// Engine ids allowed to run the task(s), comma-separated.
    #[arg(long, value_delimiter = ',')]
    targets: Vec<u32>,
    /// Re-runs on another engine if the task fails or its engine dies.
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Run only after these tasks (ids like 3:17, comma-separated) finished successfully.
    #[arg(long, value_delimiter = ',', value_name = "IDS", value_parser = task_id_arg)]
    after: Vec<protocol::TaskId>,
    /// Run on the engine where these tasks (ids like 3:17) ran, once they finished.
    #[arg(long, value_delimiter = ',', value_name = "IDS", value_parser = task_id_arg)]
    follow: Vec<protocol::TaskId>,
}

fn task_id_arg(text: &str) -> std::result::Result<protocol::TaskId, String> {
    tasks::parse_task_id(text).map_err(|e| e.to_string())
}

/// Options of command tasks (`map --`, `submit`).
#[derive(Args, Debug)]
struct CommandFlags {
    /// Working directory of the command on the engine.
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,
    /// Environment variable for the command: K=V, or K to pass on this shell's value.
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Run the command line with `sh -c` (values are quoted). Automatic when the command is
    /// one word holding spaces, like 'sort {} | uniq -c'.
    #[arg(long)]
    shell: bool,
}

/// Settings a flag can override (each also has a CLUSTER_* twin and a cluster.toml key).
#[derive(Args, Debug, Default)]
struct SettingFlags {
    /// Address the controller listens on.
    #[arg(long, env = "CLUSTER_IP")]
    ip: Option<String>,
    /// Scheduler: lru, plainrandom, twobin, leastload (the default) or weighted.
    #[arg(long, env = "CLUSTER_SCHEDULER")]
    scheduler: Option<String>,
    /// Outstanding tasks per engine: auto, or a number (0 = unlimited).
    #[arg(long, env = "CLUSTER_HWM")]
    hwm: Option<String>,
}

impl SettingFlags {
    fn overrides(&self) -> Vec<(&'static str, String)> {
        let mut o = Vec::new();
        if let Some(v) = &self.ip {
            o.push(("ip", v.clone()));
        }
        if let Some(v) = &self.scheduler {
            o.push(("scheduler", v.clone()));
        }
        if let Some(v) = &self.hwm {
            o.push(("hwm", v.clone()));
        }
        o
    }
}

/// Where engines run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
enum Launcher {
    /// On this machine.
    #[default]
    Local,
    /// On other machines, started over ssh.
    Ssh,
}

/// Where `start` and `engines` put engines.
#[derive(Args, Debug)]
struct LaunchFlags {
    /// Where engines run: local, or ssh (on --hosts / --hostfile / the [ssh] hosts setting).
    #[arg(long, value_enum, default_value_t = Launcher::Local, env = "CLUSTER_LAUNCHER")]
    launcher: Launcher,
    /// ssh hosts as HOST[:ENGINES],… (`node1:4,node2:4`; user@host works too); implies
    /// `--launcher ssh`.
    #[arg(long, value_name = "HOSTS")]
    hosts: Option<String>,
    /// File of ssh hosts, one a line: `host`, `host:4`, `host 4` or `host slots=4`; implies
    /// `--launcher ssh`.
    #[arg(long, value_name = "FILE")]
    hostfile: Option<PathBuf>,
    /// Send this machine's cluster binary to each host (same system and architecture) and
    /// run that, instead of the `cluster_path` of [ssh].
    #[arg(long)]
    copy_binary: bool,
}

impl LaunchFlags {
    /// Engines go over ssh: asked for, or implied by a host list.
    fn ssh(&self) -> bool {
        self.launcher == Launcher::Ssh || self.hosts.is_some() || self.hostfile.is_some()
    }
}

#[derive(Args, Debug)]
struct StartArgs {
    /// Engines to start [default: engines setting, else the number of physical cores].
    #[arg(short = 'n', long = "engines", env = "CLUSTER_ENGINES")]
    n: Option<usize>,
    #[command(flatten)]
    settings: SettingFlags,
    /// Program to launch instead of the stock engine (called with `--file PATH`).
    #[arg(long, env = "CLUSTER_ENGINE_PROGRAM")]
    engine_program: Option<PathBuf>,
    /// Seconds to wait for the engines to register.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Print what was started as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    hosts: LaunchFlags,
}

#[derive(Args, Debug)]
struct ControllerArgs {
    #[command(flatten)]
    settings: SettingFlags,
    /// Port for engines (0 = free).
    #[arg(long, env = "CLUSTER_ENGINE_PORT")]
    engine_port: Option<u16>,
    /// Port for clients (0 = free).
    #[arg(long, env = "CLUSTER_CLIENT_PORT")]
    client_port: Option<u16>,
    /// Port for heartbeats (0 = free).
    #[arg(long, env = "CLUSTER_HEARTBEAT_PORT")]
    heartbeat_port: Option<u16>,
    /// Port for notifications (0 = free).
    #[arg(long, env = "CLUSTER_NOTIFY_PORT")]
    notify_port: Option<u16>,
    /// Any setting as KEY=VALUE (used by `cluster start` to pass its flags on).
    #[arg(long = "set", value_name = "KEY=VALUE", hide = true)]
    set: Vec<String>,
    /// Take over from a controller that died: listen on its address and ports with its key
    /// (from the profile's connection files), so that running engines and clients reconnect
    /// without being restarted.
    #[arg(long)]
    reuse: bool,
}

fn init_logging(default: &str) {
    let filter = std::env::var("CLUSTER_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}

fn secs(s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| anyhow::anyhow!("{s} is not a valid number of seconds"))
}

fn connect(profile_name: &str, conn: &Conn) -> Result<client::Client> {
    let settings = match Profile::open(profile_name) {
        Ok(p) => p.settings(&[])?,
        Err(_) => profiles::Settings::default(),
    };
    let timeout = secs(conn.connect_timeout.unwrap_or(settings.connect_timeout_s))?;
    let path = match &conn.file {
        Some(f) => f.clone(),
        None => Profile::open(profile_name)?.client_file(),
    };
    let options = client::ClientOptions {
        connect_timeout: timeout,
    };
    Ok(client::Client::connect_file_with(path, options)?)
}

fn view(client: &client::Client, task: &TaskFlags) -> client::LoadBalancedView {
    let ids: Vec<protocol::EngineId> = task
        .targets
        .iter()
        .map(|t| protocol::EngineId(*t))
        .collect();
    let mut view = client.load_balanced_view().retries(task.retries);
    if !ids.is_empty() {
        view = view.targets(&ids);
    }
    if !task.after.is_empty() {
        view = view.after(&task.after);
    }
    if !task.follow.is_empty() {
        view = view.follow(&task.follow);
    }
    view
}

fn print_value(v: &serde_json::Value) {
    match v {
        serde_json::Value::String(s) => println!("{s}"),
        other => println!("{other}"),
    }
}

fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    if let Some(dir) = &g.cluster_dir {
        // Read by the profiles crate and inherited by the processes we launch.
        std::env::set_var("CLUSTER_DIR", dir);
    }
    match cli.command {
        Command::Profile(cmd) => match cmd {
            ProfileCmd::Create { name } => {
                let p = Profile::create(name.as_deref().unwrap_or(&g.profile))?;
                println!("{}", p.dir().display());
            }
            ProfileCmd::List { json } => {
                for p in Profile::list()? {
                    let running = launch::running_controller(&p).ok().flatten();
                    if json {
                        let v = serde_json::json!({
                            "name": p.name(), "dir": p.dir(), "running": running.is_some(),
                            "controller_pid": running.as_ref().map(|r| r.pid),
                        });
                        println!("{v}");
                    } else {
                        let state = running
                            .map(|r| format!("running (controller pid {})", r.pid))
                            .unwrap_or_else(|| "stopped".into());
                        println!("{:<16} {:<28} {}", p.name(), state, p.dir().display());
                    }
                }
            }
            ProfileCmd::Locate { name } => {
                let p = Profile::open(name.as_deref().unwrap_or(&g.profile))?;
                println!("{}", p.dir().display());
            }
        },
        Command::Start(a) if a.hosts.ssh() => {
            let profile = Profile::create(&g.profile)?;
            let overrides = a.settings.overrides();
            let settings = profile.settings(&overrides)?;
            if ssh::is_loopback(&settings.ip) {
                bail!(
                    "the controller would listen on {} only, which other machines cannot reach: pass --ip ADDRESS (an address of this machine the hosts reach, or 0.0.0.0 for every interface), or set ip in {}",
                    settings.ip,
                    profile.config_file().display()
                );
            }
            let hosts = ssh::assign_counts(&host_specs(&a.hosts, &settings)?, a.n)?;
            let launch_opts = ssh_launch(&profile, &settings, &a.hosts, a.timeout)?;
            let none = launch::EngineLaunch {
                count: 0,
                program: None,
                timeout: secs(a.timeout)?,
            };
            let t0 = std::time::Instant::now();
            let started = launch::start(&profile, &overrides, &none).map_err(|e| {
                e.context(format!(
                    "cluster start failed; logs are in {}",
                    profile.log_dir().display()
                ))
            })?;
            let report = match ssh::launch(&profile, &launch_opts, &hosts, 0) {
                Ok(r) if r.started.is_empty() => {
                    let _ = launch::stop(&profile, Duration::from_secs(2));
                    bail!(
                        "{}
the controller was stopped again",
                        r.failure_message().unwrap_or_default()
                    );
                }
                Ok(r) => r,
                Err(e) => {
                    let records = profile.ssh_host_records().unwrap_or_default();
                    let _ = launch::stop(&profile, Duration::from_secs(2));
                    ssh::stop_hosts(&records, Duration::from_secs(2));
                    return Err(
                        e.context("starting engines over ssh failed; the cluster was stopped")
                    );
                }
            };
            let seconds = t0.elapsed().as_secs_f64();
            if a.json {
                let v = serde_json::json!({
                    "profile": started.profile, "controller_pid": started.controller_pid,
                    "client_file": started.client_file, "engine_file": started.engine_file,
                    "engines_ready": report.engines_ready, "seconds": seconds,
                    "hosts": report.started, "failed": report.failed,
                });
                println!("{v}");
            } else {
                println!(
                    "cluster {:?} started: controller pid {}, {} engines ready on {} host(s) in {:.3} s\nclient connection file: {}",
                    started.profile,
                    started.controller_pid,
                    report.engines_ready,
                    report.started.len(),
                    seconds,
                    started.client_file.display()
                );
                for h in &report.started {
                    println!("  {} ({}): pids {:?}", h.destination, h.hostname, h.pids);
                }
            }
            if let Some(msg) = report.failure_message() {
                bail!(msg);
            }
        }
        Command::Start(a) => {
            let profile = Profile::create(&g.profile)?;
            let overrides = a.settings.overrides();
            let settings = profile.settings(&overrides)?;
            let n = a.n.unwrap_or(if settings.engines > 0 {
                settings.engines
            } else {
                launch::physical_cores()
            });
            let engines = launch::EngineLaunch {
                count: n,
                program: a.engine_program.clone(),
                timeout: secs(a.timeout)?,
            };
            match launch::start(&profile, &overrides, &engines) {
                Ok(report) => {
                    if a.json {
                        println!("{}", render::json_line(&report));
                    } else {
                        println!(
                            "cluster {:?} started: controller pid {}, {} engines ready in {:.3} s\nclient connection file: {}",
                            report.profile,
                            report.controller_pid,
                            report.engines_ready,
                            report.seconds,
                            report.client_file.display()
                        );
                    }
                }
                Err(e) => {
                    return Err(e.context(format!(
                        "cluster start failed; logs are in {}",
                        profile.log_dir().display()
                    )));
                }
            }
        }
        Command::Stop { grace, json } => {
            let profile = Profile::open(&g.profile)?;
            let grace = secs(grace.unwrap_or(profile.settings(&[])?.stop_grace_s))?;
            // Read before the local stop clears the run folder.
            let remote = profile.ssh_host_records()?;
            let report = launch::stop(&profile, grace)?;
            let hosts = ssh::stop_hosts(&remote, grace);
            let host_errors: Vec<String> = hosts
                .iter()
                .filter_map(|h| h.error.as_ref().map(|e| format!("{}: {e}", h.destination)))
                .collect();
            if json {
                let mut v = serde_json::to_value(&report)?;
                v["hosts"] = serde_json::to_value(&hosts)?;
                println!("{v}");
            } else if !hosts.is_empty() {
                let engines: usize = remote.iter().map(|r| r.pids.len()).sum();
                println!(
                    "stopped controller {} and {} local engine(s); {} engine(s) on {} ssh host(s){}",
                    report
                        .controller_pid
                        .map(|p| format!("pid {p}"))
                        .unwrap_or_else(|| "(not running)".into()),
                    report.engine_pids.len(),
                    engines,
                    hosts.len(),
                    {
                        let killed: usize = hosts.iter().map(|h| h.killed.len()).sum();
                        if killed > 0 {
                            format!("; SIGKILL needed for {killed} remote engine(s)")
                        } else {
                            String::new()
                        }
                    }
                );
            } else if report.controller_pid.is_none() && report.engine_pids.is_empty() {
                println!("no cluster was running for profile {:?}", profile.name());
            } else {
                println!(
                    "stopped controller {} and {} engine(s){}",
                    report
                        .controller_pid
                        .map(|p| format!("pid {p}"))
                        .unwrap_or_else(|| "(not running)".into()),
                    report.engine_pids.len(),
                    if report.killed.is_empty() {
                        String::new()
                    } else {
                        format!("; SIGKILL needed for {:?}", report.killed)
                    }
                );
            }
            if !host_errors.is_empty() {
                bail!(
                    "some ssh hosts could not be stopped:\n  {}",
                    host_errors.join("\n  ")
                );
            }
        }
        Command::Status { conn, json } => {
            let client = connect(&g.profile, &conn)?;
            let report = client.status()?;
            // Older controllers do not answer it; the status alone is still worth showing.
            let queue = client.queue_status().ok();
            if json {
                match serde_json::to_value(&report) {
                    Ok(mut v) => {
                        if let (Some(obj), Some(q)) = (v.as_object_mut(), &queue) {
                            obj.insert("queue".into(), serde_json::json!(q));
                        }
                        println!("{}", render::json_line(&v));
                    }
                    Err(_) => println!("{}", render::json_line(&report)),
                }
            } else {
                println!("{}", render::status(&report));
                if let Some(q) = &queue {
                    println!("{}", render::queue(q));
                }
                let hosts = Profile::open(&g.profile)
                    .and_then(|p| p.ssh_host_records())
                    .unwrap_or_default();
                for h in hosts {
                    println!(
                        "ssh host {} ({}): {} engine(s) started, pids {:?}, files in {}",
                        h.destination,
                        h.hostname,
                        h.pids.len(),
                        h.pids,
                        h.remote_dir
                    );
                }
            }
        }
        Command::Engines {
            n,
            hosts,
            engine_program,
            timeout,
        } => {
            let profile = Profile::open(&g.profile)?;
            let settings = profile.settings(&[])?;
            if launch::running_controller(&profile)?.is_none() {
                bail!(
                    "no controller is running for profile {:?}; start one with `cluster start`",
                    profile.name()
                );
            }
            let before = client::Client::connect_file(profile.client_file())?
                .ids()?
                .len();
            if hosts.ssh() {
                let list = ssh::assign_counts(&host_specs(&hosts, &settings)?, n)?;
                let opts = ssh_launch(&profile, &settings, &hosts, timeout)?;
                let report = ssh::launch(&profile, &opts, &list, before)?;
                println!(
                    "added {} engine(s) on {} ssh host(s); {} registered",
                    report.engines(),
                    report.started.len(),
                    report.engines_ready
                );
                for h in &report.started {
                    println!("  {} ({}): pids {:?}", h.destination, h.hostname, h.pids);
                }
                if let Some(msg) = report.failure_message() {
                    bail!(msg);
                }
                return Ok(());
            }
            let n = n.unwrap_or(1);
            let engines = launch::EngineLaunch {
                count: n,
                program: engine_program,
                timeout: secs(timeout)?,
            };
            let pids = launch::launch_engines(&profile, &settings, &engines, before)?;
            println!(
                "added {} engine(s) (pids {:?}); {} registered",
                pids.len(),
                pids,
                before + pids.len()
            );
        }
        Command::Call {
            function,
            args: words,
            conn,
            task,
            json,
        } => {
            let client = connect(&g.profile, &conn)?;
            let arg = args::call_argument(&words);
            let ar = view(&client, &task)
                .apply::<serde_json::Value, serde_json::Value>(&function, &arg)?;
            let timeout = task.timeout.map(secs).transpose()?;
            let id = ar.id();
            let abort = || interrupt::summary("cluster call", client.abort(&[id]));
            if !interrupt::abort_on_interrupt(abort, || ar.wait(timeout))? {
                return Err(client::Error::Timeout {
                    what: format!("task {id}"),
                }
                .into());
            }
            let engine = ar.engine();
            let elapsed = ar.elapsed();
            let value = ar.get(Some(Duration::ZERO))?;
            if json {
                let v = serde_json::json!({
                    "task": id.to_string(), "engine": engine.map(|e| e.0),
                    "elapsed_s": elapsed.map(|d| d.as_secs_f64()), "result": value,
                });
                println!("{v}");
            } else {
                print_value(&value);
            }
        }
        Command::Map {
            function: None,
            items,
            conn,
            task,
            cmd,
            args_file,
            colsep,
            unordered,
            no_progress,
            json,
            chunksize: _,
        } => {
            let (words, groups) = template::split_groups(&items);
            let template = template::Template::parse(&words, shell_mode(&cmd, &words))?;
            let sets = argument_sets(groups, args_file.as_deref(), &colsep)?;
            let options = command_options(&task, &cmd)?;
            let client = connect(&g.profile, &conn)?;
            let printing = tasks::Printing {
                order: if unordered {
                    tasks::Order::Finish
                } else {
                    tasks::Order::Input
                },
                json,
                progress: !no_progress,
            };
            let summary = tasks::run_map(&client, &template, sets, &options, printing)?;
            if summary.failed() > 0 {
                return Err(TasksFailed(summary.failure_line("cluster map")).into());
            }
        }
        Command::Submit {
            command,
            conn,
            task,
            cmd,
        } => {
            let template = template::Template::parse(&command, shell_mode(&cmd, &command))?;
            let line = template.render(&[], 1)?;
            let options = command_options(&task, &cmd)?;
            let profile = Profile::open(&g.profile)?;
            let client = connect(&g.profile, &conn)?;
            let id = tasks::submit(&client, &line, &options, &profile.submitted_file())?;
            println!("{id}");
        }
        Command::Result {
            ids,
            wait,
            timeout,
            conn,
            json,
        } => {
            let ids = ids
                .iter()
                .map(|i| tasks::parse_task_id(i))
                .collect::<Result<Vec<_>>>()?;
            let (client, mut store) = result_store(&g.profile, &conn)?;
            let timeout = timeout.map(secs).transpose()?;
            let submitted = match Profile::open(&g.profile) {
                Ok(p) => tasks::submitted(&p.submitted_file())?,
                Err(_) => Vec::new(),
            };
            let mut found =
                tasks::wait_for_submitted(&mut store, &client, &ids, wait, timeout, &submitted)?;
            tasks::name_commands(&mut found.records, &submitted);
            let mut summary = tasks::Summary::default();
            for rec in &found.records {
                tasks::print_record(rec, json)?;
                tasks::tally(&mut summary, rec);
            }
            if !found.unknown.is_empty() {
                bail!(
                    "the controller has no record of task(s) {}: never submitted to this cluster, purged, or from an earlier controller",
                    join_ids(&found.unknown)
                );
            }
            if !found.pending.is_empty() {
                if wait {
                    return Err(client::Error::Timeout {
                        what: format!("task(s) {}", join_ids(&found.pending)),
                    }
                    .into());
                }
                return Err(NotFinished(format!(
                    "task(s) {} still queued or running; add --wait to wait for them",
                    join_ids(&found.pending)
                ))
                .into());
            }
            if summary.failed() > 0 {
                return Err(TasksFailed(summary.failure_line("cluster result")).into());
            }
        }
        Command::Wait {
            timeout,
            conn,
            json,
        } => {
            let profile = Profile::open(&g.profile)?;
            let submitted = tasks::submitted(&profile.submitted_file())?;
            let ids = submitted
                .iter()
                .map(|s| tasks::parse_task_id(&s.id))
                .collect::<Result<Vec<_>>>()?;
            let (client, mut store) = result_store(&g.profile, &conn)?;
            let timeout = timeout.map(secs).transpose()?;
            let t0 = std::time::Instant::now();
            let mut found =
                tasks::wait_for_submitted(&mut store, &client, &ids, true, timeout, &submitted)?;
            tasks::name_commands(&mut found.records, &submitted);
            let mut summary = tasks::Summary::default();
            for rec in &found.records {
                tasks::tally(&mut summary, rec);
                if json {
                    println!("{}", rec.to_json());
                } else if let Some(line) = rec.failure_line() {
                    eprintln!("cluster: {line}");
                }
            }
            summary.seconds = t0.elapsed().as_secs_f64();
            if json {
                let v = serde_json::json!({
                    "summary": summary, "pending": join_ids(&found.pending),
                    "unknown": join_ids(&found.unknown),
                });
                println!("{v}");
            } else {
                println!(
                    "{} submitted task(s): {} succeeded, {} failed, {} still running, {} unknown",
                    ids.len(),
                    summary.ok,
                    summary.failed(),
                    found.pending.len(),
                    found.unknown.len()
                );
            }
            if !found.pending.is_empty() {
                return Err(client::Error::Timeout {
                    what: format!("task(s) {}", join_ids(&found.pending)),
                }
                .into());
            }
            if !found.unknown.is_empty() {
                bail!(
                    "the controller has no record of task(s) {}: purged, or from an earlier controller",
                    join_ids(&found.unknown)
                );
            }
            if summary.failed() > 0 {
                return Err(TasksFailed(summary.failure_line("cluster wait")).into());
            }
        }
        Command::Map {
            function: Some(function),
            items,
            chunksize,
            conn,
            task,
            json,
            ..
        } => {
            let items = args::map_items(&items)?;
            let client = connect(&g.profile, &conn)?;
            let timeout = task.timeout.map(secs).transpose()?;
            let map = view(&client, &task)
                .chunksize(chunksize)
                .map::<serde_json::Value, serde_json::Value>(&function, items.iter().cloned())?;
            let abort = || interrupt::summary("cluster map", client.abort(&map.task_ids()));
            let results = interrupt::abort_on_interrupt(abort, || map.get(timeout))??;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            use std::io::Write;
            for (item, result) in items.iter().zip(&results) {
                let line = if json {
                    serde_json::json!({"item": item, "result": result}).to_string()
                } else {
                    match result {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    }
                };
                writeln!(out, "{line}")?;
            }
            out.flush()?;
        }
        Command::Controller(a) => {
            init_logging("info");
            let profile = Profile::create(&g.profile)?;
            let mut overrides = a.settings.overrides();
            for (key, port) in [
                ("engine_port", a.engine_port),
                ("client_port", a.client_port),
                ("heartbeat_port", a.heartbeat_port),
                ("notify_port", a.notify_port),
            ] {
                if let Some(p) = port {
                    overrides.push((key, p.to_string()));
                }
            }
            let mut extra = Vec::new();
            for kv in &a.set {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
                extra.push((k.to_owned(), v.to_owned()));
            }
            overrides.extend(extra.iter().map(|(k, v)| (k.as_str(), v.clone())));
            run_controller(&profile, &overrides, a.reuse)?;
        }
        Command::Engine {
            file,
            lonely_timeout,
            python,
        } => {
            init_logging("info");
            let file = match file {
                Some(f) => f,
                None => Profile::open(&g.profile)?.engine_file(),
            };
            let mut engine = engine::Engine::builder().stock_functions();
            if let Some(python) = python {
                engine = engine.python(python);
            }
            let engine = engine.build();
            let mut options = engine::EngineOptions::new(file);
            if let Some(s) = lonely_timeout {
                options.lonely_timeout = secs(s)?;
            }
            engine.run(options)?;
        }
        Command::Demo { engines } => demo::demo(engines)?,
        Command::Bench {
            scale: Some(n),
            items,
            idle,
            json,
            ..
        } => {
            let report = bench_controller::bench_scale(n, items, items * 10, secs(idle)?, !json)?;
            print_report(json, &report, bench_controller::render_scale);
        }
        Command::Bench {
            failover: true,
            runs,
            json,
            ..
        } => {
            let report = bench_controller::bench_failover(runs, !json)?;
            print_report(json, &report, bench_controller::render_failover);
        }
        Command::Bench {
            engines,
            json,
            commands,
            runs,
            ..
        } if !commands.is_empty() => {
            let report = bench_commands::bench_commands(&commands, engines, runs, !json)?;
            print_report(json, &report, bench_commands::render);
        }
        Command::Bench {
            engines,
            calls,
            items,
            start_runs,
            json,
            ..
        } => {
            let report = demo::bench(engines, calls, items, start_runs, !json)?;
            print_report(json, &report, |r| demo::render_bench(r, calls, items));
        }
    }
    Ok(())
}

/// A benchmark report: one JSON line with `--json`, else the rendered table.
fn print_report<T: serde::Serialize>(json: bool, report: &T, table: impl FnOnce(&T) -> String) {
    if json {
        println!("{}", render::json_line(report));
    } else {
        print!("{}", table(report));
    }
}

fn run_controller(profile: &Profile, overrides: &[(&str, String)], reuse: bool) -> Result<()> {
    let settings = profile.settings(overrides)?;
    let me = std::process::id();
    if let Some(rec) = launch::running_controller(profile)?.filter(|r| r.pid != me) {
        bail!("a controller is already running for profile {:?} (pid {}); stop it with `cluster stop`", profile.name(), rec.pid);
    }
    let scheduler = settings
        .scheduler
        .parse()
        .map_err(|e| anyhow::anyhow!("scheduler {:?}: {e}", settings.scheduler))?;
    let hwm = settings
        .hwm
        .parse()
        .map_err(|e| anyhow::anyhow!("hwm {:?}: {e}", settings.hwm))?;
    let mut config = if reuse {
        controller::ControllerConfig::reusing(profile.security_dir()).with_context(|| {
            format!(
                "--reuse takes the address, ports and key from the connection files in {}",
                profile.security_dir().display()
            )
        })?
    } else {
        let mut config =
            controller::ControllerConfig::new(security::Key::generate(), profile.security_dir());
        config.ip = settings.ip.clone();
        config.engine_port = settings.engine_port;
        config.client_port = settings.client_port;
        config.heartbeat_port = settings.heartbeat_port;
        config.notify_port = settings.notify_port;
        // A controller taking over keeps the window its engines and clients already use.
        config.replay_window = Duration::from_secs(settings.replay_window_s);
        config.encrypt = settings.encrypt;
        config
    };
    config.scheduler = scheduler;
    config.hwm = hwm;
    config.heartbeat_period = Duration::from_millis(settings.heartbeat_period_ms.max(1));
    config.heartbeat_misses = settings.heartbeat_misses.max(1);
    profile.write_controller_record(&profiles::ControllerRecord {
        pid: me,
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        started_us: transport::now_us(),
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }
    let result = controller::run(config, stop);
    // Leave no stale files behind a clean exit.
    if profile.controller_record()?.is_some_and(|r| r.pid == me) {
        let _ = std::fs::remove_file(profile.controller_record_file());
        let _ = std::fs::remove_file(profile.client_file());
        let _ = std::fs::remove_file(profile.engine_file());
    }
    Ok(result?)
}

/// The ssh hosts: --hosts, else --hostfile, else the [ssh] hosts setting.
fn host_specs(flags: &LaunchFlags, settings: &profiles::Settings) -> Result<Vec<ssh::HostSpec>> {
    if let Some(list) = &flags.hosts {
        return ssh::parse_hosts(list);
    }
    if let Some(file) = &flags.hostfile {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the host file {}", file.display()))?;
        return ssh::parse_hostfile(&text).with_context(|| format!("in {}", file.display()));
    }
    ssh::parse_hosts(&settings.ssh.hosts.join(","))
}

fn ssh_launch(
    profile: &Profile,
    settings: &profiles::Settings,
    flags: &LaunchFlags,
    timeout: f64,
) -> Result<ssh::SshLaunch> {
    Ok(ssh::SshLaunch {
        settings: settings.ssh.clone(),
        profile: profile.name().to_owned(),
        copy_binary: flags.copy_binary,
        timeout: secs(timeout)?,
    })
}

/// Tasks not finished yet, and the caller did not ask to wait (exit status 5).
#[derive(Debug)]
struct NotFinished(String);

impl std::fmt::Display for NotFinished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotFinished {}

/// Tasks ran but some failed: the one-line summary (exit status 3).
#[derive(Debug)]
struct TasksFailed(String);

impl std::fmt::Display for TasksFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TasksFailed {}

fn join_ids(ids: &[protocol::TaskId]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Shell mode: asked for, or a one-word command line holding spaces (`'sort {} | uniq'`).
fn shell_mode(cmd: &CommandFlags, words: &[String]) -> bool {
    cmd.shell || (words.len() == 1 && words[0].contains(char::is_whitespace))
}

fn command_options(task: &TaskFlags, cmd: &CommandFlags) -> Result<tasks::CommandOptions> {
    Ok(tasks::CommandOptions {
        timeout: task.timeout.map(secs).transpose()?,
        retries: task.retries,
        targets: task
            .targets
            .iter()
            .map(|t| protocol::EngineId(*t))
            .collect(),
        cwd: cmd.cwd.clone(),
        env: tasks::parse_env(&cmd.env)?,
    })
}

/// Argument sets of a command map: the `:::` groups combined, else the lines of --args-file,
/// else the lines of stdin (refused when stdin is a terminal: nobody is typing them).
fn argument_sets(
    groups: Vec<Vec<String>>,
    args_file: Option<&std::path::Path>,
    colsep: &str,
) -> Result<Vec<Vec<String>>> {
    if !groups.is_empty() {
        if args_file.is_some() {
            bail!("give arguments either after `:::` or with --args-file, not both");
        }
        return Ok(template::combinations(&groups));
    }
    let text = match args_file {
        Some(p) if p != std::path::Path::new("-") => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read the argument file {}", p.display()))?,
        _ => {
            if args_file.is_none() && tasks::is_terminal(0) {
                bail!("no arguments: give them after `:::` (`cluster map -- echo {{}} ::: a b`), with --args-file FILE, or on stdin");
            }
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("cannot read arguments from stdin")?;
            text
        }
    };
    let sep = (!colsep.is_empty()).then_some(colsep);
    Ok(text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| template::columns(l, sep))
        .collect())
}

fn result_store(profile: &str, conn: &Conn) -> Result<(client::Client, client::ResultStore)> {
    let client = connect(profile, conn)?;
    let store = client::ResultStore::open(
        client.connection_file(),
        secs(conn.connect_timeout.unwrap_or(10.0))?,
    )?;
    Ok((client, store))
}

fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.downcast_ref::<TasksFailed>().is_some() {
            return exit::TASK_FAILED;
        }
        if cause.downcast_ref::<NotFinished>().is_some() {
            return exit::TIMEOUT;
        }
        if let Some(e) = cause.downcast_ref::<client::Error>() {
            use client::Error as E;
            return match e {
                E::Remote { .. }
                | E::EngineLost { .. }
                | E::UnknownFunction { .. }
                | E::Aborted { .. } => exit::TASK_FAILED,
                E::Timeout { .. } => exit::TIMEOUT,
                E::ConnectTimeout { .. }
                | E::ConnectionLost { .. }
                | E::BadConnectionFile(_)
                | E::Profile(_) => exit::NO_CONTROLLER,
                _ => 1,
            };
        }
        if cause
            .downcast_ref::<security::ConnectionFileError>()
            .is_some()
        {
            return exit::NO_CONTROLLER;
        }
    }
    1
}

/// Runs the `cluster` command line on `args` (the program name first, as in
/// `std::env::args_os()`) and returns its exit status. Usage errors print clap's message and
/// give 2; `--help` and `--version` print and give 0.
pub fn main_with(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    ExitCode::from(main_status(args))
}

/// [`main_with`] with the exit status as a number (for hosts that exit themselves, such as
/// the Python extension).
pub fn main_status(args: impl IntoIterator<Item = OsString>) -> u8 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return u8::try_from(e.exit_code()).unwrap_or(2);
        }
    };
    if !matches!(cli.command, Command::Controller(_) | Command::Engine { .. }) {
        init_logging("warn");
    }
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            // A closed pipe (`cluster map … | head`) is not a failure.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return 0;
            }
            eprintln!("error: {e:#}");
            exit_code(&e)
        }
    }
}
