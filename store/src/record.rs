//! What the hub tells the store (records) and what queries answer (typed rows).

use protocol::{
    ClientId, EngineId, ErrorKind, Status, TaskError, TaskId, TaskOptions, TaskOutcome,
    TaskRequest, Work,
};
use std::sync::Arc;

/// A payload frame, shared with the hub rather than copied (the same type as the
/// controller's `Payload`).
pub type Payload = Arc<Vec<u8>>;

/// Wall-clock time now, in microseconds since the Unix epoch (the unit of every time in the
/// store, as on the wire).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// One event of a task's life, as the hub reports it; sent to the writer with
/// [`crate::Writer::send`]. Times are wall clock, microseconds since the epoch.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A client submitted a task (again: a later `Submitted` for the same id replaces the
    /// record).
    Submitted(Box<Submitted>),
    /// The task was given to an engine.
    Started {
        /// Which task.
        id: TaskId,
        /// The engine.
        engine: EngineId,
        /// When.
        time_us: u64,
    },
    /// The task went back to the queue (its engine died, or it failed and is retried).
    Requeued {
        /// Which task.
        id: TaskId,
    },
    /// The task ended.
    Finished(Box<Finished>),
    /// Its client received the result (the hub may now forget it).
    Acknowledged {
        /// Which task.
        id: TaskId,
        /// When.
        time_us: u64,
    },
    /// Finished records to delete (a client's purge). Never dropped by the backlog bound.
    Purged(Purge),
}

/// A task as submitted: enough to run it again after a crash.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    /// The request (id, work, options).
    pub request: TaskRequest,
    /// The client connection it came from.
    pub client: ClientId,
    /// When the controller received it.
    pub submitted_us: u64,
    /// Size of the argument payload in bytes.
    pub argument_size: u64,
    /// The argument payload, kept until the task finishes so that a restart can queue it
    /// again (`None`: not kept; the writer also drops one above `payload_max_bytes`).
    pub argument: Option<Payload>,
}

impl Record {
    /// A submission, with its argument.
    pub fn submitted(
        request: TaskRequest,
        client: ClientId,
        submitted_us: u64,
        argument: Payload,
    ) -> Record {
        Record::Submitted(Box::new(Submitted {
            request,
            client,
            submitted_us,
            argument_size: argument.len() as u64,
            argument: Some(argument),
        }))
    }

    /// An outcome, with its result payload (empty for failures).
    pub fn finished(outcome: TaskOutcome, completed_us: u64, result: Payload) -> Record {
        Record::Finished(Box::new(Finished {
            outcome,
            completed_us,
            result_size: result.len() as u64,
            result: Some(result),
        }))
    }

    /// The task this record is about (`None` for purges).
    pub fn task(&self) -> Option<TaskId> {
        match self {
            Record::Submitted(s) => Some(s.request.id),
            Record::Started { id, .. }
            | Record::Requeued { id }
            | Record::Acknowledged { id, .. } => Some(*id),
            Record::Finished(f) => Some(f.outcome.id),
            Record::Purged(_) => None,
        }
    }

    /// Payload bytes this record holds (what the backlog bound counts).
    pub(crate) fn payload_bytes(&self) -> u64 {
        match self {
            Record::Submitted(s) => s.argument.as_ref().map_or(0, |p| p.len() as u64),
            Record::Finished(f) => f.result.as_ref().map_or(0, |p| p.len() as u64),
            _ => 0,
        }
    }

    /// Drops the payload, keeping its size (the backlog is full).
    pub(crate) fn strip_payload(&mut self) {
        match self {
            Record::Submitted(s) => s.argument = None,
            Record::Finished(f) => f.result = None,
            _ => {}
        }
    }
}

/// The end of a task.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// How it ended (as sent to its client).
    pub outcome: TaskOutcome,
    /// When the controller received the outcome.
    pub completed_us: u64,
    /// Size of the result payload in bytes.
    pub result_size: u64,
    /// The result payload (`None`: not kept; the writer also drops one above
    /// `payload_max_bytes`).
    pub result: Option<Payload>,
}

