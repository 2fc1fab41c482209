//! Everything the commands print, in one place: text for people and JSON for programs.
//!
//! A command's `run` returns a report (a type implementing [`Report`]); the dispatcher prints
//! it through the command's [`Output`], as text or as JSON lines (`--json`). Commands that
//! stream (maps, `result`, `wait`) print their items through the same [`Output`] as they
//! come. Every JSON shape is built here, by one function each, and pinned by the tests at the
//! bottom; scripts rely on them.
//!
//! Writes return errors instead of panicking: a closed stdout (`cluster status | head -1`)
//! ends the command quietly (see `exit::code`).

use crate::tasks::{Failure, Record, Summary};
use protocol::{QueueStatus, StatusReport, TaskId};
use serde_json::{json, Value};
use std::io::{self, Write};
use std::sync::{Mutex, MutexGuard};

/// Text or JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// For a person.
    Text,
    /// One JSON object a line.
    Json,
}

/// Something a command reports at its end.
pub trait Report {
    /// For a person: what goes to stdout (lines end with `\n`; empty for nothing).
    fn text(&self) -> String;
    /// For a program: the JSON object.
    fn json(&self) -> Value;
    /// The JSON lines to print (one object unless a report is a list).
    fn json_lines(&self) -> Vec<Value> {
        vec![self.json()]
    }
}

type Sink = Box<dyn Write + Send>;

/// Where a command prints: stdout (buffered) and stderr, in one format.
pub struct Output {
    format: Format,
    stdio: bool,
    out: Mutex<io::BufWriter<Sink>>,
    err: Mutex<Sink>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Output {
    /// Printing to this process's stdout and stderr.
    pub fn stdio(format: Format) -> Output {
        Output {
            stdio: true,
            ..Output::to(format, Box::new(io::stdout()), Box::new(io::stderr()))
        }
    }

    /// True when printing to this process's stdout and stderr.
    pub fn is_stdio(&self) -> bool {
        self.stdio
    }

    /// Printing to the writers given (tests capture output this way).
    pub fn to(format: Format, out: Sink, err: Sink) -> Output {
        Output {
            format,
            stdio: false,
            out: Mutex::new(io::BufWriter::with_capacity(1 << 16, out)),
            err: Mutex::new(err),
        }
    }

    /// True for `--json`.
    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// Prints a report.
    pub fn report(&self, report: &dyn Report) -> io::Result<()> {
        let mut out = lock(&self.out);
        match self.format {
            Format::Text => out.write_all(report.text().as_bytes())?,
            Format::Json => {
                for line in report.json_lines() {
                    writeln!(out, "{line}")?;
                }
            }
        }
        out.flush()
    }

    /// Prints one line on stdout (buffered: see [`Output::flush`]).
    pub fn line(&self, text: &str) -> io::Result<()> {
        writeln!(lock(&self.out), "{text}")
    }

    /// Writes raw bytes on stdout (buffered).
    pub fn bytes(&self, data: &[u8]) -> io::Result<()> {
        lock(&self.out).write_all(data)
    }

    /// Sends what is buffered for stdout.
    pub fn flush(&self) -> io::Result<()> {
        lock(&self.out).flush()
    }

    /// A line on stderr, after what stdout holds so far: `cluster: TEXT`.
    pub fn note(&self, text: &str) -> io::Result<()> {
        self.flush()?;
        writeln!(lock(&self.err), "cluster: {text}")
    }

    /// Raw bytes on stderr, after what stdout holds so far.
    pub fn err_bytes(&self, data: &[u8]) -> io::Result<()> {
        self.flush()?;
        lock(&self.err).write_all(data)
    }

    /// One finished command task: its stdout and stderr as a block and its failure line on
    /// stderr, or its JSON line.
    pub fn record(&self, rec: &Record) -> io::Result<()> {
        if self.json() {
            return self.line(&record_json(rec).to_string());
        }
        if let Some(o) = &rec.output {
            self.bytes(&o.stdout)?;
            if !o.stderr.is_empty() {
                self.err_bytes(&o.stderr)?;
            }
            if o.truncated {
                self.note(&format!(
                    "the output of task {} was cut at the engine's size limit",
                    rec.seq
                ))?;
            }
        }
        if let Some(line) = rec.failure_line() {
            self.note(&line)?;
        }
        Ok(())
    }
}

/// A JSON value as one line, or a line saying why it cannot be.
pub fn json_line(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot encode: {e}\"}}"))
}

fn to_value(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or_else(|e| json!({"error": format!("cannot encode: {e}")}))
}

