//! `cluster scale`: the autoscaler's loop around the pure policy
//! ([`launcher::scale::decide`]).
//!
//! `cluster scale` starts this loop detached (`cluster scale --foreground`, its output in
//! `log/scale.log`) and returns. Every `interval_ms` the loop reads the controller's status
//! through the client crate, feeds each engine's outstanding count to an [`IdleTracker`], and
//! asks `decide` what to do: start engines (local processes, not waited for: the next rounds
//! see them register), release idle ones (SIGUSR1: the engine drains, hands back what it
//! holds and leaves), or wait. A launch whose engines exit before registering, or do not
//! register within [`REGISTER_TIMEOUT`], is a failed start: the policy backs off.
//!
//! What it decided and why goes to `run/scale.json` ([`ScaleState`], rewritten each round),
//! which `cluster status` shows; `cluster stop` ends the loop first (SIGTERM, by the pid in
//! that file), so that it does not start engines while the cluster stops. The engines it
//! started are recorded in `run/` like those of `cluster engines`, and stop with the cluster.

use anyhow::{bail, Context as _, Result};
use launcher::restart::{Exit, History, Mode, RestartPolicy, Verdict};
use launcher::scale::{
    decide, Decision, Failures, IdleTracker, Observation, ScalePolicy, ScaleSettings,
};
use profiles::{process_alive, Profile, Settings};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long launched engines may take to register before the launch counts as failed.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);

/// File name of the loop's state in `run/`.
const STATE_FILE: &str = "scale.json";

/// What the loop last did, in `run/scale.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScaleState {
    /// The loop's pid.
    pub pid: u32,
    /// Host it runs on.
    pub host: String,
    /// Where it starts engines (`local`).
    pub launcher: String,
    /// Engines kept at least.
    pub min: usize,
    /// Engines never exceeded.
    pub max: usize,
    /// Registered engines at the last round.
    pub engines: usize,
    /// Engines launched, not registered yet.
    pub starting: usize,
    /// Tasks waiting for an engine.
    pub queued: u64,
    /// The last decision: `start N`, `release ids`, or `wait`.
    pub decision: String,
    /// Why, for people.
    pub why: String,
    /// Engines it started so far.
    pub started: u64,
    /// Engines it released so far.
    pub released: u64,
    /// Failed starts in a row.
    pub failures: u32,
    /// Whether it scales (`cluster scale`) or only restarts (`cluster start --restart`).
    #[serde(default)]
    pub scaling: bool,
    /// `never`, `on-failure` or `always`: which dead local engines it starts again.
    #[serde(default)]
    pub restart: String,
    /// Engines it started again after they died.
    #[serde(default)]
    pub restarts: u64,
    /// Why it stopped restarting an engine (a crash loop), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gave_up: Option<String>,
    /// When this was written, microseconds since the Unix epoch.
    pub time_us: u64,
}

