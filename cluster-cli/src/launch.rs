//! Launching and stopping the processes of a local cluster.
//!
//! `cluster start` spawns `cluster controller` detached (its own session, so it outlives the
//! shell and a kill of the caller's process group), waits for the controller to write its
//! connection files, spawns the engines the same way, and returns once they have all
//! registered. Every process is recorded in the profile's `run/` folder so that `cluster stop`
//! can find it: first a polite shutdown request through the controller, then SIGTERM, then
//! SIGKILL after a grace period.
//!
//! `run/launch.json` records the engine program `start` used, so that `cluster engines` adds
//! engines of the same kind. Engines log to `log/engine-new-<time>-<i>.log` until they have
//! registered, then their log is renamed `log/engine-<id>.log` after the id the controller
//! gave them (a file of that name from an earlier run moves to `.1`); at most
//! [`MAX_ENGINE_LOGS`] engine logs are kept, the oldest of the engines no longer running go
//! first. `controller.log` keeps the previous start's as `controller.log.1`.

use anyhow::{anyhow, bail, Context as _, Result};
use profiles::{process_alive, ControllerRecord, EngineRecord, LaunchRecord, Profile, Settings};
use security::ConnectionInfo;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Engine log files kept in a profile's `log/` folder (besides those of running engines).
pub const MAX_ENGINE_LOGS: usize = 64;

/// How to launch engines.
#[derive(Debug, Clone)]
pub struct EngineLaunch {
    /// Engines to start.
    pub count: usize,
    /// The program engines run.
    pub program: EngineProgram,
    /// How long to wait for them to register.
    pub timeout: Duration,
}

/// Which program engines run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EngineProgram {
    /// The settings' `engine_program`, else the stock engine.
    #[default]
    Settings,
    /// The stock engine, `cluster engine`, whatever the settings say.
    Stock,
    /// This program (called with `--file PATH`).
    Custom(PathBuf),
}

impl EngineProgram {
    /// `Custom` for a flag that was given, else `Settings`.
    pub fn from_flag(flag: Option<PathBuf>) -> EngineProgram {
        flag.map_or(EngineProgram::Settings, EngineProgram::Custom)
    }

    /// The program to run, `None` for the stock engine. A path with a folder in it is made
    /// absolute (so that it still names the same file when recorded and used from another
    /// folder) and must exist; a bare name is looked up in `PATH` when it is run.
    pub fn resolve(&self, settings: &Settings) -> Result<Option<PathBuf>> {
        let program = match self {
            EngineProgram::Settings => settings.engine_program.as_ref().map(PathBuf::from),
            EngineProgram::Stock => None,
            EngineProgram::Custom(p) => Some(p.clone()),
        };
        let Some(p) = program else {
            return Ok(None);
        };
        if p.is_absolute() || p.components().count() == 1 {
            return Ok(Some(p));
        }
        if !p.exists() {
            bail!("engine program {} does not exist", p.display());
        }
        Ok(Some(std::path::absolute(&p).unwrap_or(p)))
    }

    /// What `cluster start` recorded for this profile (the stock engine when it recorded
    /// nothing, or when the record is unreadable: it is only a default).
    pub fn recorded(profile: &Profile) -> EngineProgram {
        match profile.launch_record() {
            Ok(Some(LaunchRecord {
                engine_program: Some(p),
            })) => EngineProgram::Custom(p),
            Ok(Some(LaunchRecord {
                engine_program: None,
            })) => EngineProgram::Stock,
            _ => EngineProgram::Settings,
        }
    }
}

/// What `start` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StartReport {
    /// Profile name.
    pub profile: String,
    /// Controller process id.
    pub controller_pid: u32,
    /// Client connection file.
    pub client_file: PathBuf,
    /// Engine connection file.
    pub engine_file: PathBuf,
    /// Pids of the engines started.
    pub engine_pids: Vec<u32>,
    /// Engines registered at the end.
    pub engines_ready: usize,
    /// Seconds from the call to all engines ready.
    pub seconds: f64,
    /// Engines of the previous controller that were still running and came back to the new
    /// one (`start` on a profile whose controller died brings it back with `--reuse`).
    #[serde(default)]
    pub reused_engine_pids: Vec<u32>,
}