/// A result value for a person: strings as they are, anything else as JSON.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `n` and the word, singular or plural: `1 engine`, `2 engines`.
pub fn count(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Task ids as a list of strings (`["3:1", "3:2"]`).
pub fn ids_json(ids: &[TaskId]) -> Value {
    Value::Array(ids.iter().map(|i| Value::String(i.to_string())).collect())
}

/// Task ids for a sentence (`3:1, 3:2`).
pub fn ids_text(ids: &[TaskId]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The JSON line of a command task (`map --json`, `result --json`, `wait --json`).
pub fn record_json(rec: &Record) -> Value {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let argument = rec.argument.as_ref().map(|a| match a.as_slice() {
        [one] => Value::String(one.clone()),
        many => json!(many),
    });
    let error = match &rec.failure {
        Some(Failure::Error { kind, message }) => json!({"kind": kind, "message": message}),
        _ => Value::Null,
    };
    let secs = |us: Option<u64>| us.map(|u| u as f64 / 1e6);
    let command = match (&rec.command, &rec.submitted_command) {
        (Some(c), _) => json!(std::iter::once(c.program.clone())
            .chain(c.args.iter().cloned())
            .collect::<Vec<_>>()),
        (None, Some(line)) => json!(line),
        (None, None) => Value::Null,
    };
    let output = rec.output.as_ref();
    json!({
        "task": rec.task.to_string(),
        "seq": (rec.seq > 0).then_some(rec.seq),
        "argument": argument,
        "command": command,
        "engine": rec.engine.map(|e| e.0),
        "host": rec.host,
        "exit_status": output.and_then(|o| o.status),
        "signal": output.and_then(|o| o.signal),
        "stdout": output.map(|o| text(&o.stdout)),
        "stderr": output.map(|o| text(&o.stderr)),
        "truncated": output.is_some_and(|o| o.truncated),
        "start": secs(rec.start_us),
        "end": secs(rec.end_us),
        "ok": rec.succeeded(),
        "error": error,
    })
}

/// One row of `cluster profile list`.
#[derive(Debug, Clone)]
pub struct ProfileRow {
    /// Profile name.
    pub name: String,
    /// Its folder.
    pub dir: std::path::PathBuf,
    /// The running controller's pid.
    pub controller_pid: Option<u32>,
    /// A recorded controller whose process is gone.
    pub dead_controller_pid: Option<u32>,
    /// Engines it launched that still run.
    pub engines_running: usize,
}

/// `cluster profile list`.
#[derive(Debug, Clone)]
pub struct ProfileList(pub Vec<ProfileRow>);

impl Report for ProfileList {
    fn text(&self) -> String {
        self.0
            .iter()
            .map(|p| {
                let state = match (p.controller_pid, p.dead_controller_pid) {
                    (Some(pid), _) => format!("running (controller pid {pid})"),
                    (None, Some(_)) => format!(
                        "controller dead, {} running",
                        count(p.engines_running, "engine")
                    ),
                    (None, None) if p.engines_running > 0 => {
                        format!(
                            "no controller, {} running",
                            count(p.engines_running, "engine")
                        )
                    }
                    (None, None) => "stopped".into(),
                };
                format!("{:<16} {:<28} {}\n", p.name, state, p.dir.display())
            })
            .collect()
    }
    fn json(&self) -> Value {
        Value::Array(self.json_lines())
    }
    fn json_lines(&self) -> Vec<Value> {
        self.0
            .iter()
            .map(|p| {
                json!({"name": p.name, "dir": p.dir, "running": p.controller_pid.is_some(),
                       "controller_pid": p.controller_pid,
                       "controller_dead": p.dead_controller_pid.is_some(),
                       "engines_running": p.engines_running})
            })
            .collect()
    }
}

/// A path: `profile create`, `profile locate`.
#[derive(Debug, Clone)]
pub struct PathReport(pub std::path::PathBuf);

impl Report for PathReport {
    fn text(&self) -> String {
        format!("{}\n", self.0.display())
    }
    fn json(&self) -> Value {
        json!({ "dir": self.0 })
    }
}

impl Report for crate::launch::StartReport {
    fn text(&self) -> String {
        format!(
            "cluster {:?} started: controller pid {}, {} ready in {:.3} s\nclient connection file: {}\n",
            self.profile,
            self.controller_pid,
            count(self.engines_ready, "engine"),
            self.seconds,
            self.client_file.display()
        )
    }
    fn json(&self) -> Value {
        to_value(self)
    }
}

impl Report for crate::ssh_start::SshStartReport {
    fn text(&self) -> String {
        let (started, hosts) = (&self.controller, &self.hosts);
        let mut s = format!(
            "cluster {:?} started: controller pid {}, {} ready on {} in {:.3} s\nclient connection file: {}\n",
            started.profile,
            started.controller_pid,
            count(hosts.engines_ready, "engine"),
            count(hosts.started.len(), "host"),
            self.seconds,
            started.client_file.display()
        );
        s.push_str(&hosts_started_text(&hosts.started));
        s
    }
    fn json(&self) -> Value {
        let (started, hosts) = (&self.controller, &self.hosts);
        json!({
            "profile": started.profile, "controller_pid": started.controller_pid,
            "client_file": started.client_file, "engine_file": started.engine_file,
            "engines_ready": hosts.engines_ready, "seconds": self.seconds,
            "hosts": hosts.started, "failed": hosts.failed,
        })
    }
}

fn hosts_started_text(hosts: &[crate::ssh::HostStarted]) -> String {
    hosts
        .iter()
        .map(|h| format!("  {} ({}): pids {:?}\n", h.destination, h.hostname, h.pids))
        .collect()
}

/// `cluster stop`: local processes and ssh hosts.
#[derive(Debug, Clone)]
pub struct StopShown {
    /// Profile name.
    pub profile: String,
    /// The local stop.
    pub local: crate::launch::StopReport,
    /// Engines that were recorded on ssh hosts.
    pub remote_engines: usize,
    /// Each ssh host's stop.
    pub hosts: Vec<crate::ssh::HostStopped>,
    /// Slurm jobs cancelled, mpiexec processes signalled.
    pub batch: Vec<String>,
}

impl Report for StopShown {
    fn text(&self) -> String {
        let batch: String = self.batch.iter().map(|l| format!("{l}\n")).collect();
        format!("{}{batch}", self.text_local())
    }
    fn json(&self) -> Value {
        let mut v = self.json_local();
        if let (Some(obj), false) = (v.as_object_mut(), self.batch.is_empty()) {
            obj.insert("batch".into(), json!(self.batch));
        }
        v
    }
}

impl StopShown {
    fn text_local(&self) -> String {
        let r = &self.local;
        let controller = r
            .controller_pid
            .map(|p| format!("pid {p}"))
            .unwrap_or_else(|| "(not running)".into());
        if !self.hosts.is_empty() {
            let killed: usize = self.hosts.iter().map(|h| h.killed.len()).sum();
            let killed = if killed > 0 {
                format!("; SIGKILL needed for {killed} remote engine(s)")
            } else {
                String::new()
            };
            return format!(
                "stopped controller {controller} and {} local engine(s); {} engine(s) on {} ssh host(s){killed}\n",
                r.engine_pids.len(),
                self.remote_engines,
                self.hosts.len(),
            );
        }
        if r.controller_pid.is_none() && r.engine_pids.is_empty() {
            return format!("no cluster was running for profile {:?}\n", self.profile);
        }
        let killed = if r.killed.is_empty() {
            String::new()
        } else {
            format!("; SIGKILL needed for {:?}", r.killed)
        };
        format!(
            "stopped controller {controller} and {} engine(s){killed}\n",
            r.engine_pids.len()
        )
    }
    fn json_local(&self) -> Value {
        let mut v = to_value(&self.local);
        v["hosts"] = to_value(&self.hosts);
        v
    }
}

/// `cluster status`.
#[derive(Debug, Clone)]
pub struct StatusShown {
    /// The controller's status.
    pub status: StatusReport,
    /// Where unfinished tasks are (older controllers do not answer it).
    pub queue: Option<QueueStatus>,
    /// ssh hosts this profile started engines on.
    pub hosts: Vec<profiles::SshHostRecord>,
    /// The profile's Slurm jobs and their states (text lines, JSON; empty/null for none).
    pub jobs: (String, Value),
    /// The running autoscaler's last decision, if one runs.
    pub scale: Option<crate::scale::ScaleState>,
    /// The profile's running dashboard, if any.
    pub dashboard: Option<dashboard::RunRecord>,
    /// The shared objects (older controllers do not answer).
    pub objects: Option<Vec<protocol::ObjectInfo>>,
}

impl Report for StatusShown {
    fn text(&self) -> String {
        let mut s = crate::render::status(&self.status);
        s.push('\n');
        if let Some(q) = &self.queue {
            s.push_str(&crate::render::queue(q));
            s.push('\n');
        }
        for h in &self.hosts {
            s.push_str(&format!(
                "ssh host {} ({}): {} engine(s) started, pids {:?}, files in {}\n",
                h.destination,
                h.hostname,
                h.pids.len(),
                h.pids,
                h.remote_dir
            ));
        }
        s.push_str(&self.jobs.0);
        if let Some(scale) = &self.scale {
            s.push_str(&scale.line());
            s.push('\n');
        }
        if let Some(d) = &self.dashboard {
            s.push_str(&format!("dashboard: {} (pid {})\n", d.url, d.pid));
        }
        if let Some(objects) = self.objects.as_ref().filter(|o| !o.is_empty()) {
            s.push_str(&format!("shared objects: {}\n", objects.len()));
            s.push_str(&objects_table(objects));
        }
        s
    }
    fn json(&self) -> Value {
        let mut v = to_value(&self.status);
        if let (Some(obj), Some(q)) = (v.as_object_mut(), &self.queue) {
            obj.insert("queue".into(), to_value(q));
        }
        if let (Some(obj), false) = (v.as_object_mut(), self.jobs.1.is_null()) {
            obj.insert("slurm_jobs".into(), self.jobs.1.clone());
        }
        if let (Some(obj), Some(scale)) = (v.as_object_mut(), &self.scale) {
            obj.insert("scale".into(), to_value(scale));
        }
        if let (Some(obj), Some(d)) = (v.as_object_mut(), &self.dashboard) {
            obj.insert("dashboard".into(), to_value(d));
        }
        if let (Some(obj), Some(objects)) = (v.as_object_mut(), &self.objects) {
            obj.insert("objects".into(), objects_json(objects));
        }
        v
    }
}

/// `cluster engines`: engines added.
#[derive(Debug, Clone)]
pub enum EnginesAdded {
    /// Local engines.
    Local {
        /// Their pids.
        pids: Vec<u32>,
        /// Engines registered now.
        registered: usize,
    },
    /// Engines over ssh.
    Ssh(crate::ssh::LaunchReport),
    /// Engines in Slurm jobs or through mpiexec.
    Batch(crate::batch::Launched),
}

impl Report for EnginesAdded {
    fn text(&self) -> String {
        match self {
            EnginesAdded::Local { pids, registered } => format!(
                "added {} engine(s) (pids {pids:?}); {registered} registered\n",
                pids.len()
            ),
            EnginesAdded::Ssh(r) => format!(
                "added {} engine(s) on {} ssh host(s); {} registered\n{}",
                r.engines(),
                r.started.len(),
                r.engines_ready,
                hosts_started_text(&r.started)
            ),
            EnginesAdded::Batch(b) => format!(
                "added engines in {:.3} s; {} registered\n{}",
                b.seconds,
                b.registered,
                b.text()
            ),
        }
    }
    fn json(&self) -> Value {
        match self {
            EnginesAdded::Local { pids, registered } => {
                json!({"pids": pids, "registered": registered})
            }
            EnginesAdded::Ssh(r) => json!({
                "pids": r.started.iter().flat_map(|h| h.pids.iter()).collect::<Vec<_>>(),
                "registered": r.engines_ready, "hosts": r.started, "failed": r.failed,
            }),
            EnginesAdded::Batch(b) => b.json(),
        }
    }
}

/// `cluster call`: one result.
#[derive(Debug, Clone)]
pub struct CallShown {
    /// Task id.
    pub task: TaskId,
    /// Engine that ran it.
    pub engine: Option<protocol::EngineId>,
    /// Seconds it ran.
    pub elapsed_s: Option<f64>,
    /// The result.
    pub result: Value,
}

impl Report for CallShown {
    fn text(&self) -> String {
        value_text(&self.result) + "\n"
    }
    fn json(&self) -> Value {
        json!({
            "task": self.task.to_string(), "engine": self.engine.map(|e| e.0),
            "elapsed_s": self.elapsed_s, "result": self.result,
        })
    }
}

/// One item of a function map and its result.
#[derive(Debug, Clone)]
pub struct MapItem<'a> {
    /// The item.
    pub item: &'a Value,
    /// Its result.
    pub result: &'a Value,
}

impl Report for MapItem<'_> {
    fn text(&self) -> String {
        value_text(self.result) + "\n"
    }
    fn json(&self) -> Value {
        json!({"item": self.item, "result": self.result})
    }
}

