//! Slurm's answers, parsed: job states, `squeue` and `sacct` lines, `sbatch --parsable`'s id,
//! and what an error on stderr means. Pure functions over text; nothing here panics on any
//! input, and a state this code has never heard of is kept as Slurm spelled it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A Slurm job id as `sbatch --parsable` prints it (without the `;cluster` suffix).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JobId {
    /// A job id, if `text` looks like one (digits, with `_`, `+` or `.` for array,
    /// heterogeneous and step ids).
    pub fn parse(text: &str) -> Option<JobId> {
        let t = text.trim();
        let ok = !t.is_empty()
            && t.len() <= 64
            && t.starts_with(|c: char| c.is_ascii_digit())
            && t.chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '_' | '+' | '.'));
        ok.then(|| JobId(t.to_owned()))
    }
}

/// Every job state Slurm 22.05 reports (`squeue --states`, `sacct`), and any other as given.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobState {
    /// PD: waiting for resources or priority.
    Pending,
    /// CF: allocated, nodes booting or being set up.
    Configuring,
    /// R.
    Running,
    /// CG: ending; some processes may still run.
    Completing,
    /// CD: every process exited with 0.
    Completed,
    /// F: non-zero exit code or other failure.
    Failed,
    /// TO: reached its time limit.
    Timeout,
    /// CA: cancelled by a user or an administrator.
    Cancelled,
    /// NF: a node it ran on failed.
    NodeFail,
    /// PR: preempted by a higher-priority job.
    Preempted,
    /// OOM: a process ran out of memory.
    OutOfMemory,
    /// BF: a node failed to boot.
    BootFail,
    /// DL: missed its deadline (`--deadline`).
    Deadline,
    /// S: suspended; its processes are stopped and its CPUs lent to others.
    Suspended,
    /// ST: its processes are stopped (SIGSTOP), CPUs kept.
    Stopped,
    /// RQ: being put back in the queue.
    Requeued,
    /// RH: requeued and held.
    RequeueHold,
    /// RF: requeued by the federation.
    RequeueFed,
    /// RD: held because its reservation was deleted.
    ResvDelHold,
    /// RS: being resized.
    Resizing,
    /// RV: removed from this cluster (a sibling cluster started it).
    Revoked,
    /// SE: requeued in a special exit state and held.
    SpecialExit,
    /// SI: being sent a signal.
    Signaling,
    /// SO: staging out data.
    StageOut,
    /// A state this code does not know, as Slurm printed it.
    Other(String),
}

/// What a state means for the engines in the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Not started yet (or put back in the queue): no engine runs.
    Queued,
    /// Its engines can run (or are ending).
    Running,
    /// Held in place: engines exist but do not run.
    Suspended,
    /// Ended well.
    Completed,
    /// Ended badly (failed, timed out, cancelled, lost its node…).
    Failed,
    /// A state this code does not know.
    Unknown,
}

const NAMES: &[(&str, &str, JobState)] = &[
    ("PENDING", "PD", JobState::Pending),
    ("CONFIGURING", "CF", JobState::Configuring),
    ("RUNNING", "R", JobState::Running),
    ("COMPLETING", "CG", JobState::Completing),
    ("COMPLETED", "CD", JobState::Completed),
    ("FAILED", "F", JobState::Failed),
    ("TIMEOUT", "TO", JobState::Timeout),
    ("CANCELLED", "CA", JobState::Cancelled),
    ("NODE_FAIL", "NF", JobState::NodeFail),
    ("PREEMPTED", "PR", JobState::Preempted),
    ("OUT_OF_MEMORY", "OOM", JobState::OutOfMemory),
    ("BOOT_FAIL", "BF", JobState::BootFail),
    ("DEADLINE", "DL", JobState::Deadline),
    ("SUSPENDED", "S", JobState::Suspended),
    ("STOPPED", "ST", JobState::Stopped),
    ("REQUEUED", "RQ", JobState::Requeued),
    ("REQUEUE_HOLD", "RH", JobState::RequeueHold),
    ("REQUEUE_FED", "RF", JobState::RequeueFed),
    ("RESV_DEL_HOLD", "RD", JobState::ResvDelHold),
    ("RESIZING", "RS", JobState::Resizing),
    ("REVOKED", "RV", JobState::Revoked),
    ("SPECIAL_EXIT", "SE", JobState::SpecialExit),
    ("SIGNALING", "SI", JobState::Signaling),
    ("STAGE_OUT", "SO", JobState::StageOut),
];