/// Physical cores of this machine (hyper-threads slow CPU-bound work, see the seeds), falling
/// back to the logical count.
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let Ok(info) = fs::read_to_string("/proc/cpuinfo") else {
        return logical;
    };
    let mut cores = std::collections::HashSet::new();
    let mut physical = String::new();
    for line in info.lines() {
        if let Some((k, v)) = line.split_once(':') {
            match k.trim() {
                "physical id" => physical = v.trim().to_owned(),
                "core id" => {
                    cores.insert((physical.clone(), v.trim().to_owned()));
                }
                _ => {}
            }
        }
    }
    if cores.is_empty() {
        logical
    } else {
        cores.len().min(logical)
    }
}

/// Spawns `cmd` in its own session with output appended to `log`.
pub(crate) fn spawn_detached(mut cmd: Command, log: &Path) -> Result<Child> {
    let out = fs::File::create(log)
        .with_context(|| format!("cannot create log file {}", log.display()))?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.spawn()
        .with_context(|| format!("cannot start {program}"))
}

/// The last `n` lines of a log file, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(n)..].join("\n    ");
    if tail.is_empty() {
        "(log is empty)".into()
    } else {
        format!("    {tail}")
    }
}

fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// The running controller of this profile, if its process is alive.
pub fn running_controller(profile: &Profile) -> Result<Option<ControllerRecord>> {
    Ok(profile
        .controller_record()?
        .filter(|r| process_alive(r.pid)))
}

/// A controller this profile recorded on this machine whose process is gone (killed, or
/// crashed): its pid.
pub fn dead_controller(profile: &Profile) -> Option<u32> {
    profile
        .controller_record()
        .ok()
        .flatten()
        .filter(|r| r.host == hostname() && !process_alive(r.pid))
        .map(|r| r.pid)
}

/// Starts a controller and engines for `profile`; `overrides` are settings from flags, passed
/// on to the controller process.
pub fn start(
    profile: &Profile,
    overrides: &[(&str, String)],
    engines: &EngineLaunch,
) -> Result<StartReport> {
    let t0 = Instant::now();
    profile.ensure()?;
    let settings = profile.settings(overrides)?;
    if let Some(rec) = running_controller(profile)? {
        bail!(
            "a cluster is already running for profile {:?} (controller pid {}); stop it with `cluster stop --profile {}` or add engines with `cluster engines -n N`",
            profile.name(),
            rec.pid,
            profile.name()
        );
    }
    // A controller that died may have left engines running: bring the controller back in
    // its place (same ports and key) and let them register again, rather than orphan them.
    let survivors = surviving_engines(profile)?;
    // Engines added later (`cluster engines`, or this restart's top-up) are of the kind
    // started first, unless told otherwise.
    let mut engines = engines.clone();
    if !survivors.is_empty() && engines.program == EngineProgram::Settings {
        engines.program = EngineProgram::recorded(profile);
    }
    let program = engines.program.resolve(&settings)?;
    let engines = EngineLaunch {
        program: program
            .clone()
            .map_or(EngineProgram::Stock, EngineProgram::Custom),
        ..engines
    };
    let engines = &engines;
    let record = LaunchRecord {
        engine_program: program,
    };
    if !survivors.is_empty()
        && ConnectionInfo::load(
            &profile.engine_file(),
            protocol::PROTOCOL_VERSION,
            &["engine", "heartbeat"],
        )
        .is_ok()
        && ConnectionInfo::load(
            &profile.client_file(),
            protocol::PROTOCOL_VERSION,
            &["client", "notify"],
        )
        .is_ok()
    {
        profile.write_launch_record(&record)?;
        return restart(profile, overrides, engines, &settings, t0, &survivors).inspect_err(|_| {
            let _ = stop(profile, Duration::from_secs(2));
        });
    }
    // Anything left from a cluster that died is stale now.
    profile.clear_run_state()?;
    profile.write_launch_record(&record)?;
    // From here on we own processes: a failed start stops whatever it launched.
    start_fresh(profile, overrides, engines, &settings, t0).inspect_err(|_| {
        let _ = stop(profile, Duration::from_secs(2));
    })
}