/// `cluster submit`: the id.
#[derive(Debug, Clone)]
pub struct Submitted(pub TaskId);

impl Report for Submitted {
    fn text(&self) -> String {
        format!("{}\n", self.0)
    }
    fn json(&self) -> Value {
        json!({"task": self.0.to_string()})
    }
}

/// `cluster wait`: the summary after the records.
#[derive(Debug, Clone)]
pub struct WaitShown {
    /// Tasks waited for.
    pub submitted: usize,
    /// Counts of the finished ones.
    pub summary: Summary,
    /// Still queued or running.
    pub pending: Vec<TaskId>,
    /// Unknown to the controller.
    pub unknown: Vec<TaskId>,
}

impl Report for WaitShown {
    fn text(&self) -> String {
        format!(
            "{} submitted task(s): {} succeeded, {} failed, {} still running, {} unknown\n",
            self.submitted,
            self.summary.ok,
            self.summary.failed(),
            self.pending.len(),
            self.unknown.len()
        )
    }
    fn json(&self) -> Value {
        json!({
            "summary": self.summary, "pending": ids_json(&self.pending),
            "unknown": ids_json(&self.unknown),
        })
    }
}

/// `cluster scale`.
#[derive(Debug, Clone)]
pub enum ScaleStarted {
    /// The loop started detached.
    Detached {
        /// Its pid.
        pid: u32,
        /// Engines kept at least.
        min: usize,
        /// Engines never exceeded.
        max: usize,
        /// Its log.
        log: std::path::PathBuf,
    },
    /// The loop ran here (`--foreground`) and ended.
    Ran,
}