impl JobState {
    /// Parses a state as `squeue %T`/`%t` or `sacct` print it (`CANCELLED by 1000` included).
    pub fn parse(text: &str) -> JobState {
        let word = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_end_matches('+');
        let upper = word.to_ascii_uppercase();
        NAMES
            .iter()
            .find(|(long, short, _)| *long == upper || *short == upper)
            .map(|(_, _, s)| s.clone())
            .unwrap_or_else(|| JobState::Other(text.trim().to_owned()))
    }

    /// Slurm's name of the state.
    pub fn name(&self) -> &str {
        match self {
            JobState::Other(s) => s,
            known => NAMES
                .iter()
                .find(|(_, _, s)| s == known)
                .map(|(long, _, _)| *long)
                .unwrap_or("UNKNOWN"),
        }
    }

    /// What the state means for the job's engines.
    pub fn phase(&self) -> Phase {
        use JobState::*;
        match self {
            Pending | Configuring | Requeued | RequeueHold | RequeueFed | ResvDelHold
            | SpecialExit => Phase::Queued,
            Running | Completing | Signaling | StageOut | Resizing => Phase::Running,
            Suspended | Stopped => Phase::Suspended,
            Completed => Phase::Completed,
            Failed | Timeout | Cancelled | NodeFail | Preempted | OutOfMemory | BootFail
            | Deadline | Revoked => Phase::Failed,
            Other(_) => Phase::Unknown,
        }
    }

    /// True once the job has ended for good.
    pub fn is_final(&self) -> bool {
        matches!(self.phase(), Phase::Completed | Phase::Failed)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a job's state came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `squeue`: the controller still holds the job.
    Squeue,
    /// `sacct`: the accounting database (squeue forgot the job).
    Sacct,
    /// Neither knows the job (or accounting is off): its state is unknown.
    Nowhere,
}

/// One job's state as last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    /// The job.
    pub id: JobId,
    /// Its state.
    pub state: JobState,
    /// Why it waits (squeue's reason: `Resources`, `Priority`, `ReqNodeNotAvail…`), or why it
    /// ended, when Slurm says; `None` for `None`.
    pub reason: Option<String>,
    /// Nodes it runs on (`n[1-2]`), if any.
    pub nodes: Option<String>,
    /// Exit code as `code:signal` (sacct), when known.
    pub exit_code: Option<String>,
    /// Which command said so.
    pub source: Source,
}

/// The `squeue --format` this module parses: id, long state, reason, nodes.
pub const SQUEUE_FORMAT: &str = "%i|%T|%r|%N";

/// The `sacct --format` this module parses.
pub const SACCT_FORMAT: &str = "JobID,State,ExitCode,Reason,NodeList";

fn non_empty(s: Option<&str>) -> Option<String> {
    s.map(str::trim)
        .filter(|s| !s.is_empty() && *s != "None" && *s != "(null)" && *s != "None assigned")
        .map(str::to_owned)
}

/// Parses `squeue --noheader --format=%i|%T|%r|%N` output. Lines that do not parse are
/// skipped (and counted in the second value).
pub fn parse_squeue(text: &str) -> (Vec<JobStatus>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut f = line.split('|');
        let Some(id) = f.next().and_then(JobId::parse) else {
            bad += 1;
            continue;
        };
        let Some(state) = f.next().map(JobState::parse) else {
            bad += 1;
            continue;
        };
        out.push(JobStatus {
            id,
            state,
            reason: non_empty(f.next()),
            nodes: non_empty(f.next()),
            exit_code: None,
            source: Source::Squeue,
        });
    }
    (out, bad)
}

