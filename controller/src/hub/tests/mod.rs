//! State-machine tests of the core: a [`Harness`] holds a core and a fake clock, and speaks
//! for fake engines (named by uuid, which is also their route) and fake clients (named by
//! route). Each file is one topic; the helpers below build requests and read actions.

use super::tasks::TaskState;
use super::*;
use crate::scheduler::{Hwm, SchedulerKind};
use protocol::{
    Assignment, ClientId, EngineStatus, Registration, StatusReport, TaskOptions, TaskRequest,
};

mod clients;
mod dependencies;
mod events;
mod failures;
mod hand_back;
mod heartbeats;
mod invariants;
mod leaving;
mod registration;
mod restart;
mod scheduling;
mod task_store;
mod time_limits;

/// The client connection most tests submit from.
const CLIENT: &[u8] = b"client-a";
const OTHER_CLIENT: &[u8] = b"client-b";

/// A core, the time of its next event, and the peers' side of the conversation.
struct Harness {
    core: Core,
    /// The fake clock: every event the harness sends happens at this time.
    now: Duration,
}

impl Harness {
    /// A core with the `leastload` scheduler and limit `hwm`, at time zero.
    fn new(hwm: Hwm) -> Harness {
        Harness::with_config(
            CoreConfig {
                hwm,
                host: "ctl".into(),
                pid: 42,
                ..Default::default()
            },
            Duration::ZERO,
        )
    }

    /// A core with `scheduler` (its random ones seeded) and limit `hwm`.
    fn with_scheduler(scheduler: SchedulerKind, hwm: Hwm) -> Harness {
        Harness::with_config(
            CoreConfig {
                scheduler,
                hwm,
                host: "ctl".into(),
                pid: 42,
                seed: 7,
                ..Default::default()
            },
            Duration::ZERO,
        )
    }

    /// A core with `config`, started at `start`.
    fn with_config(config: CoreConfig, start: Duration) -> Harness {
        Harness {
            core: Core::new(config, start),
            now: start,
        }
    }

    /// Moves the clock to `t`.
    fn at(&mut self, t: Duration) {
        self.now = t;
    }

    /// Moves the clock to `t` and lets the core act on it.
    fn tick(&mut self, t: Duration) -> Vec<Action> {
        self.at(t);
        self.core.on_tick(t)
    }

    /// Engine `uuid` sends `msg` (with no payloads).
    fn engine(&mut self, uuid: &str, msg: FromEngine) -> Vec<Action> {
        self.core.on_engine(uuid.as_bytes(), msg, vec![], self.now)
    }

    /// Registers engine `uuid` and returns its id and the actions.
    fn register(&mut self, uuid: &str, functions: &[&str]) -> (EngineId, Vec<Action>) {
        let actions = self.engine(uuid, registration(uuid, functions));
        let id = registered_id(&actions).expect("registered");
        (id, actions)
    }

    /// Engine `uuid` says goodbye.
    fn unregister(&mut self, uuid: &str) -> Vec<Action> {
        self.engine(uuid, FromEngine::Unregister)
    }

    /// Engine `uuid` reports success for `ids`, each having run `elapsed_us`.
    fn finish(&mut self, uuid: &str, ids: &[TaskId], elapsed_us: u64) -> Vec<Action> {
        let results = ids
            .iter()
            .map(|&id| TaskOutcome {
                id,
                engine: None,
                status: Status::Ok,
                started_us: 1,
                elapsed_us,
            })
            .collect();
        let payloads = ids
            .iter()
            .map(|id| format!("res-{id}").into_bytes())
            .collect();
        self.core.on_engine(
            uuid.as_bytes(),
            FromEngine::Results { results },
            payloads,
            self.now,
        )
    }

    /// Engine `uuid` reports failures of `kind` for `ids`.
    fn fail(&mut self, uuid: &str, ids: &[TaskId], kind: ErrorKind) -> Vec<Action> {
        let results = ids
            .iter()
            .map(|&id| failure(id, None, kind, format!("{kind} on {uuid}")))
            .collect();
        self.core.on_engine(
            uuid.as_bytes(),
            FromEngine::Results { results },
            ids.iter().map(|_| Vec::new()).collect(),
            self.now,
        )
    }

    /// Engine `uuid` answers heartbeat round `seq`.
    fn pong(&mut self, uuid: &str, seq: u64) -> Vec<Action> {
        let pong = Heartbeat::Pong {
            seq,
            uuid: uuid.into(),
            usage: None,
        };
        self.core.on_heartbeat(uuid.as_bytes(), pong, self.now)
    }

    /// The client at `route` sends `msg` (with no payloads).
    fn client(&mut self, route: &[u8], msg: FromClient) -> Vec<Action> {
        self.core.on_client(route, msg, vec![], self.now)
    }

    /// The client at `route` says hello; its id.
    fn hello(&mut self, route: &[u8]) -> ClientId {
        match &self.client(route, FromClient::Hello)[..] {
            [Action::ToClient {
                msg: ToClient::Welcome { client_id, .. },
                ..
            }] => *client_id,
            other => panic!("expected a welcome, got {other:?}"),
        }
    }

    /// [`CLIENT`] submits `reqs`, each with the payload [`payload_of`] its id.
    fn submit(&mut self, reqs: Vec<TaskRequest>) -> Vec<Action> {
        self.submit_from(CLIENT, reqs)
    }

    /// The client at `route` submits `reqs`, each with the payload [`payload_of`] its id.
    fn submit_from(&mut self, route: &[u8], reqs: Vec<TaskRequest>) -> Vec<Action> {
        let payloads = reqs.iter().map(|r| payload_of(r.id)).collect();
        self.core.on_client(
            route,
            FromClient::Submit { tasks: reqs },
            payloads,
            self.now,
        )
    }

