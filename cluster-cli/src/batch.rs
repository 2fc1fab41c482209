//! Engines through a batch system or MPI: `--launcher slurm` (Slurm jobs, `[slurm]`) and
//! `--launcher mpi` (`mpiexec -n N` here, `[mpi]`). The launcher crate owns the work; this
//! is the wiring: the engine command line, waiting for the engines with a client, and
//! saying what went wrong.

use crate::exit::NotFinished;
use anyhow::{anyhow, bail, Context as _, Result};
use launcher::mpi::{self, MpiRecord, MpiSettings};
use launcher::run::SystemRunner;
use launcher::slurm::{self, JobRecord, JobSpec, Slurm, SlurmSettings, StartOutcome};
use profiles::Profile;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Which batch launcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Slurm jobs.
    Slurm,
    /// mpiexec on this machine.
    Mpi,
}

/// What was launched.
#[derive(Debug, Clone)]
pub struct Launched {
    /// Slurm jobs submitted.
    pub jobs: Vec<JobRecord>,
    /// The mpiexec started.
    pub mpi: Option<MpiRecord>,
    /// Engines registered at the end.
    pub registered: usize,
    /// Seconds from submission to all registered.
    pub seconds: f64,
}

impl Launched {
    /// For `--json`.
    pub fn json(&self) -> Value {
        json!({
            "jobs": self.jobs.iter().map(|j| json!({"job_id": j.job_id, "engines": j.engines, "script": j.script, "output": j.output})).collect::<Vec<_>>(),
            "mpi": self.mpi,
            "registered": self.registered,
            "seconds": self.seconds,
        })
    }

    /// For a person.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for j in &self.jobs {
            s.push_str(&format!(
                "Slurm job {} ({} engine(s)), script {}, output {}\n",
                j.job_id,
                j.engines,
                j.script.display(),
                j.output.display()
            ));
        }
        if let Some(m) = &self.mpi {
            s.push_str(&format!(
                "mpiexec pid {} ({} engine(s)), log {}\n",
                m.pid,
                m.engines,
                m.log.display()
            ));
        }
        s
    }
}

/// The engine command line: the engine program (or `cluster engine`) with `--file`.
pub(crate) fn engine_command(
    profile: &Profile,
    settings: &profiles::Settings,
    program: Option<PathBuf>,
) -> Result<Vec<String>> {
    let mut argv = match program.or_else(|| settings.engine_program.as_ref().map(PathBuf::from)) {
        Some(p) => vec![p.display().to_string()],
        None => vec![
            std::env::current_exe()
                .context("cannot find the path of the running `cluster` program")?
                .display()
                .to_string(),
            "engine".into(),
        ],
    };
    argv.extend(["--file".into(), profile.engine_file().display().to_string()]);
    Ok(argv)
}

fn registered(profile: &Profile) -> impl FnMut() -> usize + '_ {
    let client = client::Client::connect_file(profile.client_file()).ok();
    move || {
        client
            .as_ref()
            .and_then(|c| c.status().ok())
            .map_or(0, |s| s.engines.len())
    }
}