/// Parses `sacct -X -n -P --format=JobID,State,ExitCode,Reason,NodeList` output; step lines
/// (`123.batch`), should any come, are skipped.
pub fn parse_sacct(text: &str) -> (Vec<JobStatus>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut f = line.split('|');
        let first = f.next().unwrap_or_default();
        if first.contains('.') {
            // A step (`123.batch`, `123.0`), not the allocation.
            continue;
        }
        let Some(id) = JobId::parse(first) else {
            bad += 1;
            continue;
        };
        let Some(state) = f.next().map(JobState::parse) else {
            bad += 1;
            continue;
        };
        out.push(JobStatus {
            id,
            state,
            exit_code: non_empty(f.next()),
            reason: non_empty(f.next()),
            nodes: non_empty(f.next()),
            source: Source::Sacct,
        });
    }
    (out, bad)
}

/// The job id in `sbatch --parsable` output (`123` or `123;cluster`): the last line that
/// holds one.
pub fn parse_sbatch(stdout: &str) -> Option<(JobId, Option<String>)> {
    stdout.lines().rev().find_map(|line| {
        let (id, cluster) = match line.trim().split_once(';') {
            Some((id, c)) => (id, Some(c.trim().to_owned()).filter(|c| !c.is_empty())),
            None => (line.trim(), None),
        };
        JobId::parse(id).map(|id| (id, cluster))
    })
}

/// What a failed Slurm command's stderr means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Complaint {
    /// slurmctld cannot be reached (down, wrong address, firewall); retrying may help.
    Unreachable,
    /// The job ids are unknown to slurmctld (squeue on jobs it forgot).
    UnknownJob,
    /// Accounting is not set up (sacct cannot answer).
    NoAccounting,
    /// Anything else: Slurm refused the request (bad partition, account, limits…).
    Refused,
}

/// Classifies a Slurm client's error output.
pub fn classify(stderr: &str) -> Complaint {
    let s = stderr.to_ascii_lowercase();
    if s.contains("unable to contact slurm controller")
        || s.contains("socket timed out")
        || s.contains("connection refused")
        || s.contains("zero bytes were transmitted")
        || s.contains("communication connection failure")
        || s.contains("unable to establish controller machine")
        || s.contains("could not establish a configuration source")
    {
        Complaint::Unreachable
    } else if s.contains("invalid job id") {
        Complaint::UnknownJob
    } else if s.contains("accounting storage is disabled")
        || s.contains("slurmdbd")
        || s.contains("no accounting")
    {
        Complaint::NoAccounting
    } else {
        Complaint::Refused
    }
}