/// Which finished records to delete (unfinished ones are never purged: a restart needs them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// These tasks.
    Ids(Vec<TaskId>),
    /// Tasks submitted before this time (µs since the epoch).
    Before(u64),
    /// Every finished task.
    All,
}

/// Where a task is in its life, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Submitted, not on an engine (or waiting for its dependencies).
    Queued,
    /// Given to an engine.
    Running,
    /// Finished successfully.
    Ok,
    /// Finished with an error.
    Failed,
}

impl TaskState {
    pub(crate) fn code(self) -> i64 {
        match self {
            TaskState::Queued => 0,
            TaskState::Running => 1,
            TaskState::Ok => 2,
            TaskState::Failed => 3,
        }
    }

    pub(crate) fn from_code(code: i64) -> TaskState {
        match code {
            0 => TaskState::Queued,
            1 => TaskState::Running,
            2 => TaskState::Ok,
            _ => TaskState::Failed,
        }
    }

    /// True for `Ok` and `Failed`.
    pub fn finished(self) -> bool {
        matches!(self, TaskState::Ok | TaskState::Failed)
    }

    /// `queued`, `running`, `ok` or `failed` (what `cluster history --status` takes).
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Ok => "ok",
            TaskState::Failed => "failed",
        }
    }
}

impl std::str::FromStr for TaskState {
    type Err = crate::StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "queued" => Ok(TaskState::Queued),
            "running" => Ok(TaskState::Running),
            "ok" | "done" => Ok(TaskState::Ok),
            "failed" | "error" => Ok(TaskState::Failed),
            _ => Err(crate::StoreError::Setting {
                setting: "status".into(),
                value: s.into(),
                reason: "use queued, running, ok or failed".into(),
            }),
        }
    }
}

/// Whether a record holds its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadState {
    /// Kept (possibly empty).
    Kept,
    /// Larger than `store_payload_max_bytes`: only its size is kept.
    TooLarge,
    /// Dropped because the writer's backlog was full (see `backlog_max_bytes`).
    Backlog,
    /// Not there: the task has not finished, or the hub did not pass it.
    Absent,
}

impl PayloadState {
    pub(crate) fn code(self) -> i64 {
        match self {
            PayloadState::Kept => 0,
            PayloadState::TooLarge => 1,
            PayloadState::Backlog => 2,
            PayloadState::Absent => 3,
        }
    }

    pub(crate) fn from_code(code: i64) -> PayloadState {
        match code {
            0 => PayloadState::Kept,
            1 => PayloadState::TooLarge,
            2 => PayloadState::Backlog,
            _ => PayloadState::Absent,
        }
    }
}

/// One task as the store has it (what `cluster history` lists).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// Task id.
    pub id: TaskId,
    /// Client connection that submitted it.
    pub client: ClientId,
    /// What runs (`None` for an outcome whose submission was never recorded).
    pub work: Option<Work>,
    /// Its options.
    pub options: TaskOptions,
    /// Function name, or the program of a command.
    pub function: String,
    /// Where it is in its life.
    pub state: TaskState,
    /// When it was submitted.
    pub submitted_us: u64,
    /// When it started (the engine's clock once finished).
    pub started_us: Option<u64>,
    /// When the controller received its outcome.
    pub completed_us: Option<u64>,
    /// Run time on the engine.
    pub elapsed_us: Option<u64>,
    /// Engine it ran (or runs) on.
    pub engine: Option<EngineId>,
    /// The error of a failed task.
    pub error: Option<TaskError>,
    /// Argument size in bytes.
    pub argument_size: u64,
    /// Result size in bytes (finished tasks).
    pub result_size: Option<u64>,
    /// Whether the result payload is kept.
    pub result: PayloadState,
    /// When its client received the result.
    pub acknowledged_us: Option<u64>,
}

