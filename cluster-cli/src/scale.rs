//! `cluster scale`: the autoscaler's loop around the pure policy
//! ([`launcher::scale::decide`]), and the restarts of engines that die
//! ([`launcher::restart::RestartPolicy`]).
//!
//! `cluster scale` starts this loop detached (`cluster scale --foreground`, its output in
//! `log/scale.log`) and returns; `cluster start --restart` starts it watch-only (no scaling).
//! Every `interval_ms` the loop reads the controller's status through the client crate,
//! feeds each engine's outstanding count to an [`IdleTracker`], and asks `decide` what to do:
//!
//! * start engines: local processes, or one Slurm job (`[scale] launcher = "slurm"`), not
//!   waited for: the next rounds see them register. A pending job counts as engines on their
//!   way. A launch whose engines exit (or whose job ends) before registering, or do not
//!   register within [`REGISTER_TIMEOUT`] (of the job running), is a failed start: the
//!   policy backs off;
//! * release idle ones: a local engine gets SIGUSR1 (it drains, hands back what it holds and
//!   leaves), a Slurm job `scancel --signal=USR1` (all its engines: a job goes whole);
//! * cancel Slurm jobs still pending that nothing needs any more;
//! * or wait.
//!
//! Restarts: local engines it watches (a child's exit status, else gone = lost), engines of
//! the recorded ssh hosts (gone from the controller and, over ssh, from their host), and the
//! Slurm jobs recorded in `run/` (one `squeue` per `[slurm] poll_interval_ms`; a job that
//! ended badly is submitted again from its kept script). Each restart waits out the policy's
//! back-off and counts towards its limit.
//!
//! What it decided and why goes to `run/scale.json` ([`ScaleState`], rewritten each round),
//! which `cluster status` shows; `cluster stop` ends the loop first (SIGTERM, by the pid in
//! that file), so that it does not start engines while the cluster stops. The engines it
//! started are recorded in `run/` like those of `cluster engines`, and stop with the cluster.

use anyhow::{bail, Context as _, Result};
use launcher::restart::{Exit, History, Mode, RestartPolicy, Verdict};
use launcher::scale::{
    decide, Decision, Failures, IdleTracker, Observation, ScaleLauncher, ScalePolicy, ScaleSettings,
};
use launcher::slurm::{self, JobId, JobRecord, JobStatus, Slurm, SlurmSettings};
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

/// What a due restart starts again.
#[derive(Debug, Clone)]
enum Redo {
    /// One local engine.
    Local,
    /// The Slurm job that ended, submitted again as it was.
    Slurm(JobRecord),
    /// One engine on this ssh host (its destination).
    Ssh(String),
}

/// A Slurm job the loop follows: one it submitted (a launch until its engines registered)
/// or one `cluster start`/`cluster engines` recorded in `run/`.
struct Job {
    record: JobRecord,
    /// Its group and launch key for the policy.
    key: u64,
    /// Submitted by the autoscaler, engines not all registered yet.
    launch: bool,
    /// When the loop submitted or found it.
    at: Duration,
    /// Since when it runs.
    running_since: Option<Duration>,
    /// Its last state.
    state: Option<JobStatus>,
    /// When the loop told it to go (drain signal or cancel), if it did.
    released: Option<Duration>,
    /// Its restart history.
    slot: usize,
}

/// An ssh engine the loop watches for restarts.
struct SshWatch {
    slot: usize,
    since: Duration,
}

/// The loop's memory between rounds.
struct Supervisor<'a> {
    profile: &'a Profile,
    settings: &'a Settings,
    policy: ScalePolicy,
    launcher: ScaleLauncher,
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
    /// Restarts due: when, the slot, and what to start.
    due: Vec<(Duration, usize, Redo)>,
    /// Slurm, once there are jobs to follow or start.
    slurm: Option<Slurm>,
    /// The Slurm jobs followed.
    jobs: Vec<Job>,
    /// Jobs no longer followed (ended), so that their records are not taken up again.
    done_jobs: BTreeSet<JobId>,
    next_key: u64,
    /// ssh engines watched, by (destination, pid).
    ssh: BTreeMap<(String, u32), SshWatch>,
    /// Whether the ssh engines run the binary `--copy-binary` sent.
    ssh_copied_binary: bool,
    /// When each ssh host was last checked for dead engines.
    ssh_checked: BTreeMap<String, Duration>,
    /// Since when no task has waited.
    quiet_since: Option<Duration>,
    /// When the Slurm jobs were last polled.
    last_poll: Option<Duration>,
}