/// The controller hosts named in a `slurm.conf` (`SlurmctldHost=` lines, or the older
/// `ControlMachine=`/`ControlAddr=`), for messages about an unreachable slurmctld.
pub fn slurmctld_hosts(conf: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in conf.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        if matches!(
            key.as_str(),
            "slurmctldhost" | "controlmachine" | "backupcontroller"
        ) {
            let v = value.split_whitespace().next().unwrap_or("").to_owned();
            if !v.is_empty() {
                out.push(v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_parses_by_long_and_short_name_and_round_trips() {
        for (long, short, state) in NAMES {
            assert_eq!(&JobState::parse(long), state);
            assert_eq!(&JobState::parse(short), state);
            assert_eq!(&JobState::parse(&long.to_lowercase()), state);
            assert_eq!(state.name(), *long);
            assert_ne!(state.phase(), Phase::Unknown, "{long}");
        }
        assert_eq!(JobState::parse("CANCELLED by 1000"), JobState::Cancelled);
        assert_eq!(JobState::parse("CANCELLED+"), JobState::Cancelled);
        let odd = JobState::parse("LAUNCH_FAILED_REQUEUED_HELD");
        assert_eq!(odd, JobState::Other("LAUNCH_FAILED_REQUEUED_HELD".into()));
        assert_eq!(odd.name(), "LAUNCH_FAILED_REQUEUED_HELD");
        assert_eq!(odd.phase(), Phase::Unknown);
        assert!(!odd.is_final());
        assert_eq!(JobState::parse(""), JobState::Other(String::new()));
    }

    #[test]
    fn phases_follow_what_engines_can_do() {
        use JobState::*;
        for s in [Pending, Configuring, Requeued, RequeueHold] {
            assert_eq!(s.phase(), Phase::Queued, "{s}");
        }
        for s in [Running, Completing] {
            assert_eq!(s.phase(), Phase::Running, "{s}");
        }
        for s in [
            Failed,
            Timeout,
            Cancelled,
            NodeFail,
            Preempted,
            OutOfMemory,
            BootFail,
            Deadline,
        ] {
            assert_eq!(s.phase(), Phase::Failed, "{s}");
            assert!(s.is_final());
        }
        assert!(Completed.is_final() && !Running.is_final() && !Suspended.is_final());
    }

    #[test]
    fn squeue_lines() {
        let text = "12|PENDING|Resources|\n13|RUNNING|None|n[1-2]\n14|PENDING|ReqNodeNotAvail, UnavailableNodes:n4|\ngarbage\n\n15|WEIRD_NEW|None|n3\n";
        let (jobs, bad) = parse_squeue(text);
        assert_eq!(bad, 1);
        assert_eq!(jobs.len(), 4);
        assert_eq!(jobs[0].reason.as_deref(), Some("Resources"));
        assert_eq!(jobs[0].nodes, None);
        assert_eq!(jobs[1].state, JobState::Running);
        assert_eq!(jobs[1].reason, None);
        assert_eq!(jobs[1].nodes.as_deref(), Some("n[1-2]"));
        assert_eq!(
            jobs[2].reason.as_deref(),
            Some("ReqNodeNotAvail, UnavailableNodes:n4")
        );
        assert_eq!(jobs[3].state, JobState::Other("WEIRD_NEW".into()));
        // Short lines and empty fields never panic.
        let (jobs, _) = parse_squeue("7\n8|R\n9||\n");
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].state, JobState::Running);
        assert_eq!(jobs[1].state, JobState::Other(String::new()));
    }

    #[test]
    fn sacct_lines() {
        let text = "20|COMPLETED|0:0|None|n1\n21|CANCELLED by 0|0:15|None|n2\n21.batch|CANCELLED|0:15||n2\n22|OUT_OF_MEMORY|0:125|None|n3\n23|TIMEOUT|0:0|TimeLimit|None assigned\n";
        let (jobs, bad) = parse_sacct(text);
        assert_eq!(bad, 0);
        assert_eq!(jobs.len(), 4);
        assert_eq!(jobs[1].state, JobState::Cancelled);
        assert_eq!(jobs[1].exit_code.as_deref(), Some("0:15"));
        assert_eq!(jobs[2].state, JobState::OutOfMemory);
        assert_eq!(jobs[3].reason.as_deref(), Some("TimeLimit"));
        assert_eq!(jobs[3].nodes, None);
        assert!(jobs.iter().all(|j| j.source == Source::Sacct));
    }

    #[test]
    fn sbatch_ids() {
        assert_eq!(parse_sbatch("42\n"), Some((JobId("42".into()), None)));
        assert_eq!(
            parse_sbatch("42;ci\n"),
            Some((JobId("42".into()), Some("ci".into())))
        );
        assert_eq!(
            parse_sbatch("note: something\n43\n"),
            Some((JobId("43".into()), None))
        );
        assert_eq!(parse_sbatch("Submitted batch job x\n"), None);
        assert_eq!(parse_sbatch(""), None);
        assert!(JobId::parse("12_3").is_some() && JobId::parse("a1").is_none());
    }

    #[test]
    fn complaints() {
        assert_eq!(
            classify("sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)"),
            Complaint::Unreachable
        );
        assert_eq!(
            classify("slurm_load_jobs error: Invalid job id specified"),
            Complaint::UnknownJob
        );
        assert_eq!(
            classify("sacct: error: Slurm accounting storage is disabled"),
            Complaint::NoAccounting
        );
        assert_eq!(
            classify("sbatch: error: invalid partition specified: nope"),
            Complaint::Refused
        );
    }

    #[test]
    fn controller_hosts_from_the_conf() {
        let conf = "ClusterName=ci\n# SlurmctldHost=old\nSlurmctldHost=ctl(10.0.0.1)\n  SlurmctldHost=backup # second\nControlMachine=legacy\n";
        assert_eq!(
            slurmctld_hosts(conf),
            vec!["ctl(10.0.0.1)", "backup", "legacy"]
        );
    }
}
