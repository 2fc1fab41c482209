//! Engines as Slurm jobs: `cluster start --launcher slurm -n 16 [--jobs K]`.
//!
//! ```text
//!  SlurmSettings ──plan_jobs──► JobPlan (script) ──Slurm::submit──► sbatch --parsable
//!                                                  writes run/slurm-<id>.sh and .json
//!  Slurm::poll(ids) ──► squeue -h -t all -o "%i|%T|%r|%N" -j ids   (one call for all)
//!                   └─► sacct -X -n -P -j <ids squeue forgot>
//!  Slurm::wait_for_engines ──► Ready | Pending(reasons) | Failed(tail of output) | …
//!  Slurm::cancel ──► scancel ids
//! ```
//!
//! Everything Slurm prints is parsed by the pure functions of [`state`] and [`script`]; the
//! commands go through a [`CommandRunner`], so the same code runs against a fake in unit
//! tests and a real Slurm in `tests/slurm.rs`.

pub mod script;
pub mod state;

pub use script::{
    parse_memory_mb, parse_time_s, plan_jobs, split, JobPlan, JobSpec, SlurmSettings,
    DEFAULT_TEMPLATE, PLACEHOLDERS,
};
pub use state::{JobId, JobState, JobStatus, Phase, Source};

use crate::run::{CommandRunner, Output, RunError, SystemRunner};
use serde::{Deserialize, Serialize};
use state::Complaint;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What can go wrong talking to Slurm.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// A Slurm command is not installed here. Retrying does not help.
    #[error("`{command}` is not installed on host {host} (not in PATH={path}): run `cluster` where Slurm's commands are (a login node), install them (Debian: slurm-client), or set bin_dir in [slurm]")]
    Missing {
        /// The command.
        command: String,
        /// This machine.
        host: String,
        /// The `PATH` searched.
        path: String,
    },
    /// slurmctld did not answer. Retrying may help once it is back.
    #[error("`{command}` on host {host} cannot reach slurmctld ({controllers}): {stderr}; check that slurmctld runs and that this host reaches it (`scontrol ping`)")]
    Unreachable {
        /// The command.
        command: String,
        /// This machine.
        host: String,
        /// The controller hosts `slurm.conf` names, and which file.
        controllers: String,
        /// What the command said.
        stderr: String,
    },
    /// Slurm refused the request (bad partition, account, QOS, limits). Fix the `[slurm]`
    /// settings; retrying as is does not help.
    #[error("`{command}` on host {host} failed: {stderr}")]
    Refused {
        /// The command line.
        command: String,
        /// This machine.
        host: String,
        /// What it said.
        stderr: String,
    },
    /// A command printed something this code cannot read.
    #[error("`{command}` printed what is not understood: {output:?}")]
    BadOutput {
        /// The command.
        command: String,
        /// Its output.
        output: String,
    },
    /// A command could not be started for another reason.
    #[error(transparent)]
    Run(RunError),
    /// The `[slurm]` settings are wrong.
    #[error("{0}")]
    Settings(String),
    /// The job template is wrong.
    #[error("{0}")]
    Template(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl SlurmError {
    /// True when trying again later may succeed (slurmctld down for a moment).
    pub fn is_retryable(&self) -> bool {
        matches!(self, SlurmError::Unreachable { .. })
    }
}

/// What `run/slurm-<id>.json` records about a submitted job, so that `cluster status` and
/// `cluster stop` find it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job id.
    pub job_id: JobId,
    /// The Slurm cluster, when `sbatch --parsable` named one.
    #[serde(default)]
    pub cluster: Option<String>,
    /// The job name.
    pub name: String,
    /// Engines the job starts.
    pub engines: usize,
    /// The script submitted.
    pub script: PathBuf,
    /// The job's output file.
    pub output: PathBuf,
    /// Host `sbatch` ran on.
    pub host: String,
    /// Microseconds since the epoch at submission.
    pub submitted_us: u64,
}