impl TaskRecord {
    /// The outcome as sent to clients, for a finished task.
    pub fn outcome(&self) -> Option<TaskOutcome> {
        let status = match self.state {
            TaskState::Ok => Status::Ok,
            TaskState::Failed => Status::Err(self.error.clone().unwrap_or(TaskError {
                kind: ErrorKind::Remote,
                message: String::new(),
                engine: self.engine,
            })),
            _ => return None,
        };
        Some(TaskOutcome {
            id: self.id,
            engine: self.engine,
            status,
            started_us: self.started_us.unwrap_or(0),
            elapsed_us: self.elapsed_us.unwrap_or(0),
        })
    }
}

/// A task's record with its result payload ([`crate::Reader::result`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTask {
    /// The record.
    pub record: TaskRecord,
    /// The result payload when kept (see `record.result`).
    pub payload: Option<Payload>,
}

impl StoredTask {
    /// The output of a command task (exit status, stdout, stderr), decoded from its payload.
    /// `None` for other work, when the payload is not kept, or when it does not decode: a
    /// cluster that encrypts keeps payloads sealed end to end, so only a client can open them
    /// (the store holds them as the controller relays them, encrypted on disk too).
    pub fn command_output(&self) -> Option<protocol::CommandOutput> {
        match (&self.record.work, &self.payload) {
            (Some(Work::Command(_)), Some(p)) => protocol::decode(p).ok(),
            _ => None,
        }
    }
}

/// What the store knows of one id ([`crate::Reader::lookup`]), the answer to a hub's lookup.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// Finished: its outcome, and its payload when kept.
    Finished {
        /// The outcome.
        outcome: TaskOutcome,
        /// The result payload (`None` when not kept: see `payload_state`).
        payload: Option<Payload>,
        /// Why the payload is or is not there.
        payload_state: PayloadState,
    },
    /// Submitted, not finished.
    Unfinished(TaskState),
    /// No record.
    Unknown,
}

/// A task that was queued or running when the controller stopped ([`crate::Recovery`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveredTask {
    /// The request to queue again.
    pub request: TaskRequest,
    /// The client connection (of the previous controller) that submitted it.
    pub client: ClientId,
    /// Queued or running (and where) when it stopped.
    pub state: TaskState,
    /// The engine it was running on.
    pub engine: Option<EngineId>,
    /// When it was submitted.
    pub submitted_us: u64,
    /// Argument size in bytes.
    pub argument_size: u64,
    /// The argument; `None` when it was not kept (above `payload_max_bytes`, or dropped by
    /// the backlog bound): such a task cannot run again until its client resubmits it.
    pub argument: Option<Payload>,
}

/// What a restarted controller needs from the store ([`crate::Reader::recover`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovery {
    /// Tasks that had not finished, in submission order.
    pub unfinished: Vec<RecoveredTask>,
    /// Finished tasks in the store (answered from disk through [`crate::Reader::lookup`];
    /// page through their ids with [`crate::Reader::finished_ids`]).
    pub finished: u64,
    /// Highest client id of any record: a restarted controller hands out ids above it, so
    /// the ids of new tasks never collide with recorded ones, and a task id whose client is
    /// at most this may be in the store.
    pub max_client: Option<ClientId>,
}

/// Per-function figures ([`crate::Reader::stats`]), for `cluster status`.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionStats {
    /// Function name, or a command's program.
    pub function: String,
    /// Tasks queued now.
    pub queued: u64,
    /// Tasks running now.
    pub running: u64,
    /// Finished successfully (records still in the store).
    pub ok: u64,
    /// Finished with an error.
    pub failed: u64,
    /// Median run time of the finished ones (within about 3%).
    pub p50_us: Option<u64>,
    /// 99th percentile run time.
    pub p99_us: Option<u64>,
    /// Mean run time.
    pub mean_us: Option<u64>,
}

/// Which records [`crate::Reader::history`] returns (every field narrows; all `None`: all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only this function (or command program).
    pub function: Option<String>,
    /// Only tasks that ran on this engine.
    pub engine: Option<EngineId>,
    /// Only tasks of this client.
    pub client: Option<ClientId>,
    /// Only tasks submitted at or after this time (µs since the epoch).
    pub since_us: Option<u64>,
    /// At most this many, the newest (all when `None`: mind the memory on a big store).
    pub limit: Option<usize>,
}
