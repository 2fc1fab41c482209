//! The cluster's wire protocol: ids, message types, the header and the msgpack codec.
//!
//! This crate knows no sockets and no clocks. It defines what travels between the three
//! kinds of peer:
//!
//! ```text
//!  client  --FromClient-->  controller  --ToEngine-->   engine
//!  client  <--ToClient---   controller  <--FromEngine-- engine
//!                           controller  --Notification--> subscribers (PUB)
//!                           controller  <--Heartbeat-->  engine (own socket)
//! ```
//!
//! A message on the wire is a list of frames (the `transport` crate owns the framing and
//! signing):
//!
//! ```text
//! [routing id…] "" MAC header content payload…
//! ```
//!
//! * `header` is a msgpack map ([`Header`]): protocol version, sender session, sequence
//!   number, message type name and send time;
//! * `content` is the msgpack encoding of one of the enums below, with field names kept
//!   (`rmp_serde::to_vec_named`) so that a client in another language can read it;
//! * `payload` frames carry task arguments and results as opaque bytes. The rule is
//!   positional: in [`FromClient::Submit`] and [`ToEngine::Tasks`] the i-th payload frame is
//!   the argument of the i-th task; in [`FromEngine::Results`] and [`ToClient::Results`] the
//!   i-th payload frame is the value of the i-th outcome (empty when it failed). The
//!   controller moves payloads between messages without decoding them.
//!
//! Argument and result payloads are themselves msgpack (named fields), written by the client
//! and by the engine's function registry.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::fmt;

mod function;
pub use function::{builtin, stock, Function, Whoami};

/// Version of the wire protocol. Peers with another version are refused with a clear message,
/// and connection files carry it so that a stale file is recognised before any message is sent.
///
/// 2: bodies may be encrypted (the connection files say so), engines report starts of timed
/// tasks and name the tasks they hold when they register again, and the controller tells its
/// instance; a version-1 peer would not understand these.
pub const PROTOCOL_VERSION: u32 = 2;

/// Largest message (all frames together) a peer accepts by default, in bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Most frames one message may have (routing ids + fixed frames + payloads).
pub const MAX_FRAMES: usize = 1 << 20;

/// Id of an engine, assigned by the controller at registration (0, 1, 2, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EngineId(pub u32);

impl fmt::Display for EngineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Id of a connected client, assigned by the controller when the client says hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientId(pub u32);

/// Id of a task, unique within one controller's lifetime.
///
/// Clients make their own ids without a round trip: the top 24 bits are the [`ClientId`]
/// the controller gave them, the low 40 bits a per-client sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub u64);

impl TaskId {
    const SEQ_BITS: u32 = 40;

    /// The id of the `seq`-th task of client `client`.
    pub fn new(client: ClientId, seq: u64) -> TaskId {
        TaskId(((client.0 as u64) << Self::SEQ_BITS) | (seq & ((1 << Self::SEQ_BITS) - 1)))
    }

    /// The client that made this id.
    pub fn client(self) -> ClientId {
        ClientId((self.0 >> Self::SEQ_BITS) as u32)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            self.client().0,
            self.0 & ((1 << Self::SEQ_BITS) - 1)
        )
    }
}

/// Parses a task id as [`TaskId`]'s `Display` writes it (`CLIENT:SEQ`, like `3:17`) or as the
/// raw 64-bit number.
impl std::str::FromStr for TaskId {
    type Err = ParseTaskIdError;

    fn from_str(text: &str) -> Result<TaskId, ParseTaskIdError> {
        let bad = || ParseTaskIdError(text.to_owned());
        match text.split_once(':') {
            Some((client, seq)) => {
                let client: u32 = client.trim().parse().map_err(|_| bad())?;
                let seq: u64 = seq.trim().parse().map_err(|_| bad())?;
                if u64::from(client) >= 1 << (64 - Self::SEQ_BITS) || seq >= 1 << Self::SEQ_BITS {
                    return Err(bad());
                }
                Ok(TaskId::new(ClientId(client), seq))
            }
            None => text.trim().parse().map(TaskId).map_err(|_| bad()),
        }
    }
}