impl JobRecord {
    /// The record file of job `id` in `run_dir`.
    pub fn file(run_dir: &Path, id: &JobId) -> PathBuf {
        run_dir.join(format!("slurm-{id}.json"))
    }

    /// Writes `run_dir/slurm-<id>.json` (through a temporary file).
    pub fn write(&self, run_dir: &Path) -> Result<(), SlurmError> {
        let path = JobRecord::file(run_dir, &self.job_id);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        std::fs::write(&tmp, text).map_err(|source| SlurmError::Io {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &path).map_err(|source| SlurmError::Io { path, source })
    }

    /// The last `lines` lines of the job's output file (empty if there is none yet).
    pub fn output_tail(&self, lines: usize) -> String {
        std::fs::read_to_string(&self.output)
            .map(|t| crate::tail(&t, lines))
            .unwrap_or_default()
    }
}

/// Every job recorded in `run_dir`, oldest first. Files that do not parse are skipped with a
/// warning (a half-written record must not stop `cluster stop`).
pub fn records(run_dir: &Path) -> Vec<JobRecord> {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Vec::new();
    };
    let mut out: Vec<JobRecord> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("slurm-") && n.ends_with(".json")
        })
        .filter_map(|e| {
            let path = e.path();
            let text = std::fs::read_to_string(&path).ok()?;
            match serde_json::from_str(&text) {
                Ok(r) => Some(r),
                Err(err) => {
                    tracing::warn!("ignoring Slurm job record {}: {err}", path.display());
                    None
                }
            }
        })
        .collect();
    out.sort_by_key(|r: &JobRecord| (r.submitted_us, r.job_id.clone()));
    out
}

/// Removes the record (and script) of job `id` from `run_dir`.
pub fn forget(run_dir: &Path, id: &JobId) {
    let _ = std::fs::remove_file(JobRecord::file(run_dir, id));
    let _ = std::fs::remove_file(run_dir.join(format!("slurm-{id}.sh")));
}

/// How a start ended, as [`Slurm::wait_for_engines`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOutcome {
    /// The engines asked for registered.
    Ready {
        /// The jobs' last states.
        jobs: Vec<JobStatus>,
    },
    /// Time ran out with jobs still in the queue; they may start later.
    Pending {
        /// The jobs still queued, with squeue's reason.
        queued: Vec<JobStatus>,
        /// Engines registered meanwhile.
        registered: usize,
    },
    /// A job ended before its engines registered.
    Failed {
        /// The jobs that ended, each with the tail of its output file.
        failed: Vec<(JobStatus, String)>,
        /// Engines registered meanwhile.
        registered: usize,
    },
    /// The jobs run, but their engines did not register in time (can they reach the
    /// controller's address?).
    NotRegistered {
        /// The jobs' states.
        jobs: Vec<JobStatus>,
        /// Engines registered.
        registered: usize,
    },
}

/// What to do next while waiting for a start, from the jobs' states and the engines
/// registered; pure, so its rules are unit-tested.
pub fn start_verdict(
    jobs: &[JobStatus],
    registered: usize,
    want: usize,
    timed_out: bool,
) -> Option<StartVerdict> {
    if registered >= want {
        return Some(StartVerdict::Ready);
    }
    let ended: Vec<&JobStatus> = jobs.iter().filter(|j| j.state.is_final()).collect();
    if !ended.is_empty() {
        return Some(StartVerdict::Failed(
            ended.into_iter().map(|j| j.id.clone()).collect(),
        ));
    }
    if !timed_out {
        return None;
    }
    let queued: Vec<JobId> = jobs
        .iter()
        .filter(|j| j.state.phase() == Phase::Queued)
        .map(|j| j.id.clone())
        .collect();
    Some(if queued.is_empty() {
        StartVerdict::NotRegistered
    } else {
        StartVerdict::Pending(queued)
    })
}

