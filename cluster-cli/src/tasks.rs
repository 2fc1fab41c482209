//! Command tasks from the command line: `cluster map -- …`, `cluster submit`, `cluster result`
//! and `cluster wait`.
//!
//! A command map renders every command line first (so a template error submits nothing),
//! submits them all, then prints each task's output as a block: stdout to stdout, stderr to
//! stderr, in input order or as tasks finish. A task fails when its program exits non-zero,
//! is killed, cannot start on its engine, or runs past its timeout; each failure gets one line
//! on stderr naming the task, the engine and its host, and the run ends with a one-line
//! summary. `--json` prints one object per task instead.
//!
//! `cluster submit` records the ids it prints in the profile's `run/submitted.jsonl`, so that
//! `cluster wait` knows what to wait for; results are read back from the controller's store
//! with [`client::ResultStore`], from any process.

use crate::template::{CommandLine, Template};
use anyhow::{bail, Context as _, Result};
use client::{Client, CommandOutput, CommandSpec, EngineId, ErrorKind, TaskId};
use protocol::{Status, TaskOutcome};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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

    /// The request [`CommandOptions::view`] makes for `spec` under id `id`, as recorded by
    /// `cluster submit` to submit it again if the controller forgets it.
    pub fn request(&self, id: TaskId, spec: CommandSpec) -> protocol::TaskRequest {
        protocol::TaskRequest {
            id,
            work: protocol::Work::Command(spec),
            options: protocol::TaskOptions {
                targets: self.targets.clone(),
                retries: self.retries,
                run_timeout_ms: self
                    .timeout
                    .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)),
                ..protocol::TaskOptions::default()
            },
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

/// Parses a task id as printed by `cluster submit` (`CLIENT:SEQ`) or as a raw number.
pub fn parse_task_id(text: &str) -> Result<TaskId> {
    let bad = || {
        anyhow::anyhow!(
            "{text:?} is not a task id: give it as printed by `cluster submit`, like 3:1"
        )
    };
    match text.split_once(':') {
        Some((c, s)) => {
            let c: u32 = c.trim().parse().map_err(|_| bad())?;
            let s: u64 = s.trim().parse().map_err(|_| bad())?;
            if c >= 1 << 24 || s >= 1 << 40 {
                return Err(bad());
            }
            Ok(TaskId::new(client::ClientId(c), s))
        }
        None => text.trim().parse().map(TaskId).map_err(|_| bad()),
    }
}