/// What the loop does besides scaling.
#[derive(Debug)]
pub struct Options {
    /// Whether it scales (else it only restarts).
    pub scaling: bool,
    /// Which dead engines it starts again.
    pub restart: RestartPolicy,
    /// The ssh engines run the binary `--copy-binary` sent (restarts use it too).
    pub ssh_copied_binary: bool,
}

/// Runs the loop in this process until SIGTERM/SIGINT, or until the controller is gone:
/// scaling when `options.scaling`, and restarting dead engines (local, ssh, Slurm jobs) as
/// `options.restart` says.
pub fn run_foreground(profile: &Profile, scale: &ScaleSettings, options: Options) -> Result<()> {
    let Options {
        scaling,
        restart,
        ssh_copied_binary,
    } = options;
    let policy = scale.policy().map_err(anyhow::Error::msg)?;
    let settings = profile.settings(&[])?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install the autoscaler's signal handlers")?;
    }
    let host = hostname();
    let slurm = if scaling && scale.launcher == ScaleLauncher::Slurm
        || !slurm::records(&profile.run_dir()).is_empty()
    {
        Some(Slurm::system(SlurmSettings::load(profile, &[])?))
    } else {
        None
    };
    let mut sup = Supervisor {
        profile,
        settings: &settings,
        policy,
        launcher: scale.launcher,
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
        slurm,
        jobs: Vec::new(),
        done_jobs: BTreeSet::new(),
        next_key: 1,
        ssh: BTreeMap::new(),
        ssh_copied_binary,
        ssh_checked: BTreeMap::new(),
        quiet_since: None,
        last_poll: None,
        state: ScaleState {
            scaling,
            restart: mode_name(restart.mode).into(),
            pid: std::process::id(),
            host,
            launcher: scale.launcher.name().into(),
            min: scale.min,
            max: scale.max,
            decision: "wait".into(),
            why: "starting".into(),
            time_us: transport::now_us(),
            ..ScaleState::default()
        },
        restart,
    };
    // The state is first written after the first round, so that `spawn` (which waits for
    // it) returns once the engines running now are watched: one killed right after
    // `cluster start --restart` returned is not missed.
    let client = client::Client::connect_file(profile.client_file())?;
    let mut first = true;
    let t0 = Instant::now();
    tracing::info!(
        "autoscaler for profile {:?}: {} launcher, {}..{} engines, idle timeout {:?}, backlog {}",
        profile.name(),
        scale.launcher.name(),
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
            if first {
                return Err(e);
            }
            tracing::warn!("{e:#}");
        }
        first = false;
        let pause = wait.map_or(sup.interval, |w| w.min(sup.interval));
        let until = Instant::now() + pause;
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10).min(pause));
        }
    }
    let _ = std::fs::remove_file(profile.run_dir().join(STATE_FILE));
    Ok(())
}

/// Engines of `status` in Slurm job `id`.
fn in_job(status: &protocol::StatusReport, id: &JobId) -> usize {
    status
        .engines
        .iter()
        .filter(|e| e.job.as_deref() == Some(id.0.as_str()))
        .count()
}