/// A text that is not a task id (see [`TaskId`]'s `FromStr`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a task id: give it as `cluster submit` prints it, like 3:1")]
pub struct ParseTaskIdError(pub String);

/// The header frame of every message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// Random id of the sending socket, fresh each time a socket is made.
    pub session: u64,
    /// Strictly increasing per session; with `session` it is the replay-protection key.
    pub seq: u64,
    /// Name of the content's variant (`"submit"`, `"results"`…), for logs and other languages.
    pub msg_type: String,
    /// Sender's wall clock, microseconds since the Unix epoch.
    pub time_us: u64,
}

/// Why encoding or decoding a message failed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes are not a valid msgpack encoding of the expected type.
    #[error("malformed message: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// A value could not be encoded (a bug in the sender, not retryable).
    #[error("cannot encode message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

/// Encodes a value as msgpack with field names, the encoding used for every frame.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(rmp_serde::to_vec_named(value)?)
}

/// Decodes a msgpack frame. Never panics, whatever the bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

/// Writes the header of a msgpack array of `len` items, in the shortest form (payloads of
/// maps are arrays of already-encoded items, joined without re-encoding them).
pub fn write_array_header(out: &mut Vec<u8>, len: usize) {
    if len < 16 {
        out.push(0x90 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0xdc);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

/// Why [`read_array_header`] found no array header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ArrayHeaderError {
    /// There are no bytes at all.
    #[error("expected a msgpack array, found no bytes")]
    Empty,
    /// The first byte starts another msgpack type.
    #[error("expected a msgpack array, found type byte {0:#04x}")]
    NotAnArray(u8),
    /// The header's length bytes are cut off.
    #[error("truncated msgpack")]
    Truncated,
}

/// Reads the header of the msgpack array that `bytes` starts with, as
/// [`write_array_header`] writes it (or any of the three forms): returns the number of items
/// and the header's length in bytes. Never panics; the items themselves are not checked.
pub fn read_array_header(bytes: &[u8]) -> Result<(usize, usize), ArrayHeaderError> {
    let be = |len: usize| {
        let field = bytes.get(1..1 + len).ok_or(ArrayHeaderError::Truncated)?;
        Ok(field.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b)))
    };
    match bytes.first() {
        None => Err(ArrayHeaderError::Empty),
        Some(&b) if b & 0xf0 == 0x90 => Ok((usize::from(b & 0x0f), 1)),
        Some(0xdc) => Ok((be(2)?, 3)),
        Some(0xdd) => Ok((be(4)?, 5)),
        Some(&b) => Err(ArrayHeaderError::NotAnArray(b)),
    }
}

/// Every message enum names its variants for the header's `msg_type`.
pub trait MessageType {
    /// Short snake_case name of this message's variant.
    fn msg_type(&self) -> &'static str;
}

macro_rules! message_types {
    ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl MessageType for $ty {
            fn msg_type(&self) -> &'static str {
                match self { $($ty::$variant { .. } => $name),* }
            }
        }
    };
}

/// What an engine offers when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Random id the engine keeps for its lifetime; re-registering with it keeps the old id.
    pub uuid: String,
    /// Host name of the engine's machine.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// Names of the functions this engine can run (command tasks are always available).
    pub functions: Vec<String>,
    /// Tasks the engine runs at once (1 for the stock engine).
    pub slots: u32,
    /// The id this engine had before, when it registers again (after a network blip or a
    /// controller restart); the controller gives it back unless another engine holds it.
    #[serde(default)]
    pub engine_id: Option<EngineId>,
    /// Tasks already in this engine's own queue when it registers again (after a controller
    /// restart): the controller counts them as running here instead of handing them out anew.
    #[serde(default)]
    pub held: Vec<TaskId>,
}

