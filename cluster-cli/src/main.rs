//! `cluster`: run an IPyparallel-style compute cluster. Argument parsing and wiring only.

use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};
use cluster_cli::{args, demo, launch, render};
use profiles::Profile;
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
        /// Engines to add.
        #[arg(short = 'n', long = "engines", default_value_t = 1)]
        n: usize,
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
    /// Load-balanced map: one result per line, in input order.
    Map {
        /// Function to apply to each item.
        #[arg(long)]
        function: String,
        /// Items: ranges like 0..1000 (or 1..=10), JSON values or plain words.
        #[arg(required = true)]
        items: Vec<String>,
        /// Items per task (0 = automatic).
        #[arg(long, default_value_t = 0)]
        chunksize: usize,
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        task: TaskFlags,
        /// Print each result as a JSON line `{"item":…,"result":…}`.
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
    /// Seconds to wait for the result(s) (default: no limit).
    #[arg(long)]
    timeout: Option<f64>,
    /// Engine ids allowed to run the task(s), comma-separated.
    #[arg(long, value_delimiter = ',')]
    targets: Vec<u32>,
    /// Re-runs on another engine if the engine dies.
    #[arg(long, default_value_t = 0)]
    retries: u32,
}

/// Settings a flag can override (each also has a CLUSTER_* twin and a cluster.toml key).
#[derive(Args, Debug, Default)]
struct SettingFlags {
    /// Address the controller listens on.
    #[arg(long, env = "CLUSTER_IP")]
    ip: Option<String>,
    /// Scheduler: leastload.
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
            let report = launch::stop(&profile, grace)?;
            if json {
                println!("{}", render::json_line(&report));
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
        }
        Command::Status { conn, json } => {
            let client = connect(&g.profile, &conn)?;
            let report = client.status()?;
            if json {
                println!("{}", render::json_line(&report));
            } else {
                println!("{}", render::status(&report));
            }
        }
        Command::Engines {
            n,
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
            if !ar.wait(timeout) {
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
            function,
            items,
            chunksize,
            conn,
            task,
            json,
        } => {
            let items = args::map_items(&items)?;
            let client = connect(&g.profile, &conn)?;
            let timeout = task.timeout.map(secs).transpose()?;
            let results = view(&client, &task)
                .chunksize(chunksize)
                .map::<serde_json::Value, serde_json::Value>(&function, items.iter().cloned())?
                .get(timeout)?;
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
            run_controller(&profile, &overrides)?;
        }
        Command::Engine { file } => {
            init_logging("info");
            let file = match file {
                Some(f) => f,
                None => Profile::open(&g.profile)?.engine_file(),
            };
            let engine = engine::Engine::builder().stock_functions().build();
            engine.run(engine::EngineOptions::new(file))?;
        }
        Command::Demo { engines } => demo::demo(engines)?,
        Command::Bench {
            engines,
            calls,
            items,
            start_runs,
            json,
        } => {
            let report = demo::bench(engines, calls, items, start_runs, !json)?;
            if json {
                println!("{}", render::json_line(&report));
            } else {
                print!("{}", demo::render_bench(&report, calls, items));
            }
        }
    }
    Ok(())
}

fn run_controller(profile: &Profile, overrides: &[(&str, String)]) -> Result<()> {
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
    let mut config =
        controller::ControllerConfig::new(security::Key::generate(), profile.security_dir());
    config.ip = settings.ip.clone();
    config.engine_port = settings.engine_port;
    config.client_port = settings.client_port;
    config.heartbeat_port = settings.heartbeat_port;
    config.notify_port = settings.notify_port;
    config.scheduler = scheduler;
    config.hwm = hwm;
    config.heartbeat_period = Duration::from_millis(settings.heartbeat_period_ms.max(1));
    config.heartbeat_misses = settings.heartbeat_misses.max(1);
    profile.write_controller_record(&profiles::ControllerRecord {
        pid: me,
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        started_us: transport_free_now_us(),
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

fn transport_free_now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<client::Error>() {
            use client::Error as E;
            return match e {
                E::Remote { .. } | E::EngineLost { .. } | E::UnknownFunction { .. } => {
                    exit::TASK_FAILED
                }
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Controller(_) | Command::Engine { .. }) {
        init_logging("warn");
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed pipe (`cluster map … | head`) is not a failure.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}