impl Supervisor<'_> {
    /// One observation and decision at `now`; returns when to look again at the latest.
    fn round(&mut self, now: Duration, status: &protocol::StatusReport) -> Option<Duration> {
        self.watch_restarts(now, status);
        self.watch_ssh(now, status);
        self.follow_jobs(now, status);
        self.run_due(now);
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
        let groups: BTreeMap<&str, (u64, bool)> = self
            .jobs
            .iter()
            .map(|j| (j.record.job_id.0.as_str(), (j.key, j.released.is_some())))
            .collect();
        let group_of = |e: &protocol::EngineStatus| e.job.as_deref().and_then(|j| groups.get(j));
        let seen: Vec<(u32, u32)> = status
            .engines
            .iter()
            .filter(|e| !self.releasing.contains(&e.id.0))
            .filter(|e| !group_of(e).is_some_and(|(_, released)| *released))
            .map(|e| (e.id.0, e.outstanding))
            .collect();
        let mut engines = self.idle.observe(now, &seen);
        for view in &mut engines {
            let Some(e) = status.engines.iter().find(|e| e.id.0 == view.key) else {
                continue;
            };
            view.group = group_of(e).map(|(key, _)| *key);
            // Only local engines and engines of followed Slurm jobs can be released here.
            view.kept = view.group.is_none() && e.host != self.host;
        }
        if !self.scaling {
            self.state.engines = engines.len();
            self.state.decision = "watch".into();
            self.state.why = "restarting engines that die".into();
            return self.due.iter().map(|(t, ..)| t.saturating_sub(now)).min();
        }
        let mut starting: usize = self.launches.iter().map(|l| l.waiting.len()).sum();
        let mut queued_launches = Vec::new();
        let mut pending = Vec::new();
        for j in self
            .jobs
            .iter()
            .filter(|j| j.launch && j.released.is_none())
        {
            let have = in_job(status, &j.record.job_id);
            starting += j.record.engines.saturating_sub(have);
            let queued = j
                .state
                .as_ref()
                .is_none_or(|s| s.state.phase() == slurm::Phase::Queued);
            if queued && have == 0 {
                queued_launches.push((j.key, j.record.engines));
                if let Some(s) = &j.state {
                    pending.push(slurm::describe(s));
                }
            }
        }
        let launches = self.launches.len()
            + self
                .jobs
                .iter()
                .filter(|j| j.launch && j.released.is_none())
                .count();
        self.quiet_since = if status.tasks.queued > 0 {
            None
        } else {
            self.quiet_since.or(Some(now))
        };
        let obs = Observation {
            now,
            queued: usize::try_from(status.tasks.queued).unwrap_or(usize::MAX),
            engines,
            starting,
            launches,
            queued_launches,
            quiet_since: self.quiet_since,
        };
        self.state.engines = obs.engines.len();
        self.state.queued = status.tasks.queued;
        self.state.failures = self.failures.consecutive;
        let decision = decide(&self.policy, &obs, &self.failures);
        let mut until = None;
        match decision {
            Decision::Start(n) => self.start(now, n),
            Decision::Release(ids) => self.release(now, &ids, status),
            Decision::Cancel(keys) => self.cancel(now, &keys),
            Decision::Wait { why, until: at } => {
                self.state.decision = "wait".into();
                self.state.why = why;
                if !pending.is_empty() {
                    self.state
                        .why
                        .push_str(&format!("; {}", pending.join("; ")));
                }
                until = at.map(|at| at.saturating_sub(now));
            }
        }
        // Counted again: a start just made is on its way too.
        self.state.starting = self.launches.iter().map(|l| l.waiting.len()).sum::<usize>()
            + self
                .jobs
                .iter()
                .filter(|j| j.launch && j.released.is_none())
                .map(|j| {
                    j.record
                        .engines
                        .saturating_sub(in_job(status, &j.record.job_id))
                })
                .sum::<usize>();
        until
    }

    /// What local engines it starts run: the program `cluster start --engine-program`
    /// recorded, else the settings' `engine_program` as they are now, else the stock engine.
    fn program(&self) -> crate::launch::EngineProgram {
        match crate::launch::EngineProgram::recorded(self.profile) {
            custom @ crate::launch::EngineProgram::Custom(_) => custom,
            _ => crate::launch::EngineProgram::Settings,
        }
    }

    /// A new restart slot.
    fn slot(&mut self) -> usize {
        self.histories.push(History::default());
        self.histories.len() - 1
    }

    /// Carries out the restart policy for an engine (or job) that ended; `what` names it.
    fn ended(
        &mut self,
        now: Duration,
        slot: usize,
        exit: Exit,
        ran: Duration,
        what: &str,
        redo: Redo,
    ) {
        match self
            .restart
            .on_exit(&mut self.histories[slot], exit, ran, now)
        {
            Verdict::RestartAt(at) => {
                tracing::warn!(
                    "{what} ended ({exit:?}) after {:.1} s; starting it again in {:.1} s",
                    ran.as_secs_f64(),
                    at.saturating_sub(now).as_secs_f64()
                );
                self.due.push((at, slot, redo));
            }
            Verdict::GiveUp(why) => {
                tracing::error!("{what}: {why}");
                self.state.gave_up = Some(format!("{what}: {why}"));
            }
            Verdict::No => {}
        }
    }

    /// Local restarts: notes the local engines to watch (not those of Slurm jobs or ssh
    /// hosts), carries out the policy for those that died since the last round (a child's
    /// exit status, else gone = lost; an engine it released is not restarted).
    fn watch_restarts(&mut self, now: Duration, status: &protocol::StatusReport) {
        if self.restart.mode == Mode::Never {
            return;
        }
        let over_ssh: BTreeSet<(String, u32)> = self
            .profile
            .ssh_host_records()
            .unwrap_or_default()
            .into_iter()
            .flat_map(|r| r.pids.into_iter().map(move |p| (r.hostname.clone(), p)))
            .collect();
        let host = self.host.clone();
        for e in status.engines.iter().filter(|e| {
            e.host == host && e.job.is_none() && !over_ssh.contains(&(e.host.clone(), e.pid))
        }) {
            if !self.watched.contains_key(&e.pid) {
                let slot = self.slot();
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
            self.ended(
                now,
                slot,
                exit,
                ran,
                &format!("engine pid {pid}"),
                Redo::Local,
            );
        }
    }

    /// ssh restarts: engines of the recorded ssh hosts that registered (and those it
    /// restarted) are watched; one that is not registered is looked for over ssh (at most once a second per host),
    /// and if its process is gone it is crossed off and the policy decides (`Lost`: over
    /// ssh there is no exit status).
    fn watch_ssh(&mut self, now: Duration, status: &protocol::StatusReport) {
        if self.restart.mode == Mode::Never {
            return;
        }
        for record in self.profile.ssh_host_records().unwrap_or_default() {
            let mut missing = Vec::new();
            for &pid in &record.pids {
                let key = (record.destination.clone(), pid);
                let up = status
                    .engines
                    .iter()
                    .any(|e| e.host == record.hostname && e.pid == pid);
                if up && !self.ssh.contains_key(&key) {
                    let slot = self.slot();
                    self.ssh.insert(key, SshWatch { slot, since: now });
                } else if !up && self.ssh.contains_key(&key) {
                    missing.push(pid);
                }
            }
            if missing.is_empty()
                || self
                    .ssh_checked
                    .get(&record.destination)
                    .is_some_and(|t| now.saturating_sub(*t) < Duration::from_secs(1))
            {
                continue;
            }
            self.ssh_checked.insert(record.destination.clone(), now);
            let dead = match crate::ssh::dead_on_host(self.profile, &record, &missing) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(
                        "cannot check the engines on {} over ssh: {e}",
                        record.destination
                    );
                    continue;
                }
            };
            for (pid, tail) in dead {
                let Some(w) = self.ssh.remove(&(record.destination.clone(), pid)) else {
                    continue;
                };
                crate::ssh::forget_engine(self.profile, &record.destination, pid);
                let what = format!("engine pid {pid} on {}", record.destination);
                if !tail.is_empty() {
                    tracing::warn!("{what} is gone; its log ends with:{tail}");
                }
                let ran = now.saturating_sub(w.since);
                self.ended(
                    now,
                    w.slot,
                    Exit::Lost,
                    ran,
                    &what,
                    Redo::Ssh(record.destination.clone()),
                );
            }
        }
    }

    /// Slurm: takes up jobs recorded in `run/` by others, polls all followed jobs (one
    /// `squeue`), settles the autoscaler's launches (all registered: a start that worked;
    /// ended first or not registered within [`REGISTER_TIMEOUT`] of running: a failed
    /// start), and for jobs that ended decides on a restart (released ones are forgotten).
    fn follow_jobs(&mut self, now: Duration, status: &protocol::StatusReport) {
        let run = self.profile.run_dir();
        let records = slurm::records(&run);
        if self.slurm.is_none() && !records.is_empty() {
            match SlurmSettings::load(self.profile, &[]) {
                Ok(s) => self.slurm = Some(Slurm::system(s)),
                Err(e) => tracing::warn!("cannot read [slurm]: {e}"),
            }
        }
        if self.slurm.is_none() {
            return;
        }
        for r in records {
            if self.done_jobs.contains(&r.job_id)
                || self.jobs.iter().any(|j| j.record.job_id == r.job_id)
            {
                continue;
            }
            let slot = self.slot();
            let key = self.next_key;
            self.next_key += 1;
            self.jobs.push(Job {
                record: r,
                key,
                launch: false,
                at: now,
                running_since: None,
                state: None,
                released: None,
                slot,
            });
        }
        if self.jobs.is_empty() {
            return;
        }
        let Some(slurm) = &self.slurm else { return };
        // squeue at most every poll_interval_ms of [slurm]; registrations count every round.
        let every = Duration::from_millis(slurm.settings().poll_interval_ms.max(100));
        if self
            .last_poll
            .is_none_or(|t| now.saturating_sub(t) >= every)
        {
            self.last_poll = Some(now);
            let ids: Vec<JobId> = self.jobs.iter().map(|j| j.record.job_id.clone()).collect();
            match slurm.poll(&ids) {
                Ok(states) => {
                    for j in &mut self.jobs {
                        if let Some(st) = states.get(&j.record.job_id) {
                            if st.state.phase() == slurm::Phase::Running
                                && j.running_since.is_none()
                            {
                                j.running_since = Some(now);
                            }
                            j.state = Some(st.clone());
                        }
                    }
                }
                Err(e) => tracing::warn!("cannot read the Slurm jobs' states: {e}"),
            }
        }
        let mut gone = Vec::new();
        let mut failed = Vec::new();
        let mut ended = Vec::new();
        let mut worked = false;
        for j in &mut self.jobs {
            let Some(st) = j.state.clone() else {
                continue;
            };
            let st = &st;
            let have = in_job(status, &j.record.job_id);
            let is_final = st.state.is_final();
            if j.launch && j.released.is_none() {
                if have >= j.record.engines {
                    j.launch = false;
                    worked = true;
                } else if is_final {
                    let tail = j.record.output_tail(5);
                    failed.push(format!(
                        "Slurm {} before its engines registered{}",
                        slurm::describe(st),
                        if tail.is_empty() {
                            String::new()
                        } else {
                            format!("; its output ends with: {}", tail.replace('\n', " | "))
                        }
                    ));
                    gone.push(j.record.job_id.clone());
                } else if j
                    .running_since
                    .is_some_and(|t| now.saturating_sub(t) > REGISTER_TIMEOUT)
                {
                    failed.push(format!(
                        "Slurm job {} runs but {have} of {} engine(s) registered within {} s (can the nodes reach the controller's address?)",
                        j.record.job_id,
                        j.record.engines,
                        REGISTER_TIMEOUT.as_secs()
                    ));
                    let _ = slurm.cancel(std::slice::from_ref(&j.record.job_id));
                    gone.push(j.record.job_id.clone());
                }
                continue;
            }
            if is_final {
                if j.released.is_some() {
                    gone.push(j.record.job_id.clone());
                } else {
                    let ran = now.saturating_sub(j.running_since.unwrap_or(j.at));
                    ended.push((
                        j.slot,
                        Exit::from_job(&st.state),
                        ran,
                        j.record.clone(),
                        slurm::describe(st),
                    ));
                }
            } else if j
                .released
                .is_some_and(|t| now.saturating_sub(t) > Duration::from_secs(30))
            {
                // Told to drain 30 s ago and still there: cancel it.
                let _ = slurm.cancel(std::slice::from_ref(&j.record.job_id));
            }
        }
        if worked && failed.is_empty() {
            self.failures.succeeded();
        }
        for why in failed {
            tracing::warn!("failed start: {why}");
            self.failures.failed(now, why);
        }
        for id in gone {
            slurm::forget(&run, &id);
            self.done_jobs.insert(id.clone());
            self.jobs.retain(|j| j.record.job_id != id);
        }
        for (slot, exit, ran, record, said) in ended {
            self.done_jobs.insert(record.job_id.clone());
            self.jobs.retain(|j| j.record.job_id != record.job_id);
            let restarting = matches!(exit, Exit::Lost | Exit::Code(_) | Exit::Signal(_))
                && self.restart.mode != Mode::Never
                || exit == Exit::Success && self.restart.mode == Mode::Always;
            if !restarting && matches!(exit, Exit::Requested | Exit::Success) {
                // Ended as asked or on its own, well: nothing to show any more.
                slurm::forget(&run, &record.job_id);
            }
            self.ended(now, slot, exit, ran, &said, Redo::Slurm(record));
        }
    }

    /// Starts what is due: local engines, Slurm jobs again, engines on ssh hosts.
    fn run_due(&mut self, now: Duration) {
        let (ready, later): (Vec<_>, Vec<_>) = self.due.drain(..).partition(|(at, ..)| *at <= now);
        self.due = later;
        for (_, slot, redo) in ready {
            let retry = |sup: &mut Self, why: String, redo: Redo| {
                tracing::warn!("cannot start again: {why}");
                sup.due.push((now + sup.restart.backoff_max, slot, redo));
            };
            match redo {
                Redo::Local => {
                    // The program `cluster start --engine-program` recorded, else the
                    // settings as they are now (a fixed engine_program applies to the next
                    // start).
                    let fresh = self.profile.settings(&[]);
                    let settings = fresh.as_ref().unwrap_or(self.settings);
                    let program = self.program();
                    match crate::launch::spawn_engines(self.profile, settings, 1, &program) {
                        Ok(children) => {
                            for (child, log) in children {
                                let pid = child.id();
                                tracing::info!("restarted engine slot {slot} as pid {pid}");
                                self.watched.insert(pid, (slot, now));
                                self.children.insert(pid, (child, log));
                                self.state.restarts += 1;
                            }
                        }
                        Err(e) => retry(self, format!("{e:#}"), Redo::Local),
                    }
                }
                Redo::Slurm(record) => {
                    let Some(slurm) = &self.slurm else { continue };
                    match slurm.resubmit(&record, &self.profile.run_dir()) {
                        Ok(again) => {
                            tracing::info!(
                                "Slurm job {} submitted again as job {} ({} engine(s))",
                                record.job_id,
                                again.job_id,
                                again.engines
                            );
                            self.done_jobs.insert(record.job_id.clone());
                            let key = self.next_key;
                            self.next_key += 1;
                            self.jobs.push(Job {
                                record: again,
                                key,
                                launch: false,
                                at: now,
                                running_since: None,
                                state: None,
                                released: None,
                                slot,
                            });
                            self.state.restarts += 1;
                        }
                        Err(e) => retry(self, e.to_string(), Redo::Slurm(record)),
                    }
                }
                Redo::Ssh(destination) => {
                    let record = self
                        .profile
                        .ssh_host_records()
                        .unwrap_or_default()
                        .into_iter()
                        .find(|r| r.destination == destination);
                    let Some(record) = record else { continue };
                    match crate::ssh::restart_one(
                        self.profile,
                        &record,
                        &self.settings.ssh,
                        self.ssh_copied_binary,
                    ) {
                        Ok(pid) => {
                            tracing::info!("restarted an engine on {destination} as pid {pid}");
                            // Watched at once: one that dies before it registers counts too.
                            self.ssh
                                .insert((destination, pid), SshWatch { slot, since: now });
                            self.state.restarts += 1;
                        }
                        Err(e) => retry(
                            self,
                            format!("on {destination}: {e}"),
                            Redo::Ssh(destination),
                        ),
                    }
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
        let started = match self.launcher {
            ScaleLauncher::Local => self.start_local(now, n),
            ScaleLauncher::Slurm => self.start_slurm(now, n),
        };
        match started {
            Ok(what) => {
                self.state.started += n as u64;
                self.state.decision = format!("start {n}");
                self.state.why = format!("tasks wait and no engine is free: {what}");
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

    fn start_local(&mut self, now: Duration, n: usize) -> Result<String> {
        let children =
            crate::launch::spawn_engines(self.profile, self.settings, n, &self.program())?;
        let waiting: BTreeSet<u32> = children.iter().map(|(c, _)| c.id()).collect();
        tracing::info!("starting {n} engine(s): pids {waiting:?}");
        let what = format!("pids {waiting:?}");
        for (child, log) in children {
            self.children.insert(child.id(), (child, log));
        }
        self.launches.push(Launch { waiting, at: now });
        Ok(what)
    }

    /// One Slurm job of `n` engines (the `[slurm]` settings, the cluster's engine program).
    fn start_slurm(&mut self, now: Duration, n: usize) -> Result<String> {
        let Some(slurm) = &self.slurm else {
            bail!("no Slurm settings");
        };
        let program = match crate::launch::EngineProgram::recorded(self.profile) {
            crate::launch::EngineProgram::Custom(p) => Some(p),
            _ => None,
        };
        let argv = crate::batch::engine_command(self.profile, self.settings, program)?;
        let spec = slurm::JobSpec {
            profile: self.profile.name().to_owned(),
            engines: n,
            program_and_args: argv,
            run_dir: self.profile.run_dir(),
            log_dir: self.profile.log_dir(),
            jobs: Some(1),
        };
        let plans = slurm::plan_jobs(slurm.settings(), &spec)?;
        let records = slurm.submit_all(&plans, &spec.run_dir)?;
        let mut what = Vec::new();
        for record in records {
            what.push(format!("Slurm job {}", record.job_id));
            let slot = self.slot();
            let key = self.next_key;
            self.next_key += 1;
            self.jobs.push(Job {
                record,
                key,
                launch: true,
                at: now,
                running_since: None,
                state: None,
                released: None,
                slot,
            });
        }
        Ok(what.join(", "))
    }

    fn release(&mut self, now: Duration, ids: &[u32], status: &protocol::StatusReport) {
        let mut done = Vec::new();
        let mut jobs: Vec<JobId> = Vec::new();
        for id in ids {
            let Some(e) = status.engines.iter().find(|e| e.id.0 == *id) else {
                continue;
            };
            if let Some(job) = e.job.as_deref().and_then(|j| {
                self.jobs
                    .iter()
                    .find(|x| x.record.job_id.0 == j && x.released.is_none())
            }) {
                if !jobs.contains(&job.record.job_id) {
                    jobs.push(job.record.job_id.clone());
                }
                done.push(id.to_string());
                continue;
            }
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
        if let (Some(slurm), false) = (&self.slurm, jobs.is_empty()) {
            // The engines drain (finish, hand back, exit 0) and the jobs end COMPLETED.
            tracing::info!("releasing idle Slurm job(s) {jobs:?}: scancel --signal=USR1");
            if let Err(e) = slurm.signal(&jobs, "USR1") {
                tracing::warn!("cannot signal the jobs, cancelling them: {e}");
                let _ = slurm.cancel(&jobs);
            }
            for j in self
                .jobs
                .iter_mut()
                .filter(|j| jobs.contains(&j.record.job_id))
            {
                j.released = Some(now);
            }
        }
        self.state.released += done.len() as u64;
        self.state.decision = format!("release {}", done.join(","));
        self.state.why = format!(
            "idle for {} s or more{}",
            self.policy.idle_timeout.as_secs_f64(),
            if jobs.is_empty() {
                String::new()
            } else {
                format!(
                    " (Slurm job(s) {})",
                    jobs.iter()
                        .map(|j| j.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
    }

    /// Cancels launches still queued that nothing needs any more.
    fn cancel(&mut self, now: Duration, keys: &[u64]) {
        let ids: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|j| keys.contains(&j.key))
            .map(|j| j.record.job_id.clone())
            .collect();
        if let Some(slurm) = &self.slurm {
            if let Err(e) = slurm.cancel(&ids) {
                tracing::warn!("cannot cancel Slurm job(s) {ids:?}: {e}");
                return;
            }
        }
        for j in self.jobs.iter_mut().filter(|j| keys.contains(&j.key)) {
            j.released = Some(now);
        }
        let list = ids
            .iter()
            .map(|i| i.0.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        tracing::info!("cancelled pending Slurm job(s) {list}: nothing waits any more");
        self.state.decision = format!("cancel {list}");
        self.state.why = format!(
            "nothing has waited for {} s; the job(s) had not started",
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