/// See [`start_verdict`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartVerdict {
    /// Enough engines registered.
    Ready,
    /// These jobs ended.
    Failed(Vec<JobId>),
    /// Time is up; these jobs wait in the queue.
    Pending(Vec<JobId>),
    /// Time is up; the jobs run but engines are missing.
    NotRegistered,
}

/// The Slurm commands, through a runner.
#[derive(Debug, Clone)]
pub struct Slurm<R: CommandRunner = SystemRunner> {
    settings: SlurmSettings,
    runner: R,
}

impl Slurm<SystemRunner> {
    /// Slurm on this machine, with `SLURM_CONF` set when the settings name a `conf`.
    pub fn system(settings: SlurmSettings) -> Slurm<SystemRunner> {
        let mut env = Vec::new();
        if let Some(conf) = &settings.conf {
            env.push(("SLURM_CONF".to_owned(), conf.clone()));
        }
        Slurm {
            settings,
            runner: SystemRunner::with_env(env),
        }
    }
}

impl SlurmSettings {
    /// Reads the `[slurm]` table of `profile`'s settings (see [`crate::settings`]).
    pub fn load(
        profile: &profiles::Profile,
        overrides: &[(&str, String)],
    ) -> Result<SlurmSettings, profiles::ProfileError> {
        crate::settings::section(profile, "slurm", overrides)
    }
}

impl<R: CommandRunner> Slurm<R> {
    /// Slurm through `runner` (a fake in tests).
    pub fn with_runner(settings: SlurmSettings, runner: R) -> Slurm<R> {
        Slurm { settings, runner }
    }

    /// The settings in use.
    pub fn settings(&self) -> &SlurmSettings {
        &self.settings
    }

    /// The runner in use.
    pub fn runner(&self) -> &R {
        &self.runner
    }

    fn program(&self, name: &str) -> String {
        match &self.settings.bin_dir {
            Some(dir) => Path::new(dir).join(name).display().to_string(),
            None => name.to_owned(),
        }
    }

