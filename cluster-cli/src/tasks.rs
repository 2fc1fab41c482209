//! Command tasks from the command line: `cluster map -- …`, and the records `cluster result`
//! and `cluster wait` print.
//!
//! A command map renders every command line first (so a template error submits nothing),
//! submits them all, then prints each task's output as a block: stdout to stdout, stderr to
//! stderr, in input order or as tasks finish. A task fails when its program exits non-zero,
//! is killed, cannot start on its engine, or runs past its timeout; each failure gets one line
//! on stderr naming the task, the engine and its host, and the run ends with a one-line
//! summary. `--json` prints one object per task instead (shapes in [`crate::output`]).
//!
//! `cluster submit` and `cluster wait` keep their ledger with [`client::Ledger`]; this module
//! turns what it finds into [`Record`]s.

use crate::output::Output;
use crate::progress::Progress;
use crate::template::{CommandLine, Template};
use anyhow::{bail, Result};
use client::{Client, CommandOutput, CommandSpec, EngineId, ErrorKind, TaskId};
use protocol::{Status, TaskOutcome};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Options of command tasks, shared by `map` and `submit`.
#[derive(Debug, Clone, Default)]
pub struct CommandOptions {
    /// Run-time limit on the engine; the program is killed at it.
    pub timeout: Option<Duration>,
    /// Re-runs elsewhere when the engine dies.
    pub retries: u32,
    /// Engines allowed to run the tasks (any when empty).
    pub targets: Vec<EngineId>,
    /// Working directory on the engine.
    pub cwd: Option<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl CommandOptions {
    /// The view the tasks go through.
    pub fn view(&self, client: &Client) -> client::LoadBalancedView {
        let mut view = client.load_balanced_view().retries(self.retries);
        if !self.targets.is_empty() {
            view = view.targets(&self.targets);
        }
        if let Some(t) = self.timeout {
            // A run-time limit, as in GNU parallel: a task waiting behind others is not failed.
            view = view.run_timeout(t);
        }
        view
    }

    /// The task for one command line.
    pub fn spec(&self, line: &CommandLine) -> CommandSpec {
        CommandSpec {
            program: line.program.clone(),
            args: line.args.clone(),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            stdin: None,
        }
    }
}

/// Parses `--env` values: `K=V` sets a variable, a bare `K` passes this shell's value on.
pub fn parse_env(items: &[String]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for item in items {
        match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => out.push((k.to_owned(), v.to_owned())),
            Some(_) => bail!("--env {item:?}: the variable name is empty; write K=V"),
            None => match std::env::var(item) {
                Ok(v) => out.push((item.clone(), v)),
                Err(_) => bail!(
                    "--env {item}: no such variable here to pass on; write {item}=VALUE to set it"
                ),
            },
        }
    }
    Ok(out)
}

/// Why a task did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The program exited with a non-zero status.
    Exit(i32),
    /// The program was killed by a signal.
    Signal(i32),
    /// The task did not run to an exit status (program missing, timeout, engine lost…).
    Error {
        /// Short kind (`timeout`, `command failed to start`…).
        kind: String,
        /// The message from the engine or controller.
        message: String,
    },
}

impl Failure {
    fn short(&self) -> String {
        match self {
            Failure::Exit(c) => format!("exited with status {c}"),
            Failure::Signal(s) => format!("was killed by signal {s}"),
            Failure::Error { kind, message } => format!("failed ({kind}): {message}"),
        }
    }
}

/// One finished command task.
#[derive(Debug, Clone)]
pub struct Record {
    /// Task id.
    pub task: TaskId,
    /// Position in the input, from 1 (0 when not part of a map).
    pub seq: usize,
    /// The argument set it ran with.
    pub argument: Option<Vec<String>>,
    /// The command line, when known here.
    pub command: Option<CommandLine>,
    /// The engine that ran it.
    pub engine: Option<EngineId>,
    /// That engine's host.
    pub host: Option<String>,
    /// Output (when it ran to an exit or a signal).
    pub output: Option<CommandOutput>,
    /// Why it failed, if it did.
    pub failure: Option<Failure>,
    /// The command line as `cluster submit` recorded it (when `command` is not known).
    pub submitted_command: Option<String>,
    /// Start and end on the engine, microseconds since the epoch.
    pub start_us: Option<u64>,
    /// End, microseconds since the epoch.
    pub end_us: Option<u64>,
}

impl Record {
    /// A record of task `task` with nothing known yet.
    pub fn new(task: TaskId) -> Record {
        Record {
            task,
            seq: 0,
            argument: None,
            command: None,
            engine: None,
            host: None,
            output: None,
            failure: None,
            submitted_command: None,
            start_us: None,
            end_us: None,
        }
    }

