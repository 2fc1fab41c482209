//! Messages between clients and the controller: [`FromClient`], [`ToClient`] on the client
//! socket and [`Notification`] on the controller's PUB socket.

use serde::{Deserialize, Serialize};

use crate::codec::message_types;
use crate::{
    ClientId, EngineId, EngineInfo, HistoryFilter, HistoryRecord, ObjectReply, ObjectRequest,
    QueueStatus, StatusReport, TaskId, TaskOutcome, TaskRequest,
};

/// Client → controller, on the client socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromClient {
    /// First message; answered by [`ToClient::Welcome`].
    Hello,
    /// Tasks to schedule; the i-th payload frame is the i-th task's argument.
    Submit {
        /// The tasks, ids made by the client.
        tasks: Vec<TaskRequest>,
    },
    /// Ask for [`ToClient::Status`].
    Status,
    /// Ask for stored results of these tasks (answered with [`ToClient::Results`] for the
    /// finished ones and [`ToClient::Pending`] listing the rest).
    Fetch {
        /// Tasks to look up.
        ids: Vec<TaskId>,
    },
    /// Forget stored results (all of them when `ids` is empty).
    Purge {
        /// Tasks to forget.
        ids: Vec<TaskId>,
    },
    /// Stop all engines and, when `controller` is true, the controller too.
    Shutdown {
        /// Stop the controller after the engines.
        controller: bool,
    },
    /// Ask for [`ToClient::QueueStatus`].
    QueueStatus,
    /// Abort tasks that have not started (queued, or waiting for dependencies): they fail
    /// with [`ErrorKind::Aborted`](crate::ErrorKind::Aborted). Answered by
    /// [`ToClient::Aborted`].
    Abort {
        /// Tasks to abort.
        ids: Vec<TaskId>,
    },
    /// The client is leaving (sent when it closes): the controller forgets this connection
    /// (results of its tasks stay stored, for any client to fetch). Not answered.
    Goodbye,
    /// Ask the task store for the records matching `filter`, newest first; answered by
    /// [`ToClient::History`] (or [`ToClient::Error`] when the controller has no store).
    History {
        /// Which records.
        filter: HistoryFilter,
    },
    /// Forget the stored results of tasks submitted before `before_us` (µs since the
    /// epoch), in memory and in the task store; answered by [`ToClient::Ack`].
    PurgeBefore {
        /// The cut-off time.
        before_us: u64,
    },
    /// A request about a shared object (queue, namespace, lock, semaphore, event); answered
    /// by [`ToClient::Object`] with the same id, possibly much later (blocking operations).
    /// Payload frames as [`ObjectOp`](crate::ObjectOp) says.
    Object(ObjectRequest),
}
message_types!(FromClient {
    Hello => "hello",
    Submit => "submit",
    Status => "status",
    Fetch => "fetch",
    Purge => "purge",
    Shutdown => "shutdown",
    QueueStatus => "queue_status",
    Abort => "abort",
    Goodbye => "goodbye",
    History => "history",
    PurgeBefore => "purge_before",
    Object => "object",
});

/// Controller → client, on the client socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToClient {
    /// Answer to [`FromClient::Hello`].
    Welcome {
        /// The client's id; task ids are made from it.
        client_id: ClientId,
        /// Engines registered now.
        engines: Vec<EngineInfo>,
        /// Random number of this controller process
        /// ([`ControllerStatus::instance`](crate::ControllerStatus::instance)).
        #[serde(default)]
        instance: u64,
    },
    /// Finished tasks; the i-th payload frame is the i-th outcome's value.
    Results {
        /// Outcomes.
        results: Vec<TaskOutcome>,
    },
    /// Answer to [`FromClient::Fetch`] for tasks not finished (or unknown).
    Pending {
        /// Known tasks that are still queued or running.
        pending: Vec<TaskId>,
        /// Ids the controller has no record of.
        unknown: Vec<TaskId>,
    },
    /// Answer to [`FromClient::Status`].
    Status(Box<StatusReport>),
    /// A request was done (purge, shutdown).
    Ack,
    /// A request could not be done.
    Error {
        /// What went wrong.
        message: String,
    },
    /// Answer to [`FromClient::QueueStatus`].
    QueueStatus(QueueStatus),
    /// Answer to [`FromClient::Abort`]: every id asked for is in exactly one list.
    Aborted {
        /// Aborted now (their submitters get an
        /// [`ErrorKind::Aborted`](crate::ErrorKind::Aborted) outcome).
        aborted: Vec<TaskId>,
        /// Already running on an engine: not aborted.
        running: Vec<TaskId>,
        /// Already finished: nothing to do.
        finished: Vec<TaskId>,
        /// Ids the controller has no record of.
        unknown: Vec<TaskId>,
    },
    /// Answer to [`FromClient::History`]: the matching records, newest first.
    History {
        /// The records.
        records: Vec<HistoryRecord>,
    },
    /// Answer to [`FromClient::Object`]; payload frames as the reply says.
    Object {
        /// The request's id.
        id: u64,
        /// The answer.
        reply: ObjectReply,
    },
}
message_types!(ToClient {
    Welcome => "welcome",
    Results => "results",
    Pending => "pending",
    Status => "status",
    Ack => "ack",
    Error => "error",
    QueueStatus => "queue_status",
    Aborted => "aborted",
    History => "history",
    Object => "object",
});

/// Published by the controller on its notification socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notification {
    /// An engine registered.
    EngineJoined(EngineInfo),
    /// An engine left or was declared dead.
    EngineLeft {
        /// Which engine.
        id: EngineId,
        /// Why (unregistered, heartbeat, disconnected, shutdown).
        reason: String,
    },
}
message_types!(Notification { EngineJoined => "engine_joined", EngineLeft => "engine_left" });