impl Report for ScaleStarted {
    fn text(&self) -> String {
        match self {
            ScaleStarted::Detached { pid, min, max, log } => format!(
                "autoscaler started (pid {pid}): {min}..{max} engines; `cluster status` shows what it does, `cluster stop` ends it; log {}\n",
                log.display()
            ),
            ScaleStarted::Ran => String::new(),
        }
    }
    fn json(&self) -> Value {
        match self {
            ScaleStarted::Detached { pid, min, max, log } => {
                json!({"pid": pid, "min": min, "max": max, "log": log})
            }
            ScaleStarted::Ran => Value::Null,
        }
    }
}

/// `cluster history`: task records, newest first.
#[derive(Debug, Clone)]
pub struct HistoryShown {
    /// The records.
    pub records: Vec<protocol::HistoryRecord>,
}

impl Report for HistoryShown {
    fn text(&self) -> String {
        use crate::cmd::history::format_time;
        if self.records.is_empty() {
            return "no task records match\n".into();
        }
        let mut s = format!(
            "{:<14} {:<8} {:<20} {:>6} {:<20} {:>10}  {}\n",
            "ID", "STATE", "FUNCTION", "ENGINE", "SUBMITTED", "RUN", "RESULT"
        );
        for r in &self.records {
            let engine = r.engine.map_or("-".into(), |e| e.0.to_string());
            let outcome = match (&r.error, r.result_size) {
                (Some(e), _) => format!("{:?}: {}", e.kind, e.message.lines().next().unwrap_or("")),
                (None, Some(n)) if r.result == "kept" => format!("{n} bytes"),
                (None, Some(n)) => format!("{n} bytes ({})", r.result.replace('_', " ")),
                (None, None) => "-".into(),
            };
            s.push_str(&format!(
                "{:<14} {:<8} {:<20} {:>6} {:<20} {:>10}  {}\n",
                r.id.to_string(),
                r.state.name(),
                r.function,
                engine,
                format_time(r.submitted_us),
                crate::render::run_time(r.elapsed_us),
                outcome
            ));
        }
        s
    }
    fn json(&self) -> Value {
        to_value(&self.records)
    }
    fn json_lines(&self) -> Vec<Value> {
        self.records
            .iter()
            .map(|r| {
                let mut v = to_value(r);
                if let Some(o) = v.as_object_mut() {
                    o.insert("id".into(), Value::String(r.id.to_string()));
                }
                v
            })
            .collect()
    }
}