    /// Where slurm.conf says slurmctld is, for messages.
    fn controllers(&self) -> String {
        let file = self
            .settings
            .conf
            .clone()
            .or_else(|| std::env::var("SLURM_CONF").ok())
            .unwrap_or_else(|| "/etc/slurm/slurm.conf".into());
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                let hosts = state::slurmctld_hosts(&text);
                if hosts.is_empty() {
                    format!("no SlurmctldHost in {file}")
                } else {
                    format!("SlurmctldHost={} in {file}", hosts.join(", "))
                }
            }
            Err(_) => format!("{file} is not readable here; configless Slurm or DNS SRV records"),
        }
    }

    /// Runs a Slurm command; a missing program and an unreachable slurmctld become their
    /// errors, other failures come back as the output for the caller to judge.
    fn call(&self, name: &str, args: &[String]) -> Result<Output, SlurmError> {
        let program = self.program(name);
        let out = self.runner.run(&program, args).map_err(|e| match e {
            RunError::NotFound {
                program,
                host,
                path,
            } => SlurmError::Missing {
                command: program,
                host,
                path,
            },
            other => SlurmError::Run(other),
        })?;
        if !out.success() && state::classify(&out.stderr) == Complaint::Unreachable {
            return Err(SlurmError::Unreachable {
                command: name.to_owned(),
                host: self.runner.host(),
                controllers: self.controllers(),
                stderr: out.stderr.trim().to_owned(),
            });
        }
        Ok(out)
    }

    fn refused(&self, name: &str, args: &[String], out: &Output) -> SlurmError {
        let said = if out.stderr.trim().is_empty() {
            out.stdout.trim()
        } else {
            out.stderr.trim()
        };
        SlurmError::Refused {
            command: format!("{name} {}", args.join(" ")),
            host: self.runner.host(),
            stderr: format!(
                "{said} (exit {})",
                out.code.map_or("by signal".into(), |c| c.to_string())
            ),
        }
    }

    /// Submits one planned job: writes its script to `run_dir`, runs `sbatch --parsable`,
    /// renames the script to `slurm-<id>.sh` and records the job in `slurm-<id>.json`.
    pub fn submit(&self, plan: &JobPlan, run_dir: &Path) -> Result<JobRecord, SlurmError> {
        let stamp = now_us();
        let script = run_dir.join(format!("slurm-{}-{stamp}.sh", plan.name));
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| SlurmError::Io { path, source }
        };
        std::fs::write(&script, &plan.script).map_err(io(&script))?;
        let args = vec!["--parsable".to_owned(), script.display().to_string()];
        let out = self.call("sbatch", &args);
        let out = match out {
            Ok(o) if o.success() => o,
            Ok(o) => {
                let _ = std::fs::remove_file(&script);
                return Err(self.refused("sbatch", &args, &o));
            }
            Err(e) => {
                let _ = std::fs::remove_file(&script);
                return Err(e);
            }
        };
        let Some((job_id, cluster)) = state::parse_sbatch(&out.stdout) else {
            return Err(SlurmError::BadOutput {
                command: "sbatch --parsable".into(),
                output: out.stdout,
            });
        };
        let kept = run_dir.join(format!("slurm-{job_id}.sh"));
        std::fs::rename(&script, &kept).map_err(io(&kept))?;
        let record = JobRecord {
            output: script::output_path(&plan.output, &job_id.0),
            job_id,
            cluster,
            name: plan.name.clone(),
            engines: plan.engines,
            script: kept,
            host: self.runner.host(),
            submitted_us: stamp,
        };
        record.write(run_dir)?;
        tracing::info!(
            "submitted Slurm job {} ({} engine(s), script {})",
            record.job_id,
            record.engines,
            record.script.display()
        );
        Ok(record)
    }

    /// Submits `record`'s job again (its kept script, as it was), for a restart; the new
    /// job is recorded like the first and the old record is removed.
    pub fn resubmit(&self, record: &JobRecord, run_dir: &Path) -> Result<JobRecord, SlurmError> {
        let script = std::fs::read_to_string(&record.script).map_err(|source| SlurmError::Io {
            path: record.script.clone(),
            source,
        })?;
        let folder = record.output.parent().unwrap_or(Path::new("."));
        let plan = JobPlan {
            index: 1,
            name: record.name.clone(),
            engines: record.engines,
            script,
            output: folder.join(format!("slurm-{}-%j.out", record.name)),
        };
        let again = self.submit(&plan, run_dir)?;
        forget(run_dir, &record.job_id);
        Ok(again)
    }

    /// Submits every planned job; if one fails, cancels those already submitted (no job is
    /// left behind by a failed start) and returns the error.
    pub fn submit_all(
        &self,
        plans: &[JobPlan],
        run_dir: &Path,
    ) -> Result<Vec<JobRecord>, SlurmError> {
        let mut done: Vec<JobRecord> = Vec::new();
        for plan in plans {
            match self.submit(plan, run_dir) {
                Ok(r) => done.push(r),
                Err(e) => {
                    let ids: Vec<JobId> = done.iter().map(|r| r.job_id.clone()).collect();
                    if !ids.is_empty() {
                        let _ = self.cancel(&ids);
                        for id in &ids {
                            forget(run_dir, id);
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    /// The states of `ids`: one `squeue` for all of them, then `sacct` for those squeue no
    /// longer knows. Every id gets a status; one neither knows is [`Source::Nowhere`].
    pub fn poll(&self, ids: &[JobId]) -> Result<BTreeMap<JobId, JobStatus>, SlurmError> {
        let mut found = BTreeMap::new();
        if ids.is_empty() {
            return Ok(found);
        }
        let list = ids
            .iter()
            .map(|i| i.0.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let args = vec![
            "--noheader".to_owned(),
            "--states=all".to_owned(),
            format!("--format={}", state::SQUEUE_FORMAT),
            format!("--jobs={list}"),
        ];
        let out = self.call("squeue", &args)?;
        if out.success() {
            let (jobs, bad) = state::parse_squeue(&out.stdout);
            if bad > 0 {
                tracing::warn!("{bad} line(s) of squeue output not understood");
            }
            for j in jobs.into_iter().filter(|j| ids.contains(&j.id)) {
                found.insert(j.id.clone(), j);
            }
        } else if state::classify(&out.stderr) != Complaint::UnknownJob {
            return Err(self.refused("squeue", &args, &out));
        }
        let missing: Vec<&JobId> = ids.iter().filter(|i| !found.contains_key(*i)).collect();
        if missing.is_empty() {
            return Ok(found);
        }
        let why = self.sacct(&missing, &mut found);
        for id in ids {
            found.entry(id.clone()).or_insert_with(|| JobStatus {
                id: id.clone(),
                state: JobState::Other("UNKNOWN".into()),
                reason: Some(why.clone()),
                nodes: None,
                exit_code: None,
                source: Source::Nowhere,
            });
        }
        Ok(found)
    }

    /// Asks sacct about `ids`, filling `found`; returns why the rest stay unknown.
    fn sacct(&self, ids: &[&JobId], found: &mut BTreeMap<JobId, JobStatus>) -> String {
        let list = ids
            .iter()
            .map(|i| i.0.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let args = vec![
            "-X".to_owned(),
            "-n".to_owned(),
            "-P".to_owned(),
            format!("--format={}", state::SACCT_FORMAT),
            format!("--jobs={list}"),
        ];
        match self.call("sacct", &args) {
            Ok(out) if out.success() => {
                let (jobs, _) = state::parse_sacct(&out.stdout);
                for j in jobs {
                    if ids.contains(&&j.id) {
                        found.insert(j.id.clone(), j);
                    }
                }
                "neither squeue nor sacct knows this job any more".into()
            }
            Ok(out) => format!(
                "squeue no longer knows this job and sacct cannot tell: {}",
                out.stderr.trim()
            ),
            Err(e) => format!("squeue no longer knows this job and sacct cannot tell: {e}"),
        }
    }

    /// `scancel ids`. Jobs that already ended are not an error.
    pub fn cancel(&self, ids: &[JobId]) -> Result<(), SlurmError> {
        self.scancel(ids, None)
    }

    /// Sends `signal` (`USR1`) to the job steps of `ids` (`scancel --signal`): their
    /// engines, not the batch shell.
    pub fn signal(&self, ids: &[JobId], signal: &str) -> Result<(), SlurmError> {
        self.scancel(ids, Some(signal))
    }

    fn scancel(&self, ids: &[JobId], signal: Option<&str>) -> Result<(), SlurmError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut args: Vec<String> = signal
            .map(|s| format!("--signal={s}"))
            .into_iter()
            .collect();
        args.extend(ids.iter().map(|i| i.0.clone()));
        let out = self.call("scancel", &args)?;
        let gone = |s: &str| {
            s.lines().all(|l| {
                let l = l.to_ascii_lowercase();
                l.trim().is_empty()
                    || l.contains("already")
                    || l.contains("invalid job id")
                    || l.contains("completed")
            })
        };
        if out.success() || gone(&out.stderr) {
            Ok(())
        } else {
            Err(self.refused("scancel", &args, &out))
        }
    }

    /// Polls `jobs` every `poll_interval_ms` while `registered()` counts the engines the
    /// controller has, until `want` registered, a job ended, or `timeout` passed.
    pub fn wait_for_engines(
        &self,
        jobs: &[JobRecord],
        want: usize,
        timeout: Duration,
        registered: &mut dyn FnMut() -> usize,
    ) -> Result<StartOutcome, SlurmError> {
        let ids: Vec<JobId> = jobs.iter().map(|r| r.job_id.clone()).collect();
        let interval = Duration::from_millis(self.settings.poll_interval_ms.max(50));
        let deadline = Instant::now() + timeout;
        let mut next_poll = Instant::now();
        let mut states: Vec<JobStatus> = Vec::new();
        loop {
            let now = Instant::now();
            if now >= next_poll {
                states = self.poll(&ids)?.into_values().collect();
                next_poll = now + interval;
            }
            let count = registered();
            let timed_out = Instant::now() >= deadline;
            match start_verdict(&states, count, want, timed_out) {
                None => {}
                Some(StartVerdict::Ready) => {
                    // The last poll may predate the registrations: look once more, so the
                    // report shows the jobs running (or what went wrong since).
                    if let Ok(fresh) = self.poll(&ids) {
                        states = fresh.into_values().collect();
                    }
                    return Ok(StartOutcome::Ready { jobs: states });
                }
                Some(StartVerdict::Failed(ended)) => {
                    let failed = states
                        .iter()
                        .filter(|s| ended.contains(&s.id))
                        .map(|s| {
                            let tail = jobs
                                .iter()
                                .find(|r| r.job_id == s.id)
                                .map(|r| r.output_tail(15))
                                .unwrap_or_default();
                            (s.clone(), tail)
                        })
                        .collect();
                    return Ok(StartOutcome::Failed {
                        failed,
                        registered: count,
                    });
                }
                Some(StartVerdict::Pending(queued)) => {
                    return Ok(StartOutcome::Pending {
                        queued: states
                            .into_iter()
                            .filter(|s| queued.contains(&s.id))
                            .collect(),
                        registered: count,
                    })
                }
                Some(StartVerdict::NotRegistered) => {
                    return Ok(StartOutcome::NotRegistered {
                        jobs: states,
                        registered: count,
                    })
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A person's one-line summary of a job's status (`123 PENDING (Resources)`).
pub fn describe(status: &JobStatus) -> String {
    let mut s = format!("job {} {}", status.id, status.state);
    if let Some(r) = &status.reason {
        s.push_str(&format!(" ({r})"));
    }
    if let Some(n) = &status.nodes {
        s.push_str(&format!(" on {n}"));
    }
    if let Some(e) = &status.exit_code {
        s.push_str(&format!(", exit {e}"));
    }
    s
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::FakeRunner;

    fn status(id: &str, state: JobState) -> JobStatus {
        JobStatus {
            id: JobId(id.into()),
            state,
            reason: None,
            nodes: None,
            exit_code: None,
            source: Source::Squeue,
        }
    }

    fn ids(list: &[&str]) -> Vec<JobId> {
        list.iter().map(|s| JobId((*s).into())).collect()
    }

    #[test]
    fn verdicts() {
        let pending = [
            status("1", JobState::Pending),
            status("2", JobState::Running),
        ];
        assert_eq!(start_verdict(&pending, 2, 4, false), None);
        assert_eq!(
            start_verdict(&pending, 4, 4, false),
            Some(StartVerdict::Ready)
        );
        assert_eq!(
            start_verdict(&pending, 2, 4, true),
            Some(StartVerdict::Pending(ids(&["1"])))
        );
        let running = [status("1", JobState::Running)];
        assert_eq!(
            start_verdict(&running, 0, 4, true),
            Some(StartVerdict::NotRegistered)
        );
        let failed = [
            status("1", JobState::Running),
            status("2", JobState::Failed),
        ];
        assert_eq!(
            start_verdict(&failed, 1, 4, false),
            Some(StartVerdict::Failed(ids(&["2"])))
        );
        // Engines that exited at once leave a COMPLETED job: not a success either.
        let quick = [status("3", JobState::Completed)];
        assert_eq!(
            start_verdict(&quick, 0, 1, false),
            Some(StartVerdict::Failed(ids(&["3"])))
        );
    }

    #[test]
    fn submit_writes_script_and_record_and_poll_batches() {
        let run = tempfile::tempdir().unwrap();
        let fake = FakeRunner::new(|program, args| {
            Ok(match program {
                "sbatch" => {
                    assert_eq!(args[0], "--parsable");
                    let script = std::fs::read_to_string(&args[1]).unwrap();
                    assert!(script.contains("srun"));
                    Output::ok(if script.contains("cluster-p-1") {
                        "101\n"
                    } else {
                        "102;ci\n"
                    })
                }
                "squeue" => Output::ok("101|PENDING|Resources|\n"),
                "sacct" => Output::ok("102|OUT_OF_MEMORY|0:125|None|n2\n"),
                other => panic!("unexpected {other}"),
            })
        });
        let slurm = Slurm::with_runner(SlurmSettings::default(), fake);
        let spec = JobSpec {
            profile: "p".into(),
            engines: 3,
            program_and_args: vec!["cluster".into(), "engine".into()],
            run_dir: run.path().into(),
            log_dir: run.path().into(),
            jobs: Some(2),
        };
        let plans = plan_jobs(slurm.settings(), &spec).unwrap();
        let recs = slurm.submit_all(&plans, run.path()).unwrap();
        assert_eq!(recs[0].job_id, JobId("101".into()));
        assert_eq!(recs[1].cluster.as_deref(), Some("ci"));
        assert!(run.path().join("slurm-101.sh").exists());
        assert!(recs[1].output.ends_with("slurm-cluster-p-2-102.out"));
        assert_eq!(records(run.path()), recs);

        let states = slurm.poll(&ids(&["101", "102", "103"])).unwrap();
        assert_eq!(
            states[&JobId("101".into())].reason.as_deref(),
            Some("Resources")
        );
        assert_eq!(states[&JobId("102".into())].state, JobState::OutOfMemory);
        assert_eq!(states[&JobId("102".into())].source, Source::Sacct);
        assert_eq!(states[&JobId("103".into())].source, Source::Nowhere);
        let calls = slurm.runner().calls();
        let squeue: Vec<_> = calls.iter().filter(|c| c[0] == "squeue").collect();
        assert_eq!(squeue.len(), 1, "one squeue for all jobs");
        assert!(squeue[0].contains(&"--jobs=101,102,103".to_owned()));
        let sacct = calls.iter().find(|c| c[0] == "sacct").unwrap();
        assert!(sacct.contains(&"--jobs=102,103".to_owned()), "{sacct:?}");
        forget(run.path(), &JobId("101".into()));
        assert_eq!(records(run.path()).len(), 1);
    }

    #[test]
    fn a_failed_second_submission_cancels_the_first() {
        let run = tempfile::tempdir().unwrap();
        let fake = FakeRunner::new(|program, args| {
            Ok(match program {
                "sbatch" if std::fs::read_to_string(&args[1]).unwrap().contains("-2\n") => {
                    Output::failed(1, "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified")
                }
                "sbatch" => Output::ok("7\n"),
                "scancel" => Output::ok(""),
                other => panic!("unexpected {other}"),
            })
        });
        let slurm = Slurm::with_runner(SlurmSettings::default(), fake);
        let spec = JobSpec {
            profile: "p".into(),
            engines: 2,
            program_and_args: vec!["cluster".into()],
            run_dir: run.path().into(),
            log_dir: run.path().into(),
            jobs: Some(2),
        };
        let plans = plan_jobs(slurm.settings(), &spec).unwrap();
        let err = slurm.submit_all(&plans, run.path()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("Invalid account") && text.contains("testhost"),
            "{text}"
        );
        assert!(!err.is_retryable());
        assert!(slurm
            .runner()
            .calls()
            .iter()
            .any(|c| c == &vec!["scancel".to_owned(), "7".to_owned()]));
        assert!(records(run.path()).is_empty());
        assert_eq!(std::fs::read_dir(run.path()).unwrap().count(), 0);
    }

    #[test]
    fn missing_commands_and_unreachable_controllers_are_named() {
        let missing = Slurm::with_runner(
            SlurmSettings::default(),
            FakeRunner::new(|program, _| {
                Err(RunError::NotFound {
                    program: program.into(),
                    host: "testhost".into(),
                    path: "/usr/bin".into(),
                })
            }),
        );
        let err = missing.poll(&ids(&["1"])).unwrap_err().to_string();
        assert!(
            err.contains("`squeue`") && err.contains("testhost"),
            "{err}"
        );

        let conf = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(conf.path(), "SlurmctldHost=ctl(10.1.2.3)\n").unwrap();
        let settings = SlurmSettings {
            conf: Some(conf.path().display().to_string()),
            ..SlurmSettings::default()
        };
        let down = Slurm::with_runner(
            settings,
            FakeRunner::new(|_, _| {
                Ok(Output::failed(
                    1,
                    "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)",
                ))
            }),
        );
        let run = tempfile::tempdir().unwrap();
        let plan = JobPlan {
            index: 1,
            name: "x".into(),
            engines: 1,
            script: "#!/bin/sh\n".into(),
            output: run.path().join("x-%j.out"),
        };
        let err = down.submit(&plan, run.path()).unwrap_err();
        assert!(err.is_retryable());
        let text = err.to_string();
        assert!(
            text.contains("`sbatch` on host testhost")
                && text.contains("ctl(10.1.2.3)")
                && text.contains("scontrol ping"),
            "{text}"
        );
    }

    #[test]
    fn squeue_unknown_ids_fall_back_to_sacct_and_cancel_ignores_finished_jobs() {
        let fake = FakeRunner::new(|program, _| {
            Ok(match program {
                "squeue" => Output::failed(1, "slurm_load_jobs error: Invalid job id specified"),
                "sacct" => Output::failed(1, "sacct: error: Slurm accounting storage is disabled"),
                "scancel" => Output::failed(
                    1,
                    "scancel: error: Kill job error on job id 5: Job/step already completing or completed",
                ),
                other => panic!("unexpected {other}"),
            })
        });
        let slurm = Slurm::with_runner(SlurmSettings::default(), fake);
        let states = slurm.poll(&ids(&["5"])).unwrap();
        let s = &states[&JobId("5".into())];
        assert_eq!(s.source, Source::Nowhere);
        assert!(s.reason.as_deref().unwrap().contains("accounting"), "{s:?}");
        slurm.cancel(&ids(&["5"])).unwrap();
        assert_eq!(
            describe(s),
            format!("job 5 UNKNOWN ({})", s.reason.as_deref().unwrap())
        );
    }

    #[test]
    fn waiting_reports_a_failed_job_with_its_output() {
        let run = tempfile::tempdir().unwrap();
        let out = run.path().join("slurm-9.out");
        std::fs::write(
            &out,
            "0: starting\n0: error: cannot reach tcp://10.0.0.1:5000\n",
        )
        .unwrap();
        let record = JobRecord {
            job_id: JobId("9".into()),
            cluster: None,
            name: "x".into(),
            engines: 1,
            script: run.path().join("slurm-9.sh"),
            output: out,
            host: "h".into(),
            submitted_us: 0,
        };
        let fake = FakeRunner::new(|_, _| Ok(Output::ok("9|FAILED|NonZeroExitCode|n1\n")));
        let slurm = Slurm::with_runner(SlurmSettings::default(), fake);
        let outcome = slurm
            .wait_for_engines(&[record], 1, Duration::from_secs(5), &mut || 0)
            .unwrap();
        let StartOutcome::Failed { failed, registered } = outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!(registered, 0);
        assert_eq!(failed[0].0.state, JobState::Failed);
        assert!(failed[0].1.contains("cannot reach"), "{failed:?}");
    }
}
