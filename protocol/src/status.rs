//! What the controller reports about itself: [`StatusReport`] (controller, engines, task
//! counters, dropped messages), [`QueueStatus`] and the [`EngineInfo`] clients get of each
//! engine.

use serde::{Deserialize, Serialize};

use crate::{ClientId, EngineId, ErrorKind, TaskError, TaskId, Work};

/// A registered engine as reported to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineInfo {
    /// Engine id.
    pub id: EngineId,
    /// Host name.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// Functions offered.
    pub functions: Vec<String>,
}

/// One engine in a status report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineStatus {
    /// Engine id.
    pub id: EngineId,
    /// Host name.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// `alive` (answers heartbeats) or `unresponsive` (missed some).
    pub state: String,
    /// Tasks assigned and not yet finished.
    pub outstanding: u32,
    /// Tasks finished on this engine.
    pub completed: u64,
    /// Current limit on outstanding tasks.
    pub hwm: u32,
    /// Its rank, when `mpiexec` or `srun` started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<u32>,
    /// The Slurm job it runs in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Its latest CPU and memory use, as its heartbeats report them (`None` from an engine
    /// that does not report them, or before its first report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<EngineUsage>,
}

/// An engine's resource use, sampled by the engine about once a second and sent with its
/// heartbeat answers: the engine process and its Python worker, if it runs one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineUsage {
    /// CPU time used over the last interval, in percent of one core (above 100 when it uses
    /// more than one).
    pub cpu_percent: f32,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
}

/// Task counters in a status report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCounts {
    /// Waiting for an engine.
    pub queued: u64,
    /// Assigned to an engine.
    pub running: u64,
    /// Finished successfully.
    pub done: u64,
    /// Finished with an error.
    pub failed: u64,
    /// Results kept by the controller (until purged).
    pub stored: u64,
    /// Waiting for their dependencies (`after`, `follow`); not counted in `queued`.
    #[serde(default)]
    pub waiting: u64,
}

/// Messages dropped on receipt, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropCounts {
    /// MAC missing or wrong (unsigned, forged, or another cluster's key).
    pub bad_signature: u64,
    /// Session and sequence already seen.
    pub replayed: u64,
    /// Frames missing or content that does not decode.
    pub malformed: u64,
    /// Larger than the size limit.
    pub oversized: u64,
    /// Another protocol version.
    pub wrong_version: u64,
    /// Stamped outside the replay time window (a replay, or clocks that disagree).
    #[serde(default)]
    pub stale: u64,
}

impl DropCounts {
    /// Sum of all reasons.
    pub fn total(&self) -> u64 {
        self.bad_signature
            + self.replayed
            + self.malformed
            + self.oversized
            + self.wrong_version
            + self.stale
    }

    /// Adds another set of counters into this one.
    pub fn add(&mut self, other: &DropCounts) {
        self.bad_signature += other.bad_signature;
        self.replayed += other.replayed;
        self.malformed += other.malformed;
        self.oversized += other.oversized;
        self.wrong_version += other.wrong_version;
        self.stale += other.stale;
    }
}

/// The controller in a status report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControllerStatus {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// Scheduler name.
    pub scheduler: String,
    /// High-water mark setting (`auto`, or a number; 0 = unlimited).
    pub hwm: String,
    /// Engine socket address.
    pub engine_address: String,
    /// Client socket address.
    pub client_address: String,
    /// Heartbeat socket address.
    pub heartbeat_address: String,
    /// Notification socket address.
    pub notify_address: String,
    /// Seconds since it started.
    pub uptime_s: f64,
    /// Clients connected now: connections that said hello (or submitted tasks) and have not
    /// left since. A client leaves when it says goodbye (closes), when its connection closes
    /// with none of its tasks unfinished, or after 10 minutes of silence with none of its
    /// tasks unfinished; the results of its tasks stay stored either way.
    pub clients: u32,
    /// Random number of this controller process: a client that sees it change knows the
    /// controller restarted and forgot its unfinished tasks, and submits them again.
    #[serde(default)]
    pub instance: u64,
}