    /// The record of a task that ran to an exit or a signal.
    pub fn with_output(mut self, output: CommandOutput) -> Record {
        self.failure = match (output.status, output.signal) {
            (Some(0), _) => None,
            (Some(c), _) => Some(Failure::Exit(c)),
            (None, Some(s)) => Some(Failure::Signal(s)),
            (None, None) => Some(Failure::Error {
                kind: "unknown".into(),
                message: "the program ended without an exit status".into(),
            }),
        };
        self.output = Some(output);
        self
    }

    /// The record of a task that did not run to an exit.
    pub fn with_client_error(mut self, err: client::Error) -> Record {
        let (kind, message, engine) = match err {
            client::Error::Remote {
                engine,
                kind,
                message,
            } => (kind.to_string(), message, engine),
            client::Error::EngineLost { engine, message } => {
                (ErrorKind::EngineLost.to_string(), message, engine)
            }
            other => ("error".to_owned(), other.to_string(), None),
        };
        if self.engine.is_none() {
            self.engine = engine;
        }
        self.failure = Some(Failure::Error { kind, message });
        self
    }

    /// A record from a stored outcome (as `cluster result` fetches it).
    pub fn from_outcome(outcome: &TaskOutcome, payload: &[u8]) -> Record {
        let rec = Record {
            engine: outcome.engine,
            start_us: (outcome.started_us > 0).then_some(outcome.started_us),
            end_us: (outcome.started_us > 0).then_some(outcome.started_us + outcome.elapsed_us),
            ..Record::new(outcome.id)
        };
        match &outcome.status {
            Status::Ok => match protocol::decode::<CommandOutput>(payload) {
                Ok(out) => rec.with_output(out),
                Err(e) => Record {
                    failure: Some(Failure::Error {
                        kind: "not a command".into(),
                        message: format!(
                            "task {} is not a command task (its result does not decode: {e})",
                            outcome.id
                        ),
                    }),
                    ..rec
                },
            },
            Status::Err(err) => Record {
                failure: Some(Failure::Error {
                    kind: err.kind.to_string(),
                    message: err.message.clone(),
                }),
                engine: rec.engine.or(err.engine),
                ..rec
            },
        }
    }

    /// True when the program ran and exited with status 0.
    pub fn succeeded(&self) -> bool {
        self.failure.is_none()
    }

    fn where_(&self) -> String {
        match (self.engine, &self.host) {
            (Some(e), Some(h)) => format!("engine {e} ({h})"),
            (Some(e), None) => format!("engine {e}"),
            (None, _) => "no engine".to_owned(),
        }
    }

    /// The one-line description of a failure (`None` for success).
    pub fn failure_line(&self) -> Option<String> {
        let failure = self.failure.as_ref()?;
        let what = match (&self.command, &self.submitted_command, self.seq) {
            (Some(c), _, seq) if seq > 0 => format!("task {seq} `{c}`"),
            (Some(c), _, _) => format!("task {} `{c}`", self.task),
            (None, Some(c), _) => format!("task {} `{c}`", self.task),
            (None, None, _) => format!("task {}", self.task),
        };
        Some(format!("{what} {} on {}", failure.short(), self.where_()))
    }
}

/// Engine hosts, from the controller's status (refreshed when an unknown engine shows up).
#[derive(Debug, Default)]
pub struct Hosts {
    map: HashMap<EngineId, String>,
    refreshed: Option<Instant>,
}

impl Hosts {
    /// The host of `engine`, asking the controller again at most once a second.
    pub fn lookup(&mut self, client: Option<&Client>, engine: Option<EngineId>) -> Option<String> {
        let engine = engine?;
        if !self.map.contains_key(&engine) {
            let stale = self
                .refreshed
                .is_none_or(|t| t.elapsed() > Duration::from_secs(1));
            if let (Some(c), true) = (client, stale) {
                self.refresh(c);
            }
        }
        self.map.get(&engine).cloned()
    }

    /// Reads every engine's host from the controller.
    pub fn refresh(&mut self, client: &Client) {
        self.refreshed = Some(Instant::now());
        if let Ok(report) = client.status() {
            for e in report.engines {
                self.map.insert(e.id, e.host);
            }
        }
    }
}

/// In what order map outputs are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Input order.
    Input,
    /// As tasks finish.
    Finish,
}

/// How a command map prints.
#[derive(Debug, Clone, Copy)]
pub struct Printing {
    /// Order of the blocks.
    pub order: Order,
    /// Draw a progress bar on stderr (only honoured when stderr is a terminal).
    pub progress: bool,
}