/// The error of a failed `start`: says so, and where the logs are unless the error already
/// names them (the folder, or a log in it).
pub fn start_failed(err: anyhow::Error, profile: &Profile) -> anyhow::Error {
    let dir = profile.log_dir();
    let dir_text = dir.to_string_lossy();
    if err.chain().any(|c| c.to_string().contains(&*dir_text)) {
        err.context("cluster start failed")
    } else {
        err.context(format!("cluster start failed; logs are in {dir_text}"))
    }
}

/// Pids of the local engines this profile launched that are still running.
pub fn surviving_engines(profile: &Profile) -> Result<Vec<u32>> {
    Ok(profile
        .engine_records()?
        .into_iter()
        .filter(|(_, r)| r.launcher == "local" && r.host == hostname() && process_alive(r.pid))
        .map(|(_, r)| r.pid)
        .collect())
}

/// Brings back the controller of a profile whose controller died while `survivors` (engine
/// pids) still run: `cluster controller --reuse`, then waits for them to register again and
/// tops the engines up to the count asked for.
fn restart(
    profile: &Profile,
    overrides: &[(&str, String)],
    engines: &EngineLaunch,
    settings: &Settings,
    t0: Instant,
    survivors: &[u32],
) -> Result<StartReport> {
    let pid = spawn_controller(profile, overrides, true)?;
    let client = client::Client::connect_file(profile.client_file())?;
    // They notice the silence within a few heartbeat periods, then register again.
    let wait = engines.timeout.max(Duration::from_secs(10));
    client.wait_for_engines(survivors.len(), wait).with_context(|| {
        format!(
            "the controller came back (pid {pid}), but not all of the {} engine(s) still running (pids {survivors:?}) registered again",
            survivors.len()
        )
    })?;
    let mut report = StartReport {
        profile: profile.name().to_owned(),
        controller_pid: pid,
        client_file: profile.client_file(),
        engine_file: profile.engine_file(),
        engine_pids: Vec::new(),
        engines_ready: survivors.len(),
        seconds: 0.0,
        reused_engine_pids: survivors.to_vec(),
    };
    let more = engines.count.saturating_sub(survivors.len());
    if more > 0 {
        let launch = EngineLaunch {
            count: more,
            ..engines.clone()
        };
        report.engine_pids = launch_engines(profile, settings, &launch, survivors.len())?;
        report.engines_ready += more;
    }
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

fn start_fresh(
    profile: &Profile,
    overrides: &[(&str, String)],
    engines: &EngineLaunch,
    settings: &Settings,
    t0: Instant,
) -> Result<StartReport> {
    let pid = spawn_controller(profile, overrides, false)?;
    let mut report = StartReport {
        profile: profile.name().to_owned(),
        controller_pid: pid,
        client_file: profile.client_file(),
        engine_file: profile.engine_file(),
        engine_pids: Vec::new(),
        engines_ready: 0,
        seconds: 0.0,
        reused_engine_pids: Vec::new(),
    };
    let launched = launch_engines(profile, settings, engines, 0)?;
    report.engine_pids = launched;
    report.engines_ready = engines.count;
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// Launches `cluster controller` detached (with `--reuse` to take over the connection files
/// of one that died) and waits until it has written its connection files; returns its pid.
fn spawn_controller(profile: &Profile, overrides: &[(&str, String)], reuse: bool) -> Result<u32> {
    let mut cmd = crate::program::command()?;
    cmd.arg("--profile").arg(profile.name()).arg("controller");
    if reuse {
        cmd.arg("--reuse");
    }
    for (k, v) in overrides {
        cmd.arg("--set").arg(format!("{k}={v}"));
    }
    cmd.env(
        "CLUSTER_DIR",
        profile.dir().parent().unwrap_or(Path::new(".")),
    );
    let log = profile.log_dir().join("controller.log");
    keep_previous(&log);
    let mut child = spawn_detached(cmd, &log)?;
    let pid = child.id();

    // Wait for the controller to bind and write its connection files.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = |path: &Path, required: &[&str]| {
            ConnectionInfo::load(path, protocol::PROTOCOL_VERSION, required)
                .is_ok_and(|(info, _)| info.controller_pid == pid)
        };
        if fresh(&profile.engine_file(), &["engine", "heartbeat"])
            && fresh(&profile.client_file(), &["client"])
        {
            break;
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the controller exited during start-up ({status}); its log {} ends with:\n{}",
                log.display(),
                log_tail(&log, 10)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the controller (pid {pid}) did not write its connection files within 10 s; see {}:\n{}",
                log.display(),
                log_tail(&log, 10)
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(pid)
}

/// Starts `launch.count` engines for the running controller of `profile` and waits until
/// `already + count` engines are registered. Returns their pids.
pub fn launch_engines(
    profile: &Profile,
    settings: &Settings,
    launch: &EngineLaunch,
    already: usize,
) -> Result<Vec<u32>> {
    let host = hostname();
    let mut children = spawn_engines(profile, settings, launch.count, &launch.program)?;
    let pids: Vec<u32> = children.iter().map(|(c, _)| c.id()).collect();
    let want = already + launch.count;
    let client = client::Client::connect_file(profile.client_file())?;
    let registered = client.wait_for_engines(want, launch.timeout);
    if registered.is_ok() {
        // A log that cannot be renamed keeps its first name: the engine runs either way.
        if let Ok(status) = client.status() {
            let ids = status
                .engines
                .iter()
                .filter(|e| e.host == host)
                .map(|e| (e.pid, e.id));
            name_logs(profile, &pids, ids.collect());
        }
    }
    prune_logs(profile, MAX_ENGINE_LOGS);
    match registered {
        Ok(_) => Ok(pids),
        Err(e) => {
            let mut msg = format!(
                "only some engines registered within {:?}: {e}",
                launch.timeout
            );
            for (child, log) in &mut children {
                if let Ok(Some(status)) = child.try_wait() {
                    msg.push_str(&format!(
                        "
  engine pid {} exited ({status}); its log {} ends with:
{}",
                        child.id(),
                        log.display(),
                        log_tail(log, 5)
                    ));
                }
            }
            msg.push_str(&format!(
                "
  controller log: {}",
                profile.log_dir().join("controller.log").display()
            ));
            Err(anyhow!(msg))
        }
    }
}

/// Spawns `count` local engines for the running controller of `profile` (`program` resolved
/// against the settings: the stock engine, the `engine_program` setting or another program),
/// each detached with its own log and recorded in `run/`. Does not wait for them to register.
/// Returns each child and its log.
pub fn spawn_engines(
    profile: &Profile,
    settings: &Settings,
    count: usize,
    program: &EngineProgram,
) -> Result<Vec<(Child, PathBuf)>> {
    let program = program.resolve(settings)?;
    let engine_file = profile.engine_file();
    if !engine_file.exists() {
        bail!(
            "no engine connection file at {}: is the controller running? Start one with `cluster start`",
            engine_file.display()
        );
    }
    let mut children = Vec::new();
    let host = hostname();
    for i in 0..count {
        let mut cmd = match &program {
            Some(p) => Command::new(p),
            None => {
                let mut c = crate::program::command()?;
                c.arg("engine");
                c
            }
        };
        cmd.arg("--file").arg(&engine_file);
        if let Some(python) = &settings.python {
            cmd.env(engine::PYTHON_ENV, python);
        }
        // Renamed after the engine's id once it has registered (see `name_logs`).
        let stamp = transport::now_us();
        let log = profile
            .log_dir()
            .join(format!("engine-new-{stamp}-{i}.log"));
        let child = spawn_detached(cmd, &log).with_context(|| {
            format!(
                "cannot launch engine program {}",
                program
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "cluster engine".into())
            )
        })?;
        let rec = EngineRecord {
            pid: child.id(),
            host: host.clone(),
            launcher: "local".into(),
            log: log.clone(),
        };
        profile.write_engine_record(&rec)?;
        children.push((child, log));
    }
    Ok(children)
}

/// Moves `path` to `path.1` (replacing an older `.1`), so a new file of that name can start
/// while the last one stays readable. Nothing to move is fine.
fn keep_previous(path: &Path) {
    let mut old = path.as_os_str().to_owned();
    old.push(".1");
    let _ = fs::rename(path, PathBuf::from(old));
}

/// Renames the logs of the engines just launched (`pids`) after the ids the controller gave
/// them (`ids`: pid → engine id of this host's engines), and updates their run records.
fn name_logs(
    profile: &Profile,
    pids: &[u32],
    ids: std::collections::HashMap<u32, protocol::EngineId>,
) {
    let Ok(records) = profile.engine_records() else {
        return;
    };
    let host = hostname();
    for (_, mut record) in records {
        if record.launcher != "local" || record.host != host || !pids.contains(&record.pid) {
            continue;
        }
        let Some(id) = ids.get(&record.pid) else {
            continue;
        };
        let named = profile.log_dir().join(format!("engine-{id}.log"));
        if record.log == named {
            continue;
        }
        keep_previous(&named);
        if fs::rename(&record.log, &named).is_ok() {
            record.log = named;
            let _ = profile.write_engine_record(&record);
        }
    }
}

/// Deletes the oldest engine logs of `log/` beyond `keep`, never the log of an engine that
/// still runs.
fn prune_logs(profile: &Profile, keep: usize) {
    let live: std::collections::HashSet<PathBuf> = profile
        .engine_records()
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, r)| r.launcher == "local" && r.host == hostname() && process_alive(r.pid))
        .map(|(_, r)| r.log)
        .collect();
    let Ok(entries) = fs::read_dir(profile.log_dir()) else {
        return;
    };
    let mut old: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("engine-"))
        .map(|e| e.path())
        .filter(|p| !live.contains(p))
        .map(|p| {
            let modified = fs::metadata(&p)
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (modified, p)
        })
        .collect();
    let excess = (old.len() + live.len()).saturating_sub(keep);
    old.sort();
    for (_, path) in old.into_iter().take(excess) {
        let _ = fs::remove_file(path);
    }
}