/// Launches `n` more engines with `kind` for the running controller of `profile` (which has
/// `before` engines) and waits for them.
#[allow(clippy::too_many_arguments)]
pub fn add_engines(
    profile: &Profile,
    settings: &profiles::Settings,
    kind: Kind,
    n: usize,
    jobs: Option<usize>,
    program: Option<PathBuf>,
    timeout: Duration,
    before: usize,
) -> Result<Launched> {
    let argv = engine_command(profile, settings, program)?;
    let t0 = Instant::now();
    match kind {
        Kind::Slurm => {
            let s = SlurmSettings::load(profile, &[])?;
            let spec = JobSpec {
                profile: profile.name().to_owned(),
                engines: n,
                program_and_args: argv,
                run_dir: profile.run_dir(),
                log_dir: profile.log_dir(),
                jobs,
            };
            let plans = slurm::plan_jobs(&s, &spec)?;
            let slurm = Slurm::system(s);
            let records = slurm.submit_all(&plans, &spec.run_dir)?;
            let mut count = registered(profile);
            let outcome = slurm.wait_for_engines(&records, before + n, timeout, &mut count)?;
            slurm_outcome(&slurm, profile, records, outcome, before + n, t0)
        }
        Kind::Mpi => {
            let s = MpiSettings::load(profile, &[])?;
            let flavor = mpi::detect(&s, &SystemRunner::default())?;
            // SAFETY: geteuid has no preconditions.
            let root = unsafe { libc::geteuid() } == 0;
            let cmd = mpi::command_line(&s, flavor, n, &argv, root)?;
            let log = profile
                .log_dir()
                .join(format!("mpiexec-{}.log", transport::now_us()));
            let mut child = mpi::spawn(&cmd, &[], &log)?;
            let record = MpiRecord {
                pid: child.id(),
                host: launcher::hostname(),
                engines: n,
                command: cmd,
                log: log.clone(),
            };
            record.write(&profile.run_dir())?;
            let mut count = registered(profile);
            let deadline = Instant::now() + timeout;
            loop {
                let got = count();
                if got >= before + n {
                    // Reap mpiexec when it ends, so it does not linger as a zombie.
                    std::thread::spawn(move || child.wait());
                    return Ok(Launched {
                        jobs: Vec::new(),
                        mpi: Some(record),
                        registered: got,
                        seconds: t0.elapsed().as_secs_f64(),
                    });
                }
                if let Ok(Some(status)) = child.try_wait() {
                    bail!(
                        "mpiexec exited ({status}) before its engines registered; its log {} ends with:\n{}",
                        log.display(),
                        crate::launch::log_tail(&log, 10)
                    );
                }
                if Instant::now() > deadline {
                    bail!(
                        "only {got} of {} engine(s) registered within {timeout:?} (mpiexec pid {} still runs; `cluster stop` ends it); its log {}:\n{}",
                        before + n,
                        record.pid,
                        log.display(),
                        crate::launch::log_tail(&log, 10)
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn slurm_outcome(
    slurm: &Slurm,
    profile: &Profile,
    records: Vec<JobRecord>,
    outcome: StartOutcome,
    want: usize,
    t0: Instant,
) -> Result<Launched> {
    let ids: Vec<slurm::JobId> = records.iter().map(|r| r.job_id.clone()).collect();
    match outcome {
        StartOutcome::Ready { .. } => Ok(Launched {
            registered: want,
            jobs: records,
            mpi: None,
            seconds: t0.elapsed().as_secs_f64(),
        }),
        StartOutcome::Pending { queued, registered } => {
            let why: Vec<String> = queued.iter().map(slurm::describe).collect();
            Err(anyhow!(NotFinished(format!(
                "{registered} of {want} engine(s) registered; still queued: {}. The jobs stay queued and their engines join when they start: `cluster status` shows them, `cluster stop` cancels them",
                why.join("; ")
            ))))
        }
        StartOutcome::Failed { failed, registered } => {
            let _ = slurm.cancel(&ids);
            for id in &ids {
                slurm::forget(&profile.run_dir(), id);
            }
            let mut msg = format!(
                "{registered} of {want} engine(s) registered; a Slurm job ended before its engines registered (all of this start's jobs are cancelled):"
            );
            for (status, tail) in failed {
                msg.push_str(&format!("\n  {}", slurm::describe(&status)));
                if !tail.is_empty() {
                    msg.push_str(&format!(
                        "; its output ends with:\n    {}",
                        tail.replace('\n', "\n    ")
                    ));
                }
            }
            Err(anyhow!(msg))
        }
        StartOutcome::NotRegistered { jobs, registered } => {
            let _ = slurm.cancel(&ids);
            let states: Vec<String> = jobs.iter().map(slurm::describe).collect();
            let tails: Vec<String> = records
                .iter()
                .map(|r| {
                    format!(
                        "{}:\n    {}",
                        r.output.display(),
                        r.output_tail(5).replace('\n', "\n    ")
                    )
                })
                .collect();
            Err(anyhow!(
                "the Slurm jobs run ({}) but only {registered} of {want} engine(s) registered: can the nodes reach the controller's address (the `ip` setting, or --ip)? The jobs are cancelled. Their output:\n  {}",
                states.join("; "),
                tails.join("\n  ")
            ))
        }
    }
}

/// Cancels the profile's Slurm jobs and sends SIGTERM to its mpiexec processes (before the
/// run folder is cleared). Returns what was done, for the stop report.
pub fn stop(profile: &Profile) -> Vec<String> {
    let mut done = Vec::new();
    let run = profile.run_dir();
    let jobs = slurm::records(&run);
    if !jobs.is_empty() {
        let settings = SlurmSettings::load(profile, &[]).unwrap_or_default();
        let ids: Vec<slurm::JobId> = jobs.iter().map(|j| j.job_id.clone()).collect();
        match Slurm::system(settings).cancel(&ids) {
            Ok(()) => done.push(format!(
                "cancelled Slurm job(s) {}",
                ids.iter()
                    .map(|i| i.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Err(e) => done.push(format!("could not cancel the Slurm jobs: {e}")),
        }
    }
    for m in mpi::records(&run) {
        if profiles::process_alive(m.pid) {
            // SAFETY: kill(2) on the mpiexec this profile recorded.
            unsafe {
                libc::kill(m.pid as i32, libc::SIGTERM);
            }
            done.push(format!("sent SIGTERM to mpiexec pid {}", m.pid));
        }
    }
    done
}

/// The profile's Slurm jobs with their states, for `cluster status` (text lines, JSON).
pub fn status(profile: &Profile) -> (String, Value) {
    let jobs = slurm::records(&profile.run_dir());
    if jobs.is_empty() {
        return (String::new(), Value::Null);
    }
    let settings = SlurmSettings::load(profile, &[]).unwrap_or_default();
    let ids: Vec<slurm::JobId> = jobs.iter().map(|j| j.job_id.clone()).collect();
    match Slurm::system(settings).poll(&ids) {
        Ok(states) => {
            let mut text = String::new();
            let mut list = Vec::new();
            for j in &jobs {
                if let Some(s) = states.get(&j.job_id) {
                    text.push_str(&format!(
                        "Slurm {} ({} engine(s))\n",
                        slurm::describe(s),
                        j.engines
                    ));
                    list.push(json!({"job_id": j.job_id, "engines": j.engines, "state": s.state.name(), "phase": s.state.phase(), "reason": s.reason, "nodes": s.nodes}));
                }
            }
            (text, Value::Array(list))
        }
        Err(e) => (
            format!("Slurm jobs {ids:?}: state unknown: {e}\n"),
            json!({"error": e.to_string()}),
        ),
    }
}