/// One engine's queue in a [`QueueStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineQueue {
    /// Engine id.
    pub id: EngineId,
    /// Tasks assigned to it and not finished (running or queued on the engine).
    pub outstanding: u32,
    /// Tasks it finished successfully.
    pub completed: u64,
    /// Tasks that failed on it.
    pub failed: u64,
}

/// Answer to [`FromClient::QueueStatus`](crate::FromClient::QueueStatus): where the
/// unfinished tasks are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStatus {
    /// Registered engines, by id.
    pub engines: Vec<EngineQueue>,
    /// Tasks ready to run, waiting for an engine with room.
    pub unassigned: u64,
    /// Tasks waiting for their dependencies (`after`, `follow`) to finish.
    pub waiting: u64,
}

/// Answer to [`FromClient::Status`](crate::FromClient::Status).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The controller.
    pub controller: ControllerStatus,
    /// Registered engines, by id.
    pub engines: Vec<EngineStatus>,
    /// Task counters.
    pub tasks: TaskCounts,
    /// Messages dropped on receipt.
    pub dropped: DropCounts,
    /// The task store: `ok`, `degraded (why)`, or `None` without one (or from an older
    /// controller).
    #[serde(default)]
    pub store: Option<String>,
    /// Per-function counts and run times from the task store (`None` without one, or from
    /// an older controller).
    #[serde(default)]
    pub functions: Option<Vec<FunctionSummary>>,
}

// ---- Task history (the task store's records) ----

/// Where a task is in its life, as the task store records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// Submitted, not on an engine (or waiting for its dependencies).
    Queued,
    /// Given to an engine.
    Running,
    /// Finished successfully.
    Ok,
    /// Finished with an error.
    Failed,
}

impl RecordState {
    /// The name `cluster history` shows and `--status` takes.
    pub fn name(self) -> &'static str {
        match self {
            RecordState::Queued => "queued",
            RecordState::Running => "running",
            RecordState::Ok => "ok",
            RecordState::Failed => "failed",
        }
    }
}

/// Which records [`FromClient::History`] asks for: every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryFilter {
    /// In this state.
    #[serde(default)]
    pub state: Option<RecordState>,
    /// Of this function (or program, for commands).
    #[serde(default)]
    pub function: Option<String>,
    /// Run on this engine.
    #[serde(default)]
    pub engine: Option<EngineId>,
    /// Submitted by this client.
    #[serde(default)]
    pub client: Option<ClientId>,
    /// Submitted at or after this time, µs since the epoch.
    #[serde(default)]
    pub since_us: Option<u64>,
    /// At most this many (the newest).
    #[serde(default)]
    pub limit: Option<u64>,
}

/// One task as the task store recorded it (no payloads: fetch the result by id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRecord {
    /// The task.
    pub id: TaskId,
    /// The client that submitted it.
    pub client: ClientId,
    /// What it ran (`None` when the record's command does not decode).
    pub work: Option<Work>,
    /// The function name, or the program of a command.
    pub function: String,
    /// Where it is in its life.
    pub state: RecordState,
    /// When the controller received it, µs since the epoch.
    pub submitted_us: u64,
    /// When it started on its engine.
    pub started_us: Option<u64>,
    /// When the controller received its outcome.
    pub completed_us: Option<u64>,
    /// Run time on the engine, µs.
    pub elapsed_us: Option<u64>,
    /// The engine that ran it (last).
    pub engine: Option<EngineId>,
    /// Why it failed.
    pub error: Option<TaskError>,
    /// Size of its argument in bytes.
    pub argument_size: u64,
    /// Size of its result in bytes, once finished.
    pub result_size: Option<u64>,
    /// Whether the store kept the result: `kept`, `too_large` (metadata only),
    /// `backlog` (dropped while the disk failed) or `absent`.
    pub result: String,
}

