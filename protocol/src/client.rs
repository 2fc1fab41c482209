//! Messages between clients and the controller: [`FromClient`], [`ToClient`] on the client
//! socket and [`Notification`] on the controller's PUB socket.

use serde::{Deserialize, Serialize};

use crate::codec::message_types;
use crate::{
    ClientId, EngineId, EngineInfo, HistoryFilter, HistoryRecord, ObjectReply, ObjectRequest,
    QueueStatus, StatusReport, TaskFailure, TaskId, TaskOutcome, TaskRequest, TaskSample,
    TaskStats,
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
    /// What happened over the last second: counts, engines, busiest functions, maps in
    /// flight. Once a second while the controller's `events` setting is on (the default).
    TaskStats(Box<TaskStats>),
    /// Some of the tasks that finished on engines over the last second: all of them up to
    /// 200, else 200 picked uniformly at random. Published after [`Notification::TaskStats`]
    /// when any finished.
    TaskSamples {
        /// The sampled tasks.
        samples: Vec<TaskSample>,
        /// How many finished on engines in that second (`samples` is all of them when equal).
        finished: u64,
    },
    /// The first failures of the last second (at most 10), with their messages. Published
    /// after [`Notification::TaskStats`] when any failed.
    Failures {
        /// The failures.
        failures: Vec<TaskFailure>,
        /// Failures of that second left out of the list.
        unlisted: u64,
    },
}
message_types!(Notification {
    EngineJoined => "engine_joined",
    EngineLeft => "engine_left",
    TaskStats => "task_stats",
    TaskSamples => "task_samples",
    Failures => "failures",
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode, EngineUsage, Heartbeat, TaskStats};

    /// A pong and a status engine as an older peer writes them (no `usage`) still decode,
    /// and an older peer reading the new ones skips the field it does not know.
    #[test]
    fn usage_fields_are_additive() {
        #[derive(Serialize)]
        #[serde(rename_all = "snake_case")]
        enum OldHeartbeat {
            Pong { seq: u64, uuid: String },
        }
        let old = encode(&OldHeartbeat::Pong {
            seq: 3,
            uuid: "u".into(),
        })
        .unwrap();
        assert_eq!(
            decode::<Heartbeat>(&old).unwrap(),
            Heartbeat::Pong {
                seq: 3,
                uuid: "u".into(),
                usage: None
            }
        );
        // Without figures the new pong is byte for byte the old one.
        let none = Heartbeat::Pong {
            seq: 3,
            uuid: "u".into(),
            usage: None,
        };
        assert_eq!(encode(&none).unwrap(), old);
        let new = Heartbeat::Pong {
            seq: 3,
            uuid: "u".into(),
            usage: Some(EngineUsage {
                cpu_percent: 50.0,
                rss_bytes: 1 << 30,
            }),
        };
        #[derive(Deserialize, Debug, PartialEq)]
        #[serde(rename_all = "snake_case")]
        enum OldHeartbeatIn {
            Pong { seq: u64, uuid: String },
        }
        assert_eq!(
            decode::<OldHeartbeatIn>(&encode(&new).unwrap()).unwrap(),
            OldHeartbeatIn::Pong {
                seq: 3,
                uuid: "u".into()
            }
        );
        assert_eq!(decode::<Heartbeat>(&encode(&new).unwrap()).unwrap(), new);
    }

    #[test]
    fn the_feed_round_trips_with_its_field_names() {
        let notes = [
            Notification::TaskStats(Box::new(TaskStats {
                time_us: 1,
                submitted: 5,
                ..TaskStats::default()
            })),
            Notification::TaskSamples {
                samples: vec![crate::TaskSample {
                    engine: EngineId(2),
                    function: "f".into(),
                    start_us: 10,
                    end_us: 20,
                    ok: true,
                }],
                finished: 9,
            },
            Notification::Failures {
                failures: vec![crate::TaskFailure {
                    id: TaskId(7),
                    engine: None,
                    function: "g".into(),
                    kind: crate::ErrorKind::Timeout,
                    message: "late".into(),
                    time_us: 3,
                }],
                unlisted: 4,
            },
        ];
        for note in notes {
            let bytes = encode(&note).unwrap();
            assert_eq!(decode::<Notification>(&bytes).unwrap(), note);
        }
        // Field names travel, for subscribers in other languages.
        let bytes = encode(&Notification::TaskSamples {
            samples: vec![],
            finished: 9,
        })
        .unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("task_samples") && text.contains("finished"));
    }
}