/// Engine → controller, on the engine socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromEngine {
    /// First message: who the engine is.
    Register(Registration),
    /// Finished tasks; the i-th payload frame is the i-th outcome's value.
    Results {
        /// Outcomes in any order.
        results: Vec<TaskOutcome>,
    },
    /// The engine is leaving (SIGTERM, end of its life).
    Unregister,
    /// These tasks, which have a run-time limit, started running now (after waiting in the
    /// engine's own queue); the controller's safety timer counts from here.
    Started {
        /// Ids of the tasks.
        ids: Vec<TaskId>,
    },
}
message_types!(FromEngine { Register => "register", Results => "results", Unregister => "unregister", Started => "started" });

/// Controller → engine, on the engine socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToEngine {
    /// Registration accepted.
    Registered {
        /// The engine's id in this cluster.
        engine_id: EngineId,
        /// How often the controller pings, in milliseconds.
        heartbeat_period_ms: u64,
    },
    /// Registration refused (for example another protocol version).
    Refused {
        /// What is wrong and what to do.
        reason: String,
    },
    /// Tasks to run; the i-th payload frame is the i-th task's argument.
    Tasks {
        /// Tasks in the order to run them.
        tasks: Vec<Assignment>,
    },
    /// Stop: unregister and exit.
    Shutdown,
}
message_types!(ToEngine {
    Registered => "registered",
    Refused => "refused",
    Tasks => "tasks",
    Shutdown => "shutdown",
});

/// Heartbeats, on their own socket in both directions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Heartbeat {
    /// Controller → engine.
    Ping {
        /// Round number.
        seq: u64,
    },
    /// Engine → controller, echoing the ping's round.
    Pong {
        /// Round number being answered.
        seq: u64,
        /// The engine's uuid (the heartbeat socket's routing id is the same).
        uuid: String,
    },
}
message_types!(Heartbeat { Ping => "ping", Pong => "pong" });

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
    /// with [`ErrorKind::Aborted`]. Answered by [`ToClient::Aborted`].
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
        /// Random number of this controller process ([`ControllerStatus::instance`]).
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
        /// Aborted now (their submitters get an [`ErrorKind::Aborted`] outcome).
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

/// What runs: a named function, a chunk of a map, or a program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Work {
    /// Call a registered function; the payload is its msgpack-encoded argument and the
    /// result payload its msgpack-encoded return value.
    Call {
        /// Registered function name.
        function: String,
    },
    /// Apply a registered function to each item of a msgpack array (the payload); the result
    /// payload is the msgpack array of return values, in order.
    Map {
        /// Registered function name.
        function: String,
    },
    /// Run a program; the payload is empty and the result payload a [`CommandOutput`].
    Command(CommandSpec),
}

impl Work {
    /// Function name, or the program for command tasks (for messages and logs).
    pub fn name(&self) -> &str {
        match self {
            Work::Call { function } | Work::Map { function } => function,
            Work::Command(c) => &c.program,
        }
    }
}

/// A program to run on an engine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandSpec {
    /// Program name (looked up in `PATH`) or path.
    pub program: String,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory (the engine's when absent).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Bytes written to the program's standard input (closed, empty, when absent).
    #[serde(default, with = "serde_bytes")]
    pub stdin: Option<Vec<u8>>,
}

/// What a command task produced (the result payload of [`Work::Command`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutput {
    /// Exit code, absent when killed by a signal.
    pub status: Option<i32>,
    /// Signal that killed it, if any.
    pub signal: Option<i32>,
    /// Standard output, cut at the engine's limit.
    #[serde(with = "serde_bytes")]
    pub stdout: Vec<u8>,
    /// Standard error, cut at the engine's limit.
    #[serde(with = "serde_bytes")]
    pub stderr: Vec<u8>,
    /// True when stdout or stderr was cut.
    pub truncated: bool,
}