/// `cluster purge`: what was asked to go.
#[derive(Debug, Clone, Default)]
pub struct PurgeShown {
    /// Every finished task.
    pub all: bool,
    /// These tasks.
    pub ids: Vec<protocol::TaskId>,
    /// Tasks submitted before this time (µs since the epoch).
    pub before_us: Option<u64>,
}

impl Report for PurgeShown {
    fn text(&self) -> String {
        let mut s = String::new();
        if self.all {
            s.push_str("purged every finished task\n");
        }
        if !self.ids.is_empty() {
            s.push_str(&format!("purged {}\n", ids_text(&self.ids)));
        }
        if let Some(t) = self.before_us {
            s.push_str(&format!(
                "purged finished tasks submitted before {}\n",
                crate::cmd::history::format_time(t)
            ));
        }
        s
    }
    fn json(&self) -> Value {
        serde_json::json!({
            "all": self.all,
            "ids": self.ids.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
            "before_us": self.before_us,
        })
    }
}

// ---- Shared objects (`cluster queue`, `cluster ns`, `cluster status`) ----

/// The objects as a table: kind, name, length, bytes, waiters.
fn objects_table(objects: &[protocol::ObjectInfo]) -> String {
    let mut s = String::new();
    for o in objects {
        let len = match o.kind {
            protocol::ObjectKind::Queue => match o.maxsize {
                Some(m) => format!("{} item(s) (maxsize {m})", o.len),
                None => format!("{} item(s)", o.len),
            },
            protocol::ObjectKind::Namespace => format!("{} key(s)", o.len),
            protocol::ObjectKind::Lock => (if o.len > 0 { "held" } else { "free" }).to_owned(),
            protocol::ObjectKind::Semaphore => {
                format!("{}/{} permit(s) held", o.len, o.permits.unwrap_or(1))
            }
            protocol::ObjectKind::Event => (if o.len > 0 { "set" } else { "clear" }).to_owned(),
        };
        s.push_str(&format!(
            "  {:<10} {:<24} {len}, {} byte(s), {} waiting\n",
            o.kind.name(),
            o.name,
            o.bytes,
            o.waiters
        ));
    }
    s
}

