//! What the controller reports about itself: [`StatusReport`] (controller, engines, task
//! counters, dropped messages), [`QueueStatus`] and the [`EngineInfo`] clients get of each
//! engine.

use serde::{Deserialize, Serialize};

use crate::EngineId;

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}