impl CommandOutput {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// Scheduling options of a task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOptions {
    /// Engines allowed to run it (any when empty).
    #[serde(default)]
    pub targets: Vec<EngineId>,
    /// Times the task may be re-run on another engine after it failed there or its engine
    /// died (never on an engine it already failed on).
    #[serde(default)]
    pub retries: u32,
    /// Time limit in milliseconds, twice: a task not started this long after it was
    /// submitted fails with [`ErrorKind::Timeout`], and one running longer than this on its
    /// engine is stopped (commands are killed, functions abandoned) and fails the same way.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Run-time limit only, in milliseconds: a task running longer on its engine is stopped
    /// and fails with [`ErrorKind::Timeout`], however long it waited to start (what a command's
    /// `--timeout` means, as in GNU parallel). Overrides `timeout_ms` on the engine.
    #[serde(default)]
    pub run_timeout_ms: Option<u64>,
    /// Run only after these tasks have finished successfully (a failed one fails this task
    /// with [`ErrorKind::Dependency`]).
    #[serde(default)]
    pub after: Vec<TaskId>,
    /// Run on the engine where these tasks ran, after they finished successfully (they must
    /// all have run on the same engine).
    #[serde(default)]
    pub follow: Vec<TaskId>,
}

/// A task as submitted by a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRequest {
    /// Client-made id.
    pub id: TaskId,
    /// What to run.
    pub work: Work,
    /// Where and how.
    #[serde(default)]
    pub options: TaskOptions,
}

/// A task as handed to an engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Task id.
    pub id: TaskId,
    /// What to run.
    pub work: Work,
    /// Run-time limit, milliseconds. An engine starting such a task says so
    /// ([`FromEngine::Started`]), so the controller times the run from its real start.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// How much longer, in milliseconds, the task may still wait to start (what is left of
    /// its `TaskOptions::timeout_ms`); past that it fails in the engine's queue without running.
    /// `None`: it may wait as long as it takes.
    #[serde(default)]
    pub start_within_ms: Option<u64>,
}

/// Kinds of task failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The function returned an error or panicked.
    Remote,
    /// No engine offers this function name.
    UnknownFunction,
    /// The argument payload does not decode as the function's argument type.
    BadArguments,
    /// The engine running it died or left.
    EngineLost,
    /// It ran longer than its timeout.
    Timeout,
    /// It was aborted before running.
    Aborted,
    /// No engine can ever run it (targets do not exist).
    Unschedulable,
    /// The command could not be started (program missing, bad cwd).
    CommandFailed,
    /// A task it depends on (`after`, `follow`) failed, is unknown, or the dependency can
    /// no longer be met.
    Dependency,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::Remote => "remote error",
            ErrorKind::UnknownFunction => "unknown function",
            ErrorKind::BadArguments => "bad arguments",
            ErrorKind::EngineLost => "engine lost",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Aborted => "aborted",
            ErrorKind::Unschedulable => "unschedulable",
            ErrorKind::CommandFailed => "command failed to start",
            ErrorKind::Dependency => "dependency not met",
        };
        f.write_str(s)
    }
}

/// A failed task's error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// Human-readable message.
    pub message: String,
    /// Engine where it happened, if any.
    pub engine: Option<EngineId>,
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Success; the matching payload frame is the value.
    Ok,
    /// Failure; the matching payload frame is empty.
    Err(TaskError),
}

/// The end of one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOutcome {
    /// Which task.
    pub id: TaskId,
    /// Engine that ran it (absent when it never ran).
    pub engine: Option<EngineId>,
    /// Success or error.
    pub status: Status,
    /// Engine wall clock when it started, microseconds since the epoch (0 if it never ran).
    pub started_us: u64,
    /// Run time on the engine, microseconds.
    pub elapsed_us: u64,
}

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

/// Answer to [`FromClient::QueueStatus`]: where the unfinished tasks are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStatus {
    /// Registered engines, by id.
    pub engines: Vec<EngineQueue>,
    /// Tasks ready to run, waiting for an engine with room.
    pub unassigned: u64,
    /// Tasks waiting for their dependencies (`after`, `follow`) to finish.
    pub waiting: u64,
}