/// The objects as JSON: an array of `{name, kind, len, bytes, waiters, maxsize, permits}`.
fn objects_json(objects: &[protocol::ObjectInfo]) -> Value {
    Value::Array(
        objects
            .iter()
            .map(|o| {
                json!({
                    "name": o.name,
                    "kind": o.kind.name(),
                    "len": o.len,
                    "bytes": o.bytes,
                    "waiters": o.waiters,
                    "maxsize": o.maxsize,
                    "permits": o.permits,
                })
            })
            .collect(),
    )
}

/// `cluster queue ls`: the queues.
#[derive(Debug, Clone)]
pub struct ObjectsShown {
    /// The objects listed.
    pub objects: Vec<protocol::ObjectInfo>,
}

impl Report for ObjectsShown {
    fn text(&self) -> String {
        if self.objects.is_empty() {
            return "no queues\n".to_owned();
        }
        objects_table(&self.objects)
    }
    fn json(&self) -> Value {
        json!({ "objects": objects_json(&self.objects) })
    }
}

/// An item read by the CLI.
#[derive(Debug, Clone, PartialEq)]
pub enum ShownItem {
    /// A msgpack value.
    Value(Value),
    /// An item the CLI cannot read (a pickle from Python, raw bytes): its format and size.
    Opaque {
        /// Its format.
        format: protocol::ItemFormat,
        /// Its size.
        bytes: u64,
    },
}

impl ShownItem {
    fn text(&self) -> String {
        match self {
            ShownItem::Value(v) => v.to_string(),
            ShownItem::Opaque { format, bytes } => {
                format!("({format} item of {bytes} bytes, not shown)")
            }
        }
    }
    fn json(&self) -> Value {
        match self {
            ShownItem::Value(v) => v.clone(),
            ShownItem::Opaque { format, bytes } => {
                json!({ "format": format.name(), "bytes": bytes })
            }
        }
    }
}

/// `cluster queue put`.
#[derive(Debug, Clone)]
pub struct QueuePut {
    /// The queue.
    pub queue: String,
    /// Items put.
    pub count: u64,
    /// Items in the queue afterwards.
    pub size: u64,
}

impl Report for QueuePut {
    fn text(&self) -> String {
        format!(
            "put {} in queue {} ({} now)\n",
            count(self.count as usize, "item"),
            self.queue,
            count(self.size as usize, "item")
        )
    }
    fn json(&self) -> Value {
        json!({ "queue": self.queue, "put": self.count, "size": self.size })
    }
}

/// `cluster queue get`: one line a value (text), or `{queue, items}`.
#[derive(Debug, Clone)]
pub struct QueueGot {
    /// The queue.
    pub queue: String,
    /// The items taken, in order.
    pub items: Vec<ShownItem>,
}

impl Report for QueueGot {
    fn text(&self) -> String {
        self.items
            .iter()
            .map(|i| format!("{}\n", i.text()))
            .collect()
    }
    fn json(&self) -> Value {
        json!({
            "queue": self.queue,
            "items": self.items.iter().map(ShownItem::json).collect::<Vec<_>>(),
        })
    }
}