/// Counts of a finished map or wait.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    /// Tasks.
    pub total: usize,
    /// Succeeded.
    pub ok: usize,
    /// Exited non-zero or were killed by a signal.
    pub exited: usize,
    /// Did not run to an exit (program missing, timeout, engine lost…).
    pub errors: usize,
    /// The first failure, described.
    pub first_failure: Option<String>,
    /// Seconds from submit to the last result.
    pub seconds: f64,
}

impl Summary {
    /// Counts a finished task (whose place in the total is already counted).
    pub fn add(&mut self, rec: &Record) {
        match &rec.failure {
            None => self.ok += 1,
            Some(Failure::Error { .. }) => self.errors += 1,
            Some(_) => self.exited += 1,
        }
        if self.first_failure.is_none() {
            self.first_failure = rec.failure_line();
        }
    }

    /// Failed tasks.
    pub fn failed(&self) -> usize {
        self.exited + self.errors
    }

    /// The one-line summary printed after failures.
    pub fn failure_line(&self, what: &str) -> String {
        let mut parts = Vec::new();
        if self.exited > 0 {
            parts.push(format!("{} exited non-zero", self.exited));
        }
        if self.errors > 0 {
            parts.push(format!("{} did not run to an exit", self.errors));
        }
        format!(
            "{what}: {} of {} tasks failed ({}); first: {}",
            self.failed(),
            self.total,
            parts.join(", "),
            self.first_failure.as_deref().unwrap_or("?")
        )
    }
}

/// A command map under way: its tasks, what is known about each, and the counts.
struct MapRun<'a> {
    client: &'a Client,
    out: &'a Output,
    progress: Progress,
    hosts: Hosts,
    summary: Summary,
    sets: Vec<Option<Vec<String>>>,
    lines: Vec<Option<CommandLine>>,
}

impl MapRun<'_> {
    /// Prints task `i` (finished) and counts it.
    fn finish(&mut self, i: usize, ar: &client::AsyncResult<CommandOutput>) -> Result<()> {
        let us = |t: Option<std::time::SystemTime>| {
            t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_micros() as u64)
        };
        // Times are only printed as JSON; the metadata copies the output, so skip it else.
        let json = self.out.json();
        let (engine, start_us, end_us) = if json {
            let meta = ar.metadata();
            (meta.engine, us(meta.started), us(meta.completed))
        } else {
            (ar.engine(), None, None)
        };
        let rec = Record {
            seq: i + 1,
            argument: self.sets[i].take(),
            command: self.lines[i].take(),
            engine,
            host: self.hosts.lookup(Some(self.client), engine),
            start_us,
            end_us,
            ..Record::new(ar.id())
        };
        let rec = match ar.get(Some(Duration::ZERO)) {
            Ok(output) => rec.with_output(output),
            Err(e) => rec.with_client_error(e),
        };
        self.summary.add(&rec);
        if rec.failure.is_some() {
            self.progress.failed();
        }
        let quiet = !json
            && rec.failure.is_none()
            && rec
                .output
                .as_ref()
                .is_none_or(|o| o.stdout.is_empty() && o.stderr.is_empty() && !o.truncated);
        if !quiet {
            let _terminal = self.progress.hold();
            self.out.record(&rec)?;
            if self.progress.shown() {
                // The bar comes back on stderr: what is printed must be out first.
                self.out.flush()?;
            }
        }
        Ok(())
    }

    /// Waits for the tasks and prints each, in `order`.
    fn print_all(
        &mut self,
        pending: &[client::AsyncResult<CommandOutput>],
        order: Order,
    ) -> Result<()> {
        match order {
            Order::Input => {
                let mut watch = crate::noengines::NoEngines::default();
                for (i, ar) in pending.iter().enumerate() {
                    if !ar.ready() {
                        // About to block: what is printed so far should be visible.
                        self.out.flush()?;
                        while !ar.wait(Some(Duration::from_secs(1))) {
                            let _terminal = self.progress.hold();
                            watch.check(self.client, self.out)?;
                        }
                    }
                    self.finish(i, ar)?;
                }
            }
            Order::Finish => {
                // Callbacks, not polling: one wake-up per finished task.
                for done in client::as_completed(pending.iter().enumerate(), None) {
                    let (i, ar) = done?;
                    self.finish(i, ar)?;
                    // As they finish means as they finish: nothing waits in the buffer.
                    self.out.flush()?;
                }
            }
        }
        Ok(())
    }
}