    /// Submits one task `seq` of `f` and returns the engine it went to, if any.
    fn one_to(&mut self, seq: u64) -> Option<u32> {
        let to = sent_to(&self.submit(vec![call(seq, "f")]));
        assert!(to.len() <= 1);
        to.first().map(|(e, _)| e.0)
    }

    /// The client at `route` says goodbye.
    fn goodbye(&mut self, route: &[u8]) {
        assert!(
            self.client(route, FromClient::Goodbye).is_empty(),
            "no answer"
        );
    }

    /// The sizes of the core's tables, but for the result store (see [`Tables`]).
    fn tables(&self) -> Tables {
        let core = &self.core;
        Tables {
            clients: core.clients.table_sizes(),
            clients_with_tasks: core.tasks.clients_with_tasks(),
            engines: core.engines.all().count(),
            tasks: core.tasks.len(),
            classes: core.queues.classes().count(),
            waited_for: core.deps.waited_for(),
            timers: core.timers.len(),
        }
    }

    fn status(&self) -> StatusReport {
        self.core.status(self.now)
    }

    fn engine_status(&self, id: u32) -> EngineStatus {
        self.status()
            .engines
            .into_iter()
            .find(|e| e.id == EngineId(id))
            .expect("engine in status")
    }
}

/// What the core holds whose size matters for memory, but for the result store (which keeps
/// results until purged, by design).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tables {
    /// Client entries and routes.
    clients: (usize, usize),
    /// Clients counted as having unfinished tasks.
    clients_with_tasks: usize,
    engines: usize,
    tasks: usize,
    classes: usize,
    /// Tasks with waiting dependents.
    waited_for: usize,
    timers: usize,
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn registration(uuid: &str, functions: &[&str]) -> FromEngine {
    FromEngine::Register(Registration {
        uuid: uuid.into(),
        host: format!("host-{uuid}"),
        pid: 100,
        functions: functions.iter().map(|f| f.to_string()).collect(),
        slots: 1,
        engine_id: None,
        held: Vec::new(),
        launch: None,
    })
}

/// Engine `uuid` (offering `f`) registering again, asking for `id` and holding `held`.
fn held_registration(uuid: &str, id: Option<EngineId>, held: &[TaskId]) -> FromEngine {
    match registration(uuid, &["f"]) {
        FromEngine::Register(reg) => FromEngine::Register(Registration {
            engine_id: id,
            held: held.to_vec(),
            ..reg
        }),
        other => other,
    }
}

/// The id a registration was answered with.
fn registered_id(actions: &[Action]) -> Option<EngineId> {
    actions.iter().find_map(|a| match a {
        Action::ToEngine {
            msg: ToEngine::Registered { engine_id, .. },
            ..
        } => Some(*engine_id),
        _ => None,
    })
}

/// Task `seq` of client 1.
fn tid(seq: u64) -> TaskId {
    TaskId::new(ClientId(1), seq)
}

fn call(seq: u64, function: &str) -> TaskRequest {
    TaskRequest {
        id: tid(seq),
        work: Work::Call {
            function: function.into(),
        },
        options: TaskOptions::default(),
    }
}

fn with(mut req: TaskRequest, targets: &[u32], retries: u32) -> TaskRequest {
    req.options.targets = targets.iter().map(|&t| EngineId(t)).collect();
    req.options.retries = retries;
    req
}

fn after(mut req: TaskRequest, deps: &[u64]) -> TaskRequest {
    req.options.after = deps.iter().map(|&d| tid(d)).collect();
    req
}

fn follow(mut req: TaskRequest, deps: &[u64]) -> TaskRequest {
    req.options.follow = deps.iter().map(|&d| tid(d)).collect();
    req
}

fn timed(mut req: TaskRequest, ms: u64) -> TaskRequest {
    req.options.timeout_ms = Some(ms);
    req
}

fn payload_of(id: TaskId) -> Vec<u8> {
    format!("arg-{id}").into_bytes()
}

/// The `Tasks` messages among `actions`: engine, task ids, payloads.
fn sent(actions: &[Action]) -> Vec<(EngineId, Vec<TaskId>, Vec<Vec<u8>>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ToEngine {
                engine,
                msg: ToEngine::Tasks { tasks },
                payloads,
                ..
            } => Some((
                *engine,
                tasks.iter().map(|t| t.id).collect(),
                payloads.iter().map(|p| p.to_vec()).collect(),
            )),
            _ => None,
        })
        .collect()
}

/// Tasks sent per engine, flattened.
fn sent_to(actions: &[Action]) -> Vec<(EngineId, TaskId)> {
    sent(actions)
        .into_iter()
        .flat_map(|(e, ids, _)| ids.into_iter().map(move |t| (e, t)))
        .collect()
}

/// The first task sent to an engine among `actions`, as the engine gets it.
fn first_assignment(actions: &[Action]) -> Option<Assignment> {
    actions.iter().find_map(|a| match a {
        Action::ToEngine {
            msg: ToEngine::Tasks { tasks },
            ..
        } => tasks.first().cloned(),
        _ => None,
    })
}

/// The `Results` messages to clients among `actions`.
fn delivered(actions: &[Action]) -> Vec<(Route, Vec<TaskOutcome>, Vec<Vec<u8>>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ToClient {
                route,
                msg: ToClient::Results { results },
                payloads,
            } => Some((
                route.clone(),
                results.clone(),
                payloads.iter().map(|p| p.to_vec()).collect(),
            )),
            _ => None,
        })
        .collect()
}

fn error_of(outcome: &TaskOutcome) -> &TaskError {
    match &outcome.status {
        Status::Err(e) => e,
        Status::Ok => panic!("task {} succeeded", outcome.id),
    }
}