/// `cluster queue rm`.
#[derive(Debug, Clone)]
pub struct Removed {
    /// The object.
    pub name: String,
    /// Whether it existed.
    pub removed: bool,
}

impl Report for Removed {
    fn text(&self) -> String {
        if self.removed {
            format!("removed {}\n", self.name)
        } else {
            format!("no object {} (nothing removed)\n", self.name)
        }
    }
    fn json(&self) -> Value {
        json!({ "name": self.name, "removed": self.removed })
    }
}

/// `cluster ns`.
#[derive(Debug, Clone)]
pub enum NsShown {
    /// A key set.
    Set {
        /// The namespace.
        name: String,
        /// The key.
        key: String,
    },
    /// A key's value.
    Value {
        /// The namespace.
        name: String,
        /// The key.
        key: String,
        /// Its value.
        value: ShownItem,
    },
    /// A key deleted.
    Deleted {
        /// The namespace.
        name: String,
        /// The key.
        key: String,
        /// Whether it was there.
        existed: bool,
    },
    /// The keys.
    Keys {
        /// The namespace.
        name: String,
        /// Its keys, sorted.
        keys: Vec<String>,
    },
}

impl Report for NsShown {
    fn text(&self) -> String {
        match self {
            NsShown::Set { name, key } => format!("set {key} in namespace {name}\n"),
            NsShown::Value { value, .. } => format!("{}\n", value.text()),
            NsShown::Deleted {
                name,
                key,
                existed: true,
            } => {
                format!("deleted {key} from namespace {name}\n")
            }
            NsShown::Deleted { name, key, .. } => format!("namespace {name} had no key {key}\n"),
            NsShown::Keys { keys, .. } => keys.iter().map(|k| format!("{k}\n")).collect(),
        }
    }
    fn json(&self) -> Value {
        match self {
            NsShown::Set { name, key } => json!({ "namespace": name, "key": key, "set": true }),
            NsShown::Value { name, key, value } => {
                json!({ "namespace": name, "key": key, "value": value.json() })
            }
            NsShown::Deleted { name, key, existed } => {
                json!({ "namespace": name, "key": key, "deleted": existed })
            }
            NsShown::Keys { name, keys } => json!({ "namespace": name, "keys": keys }),
        }
    }
}

/// Nothing to print.
#[derive(Debug, Clone, Copy)]
pub struct Nothing;

impl Report for Nothing {
    fn text(&self) -> String {
        String::new()
    }
    fn json(&self) -> Value {
        Value::Null
    }
    fn json_lines(&self) -> Vec<Value> {
        Vec::new()
    }
}

/// A report that is a serialisable value and a text rendering of it (the benchmarks').
pub struct Rendered<'a, T>(pub &'a T, pub &'a dyn Fn(&T) -> String);

impl<T> std::fmt::Debug for Rendered<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rendered")
    }
}