/// Runs a command map: one task per argument set, output printed through `out` as tasks
/// finish or in input order. Returns the counts; the caller turns failures into the exit
/// status.
pub fn run_map(
    client: &Client,
    template: &Template,
    sets: Vec<Vec<String>>,
    options: &CommandOptions,
    printing: Printing,
    out: &Output,
) -> Result<Summary> {
    let t0 = Instant::now();
    let lines = sets
        .iter()
        .enumerate()
        .map(|(i, set)| template.render(set, i + 1))
        .collect::<Result<Vec<_>, _>>()?;
    let n = lines.len();
    let mut hosts = Hosts::default();
    hosts.refresh(client);
    let progress = Progress::start(n, printing.progress && !out.json());
    let view = options.view(client);
    let mut pending = Vec::with_capacity(n);
    for line in &lines {
        let ar = view.command(options.spec(line))?;
        if progress.shown() {
            let counter = progress.counter();
            ar.add_done_callback(move |_| counter.done());
        }
        pending.push(ar);
    }
    let mut run = MapRun {
        client,
        out,
        progress,
        hosts,
        summary: Summary {
            total: n,
            ..Summary::default()
        },
        sets: sets.into_iter().map(Some).collect(),
        lines: lines.into_iter().map(Some).collect(),
    };
    let ids: Vec<TaskId> = pending.iter().map(client::AsyncResult::id).collect();
    let abort = || crate::interrupt::summary("cluster map", client.abort(&ids));
    crate::interrupt::abort_on_interrupt(abort, || run.print_all(&pending, printing.order))??;
    out.flush()?;
    run.progress.finish();
    run.summary.seconds = t0.elapsed().as_secs_f64();
    Ok(run.summary)
}

/// The records of finished tasks a ledger look-up found, with their hosts and the command
/// lines the ledger recorded.
pub fn records(
    done: &[(TaskOutcome, Vec<u8>)],
    labels: &HashMap<TaskId, String>,
    client: &Client,
) -> Vec<Record> {
    let mut hosts = Hosts::default();
    done.iter()
        .map(|(outcome, payload)| {
            let mut rec = Record::from_outcome(outcome, payload);
            rec.host = hosts.lookup(Some(client), rec.engine);
            rec.submitted_command = labels.get(&rec.task).cloned();
            rec
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_items() {
        std::env::set_var("CLUSTER_TASKS_TEST_VAR", "v");
        let env = parse_env(&["A=1".into(), "B=".into(), "CLUSTER_TASKS_TEST_VAR".into()]).unwrap();
        assert_eq!(
            env,
            [
                ("A".to_owned(), "1".to_owned()),
                ("B".to_owned(), String::new()),
                ("CLUSTER_TASKS_TEST_VAR".to_owned(), "v".to_owned())
            ]
        );
        assert!(parse_env(&["=x".into()]).is_err());
        assert!(parse_env(&["CLUSTER_SURELY_UNSET_VAR_42".into()]).is_err());
    }

    #[test]
    fn outcomes_become_records() {
        let out = CommandOutput {
            status: Some(2),
            signal: None,
            stdout: b"hi\n".to_vec(),
            stderr: Vec::new(),
            truncated: false,
        };
        let outcome = TaskOutcome {
            id: TaskId(5),
            engine: Some(EngineId(1)),
            status: Status::Ok,
            started_us: 1_000_000,
            elapsed_us: 500_000,
        };
        let rec = Record::from_outcome(&outcome, &protocol::encode(&out).unwrap());
        assert_eq!(rec.failure, Some(Failure::Exit(2)));
        let j = crate::output::record_json(&rec);
        assert_eq!(j["exit_status"], 2);
        assert_eq!(j["stdout"], "hi\n");
        assert_eq!(j["start"], 1.0);
        assert_eq!(j["end"], 1.5);
        assert_eq!(j["ok"], false);
        let failed = TaskOutcome {
            status: Status::Err(protocol::TaskError {
                kind: ErrorKind::CommandFailed,
                message: "cannot start `nope`: No such file".into(),
                engine: Some(EngineId(0)),
            }),
            engine: None,
            ..outcome
        };
        let rec = Record::from_outcome(&failed, &[]);
        let line = rec.failure_line().unwrap();
        assert!(line.contains("engine 0") && line.contains("nope"), "{line}");
        let mut s = Summary {
            total: 1,
            ..Summary::default()
        };
        s.add(&rec);
        assert_eq!(s.errors, 1);
        assert!(s
            .failure_line("cluster wait")
            .starts_with("cluster wait: 1 of 1 tasks failed"));
    }
}
