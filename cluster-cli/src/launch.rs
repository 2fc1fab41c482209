//! Launching and stopping the processes of a local cluster.
//!
//! `cluster start` spawns `cluster controller` detached (its own session, so it outlives the
//! shell and a kill of the caller's process group), waits for the controller to write its
//! connection files, spawns the engines the same way, and returns once they have all
//! registered. Every process is recorded in the profile's `run/` folder so that `cluster stop`
//! can find it: first a polite shutdown request through the controller, then SIGTERM, then
//! SIGKILL after a grace period.

use anyhow::{anyhow, bail, Context as _, Result};
use profiles::{process_alive, ControllerRecord, EngineRecord, Profile, Settings};
use security::ConnectionInfo;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to launch engines.
#[derive(Debug, Clone)]
pub struct EngineLaunch {
    /// Engines to start.
    pub count: usize,
    /// Program to run instead of `cluster engine` (given `--file PATH`).
    pub program: Option<PathBuf>,
    /// How long to wait for them to register.
    pub timeout: Duration,
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
        return restart(profile, overrides, engines, &settings, t0, &survivors).inspect_err(|_| {
            let _ = stop(profile, Duration::from_secs(2));
        });
    }
    // Anything left from a cluster that died is stale now.
    profile.clear_run_state()?;
    // From here on we own processes: a failed start stops whatever it launched.
    start_fresh(profile, overrides, engines, &settings, t0).inspect_err(|_| {
        let _ = stop(profile, Duration::from_secs(2));
    })
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
    let program = launch
        .program
        .clone()
        .or_else(|| settings.engine_program.as_ref().map(PathBuf::from));
    if let Some(p) = &program {
        if !p.exists() && !p.is_absolute() && p.components().count() > 1 {
            bail!("engine program {} does not exist", p.display());
        }
    }
    let engine_file = profile.engine_file();
    if !engine_file.exists() {
        bail!(
            "no engine connection file at {}: is the controller running? Start one with `cluster start`",
            engine_file.display()
        );
    }
    let mut children = Vec::new();
    let host = hostname();
    for i in 0..launch.count {
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
        let stamp = transport::now_us();
        let log = profile.log_dir().join(format!("engine-{stamp}-{i}.log"));
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
    let pids: Vec<u32> = children.iter().map(|(c, _)| c.id()).collect();
    let want = already + launch.count;
    let client = client::Client::connect_file(profile.client_file())?;
    match client.wait_for_engines(want, launch.timeout) {
        Ok(_) => Ok(pids),
        Err(e) => {
            let mut msg = format!(
                "only some engines registered within {:?}: {e}",
                launch.timeout
            );
            for (child, log) in &mut children {
                if let Ok(Some(status)) = child.try_wait() {
                    msg.push_str(&format!(
                        "\n  engine pid {} exited ({status}); its log {} ends with:\n{}",
                        child.id(),
                        log.display(),
                        log_tail(log, 5)
                    ));
                }
            }
            msg.push_str(&format!(
                "\n  controller log: {}",
                profile.log_dir().join("controller.log").display()
            ));
            Err(anyhow!(msg))
        }
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