impl<T: serde::Serialize> Report for Rendered<'_, T> {
    fn text(&self) -> String {
        (self.1)(self.0)
    }
    fn json(&self) -> Value {
        to_value(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{ClientId, CommandOutput, EngineId};
    use std::sync::Arc;

    /// A writer tests can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&lock(&self.0)).into_owned()
        }
    }

    fn capture(format: Format) -> (Output, Captured, Captured) {
        let (out, err) = (Captured::default(), Captured::default());
        let o = Output::to(format, Box::new(out.clone()), Box::new(err.clone()));
        (o, out, err)
    }

    fn id(n: u64) -> TaskId {
        TaskId::new(ClientId(3), n)
    }

    #[test]
    fn profile_list_is_one_json_line_per_profile() {
        let list = ProfileList(vec![
            ProfileRow {
                name: "a".into(),
                dir: "/p/profile_a".into(),
                controller_pid: Some(7),
                dead_controller_pid: None,
                engines_running: 2,
            },
            ProfileRow {
                name: "b".into(),
                dir: "/p/profile_b".into(),
                controller_pid: None,
                dead_controller_pid: Some(8),
                engines_running: 1,
            },
        ]);
        let (o, out, _) = capture(Format::Json);
        o.report(&list).unwrap();
        let lines: Vec<Value> = out
            .text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines,
            [
                json!({"name": "a", "dir": "/p/profile_a", "running": true, "controller_pid": 7,
                       "controller_dead": false, "engines_running": 2}),
                json!({"name": "b", "dir": "/p/profile_b", "running": false, "controller_pid": null,
                       "controller_dead": true, "engines_running": 1}),
            ]
        );
        assert!(list.text().contains("running (controller pid 7)"));
        assert!(list.text().contains("controller dead, 1 engine running"));
    }

    #[test]
    fn call_and_map_item_shapes() {
        let call = CallShown {
            task: id(1),
            engine: Some(EngineId(2)),
            elapsed_s: Some(0.5),
            result: json!("text"),
        };
        assert_eq!(
            call.json(),
            json!({"task": "3:1", "engine": 2, "elapsed_s": 0.5, "result": "text"})
        );
        assert_eq!(call.text(), "text\n");
        let (item, result) = (json!(5), json!([1, 2]));
        let m = MapItem {
            item: &item,
            result: &result,
        };
        assert_eq!(m.json(), json!({"item": 5, "result": [1, 2]}));
        assert_eq!(m.text(), "[1,2]\n");
    }

    #[test]
    fn wait_summary_shape() {
        let w = WaitShown {
            submitted: 3,
            summary: Summary {
                total: 1,
                ok: 1,
                ..Summary::default()
            },
            pending: vec![id(2)],
            unknown: vec![],
        };
        let v = w.json();
        assert_eq!(v["summary"]["ok"], 1);
        assert_eq!(v["pending"], json!(["3:2"]));
        assert_eq!(v["unknown"], json!([]));
        assert!(w
            .text()
            .starts_with("3 submitted task(s): 1 succeeded, 0 failed, 1 still"));
    }

    #[test]
    fn record_shape_and_block() {
        let rec = Record {
            seq: 2,
            argument: Some(vec!["x".into()]),
            engine: Some(EngineId(1)),
            host: Some("h".into()),
            ..Record::new(id(4))
        }
        .with_output(CommandOutput {
            status: Some(1),
            signal: None,
            stdout: b"out\n".to_vec(),
            stderr: b"err\n".to_vec(),
            truncated: false,
        });
        let v = record_json(&rec);
        assert_eq!(v["task"], "3:4");
        assert_eq!(v["seq"], 2);
        assert_eq!(v["argument"], "x");
        assert_eq!(v["exit_status"], 1);
        assert_eq!(v["stdout"], "out\n");
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"], Value::Null);
        let (o, out, err) = capture(Format::Text);
        o.record(&rec).unwrap();
        o.flush().unwrap();
        assert_eq!(out.text(), "out\n");
        assert_eq!(
            err.text(),
            "err\ncluster: task 3:4 exited with status 1 on engine 1 (h)\n"
        );
    }

    #[test]
    fn status_adds_the_queue() {
        let controller = protocol::ControllerStatus {
            pid: 1,
            host: "h".into(),
            scheduler: "leastload".into(),
            hwm: "auto".into(),
            engine_address: "tcp://127.0.0.1:1".into(),
            client_address: "tcp://127.0.0.1:2".into(),
            heartbeat_address: "tcp://127.0.0.1:3".into(),
            notify_address: "tcp://127.0.0.1:4".into(),
            uptime_s: 1.0,
            clients: 1,
            instance: 9,
        };
        let shown = StatusShown {
            status: StatusReport {
                controller,
                engines: vec![],
                tasks: Default::default(),
                dropped: Default::default(),
                store: None,
                functions: None,
            },
            queue: Some(QueueStatus::default()),
            hosts: vec![],
            jobs: (String::new(), Value::Null),
            scale: None,
            dashboard: None,
            objects: Some(vec![protocol::ObjectInfo {
                name: "jobs".into(),
                kind: protocol::ObjectKind::Queue,
                len: 3,
                bytes: 9,
                waiters: 0,
                maxsize: None,
                permits: None,
            }]),
        };
        let v = shown.json();
        assert_eq!(
            v["objects"],
            json!([{"name": "jobs", "kind": "queue", "len": 3, "bytes": 9, "waiters": 0, "maxsize": null, "permits": null}])
        );
        assert!(shown.text().contains("queue      jobs"), "{}", shown.text());
        assert!(v["queue"].is_object(), "{v}");
        assert!(v["controller"].is_object(), "{v}");
    }

    #[test]
    fn counts_are_singular_or_plural() {
        assert_eq!(count(1, "engine"), "1 engine");
        assert_eq!(count(0, "engine"), "0 engines");
        assert_eq!(count(4, "host"), "4 hosts");
    }

    #[test]
    fn nothing_prints_nothing() {
        let (o, out, _) = capture(Format::Json);
        o.report(&Nothing).unwrap();
        assert_eq!(out.text(), "");
    }
}