impl ScaleState {
    /// `run/scale.json` of `profile`, if a loop wrote one.
    pub fn read(profile: &Profile) -> Option<ScaleState> {
        let text = std::fs::read_to_string(profile.run_dir().join(STATE_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes it through a temporary file, so that a reader never sees half of it.
    fn write(&self, run_dir: &Path) -> Result<()> {
        let path = run_dir.join(STATE_FILE);
        let tmp = run_dir.join(format!("{STATE_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
    }

    /// One line for `cluster status`.
    pub fn line(&self) -> String {
        let mut restart = String::new();
        if self.restart != "never" && !self.restart.is_empty() {
            restart = format!(
                "; restart {}: {} restart(s){}",
                self.restart,
                self.restarts,
                self.gave_up
                    .as_ref()
                    .map(|w| format!(", gave up: {w}"))
                    .unwrap_or_default()
            );
        }
        if !self.scaling {
            return format!(
                "supervisor (pid {}): {} engine(s){restart}",
                self.pid, self.engines
            );
        }
        format!(
            "scale (pid {}, {} launcher, {}..{} engines): {} engine(s), {} starting, {} queued; {}: {} [started {}, released {}{}]{restart}",
            self.pid,
            self.launcher,
            self.min,
            self.max,
            self.engines,
            self.starting,
            self.queued,
            self.decision,
            self.why,
            self.started,
            self.released,
            if self.failures > 0 {
                format!(", {} failed start(s) in a row", self.failures)
            } else {
                String::new()
            }
        )
    }
}

/// The running loop of `profile`, if any.
pub fn running(profile: &Profile) -> Option<ScaleState> {
    ScaleState::read(profile).filter(|s| s.host == hostname() && process_alive(s.pid))
}

/// Ends the running loop of `profile` (SIGTERM, then waits up to 5 s for it to go), so that
/// it starts nothing more. Returns what was done, for `cluster stop`.
pub fn stop(profile: &Profile) -> Option<String> {
    let state = running(profile)?;
    // SAFETY: kill(2) on the pid the loop recorded for itself.
    unsafe {
        libc::kill(state.pid as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_alive(state.pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    Some(format!(
        "stopped the {} (pid {})",
        if state.scaling {
            "autoscaler"
        } else {
            "supervisor"
        },
        state.pid
    ))
}

fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// Starts the loop for `profile` detached, passing `args` (the flags of `cluster scale`)
/// on; returns its pid once it wrote its first state.
pub fn spawn(profile: &Profile, args: &[String]) -> Result<u32> {
    if let Some(s) = running(profile) {
        bail!(
            "an autoscaler already runs for profile {:?} (pid {}); `cluster stop` ends it with the cluster",
            profile.name(),
            s.pid
        );
    }
    let mut cmd = crate::program::command()?;
    cmd.arg("--profile")
        .arg(profile.name())
        .arg("scale")
        .arg("--foreground")
        .args(args);
    cmd.env(
        "CLUSTER_DIR",
        profile.dir().parent().unwrap_or(Path::new(".")),
    );
    let log = profile.log_dir().join("scale.log");
    let mut child = crate::launch::spawn_detached(cmd, &log)?;
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if ScaleState::read(profile).is_some_and(|s| s.pid == pid) {
            return Ok(pid);
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the autoscaler exited at once ({status}); its log {} ends with:\n{}",
                log.display(),
                crate::launch::log_tail(&log, 10)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the autoscaler (pid {pid}) wrote no state within 10 s; see {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One launch of local engines, until all registered or it failed.
struct Launch {
    /// Pids not registered yet.
    waiting: BTreeSet<u32>,
    /// When it was made, on the loop's clock.
    at: Duration,
}

/// The loop's memory between rounds.
struct Supervisor<'a> {
    profile: &'a Profile,
    settings: &'a Settings,
    policy: ScalePolicy,
    interval: Duration,
    host: String,
    idle: IdleTracker,
    failures: Failures,
    launches: Vec<Launch>,
    /// The engines it started, to reap them when they exit.
    children: BTreeMap<u32, (Child, PathBuf)>,
    /// Engines told to drain, not gone yet (kept out of the policy's view).
    releasing: BTreeSet<u32>,
    /// Their pids, so that their exit is not taken for a death.
    draining_pids: BTreeSet<u32>,
    state: ScaleState,
    /// Whether it makes scaling decisions (else it only restarts).
    scaling: bool,
    restart: RestartPolicy,
    /// Local engines watched for restarts, by pid: their slot and when they started.
    watched: BTreeMap<u32, (usize, Duration)>,
    /// Each slot's restart history.
    histories: Vec<History>,
    /// Restarts due: when, and the slot.
    due: Vec<(Duration, usize)>,
}

/// Runs the loop in this process until SIGTERM/SIGINT, or until the controller is gone:
/// scaling when `scaling`, and restarting dead local engines as `restart` says.
pub fn run_foreground(
    profile: &Profile,
    scale: &ScaleSettings,
    scaling: bool,
    restart: RestartPolicy,
) -> Result<()> {
    let policy = scale.policy().map_err(anyhow::Error::msg)?;
    let settings = profile.settings(&[])?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install the autoscaler's signal handlers")?;
    }
    let host = hostname();
    let mut sup = Supervisor {
        profile,
        settings: &settings,
        policy,
        interval: Duration::from_millis(scale.interval_ms.max(10)),
        host: host.clone(),
        idle: IdleTracker::default(),
        failures: Failures::default(),
        launches: Vec::new(),
        children: BTreeMap::new(),
        releasing: BTreeSet::new(),
        draining_pids: BTreeSet::new(),
        scaling,
        watched: BTreeMap::new(),
        histories: Vec::new(),
        due: Vec::new(),
        state: ScaleState {
            scaling,
            restart: mode_name(restart.mode).into(),
            pid: std::process::id(),
            host,
            launcher: "local".into(),
            min: scale.min,
            max: scale.max,
            decision: "wait".into(),
            why: "starting".into(),
            time_us: transport::now_us(),
            ..ScaleState::default()
        },
        restart,
    };
    sup.state.write(&profile.run_dir())?;
    let client = client::Client::connect_file(profile.client_file())?;
    let t0 = Instant::now();
    tracing::info!(
        "autoscaler for profile {:?}: {}..{} engines, idle timeout {:?}, backlog {}",
        profile.name(),
        scale.min,
        scale.max,
        sup.policy.idle_timeout,
        sup.policy.backlog
    );
    while !stop.load(Ordering::Relaxed) {
        let wait = match client.status() {
            Ok(status) => sup.round(t0.elapsed(), &status),
            Err(e) => {
                if crate::launch::running_controller(profile)
                    .ok()
                    .flatten()
                    .is_none()
                {
                    tracing::info!("the controller is gone; the autoscaler stops");
                    break;
                }
                sup.state.decision = "wait".into();
                sup.state.why = format!("cannot read the controller's status: {e}");
                None
            }
        };
        sup.state.time_us = transport::now_us();
        if let Err(e) = sup.state.write(&profile.run_dir()) {
            tracing::warn!("{e:#}");
        }
        let pause = wait.map_or(sup.interval, |w| w.min(sup.interval));
        let until = Instant::now() + pause;
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10).min(pause));
        }
    }
    let _ = std::fs::remove_file(profile.run_dir().join(STATE_FILE));
    Ok(())
}

impl Supervisor<'_> {
    /// One observation and decision at `now`; returns when to look again at the latest.
    fn round(&mut self, now: Duration, status: &protocol::StatusReport) -> Option<Duration> {
        self.watch_restarts(now, status);
        self.reap();
        let registered: BTreeSet<u32> = status
            .engines
            .iter()
            .filter(|e| e.host == self.host)
            .map(|e| e.pid)
            .collect();
        self.follow_launches(now, &registered);
        // Engines told to drain leave on their own; until then they are not the policy's.
        self.releasing
            .retain(|id| status.engines.iter().any(|e| e.id.0 == *id));
        let seen: Vec<(u32, u32)> = status
            .engines
            .iter()
            .filter(|e| !self.releasing.contains(&e.id.0))
            .map(|e| (e.id.0, e.outstanding))
            .collect();
        let engines = self.idle.observe(now, &seen);
        if !self.scaling {
            self.state.engines = engines.len();
            self.state.decision = "watch".into();
            self.state.why = "restarting engines that die".into();
            return self.due.iter().map(|(t, _)| t.saturating_sub(now)).min();
        }
        let starting: usize = self.launches.iter().map(|l| l.waiting.len()).sum();
        let obs = Observation {
            now,
            queued: usize::try_from(status.tasks.queued).unwrap_or(usize::MAX),
            engines,
            starting,
            launches: self.launches.len(),
        };
        self.state.engines = obs.engines.len();
        self.state.queued = status.tasks.queued;
        self.state.failures = self.failures.consecutive;
        let decision = decide(&self.policy, &obs, &self.failures);
        let mut until = None;
        match decision {
            Decision::Start(n) => self.start(now, n),
            Decision::Release(ids) => self.release(&ids, status),
            Decision::Wait { why, until: at } => {
                self.state.decision = "wait".into();
                self.state.why = why;
                until = at.map(|at| at.saturating_sub(now));
            }
        }
        self.state.starting = self.launches.iter().map(|l| l.waiting.len()).sum();
        until
    }

    /// Restarts: notes the local engines to watch, carries out the policy for those that
    /// died since the last round (a child's exit status, else gone = lost; an engine it
    /// released is not restarted), and starts again those whose back-off ended.
    fn watch_restarts(&mut self, now: Duration, status: &protocol::StatusReport) {
        if self.restart.mode == Mode::Never {
            return;
        }
        for e in status.engines.iter().filter(|e| e.host == self.host) {
            if !self.watched.contains_key(&e.pid) {
                let slot = self.histories.len();
                self.histories.push(History::default());
                self.watched.insert(e.pid, (slot, now));
            }
        }
        let released: BTreeSet<u32> = status
            .engines
            .iter()
            .filter(|e| self.releasing.contains(&e.id.0))
            .map(|e| e.pid)
            .collect();
        let mut ended = Vec::new();
        for (&pid, &(slot, since)) in &self.watched {
            let exit = match self.children.get_mut(&pid) {
                Some((child, _)) => match child.try_wait() {
                    Ok(Some(st)) => {
                        use std::os::unix::process::ExitStatusExt;
                        Exit::from_status(st.code(), st.signal())
                    }
                    _ => continue,
                },
                None if process_alive(pid) => continue,
                None => Exit::Lost,
            };
            let exit = if released.contains(&pid) || self.draining_pids.contains(&pid) {
                Exit::Requested
            } else {
                exit
            };
            ended.push((pid, slot, since, exit));
        }
        for (pid, slot, since, exit) in ended {
            self.watched.remove(&pid);
            self.children.remove(&pid);
            let ran = now.saturating_sub(since);
            match self
                .restart
                .on_exit(&mut self.histories[slot], exit, ran, now)
            {
                Verdict::RestartAt(at) => {
                    tracing::warn!(
                        "engine pid {pid} died ({exit:?}) after {:.1} s; restarting it in {:.1} s",
                        ran.as_secs_f64(),
                        at.saturating_sub(now).as_secs_f64()
                    );
                    self.due.push((at, slot));
                }
                Verdict::GiveUp(why) => {
                    tracing::error!("engine pid {pid}: {why}");
                    self.state.gave_up = Some(why);
                }
                Verdict::No => {}
            }
        }
        let (ready, later): (Vec<_>, Vec<_>) = self.due.iter().partition(|(at, _)| *at <= now);
        self.due = later;
        for (_, slot) in ready {
            // The settings as they are now: a fixed engine_program applies to the next start.
            let fresh = self.profile.settings(&[]);
            let settings = fresh.as_ref().unwrap_or(self.settings);
            match crate::launch::spawn_engines(
                self.profile,
                settings,
                1,
                &crate::launch::EngineProgram::Settings,
            ) {
                Ok(children) => {
                    for (child, log) in children {
                        let pid = child.id();
                        tracing::info!("restarted engine slot {slot} as pid {pid}");
                        self.watched.insert(pid, (slot, now));
                        self.children.insert(pid, (child, log));
                        self.state.restarts += 1;
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot restart an engine: {e:#}");
                    self.due.push((now + self.restart.backoff_max, slot));
                }
            }
        }
    }

    /// Reaps the engines it started that exited (they would linger as zombies, and count
    /// as alive).
    fn reap(&mut self) {
        self.children
            .retain(|_, (child, _)| matches!(child.try_wait(), Ok(None)));
    }

    /// Crosses registered pids off the launches; a launch is done when all registered (a
    /// start that worked), failed when one of its engines exited first or the wait ran out.
    fn follow_launches(&mut self, now: Duration, registered: &BTreeSet<u32>) {
        let mut failed = Vec::new();
        let mut worked = false;
        let children = &self.children;
        self.launches.retain_mut(|launch| {
            launch.waiting.retain(|pid| !registered.contains(pid));
            if launch.waiting.is_empty() {
                worked = true;
                return false;
            }
            if let Some(pid) = launch.waiting.iter().find(|p| !children.contains_key(p)) {
                failed.push(format!("engine pid {pid} exited before it registered"));
                return false;
            }
            if now.saturating_sub(launch.at) > REGISTER_TIMEOUT {
                failed.push(format!(
                    "{} engine(s) did not register within {} s",
                    launch.waiting.len(),
                    REGISTER_TIMEOUT.as_secs()
                ));
                for pid in &launch.waiting {
                    // SAFETY: kill(2) on an engine this loop started.
                    unsafe {
                        libc::kill(*pid as i32, libc::SIGTERM);
                    }
                }
                return false;
            }
            true
        });
        if worked && failed.is_empty() {
            self.failures.succeeded();
        }
        for why in failed {
            tracing::warn!("failed start: {why}");
            self.failures.failed(now, why);
        }
    }

    fn start(&mut self, now: Duration, n: usize) {
        match crate::launch::spawn_engines(
            self.profile,
            self.settings,
            n,
            &crate::launch::EngineProgram::Settings,
        ) {
            Ok(children) => {
                let waiting: BTreeSet<u32> = children.iter().map(|(c, _)| c.id()).collect();
                tracing::info!("starting {n} engine(s): pids {waiting:?}");
                for (child, log) in children {
                    self.children.insert(child.id(), (child, log));
                }
                self.launches.push(Launch { waiting, at: now });
                self.state.started += n as u64;
                self.state.decision = format!("start {n}");
                self.state.why = "tasks wait and no engine is free".into();
            }
            Err(e) => {
                let why = format!("{e:#}");
                tracing::warn!("cannot start engines: {why}");
                self.failures.failed(now, why.clone());
                self.state.decision = "wait".into();
                self.state.why = format!("start failed: {why}");
            }
        }
    }

    fn release(&mut self, ids: &[u32], status: &protocol::StatusReport) {
        let mut done = Vec::new();
        for id in ids {
            let Some(e) = status.engines.iter().find(|e| e.id.0 == *id) else {
                continue;
            };
            if e.host != self.host {
                tracing::warn!(
                    "engine {id} runs on {}, not here; the local launcher cannot release it",
                    e.host
                );
                continue;
            }
            tracing::info!("releasing idle engine {id} (pid {}): SIGUSR1", e.pid);
            // SAFETY: kill(2) on the pid of a local engine of this cluster.
            unsafe {
                libc::kill(e.pid as i32, libc::SIGUSR1);
            }
            self.releasing.insert(*id);
            self.draining_pids.insert(e.pid);
            done.push(id.to_string());
        }
        self.state.released += done.len() as u64;
        self.state.decision = format!("release {}", done.join(","));
        self.state.why = format!(
            "idle for {} s or more",
            self.policy.idle_timeout.as_secs_f64()
        );
    }
}

/// The setting's name of `mode`.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Never => "never",
        Mode::OnFailure => "on-failure",
        Mode::Always => "always",
    }
}

/// Seconds in `text`: a number (seconds), or one with a unit `s`, `m`, `h` (`90s`, `5m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => t.split_at(i),
        None => (t, "s"),
    };
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "{text:?}: expected a duration like 300, 90s, 5m or 1h"
            ))
        }
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: expected a duration like 300, 90s, 5m or 1h"))?;
    Duration::try_from_secs_f64(n * scale).map_err(|_| format!("{text:?}: not a valid duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_or_without_units() {
        assert_eq!(parse_duration("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "5x", "m", "-1"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_status_line_says_what_and_why() {
        let s = ScaleState {
            pid: 9,
            launcher: "local".into(),
            max: 4,
            engines: 2,
            decision: "wait".into(),
            why: "nothing waiting".into(),
            started: 2,
            scaling: true,
            restart: "never".into(),
            ..ScaleState::default()
        };
        let line = s.line();
        assert!(!line.contains("restart"), "{line}");
        let watch = ScaleState {
            scaling: false,
            restart: "on-failure".into(),
            restarts: 2,
            gave_up: Some("a crash loop".into()),
            ..s.clone()
        };
        let shown = watch.line();
        assert!(shown.starts_with("supervisor (pid 9)"), "{shown}");
        assert!(
            shown.contains("restart on-failure: 2 restart(s), gave up: a crash loop"),
            "{shown}"
        );
        assert!(
            line.contains("pid 9")
                && line.contains("0..4")
                && line.contains("wait: nothing waiting"),
            "{line}"
        );
    }
}
