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
//!   i-th payload frame is the value of the i-th outcome (when it failed, empty except for
//!   Python tasks: see [`Status::Err`]). The controller moves payloads between messages
//!   without decoding them.
//!
//! Argument and result payloads are themselves msgpack (named fields), written by the client
//! and by the engine's function registry.
//!
//! # Where things are
//!
//! * `codec.rs`: the wire format's code: [`PROTOCOL_VERSION`], the size limits, the
//!   [`Header`] frame, [`encode`] / [`decode`], msgpack array headers, [`MessageType`] names,
//!   and the golden-frame tests that pin the encoding;
//! * `ids.rs`: [`EngineId`], [`ClientId`], [`TaskId`] (its bit layout, text form and parser);
//! * `engine.rs`: controller ↔ engine: [`Registration`], [`FromEngine`], [`ToEngine`],
//!   [`Heartbeat`];
//! * `client.rs`: controller ↔ client: [`FromClient`], [`ToClient`], [`Notification`];
//! * `task.rs`: what runs and how it ends: [`Work`], [`CommandSpec`], [`CommandOutput`],
//!   [`TaskOptions`], [`TaskRequest`], [`Assignment`], [`TaskOutcome`], [`Status`],
//!   [`TaskError`], [`ErrorKind`];
//! * `status.rs`: [`StatusReport`] and its parts, [`QueueStatus`], [`EngineInfo`];
//! * `objects.rs`: shared objects: [`ObjectRequest`], [`ObjectOp`], [`ObjectReply`],
//!   [`ItemFormat`], [`ObjectKind`], [`ObjectInfo`], [`LeaseId`], name rules;
//! * `launch.rs`: [`LaunchInfo`], an engine's rank and batch job (from mpiexec's or srun's
//!   environment);
//! * `function.rs`: typed [`Function`] handles and the names of the [`builtin`] and [`stock`]
//!   functions.
//!
//! Everything is re-exported here: use `protocol::TaskId`, never the module paths.

mod client;
mod codec;
mod engine;
mod function;
mod ids;
mod objects;
mod status;
mod task;

pub use client::{FromClient, Notification, ToClient};
pub use codec::{
    decode, encode, read_array_header, write_array_header, ArrayHeaderError, CodecError, Header,
    MessageType, DEFAULT_MAX_MESSAGE_BYTES, MAX_FRAMES, PROTOCOL_VERSION,
};
pub use engine::{FromEngine, Heartbeat, Registration, ToEngine};
pub use function::{builtin, stock, Function, Whoami};

mod launch;
pub use ids::{ClientId, EngineId, ParseTaskIdError, TaskId};
pub use launch::LaunchInfo;
pub use objects::{
    check_name, ItemFormat, LeaseId, NewValue, ObjectErrorKind, ObjectInfo, ObjectKind, ObjectOp,
    ObjectReply, ObjectRequest, Renewal, Wait, DEFAULT_NAMESPACE, MAX_OBJECT_NAME,
};
pub use status::{
    ControllerStatus, DropCounts, EngineInfo, EngineQueue, EngineStatus, FunctionSummary,
    HistoryFilter, HistoryRecord, QueueStatus, RecordState, StatusReport, TaskCounts,
};
pub use task::{
    Assignment, CommandOutput, CommandSpec, ErrorKind, Status, TaskError, TaskOptions, TaskOutcome,
    TaskRequest, Work,
};