/// One function in [`StatusReport::functions`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionSummary {
    /// Function name (or program).
    pub function: String,
    /// Tasks queued now.
    pub queued: u64,
    /// Tasks running now.
    pub running: u64,
    /// Tasks finished successfully.
    pub ok: u64,
    /// Tasks failed.
    pub failed: u64,
    /// Median run time, µs (`None` before any finished).
    pub p50_us: Option<u64>,
    /// 99th percentile run time, µs.
    pub p99_us: Option<u64>,
}

// ---- Activity published once a second (the dashboard's feed) ----

/// What the controller did over the last interval (about a second), published as
/// [`Notification::TaskStats`](crate::Notification::TaskStats). Counts are of the interval;
/// `queued`, `running` and `waiting` are as of its end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskStats {
    /// End of the interval, µs since the epoch (the controller's clock).
    pub time_us: u64,
    /// Length of the interval, ms.
    pub interval_ms: u64,
    /// Tasks submitted (new ones, not submissions again).
    pub submitted: u64,
    /// Tasks given to an engine.
    pub started: u64,
    /// Tasks finished successfully.
    pub finished: u64,
    /// Tasks finished with an error.
    pub failed: u64,
    /// Tasks waiting for an engine now.
    pub queued: u64,
    /// Tasks on engines now.
    pub running: u64,
    /// Tasks waiting for their dependencies now.
    pub waiting: u64,
    /// Every registered engine, by id.
    pub engines: Vec<EngineActivity>,
    /// The busiest functions of the interval (at most 32), busiest first.
    pub functions: Vec<FunctionActivity>,
    /// Submissions in flight, one per client with unfinished tasks (at most 32); one that
    /// finished in the interval is listed once more with `done == total`.
    pub maps: Vec<MapProgress>,
}

/// One engine in [`TaskStats`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineActivity {
    /// Engine id.
    pub id: EngineId,
    /// Tasks assigned to it and not finished, now.
    pub outstanding: u32,
    /// Tasks it finished successfully in the interval.
    pub finished: u64,
    /// Tasks that failed on it in the interval.
    pub failed: u64,
    /// Its latest CPU and memory use (`None` before its first report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<EngineUsage>,
}

/// One function (or program, for commands) in [`TaskStats`]. Finishes are counted for
/// tasks that ran on an engine, timed out, lost their engine or could not be scheduled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionActivity {
    /// Function name, or the program of a command.
    pub function: String,
    /// Submitted in the interval.
    pub submitted: u64,
    /// Given to an engine in the interval.
    pub started: u64,
    /// Finished successfully in the interval.
    pub finished: u64,
    /// Failed in the interval.
    pub failed: u64,
}

/// The progress of one client's submissions: from the moment it had no unfinished task,
/// how many it submitted and how many of those have finished. A map is one such run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapProgress {
    /// The client that submitted them.
    pub client: ClientId,
    /// The function (or program) of its first submission in this run.
    pub function: String,
    /// Tasks submitted in this run.
    pub total: u64,
    /// Of those, finished (well or not).
    pub done: u64,
    /// When the run began, µs since the epoch.
    pub since_us: u64,
}

/// One finished task in [`Notification::TaskSamples`](crate::Notification::TaskSamples).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSample {
    /// The engine that ran it.
    pub engine: EngineId,
    /// Its function, or the program of a command.
    pub function: String,
    /// When it started on the engine, µs since the epoch (the engine's clock).
    pub start_us: u64,
    /// When it ended there, µs since the epoch (the engine's clock).
    pub end_us: u64,
    /// Whether it succeeded.
    pub ok: bool,
}

/// One failed task in [`Notification::Failures`](crate::Notification::Failures).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    /// The task.
    pub id: TaskId,
    /// The engine it failed on, if it ran.
    pub engine: Option<EngineId>,
    /// Its function, or the program of a command.
    pub function: String,
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The error message (at most 1,000 bytes).
    pub message: String,
    /// When the controller saw it fail, µs since the epoch.
    pub time_us: u64,
}