/// What `stop` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StopReport {
    /// Controller pid stopped, if one was running.
    pub controller_pid: Option<u32>,
    /// Engine pids stopped.
    pub engine_pids: Vec<u32>,
    /// Pids that needed SIGKILL.
    pub killed: Vec<u32>,
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: plain kill(2) on a pid we recorded; errors (already gone) are ignored.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

fn wait_gone(pids: &[u32], timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<u32> = pids.iter().copied().filter(|p| process_alive(*p)).collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Stops everything `profile` started: asks the controller to shut the cluster down, then
/// SIGTERM, then SIGKILL after `grace`; clears the run state.
pub fn stop(profile: &Profile, grace: Duration) -> Result<StopReport> {
    let mut report = StopReport::default();
    let controller = running_controller(profile)?;
    let engines: Vec<u32> = profile
        .engine_records()?
        .into_iter()
        .filter(|(_, r)| r.launcher == "local" && r.host == hostname() && process_alive(r.pid))
        .map(|(_, r)| r.pid)
        .collect();
    let mut pids = engines.clone();
    if let Some(rec) = &controller {
        // The polite way first: engines unregister and exit, the controller follows.
        let options = client::ClientOptions {
            connect_timeout: Duration::from_secs(2),
        };
        if let Ok(c) = client::Client::connect_file_with(profile.client_file(), options) {
            let _ = c.shutdown(true);
        }
        pids.push(rec.pid);
        report.controller_pid = Some(rec.pid);
    }
    report.engine_pids = engines;
    let mut alive = wait_gone(&pids, grace.min(Duration::from_secs(2)));
    if !alive.is_empty() {
        for pid in &alive {
            signal(*pid, libc::SIGTERM);
        }
        alive = wait_gone(&alive, grace);
    }
    if !alive.is_empty() {
        for pid in &alive {
            signal(*pid, libc::SIGKILL);
        }
        report.killed = alive.clone();
        let left = wait_gone(&alive, Duration::from_secs(5));
        if !left.is_empty() {
            bail!("processes {left:?} survived SIGKILL");
        }
    }
    profile.clear_run_state()?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn log_names(profile: &Profile) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(profile.log_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn engine_logs_are_capped_oldest_first_sparing_running_engines() {
        let root = tempfile::tempdir().unwrap();
        let profile = Profile::in_root(root.path(), "p").unwrap();
        profile.ensure().unwrap();
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(1_000_000 + s);
        for i in 0..10u64 {
            let path = profile.log_dir().join(format!("engine-{i}.log"));
            let file = fs::File::create(&path).unwrap();
            file.set_modified(at(i)).unwrap();
        }
        fs::write(profile.log_dir().join("controller.log"), "").unwrap();
        // The oldest log belongs to an engine that still runs (this test's process).
        profile
            .write_engine_record(&EngineRecord {
                pid: std::process::id(),
                host: hostname(),
                launcher: "local".into(),
                log: profile.log_dir().join("engine-0.log"),
            })
            .unwrap();
        prune_logs(&profile, 4);
        assert_eq!(
            log_names(&profile),
            [
                "controller.log",
                "engine-0.log",
                "engine-7.log",
                "engine-8.log",
                "engine-9.log"
            ]
        );
    }

    /// Regression: "cluster start failed; logs are in DIR" came before an error that named a
    /// log in DIR already.
    #[test]
    fn a_failed_start_names_the_log_folder_once() {
        let profile = Profile::in_root(Path::new("/p"), "x").unwrap();
        let log = profile.log_dir().join("controller.log");
        let named = anyhow!(
            "the controller exited; its log {} ends with: …",
            log.display()
        );
        let message = crate::exit::message(&start_failed(named, &profile));
        assert_eq!(
            message,
            "cluster start failed: the controller exited; its log /p/profile_x/log/controller.log ends with: …"
        );
        let unnamed = anyhow!("cannot start cluster");
        let message = crate::exit::message(&start_failed(unnamed, &profile));
        assert_eq!(
            message,
            "cluster start failed; logs are in /p/profile_x/log: cannot start cluster"
        );
    }

    #[test]
    fn the_previous_file_is_kept_as_dot_1() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("controller.log");
        keep_previous(&log);
        fs::write(&log, "first").unwrap();
        keep_previous(&log);
        fs::write(&log, "second").unwrap();
        keep_previous(&log);
        assert!(!log.exists());
        assert_eq!(
            fs::read_to_string(dir.path().join("controller.log.1")).unwrap(),
            "second"
        );
    }

    #[test]
    fn engine_programs_given_as_relative_paths_are_made_absolute() {
        let settings = Settings::default();
        let missing = EngineProgram::Custom("no/such/engine".into());
        let err = missing.resolve(&settings).unwrap_err().to_string();
        assert_eq!(err, "engine program no/such/engine does not exist");
        let here = EngineProgram::Custom("./Cargo.toml".into())
            .resolve(&settings)
            .unwrap()
            .unwrap();
        assert!(here.is_absolute() && here.exists(), "{}", here.display());
        let bare = EngineProgram::Custom("my-engine".into());
        assert_eq!(bare.resolve(&settings).unwrap(), Some("my-engine".into()));
        assert_eq!(EngineProgram::Stock.resolve(&settings).unwrap(), None);
        let custom = Settings {
            engine_program: Some("/opt/e".into()),
            ..Settings::default()
        };
        assert_eq!(
            EngineProgram::Settings.resolve(&custom).unwrap(),
            Some("/opt/e".into())
        );
    }
}