/// True when file descriptor `fd` is a terminal.
pub fn is_terminal(fd: i32) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
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
    fn with_output(mut self, output: CommandOutput) -> Record {
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

    fn with_client_error(mut self, err: client::Error) -> Record {
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
            task: outcome.id,
            seq: 0,
            argument: None,
            command: None,
            engine: outcome.engine,
            host: None,
            output: None,
            failure: None,
            submitted_command: None,
            start_us: (outcome.started_us > 0).then_some(outcome.started_us),
            end_us: (outcome.started_us > 0).then_some(outcome.started_us + outcome.elapsed_us),
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

    /// The JSON line for this task.
    pub fn to_json(&self) -> Value {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let argument = self.argument.as_ref().map(|a| match a.as_slice() {
            [one] => Value::String(one.clone()),
            many => json!(many),
        });
        let (kind, message) = match &self.failure {
            Some(Failure::Error { kind, message }) => (Some(kind.clone()), Some(message.clone())),
            _ => (None, None),
        };
        let secs = |us: Option<u64>| us.map(|u| u as f64 / 1e6);
        json!({
            "task": self.task.to_string(),
            "seq": (self.seq > 0).then_some(self.seq),
            "argument": argument,
            "command": match (&self.command, &self.submitted_command) {
                (Some(c), _) => json!(std::iter::once(c.program.clone())
                    .chain(c.args.iter().cloned())
                    .collect::<Vec<_>>()),
                (None, Some(line)) => json!(line),
                (None, None) => Value::Null,
            },
            "engine": self.engine.map(|e| e.0),
            "host": self.host,
            "exit_status": self.output.as_ref().and_then(|o| o.status),
            "signal": self.output.as_ref().and_then(|o| o.signal),
            "stdout": self.output.as_ref().map(|o| text(&o.stdout)),
            "stderr": self.output.as_ref().map(|o| text(&o.stderr)),
            "truncated": self.output.as_ref().is_some_and(|o| o.truncated),
            "start": secs(self.start_us),
            "end": secs(self.end_us),
            "ok": self.succeeded(),
            "error": kind.map(|k| json!({"kind": k, "message": message})),
        })
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
    /// JSON lines instead of blocks.
    pub json: bool,
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
    fn add(&mut self, rec: &Record) {
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

/// The progress bar: done/failed/total, rate and ETA on one line of stderr, redrawn by a
/// thread of its own ten times a second once the map has taken more than half a second, so
/// that the main thread can block on results. Output blocks take the same lock and wipe the
/// bar first, so the two never mix on the terminal.
#[derive(Debug)]
struct Bar {
    /// Whether the bar is on the terminal now.
    drawn: Mutex<bool>,
    done: AtomicUsize,
    failed: AtomicUsize,
    stop: AtomicBool,
    total: usize,
    start: Instant,
}

impl Bar {
    fn draw_loop(&self) {
        std::thread::sleep(Duration::from_millis(500));
        while !self.stop.load(Ordering::Relaxed) {
            let line = progress_line(
                self.done.load(Ordering::Relaxed),
                self.failed.load(Ordering::Relaxed),
                self.total,
                self.start.elapsed(),
            );
            {
                let mut drawn = self.drawn.lock().unwrap_or_else(|p| p.into_inner());
                if self.stop.load(Ordering::Relaxed) {
                    break;
                }
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[K{line}");
                let _ = err.flush();
                *drawn = true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Holds the terminal: the bar is wiped and stays away until the guard is dropped.
    fn hold(&self) -> std::sync::MutexGuard<'_, bool> {
        let mut drawn = self.drawn.lock().unwrap_or_else(|p| p.into_inner());
        if *drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
            *drawn = false;
        }
        drawn
    }
}

/// The text of the progress bar.
pub fn progress_line(done: usize, failed: usize, total: usize, elapsed: Duration) -> String {
    const WIDTH: usize = 30;
    let filled = (done * WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH)
        .min(WIDTH);
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rate = done as f64 / secs;
    let eta = if done == 0 {
        "?".to_owned()
    } else {
        let left = (total - done.min(total)) as f64 / rate;
        format!("{left:.0} s")
    };
    format!(
        "[{}{}] {done}/{total} done, {failed} failed, {rate:.0}/s, ETA {eta}",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled)
    )
}

/// Prints one record: its block (or JSON line) and, for a failure, a line on stderr.
fn emit(
    rec: &Record,
    json: bool,
    out: &mut impl Write,
    err: &mut impl Write,
) -> std::io::Result<()> {
    if json {
        writeln!(out, "{}", rec.to_json())?;
        return Ok(());
    }
    if let Some(o) = &rec.output {
        if !o.stdout.is_empty() {
            out.write_all(&o.stdout)?;
        }
        if !o.stderr.is_empty() {
            out.flush()?;
            err.write_all(&o.stderr)?;
        }
        if o.truncated {
            writeln!(
                err,
                "cluster: the output of task {} was cut at the engine's size limit",
                rec.seq
            )?;
        }
    }
    if let Some(line) = rec.failure_line() {
        out.flush()?;
        writeln!(err, "cluster: {line}")?;
    }
    Ok(())
}

/// Runs a command map: one task per argument set, output printed as tasks finish or in input
/// order. Returns the counts; the caller turns failures into the exit status.
pub fn run_map(
    client: &Client,
    template: &Template,
    sets: Vec<Vec<String>>,
    options: &CommandOptions,
    printing: Printing,
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
    let bar = Arc::new(Bar {
        drawn: Mutex::new(false),
        done: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        total: n,
        start: Instant::now(),
    });
    let show_bar = printing.progress && !printing.json && is_terminal(2);
    let view = options.view(client);
    let mut pending = Vec::with_capacity(n);
    for line in &lines {
        let ar = view.command(options.spec(line))?;
        if show_bar {
            let bar = Arc::clone(&bar);
            ar.add_done_callback(move |_| {
                bar.done.fetch_add(1, Ordering::Relaxed);
            });
        }
        pending.push(ar);
    }
    let drawer = show_bar.then(|| {
        let bar = Arc::clone(&bar);
        std::thread::spawn(move || bar.draw_loop())
    });
    let mut summary = Summary {
        total: n,
        ..Summary::default()
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut err = std::io::stderr();
    let mut sets: Vec<Option<Vec<String>>> = sets.into_iter().map(Some).collect();
    let mut lines: Vec<Option<CommandLine>> = lines.into_iter().map(Some).collect();
    let mut finish = |i: usize,
                      ar: &client::AsyncResult<CommandOutput>,
                      out: &mut std::io::BufWriter<std::io::StdoutLock<'_>>|
     -> Result<()> {
        let us = |t: Option<std::time::SystemTime>| {
            t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_micros() as u64)
        };
        // Times are only printed as JSON; the metadata copies the output, so skip it else.
        let (engine, start_us, end_us) = if printing.json {
            let meta = ar.metadata();
            (meta.engine, us(meta.started), us(meta.completed))
        } else {
            (ar.engine(), None, None)
        };
        let rec = Record {
            task: ar.id(),
            seq: i + 1,
            argument: sets[i].take(),
            command: lines[i].take(),
            engine,
            host: hosts.lookup(Some(client), engine),
            output: None,
            failure: None,
            submitted_command: None,
            start_us,
            end_us,
        };
        let rec = match ar.get(Some(Duration::ZERO)) {
            Ok(output) => rec.with_output(output),
            Err(e) => rec.with_client_error(e),
        };
        summary.add(&rec);
        if rec.failure.is_some() {
            bar.failed.fetch_add(1, Ordering::Relaxed);
        }
        let quiet = !printing.json
            && rec.failure.is_none()
            && rec
                .output
                .as_ref()
                .is_none_or(|o| o.stdout.is_empty() && o.stderr.is_empty() && !o.truncated);
        if !quiet {
            let _terminal = show_bar.then(|| bar.hold());
            emit(&rec, printing.json, out, &mut err)?;
            if show_bar {
                // The bar comes back on stderr: what is printed must be out first.
                out.flush()?;
            }
        }
        Ok(())
    };
    let ids: Vec<TaskId> = pending.iter().map(client::AsyncResult::id).collect();
    let abort = || crate::interrupt::summary("cluster map", client.abort(&ids));
    crate::interrupt::abort_on_interrupt(abort, || -> Result<()> {
        match printing.order {
            Order::Input => {
                for (i, ar) in pending.iter().enumerate() {
                    if !ar.ready() {
                        // About to block: what is printed so far should be visible.
                        out.flush()?;
                        ar.wait(None);
                    }
                    finish(i, ar, &mut out)?;
                }
            }
            Order::Finish => {
                // Callbacks, not polling: one wake-up per finished task.
                for done in client::as_completed(pending.iter().enumerate(), None) {
                    let (i, ar) = done?;
                    finish(i, ar, &mut out)?;
                    // As they finish means as they finish: nothing waits in the buffer.
                    out.flush()?;
                }
            }
        }
        Ok(())
    })??;
    out.flush()?;
    bar.stop.store(true, Ordering::Relaxed);
    if let Some(d) = drawer {
        let _ = d.join();
        drop(bar.hold());
    }
    summary.seconds = t0.elapsed().as_secs_f64();
    Ok(summary)
}

/// One line of `run/submitted.jsonl`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Submitted {
    /// Task id as printed (`CLIENT:SEQ`).
    pub id: String,
    /// The command line.
    pub command: String,
    /// When it was submitted, microseconds since the epoch.
    pub submitted_us: u64,
    /// The controller's instance then (0 in records older than this field).
    #[serde(default)]
    pub instance: u64,
    /// The request as submitted, to submit again to a controller that restarted and forgot
    /// it (none in records older than this field).
    #[serde(default)]
    pub request: Option<protocol::TaskRequest>,
}

/// Submits one command and returns its id once the controller has it.
pub fn submit(
    client: &Client,
    line: &CommandLine,
    options: &CommandOptions,
    record_file: &Path,
) -> Result<TaskId> {
    let spec = options.spec(line);
    let ar = options.view(client).command(spec.clone())?;
    let id = ar.id();
    // The submit and this request travel on the same connection, in order: once the status
    // answer is here, the controller has the task, and this process may exit.
    let status = client
        .status()
        .context("the task was sent but the controller did not confirm it")?;
    let entry = Submitted {
        id: id.to_string(),
        command: line.to_string(),
        submitted_us: transport::now_us(),
        instance: status.controller.instance,
        request: Some(options.request(id, spec)),
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(record_file)
        .with_context(|| format!("cannot record the task in {}", record_file.display()))?;
    writeln!(file, "{}", serde_json::to_string(&entry)?)
        .with_context(|| format!("cannot record the task in {}", record_file.display()))?;
    Ok(id)
}

/// The tasks recorded by `cluster submit` (none when the file does not exist).
pub fn submitted(record_file: &Path) -> Result<Vec<Submitted>> {
    let text = match std::fs::read_to_string(record_file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", record_file.display())),
    };
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // A line cut by a crash mid-write is skipped rather than blocking every later wait.
        if let Ok(s) = serde_json::from_str::<Submitted>(line) {
            out.push(s);
        }
    }
    Ok(out)
}

/// Submits again the tasks among `unknown` that `cluster submit` recorded for another
/// controller than the one running now: it restarted and forgot them (their results, if any
/// came in meanwhile, are kept and answer at once). Tasks recorded for this very controller
/// stay unknown: they were purged. Returns the ids submitted again.
pub fn submit_forgotten(
    client: &Client,
    submitted: &[Submitted],
    unknown: &[TaskId],
) -> Result<Vec<TaskId>> {
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let now = client.status()?.controller.instance;
    let unknown: std::collections::HashSet<String> =
        unknown.iter().map(ToString::to_string).collect();
    let requests: Vec<protocol::TaskRequest> = submitted
        .iter()
        .filter(|s| s.instance != 0 && s.instance != now && unknown.contains(&s.id))
        .filter_map(|s| s.request.clone())
        .collect();
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<TaskId> = requests.iter().map(|r| r.id).collect();
    let payloads = vec![Vec::new(); requests.len()];
    client
        .submit_as_is(requests, payloads)
        .context("cannot submit again the tasks the restarted controller forgot")?;
    Ok(ids)
}

/// [`wait_for`], submitting again first the recorded tasks that a restarted controller forgot
/// (see [`submit_forgotten`]), with a line on stderr saying so.
pub fn wait_for_submitted(
    store: &mut client::ResultStore,
    client: &Client,
    ids: &[TaskId],
    wait: bool,
    timeout: Option<Duration>,
    submitted: &[Submitted],
) -> Result<Waited> {
    let found = wait_for(store, Some(client), ids, false, Some(Duration::ZERO))?;
    let again = submit_forgotten(client, submitted, &found.unknown)?;
    if !again.is_empty() {
        eprintln!(
            "cluster: the controller restarted and had forgotten {} task(s); submitted them again: {}",
            again.len(),
            again
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    wait_for(store, Some(client), ids, wait, timeout)
}

/// Fills in the command lines of records from what `cluster submit` recorded.
pub fn name_commands(records: &mut [Record], submitted: &[Submitted]) {
    let by_id: HashMap<&str, &str> = submitted
        .iter()
        .map(|s| (s.id.as_str(), s.command.as_str()))
        .collect();
    for rec in records.iter_mut().filter(|r| r.command.is_none()) {
        if let Some(command) = by_id.get(rec.task.to_string().as_str()) {
            rec.submitted_command = Some((*command).to_owned());
        }
    }
}

/// What [`wait_for`] found.
#[derive(Debug, Default)]
pub struct Waited {
    /// Finished tasks, in the order asked.
    pub records: Vec<Record>,
    /// Tasks still queued or running when the wait ended.
    pub pending: Vec<TaskId>,
    /// Ids the controller does not know.
    pub unknown: Vec<TaskId>,
}

/// Looks up `ids` and, with `wait`, polls until none is pending or `timeout` passes.
pub fn wait_for(
    store: &mut client::ResultStore,
    client: Option<&Client>,
    ids: &[TaskId],
    wait: bool,
    timeout: Option<Duration>,
) -> Result<Waited> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut found: HashMap<TaskId, Record> = HashMap::new();
    let mut unknown = Vec::new();
    let mut left: Vec<TaskId> = ids.to_vec();
    let mut pause = Duration::from_millis(5);
    loop {
        let lookup = store.fetch(&left)?;
        for (outcome, payload) in &lookup.done {
            found.insert(outcome.id, Record::from_outcome(outcome, payload));
        }
        unknown.extend(lookup.unknown);
        left = lookup.pending;
        if left.is_empty() || !wait || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
    let mut hosts = Hosts::default();
    let mut records = Vec::new();
    for id in ids {
        if let Some(mut rec) = found.remove(id) {
            rec.host = hosts.lookup(client, rec.engine);
            records.push(rec);
        }
    }
    Ok(Waited {
        records,
        pending: left,
        unknown,
    })
}

/// Prints a fetched record for `cluster result`: the block (or JSON), failure line included.
pub fn print_record(rec: &Record, json: bool) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut err = std::io::stderr();
    emit(rec, json, &mut out, &mut err)?;
    out.flush()?;
    Ok(())
}

/// Adds a finished record to a summary (for `cluster wait`).
pub fn tally(summary: &mut Summary, rec: &Record) {
    summary.total += 1;
    summary.add(rec);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_parse_as_printed() {
        let id = TaskId::new(client::ClientId(3), 17);
        assert_eq!(parse_task_id(&id.to_string()).unwrap(), id);
        assert_eq!(parse_task_id(&id.0.to_string()).unwrap(), id);
        assert!(parse_task_id("x").is_err());
        assert!(parse_task_id("1:").is_err());
        assert!(parse_task_id("99999999:1").is_err());
    }

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
        let j = rec.to_json();
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
        let mut s = Summary::default();
        tally(&mut s, &rec);
        assert_eq!(s.errors, 1);
        assert!(s
            .failure_line("cluster wait")
            .starts_with("cluster wait: 1 of 1 tasks failed"));
    }

    #[test]
    fn progress_text() {
        let line = progress_line(50, 1, 100, Duration::from_secs(2));
        assert!(
            line.contains("50/100 done, 1 failed, 25/s, ETA 2 s"),
            "{line}"
        );
        assert!(progress_line(0, 0, 0, Duration::ZERO).contains("0/0"));
    }
}