/// Answer to [`FromClient::Status`].
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_headers_read_back_what_was_written() {
        for len in [0usize, 1, 15, 16, 65_535, 65_536, u32::MAX as usize] {
            let mut header = Vec::new();
            write_array_header(&mut header, len);
            assert_eq!(read_array_header(&header), Ok((len, header.len())), "{len}");
            // What rmp-serde writes reads back too (and the header is all that is read).
            if len <= 65_536 {
                let full = rmp_serde::to_vec(&vec![0u8; len]).unwrap();
                assert_eq!(read_array_header(&full), Ok((len, header.len())));
            }
            for cut in 1..header.len() {
                assert_eq!(
                    read_array_header(&header[..cut]),
                    Err(ArrayHeaderError::Truncated)
                );
            }
        }
        assert_eq!(read_array_header(b""), Err(ArrayHeaderError::Empty));
        assert_eq!(
            read_array_header(&[0x80]),
            Err(ArrayHeaderError::NotAnArray(0x80))
        );
        assert_eq!(
            ArrayHeaderError::NotAnArray(0xa1).to_string(),
            "expected a msgpack array, found type byte 0xa1"
        );
    }

    #[test]
    fn task_id_packs_client_and_sequence() {
        let id = TaskId::new(ClientId(7), 12345);
        assert_eq!(id.client(), ClientId(7));
        assert_eq!(id.to_string(), "7:12345");
    }

    #[test]
    fn task_ids_parse_as_printed() {
        let id = TaskId::new(ClientId(3), 17);
        assert_eq!(id.to_string().parse::<TaskId>(), Ok(id));
        assert_eq!(id.0.to_string().parse::<TaskId>(), Ok(id));
        let top = TaskId::new(ClientId((1 << 24) - 1), (1 << 40) - 1);
        assert_eq!(top.to_string().parse::<TaskId>(), Ok(top));
        for bad in ["x", "1:", ":1", "16777216:1", "1:1099511627776", "-1:2"] {
            let err = bad.parse::<TaskId>().unwrap_err();
            assert!(err.to_string().contains("like 3:1"), "{bad}: {err}");
        }
    }

    #[test]
    fn messages_round_trip() {
        let msg = FromClient::Submit {
            tasks: vec![TaskRequest {
                id: TaskId::new(ClientId(1), 2),
                work: Work::Command(CommandSpec {
                    program: "echo".into(),
                    args: vec!["hi".into()],
                    ..Default::default()
                }),
                options: TaskOptions {
                    targets: vec![EngineId(3)],
                    retries: 1,
                    timeout_ms: None,
                    after: vec![TaskId(5)],
                    ..Default::default()
                },
            }],
        };
        let bytes = encode(&msg).unwrap();
        assert_eq!(decode::<FromClient>(&bytes).unwrap(), msg);
        assert_eq!(msg.msg_type(), "submit");
    }

    /// Pins the wire encoding so that other-language clients can rely on it.
    #[test]
    fn golden_frames() {
        let header = Header {
            version: 1,
            session: 2,
            seq: 3,
            msg_type: "hello".into(),
            time_us: 4,
        };
        assert_eq!(
            hex::encode(encode(&header).unwrap()),
            "85a776657273696f6e01a773657373696f6e02a373657103a86d73675f74797065a568656c6c6fa774696d655f757304"
        );
        assert_eq!(
            hex::encode(encode(&FromClient::Hello).unwrap()),
            "a568656c6c6f"
        );
        assert_eq!(
            hex::encode(encode(&FromClient::Goodbye).unwrap()),
            "a7676f6f64627965"
        );
        let call = Work::Call {
            function: "noop".into(),
        };
        assert_eq!(
            hex::encode(encode(&call).unwrap()),
            "81a463616c6c81a866756e6374696f6ea46e6f6f70"
        );
    }

    #[test]
    fn decoding_garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"\xff\xff", b"\x81\xa4call\x00", &[0x92; 64]] {
            assert!(decode::<FromClient>(bytes).is_err());
            assert!(decode::<Header>(bytes).is_err());
        }
    }
}
