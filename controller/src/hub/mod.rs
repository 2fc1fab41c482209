//! The controller's sans-IO core: every rule of the hub, with no sockets and no clock.
//!
//! Events go in through the `on_*` methods of [`Core`], each given the current time as a
//! [`Duration`] since some fixed start (a fake clock in tests); effects come out as a list of
//! [`Action`]s for the socket loop to perform. The loop calls [`Core::on_tick`] when
//! [`Core::next_tick`] is due (heartbeats, task time limits).
//!
//! A task's life: *waiting* for its dependencies (`after`, `follow`), *queued* for an engine,
//! *running* on one, then finished: its outcome is stored and delivered. Failures on an engine
//! and engine deaths send it back to the queue, blacklisting that engine, while its `retries`
//! last.
//!
//! This module holds the [`Core`], its configuration, the [`Action`]s and the `on_*` entry
//! points, which only dispatch. Each piece of state is a struct of its own, in its own file,
//! with the rules that concern it:
//!
//! | file | owns | rules |
//! |---|---|---|
//! | `engines.rs` | [`Engines`]: the engine table by id, uuid and route | registration, ids kept across restarts, held tasks, an engine lost, shutdown |
//! | `heartbeat.rs` | [`Heartbeats`]: ping rounds | **the heartbeat rule**: pings, misses, death, coming back |
//! | `free.rs` | [`FreeEngines`]: engines that can take more work | each scheduler's choice over those indexes |
//! | `schedule.rs` | (no state) | **the scheduling pass**: queue heads to free engines, one message an engine |
//! | `queues.rs` | [`Queues`]: queue classes of queued tasks | which engines could ever run a class |
//! | `tasks.rs` | [`Tasks`]: the table of unfinished tasks | submission, retries, abort |
//! | `deps.rs` | [`Deps`]: waiting tasks by what they wait for | `after` and `follow` |
//! | `timers.rs` | [`Timers`]: task time limits | start and run limits |
//! | `results.rs` | [`Results`]: **the result store**, outcome counts | results from engines, delivery, fetch, purge |
//! | `clients.rs` | [`Clients`]: client ids and connections ([`ClientSlot`](clients::ClientSlot)) | hello, goodbye, **when a client is forgotten** |
//! | `status.rs` | (no state) | status and queue reports |
//! | `objects/` | [`Objects`](objects::Objects): shared queues, namespaces, locks, semaphores, events | blocking waits with deadlines, leases, limits, store records |
//! | `lookups.rs` | [`Lookups`](lookups::Lookups): requests waiting for the task store | what is looked up on disk, and the answers |
//!
//! **The task store.** With `CoreConfig::persist`, the core reports every task's life as
//! store records ([`Action::Record`], one batch an event: submitted, started, requeued,
//! finished, acknowledged, purged), keeps only unfinished tasks and a bounded cache of
//! results in memory, and asks the store ([`Action::Lookup`]) for what memory no longer
//! holds; the loop hands the answers back with [`Core::on_lookup_answer`]. The core never
//! touches the disk. [`Core::recover`] queues again the tasks a previous controller left
//! unfinished.
//!
//! Queued tasks wait in *classes*: one FIFO per distinct (function, targets, blacklist), so a
//! scheduling pass looks at each class's head only and never scans the queue. Engines that
//! can take more work sit in indexes that make each scheduler's choice cheap (see `free.rs`).
//! A pass runs after each event that can free a slot or add work, and everything it gives one
//! engine goes out as one `Tasks` message. Aborted and timed-out tasks leave their queue entry
//! behind; a pass skips such entries. Scheduling *policy* (which engine among loads, how many
//! tasks an engine may hold) is in [`crate::scheduler`], as pure functions.

mod clients;
mod deps;
mod engines;
mod free;
mod heartbeat;
mod lookups;
mod objects;
mod queues;
mod results;
mod schedule;
mod status;
mod tasks;
mod timers;

use crate::scheduler::{Hwm, SchedulerKind};
use clients::Clients;
use deps::Deps;
use engines::Engines;
use free::FreeEngines;
use heartbeat::Heartbeats;
pub use objects::ObjectLimits;
use protocol::{
    DropCounts, EngineId, ErrorKind, FromClient, FromEngine, Heartbeat, Notification, Status,
    TaskError, TaskId, TaskOutcome, ToClient, ToEngine, Work,
};
use queues::Queues;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use results::Results;
use security::Addresses;
use std::sync::Arc;
use std::time::Duration;
use tasks::Tasks;
use timers::Timers;

/// A ZeroMQ routing id: which peer of a router socket a message came from or goes to.
pub type Route = Vec<u8>;

/// A payload frame, shared rather than copied between the result store and the message that
/// forwards it (and between a retryable task and the engine it is sent to).
pub type Payload = Arc<Vec<u8>>;

/// How long past its run-time limit, counted from the start its engine reported, a task is
/// failed (or retried) by the controller when the engine has not reported back: engines
/// enforce the limit themselves and should report first.
pub const RUN_TIMEOUT_GRACE: Duration = Duration::from_secs(2);

/// An effect the socket loop must perform.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send on the engine socket. If the engine is unreachable, report it with
    /// [`Core::on_engine_unreachable`].
    ToEngine {
        /// The engine.
        engine: EngineId,
        /// Its route on the engine socket.
        route: Route,
        /// The message.
        msg: ToEngine,
        /// Payload frames, positional.
        payloads: Vec<Payload>,
    },
    /// Send on the client socket. If the client is unreachable, report it with
    /// [`Core::on_client_unreachable`].
    ToClient {
        /// The client's route.
        route: Route,
        /// The message.
        msg: ToClient,
        /// Payload frames, positional.
        payloads: Vec<Payload>,
    },
    /// Publish on the notification socket.
    Publish(Notification),
    /// Send `Heartbeat::Ping { seq }` on the heartbeat socket.
    Ping {
        /// The engine.
        engine: EngineId,
        /// Its route on the heartbeat socket (its uuid).
        route: Route,
        /// Round number.
        seq: u64,
    },
    /// A client asked the controller to stop: perform the actions before this one, then exit.
    Stop,
    /// Hand these records to the task store's writer (one batch an event).
    Record(Vec<store::Record>),
    /// Ask the task store's query service; give its answer to [`Core::on_lookup_answer`]
    /// with the same tag.
    Lookup {
        /// Which request the answer is for.
        tag: u64,
        /// The question.
        query: store::Query,
    },
    /// Hand these changes to the shared objects to the task store's writer.
    Objects(Vec<store::ObjectRecord>),
}

/// What the core needs to know about its controller.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// How engines are chosen.
    pub scheduler: SchedulerKind,
    /// Limit on outstanding tasks per engine.
    pub hwm: Hwm,
    /// Time between heartbeat pings (at least 1 ms is used).
    pub heartbeat_period: Duration,
    /// Pings an engine may leave unanswered before it is declared dead (at least 1).
    pub heartbeat_misses: u32,
    /// The controller's process id, for status reports.
    pub pid: u32,
    /// The controller's host name, for status reports.
    pub host: String,
    /// The bound addresses, for status reports.
    pub addresses: Addresses,
    /// Seed of the random schedulers (fixed in tests, fresh in a real controller).
    pub seed: u64,
    /// First client id to hand out. A controller restarted on the same ports starts away from
    /// 1 so that the clients of its previous life, which keep their ids, rarely collide with
    /// new ones.
    pub first_client_id: u32,
    /// Random number of this controller process, told to clients so that they notice a
    /// restart (fixed in tests, fresh in a real controller).
    pub instance: u64,
    /// Whether a task store records the tasks: the core then emits [`Action::Record`]s,
    /// keeps at most `result_cache_bytes` of results in memory and looks up the rest. False:
    /// results stay in memory until purged.
    pub persist: bool,
    /// Memory for recent results when `persist` is on.
    pub result_cache_bytes: usize,
    /// Wall-clock time (µs since the epoch) at the core's time zero, for records.
    pub epoch_us: u64,
    /// Client ids up to this one may have tasks in the store (from a previous controller):
    /// their submissions are looked up there before they run.
    pub stored_clients_upto: u32,
    /// Limits of the shared objects.
    pub objects: ObjectLimits,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            scheduler: SchedulerKind::LeastLoad,
            hwm: Hwm::Auto,
            heartbeat_period: Duration::from_secs(1),
            heartbeat_misses: 3,
            pid: 0,
            host: String::new(),
            addresses: Addresses::default(),
            seed: 0,
            first_client_id: 1,
            instance: 0,
            persist: false,
            result_cache_bytes: DEFAULT_RESULT_CACHE_BYTES,
            epoch_us: 0,
            stored_clients_upto: 0,
            objects: ObjectLimits::default(),
        }
    }
}

/// Default memory for recent results with a task store (`result_cache_mb = 32`).
pub const DEFAULT_RESULT_CACHE_BYTES: usize = 32 << 20;

/// The controller's state machine. See the module documentation.
#[derive(Debug)]
pub struct Core {
    config: CoreConfig,
    started: Duration,
    /// The latest time an event carried.
    now: Duration,
    rng: SmallRng,
    engines: Engines,
    free: FreeEngines,
    heartbeats: Heartbeats,
    tasks: Tasks,
    queues: Queues,
    deps: Deps,
    timers: Timers,
    results: Results,
    clients: Clients,
    dropped: DropCounts,
    /// Records of the event being handled, emitted as one [`Action::Record`] at its end.
    records: Vec<store::Record>,
    lookups: lookups::Lookups,
    store_health: Option<String>,
    objects: objects::Objects,
}

impl Core {
    /// A core with no engines, clients or tasks, started at `now`.
    pub fn new(mut config: CoreConfig, now: Duration) -> Core {
        config.heartbeat_period = config.heartbeat_period.max(Duration::from_millis(1));
        config.heartbeat_misses = config.heartbeat_misses.max(1);
        config.first_client_id = config.first_client_id.clamp(1, (1 << 23) - 1);
        Core {
            rng: SmallRng::seed_from_u64(config.seed),
            results: Results::bounded(config.persist.then_some(config.result_cache_bytes)),
            clients: Clients::new(config.first_client_id),
            objects: objects::Objects::new(
                config.objects,
                config.persist,
                config.seed ^ config.instance,
            ),
            heartbeats: Heartbeats::new(now + config.heartbeat_period),
            free: FreeEngines::new(config.scheduler),
            config,
            started: now,
            now,
            engines: Engines::default(),
            tasks: Tasks::default(),
            queues: Queues::default(),
            deps: Deps::default(),
            timers: Timers::default(),
            dropped: DropCounts::default(),
            records: Vec::new(),
            lookups: lookups::Lookups::default(),
            store_health: None,
        }
    }

    /// When [`Core::on_tick`] is next due: the next heartbeat round or task time limit.
    pub fn next_tick(&self) -> Duration {
        let ping = self.heartbeats.next_ping();
        let next = self.timers.next_due().map_or(ping, |when| ping.min(when));
        self.objects.next_due().map_or(next, |when| next.min(when))
    }

    /// Records the sockets' drop counters, for status reports.
    pub fn set_dropped(&mut self, dropped: DropCounts) {
        self.dropped = dropped;
    }

    fn advance(&mut self, now: Duration) {
        self.now = self.now.max(now);
    }

    /// Wall-clock time now, for records.
    fn wall_us(&self) -> u64 {
        self.config
            .epoch_us
            .saturating_add(u64::try_from(self.now.as_micros()).unwrap_or(u64::MAX))
    }

    /// Emits the records of the event just handled, as one batch.
    fn flush_records(&mut self, out: &mut Vec<Action>) {
        if !self.records.is_empty() {
            out.push(Action::Record(std::mem::take(&mut self.records)));
        }
    }

    /// The task store's health as `cluster status` shows it (`ok`, `degraded (why)`).
    pub fn set_store_health(&mut self, health: Option<String>) {
        self.store_health = health;
    }

    /// Requests waiting for the task store's answers.
    pub fn lookups_pending(&self) -> usize {
        self.lookups.len()
    }

    /// Bytes of results held in memory.
    pub fn result_bytes(&self) -> usize {
        self.results.bytes()
    }

    /// A message from an engine's task socket, sent from `route`.
    pub fn on_engine(
        &mut self,
        route: &[u8],
        msg: FromEngine,
        payloads: Vec<Vec<u8>>,
        now: Duration,
    ) -> Vec<Action> {
        self.advance(now);
        let mut out = Vec::new();
        match msg {
            FromEngine::Register(reg) => self.register(route, reg, &mut out),
            FromEngine::Results { results } => self.on_results(route, results, payloads, &mut out),
            FromEngine::Unregister => match self.engines.at_route(route) {
                Some(id) => self.lose_engine(id, "unregistered", &mut out),
                None => tracing::warn!("unregister from an unknown engine; ignored"),
            },
            FromEngine::Started { ids } => self.on_started(route, &ids),
            FromEngine::HandBack { tasks } => self.on_hand_back(route, tasks, payloads, &mut out),
        }
        self.flush_records(&mut out);
        out
    }

    /// A message from a client, sent from `route`.
    pub fn on_client(
        &mut self,
        route: &[u8],
        msg: FromClient,
        payloads: Vec<Vec<u8>>,
        now: Duration,
    ) -> Vec<Action> {
        self.advance(now);
        // A client whose sends failed and that speaks again is reachable again.
        self.clients.heard(route, now);
        // A client's messages are handled in the order it sent them: while one of its requests
        // waits for the task store, the ones after it wait too.
        if self.lookups.holds(route) {
            self.lookups.hold(route, (msg, payloads));
            return Vec::new();
        }
        self.client_message(route, msg, payloads)
    }

    /// Handles one client message (its turn has come).
    fn client_message(
        &mut self,
        route: &[u8],
        msg: FromClient,
        payloads: Vec<Vec<u8>>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        match msg {
            FromClient::Hello => self.hello(route, &mut out),
            FromClient::Submit { tasks } => self.submit(route, tasks, payloads, &mut out),
            FromClient::Status => self.status_request(route, self.now, &mut out),
            FromClient::QueueStatus => self.queue_status_request(route, &mut out),
            FromClient::Abort { ids } => self.abort(route, ids, &mut out),
            FromClient::Fetch { ids } => self.fetch(route, ids, &mut out),
            FromClient::Purge { ids } => self.purge(route, ids, &mut out),
            FromClient::Shutdown { controller } => self.shutdown(route, controller, &mut out),
            FromClient::Goodbye => {
                self.objects_client_gone(route, &mut out);
                self.goodbye(route)
            }
            FromClient::History { filter } => self.history(route, filter, &mut out),
            FromClient::PurgeBefore { before_us } => self.purge_before(route, before_us, &mut out),
            FromClient::Object(request) => self.object_request(route, request, payloads, &mut out),
        }
        self.flush_records(&mut out);
        out
    }

    /// A message on the heartbeat socket, sent from `route`.
    pub fn on_heartbeat(&mut self, route: &[u8], msg: Heartbeat, now: Duration) -> Vec<Action> {
        self.advance(now);
        let mut out = Vec::new();
        match msg {
            Heartbeat::Pong { seq, uuid } => self.pong(route, seq, &uuid, &mut out),
            Heartbeat::Ping { .. } => tracing::debug!("ping received by the controller; ignored"),
        }
        self.flush_records(&mut out);
        out
    }

    /// Time passes: sends heartbeat pings when due, declares silent engines dead, and fails
    /// tasks past their time limits.
    pub fn on_tick(&mut self, now: Duration) -> Vec<Action> {
        self.advance(now);
        let mut out = Vec::new();
        if now >= self.heartbeats.next_ping() {
            self.heartbeat_round(now, &mut out);
            // Once a round is often enough.
            self.forget_idle_clients(now);
        }
        self.expire_timers(now, &mut out);
        self.expire_objects(now, &mut out);
        self.flush_records(&mut out);
        out
    }

    /// A send to `engine` failed because it is no longer connected: it is gone.
    pub fn on_engine_unreachable(&mut self, engine: EngineId, now: Duration) -> Vec<Action> {
        self.on_engine_lost(engine, "unreachable", now)
    }

    /// The connection of the engine at `route` (on the engine socket) closed: the process
    /// died or the network cut it. The engine is gone; if it lives, it registers again.
    pub fn on_engine_disconnected(&mut self, route: &[u8], now: Duration) -> Vec<Action> {
        match self.engines.at_route(route) {
            Some(id) => self.on_engine_lost(id, "disconnected", now),
            None => Vec::new(),
        }
    }

    /// `engine` is gone for `reason`: its tasks are retried elsewhere or failed.
    pub fn on_engine_lost(&mut self, engine: EngineId, reason: &str, now: Duration) -> Vec<Action> {
        self.advance(now);
        let mut out = Vec::new();
        self.lose_engine(engine, reason, &mut out);
        self.flush_records(&mut out);
        out
    }

    /// The connection of the client at `route` (on the client socket) closed: the client is
    /// forgotten once none of its tasks is unfinished (their results stay stored, for any
    /// client to fetch). If it reconnects before, it is known again. Its waits on shared
    /// objects end and its leases are freed, which may serve other clients' waits.
    pub fn on_client_disconnected(&mut self, route: &[u8], now: Duration) -> Vec<Action> {
        self.advance(now);
        self.client_disconnected(route);
        let mut out = Vec::new();
        self.objects_client_gone(route, &mut out);
        out
    }

    /// A send to the client at `route` failed: stop sending it results (they stay stored, so
    /// the client can fetch them when it comes back).
    pub fn on_client_unreachable(&mut self, route: &[u8]) {
        if self.clients.unreachable(route) {
            tracing::warn!("a client disconnected; its results are kept for fetching later");
        }
    }
}

/// The answer to a client's request, sent back to the connection it came from.
fn reply(out: &mut Vec<Action>, route: &[u8], msg: ToClient, payloads: Vec<Payload>) {
    out.push(Action::ToClient {
        route: route.to_vec(),
        msg,
        payloads,
    });
}

/// Failures that another engine may not repeat, and so are worth a retry.
fn retryable(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Remote | ErrorKind::Timeout | ErrorKind::CommandFailed | ErrorKind::EngineLost
    )
}

/// Engine ids for a message: `0, 2, 5`, or `none`.
fn id_list(ids: impl IntoIterator<Item = EngineId>) -> String {
    let list: Vec<String> = ids.into_iter().map(|i| i.to_string()).collect();
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}

/// The function a task calls (`None` for a command, which any engine runs).
fn function_of(work: &Work) -> Option<&str> {
    match work {
        Work::Call { function } | Work::Map { function } => Some(function),
        Work::Command(_) => None,
    }
}

/// The outcome of a task that failed for `kind`, with no value.
fn failure(id: TaskId, engine: Option<EngineId>, kind: ErrorKind, message: String) -> TaskOutcome {
    TaskOutcome {
        id,
        engine,
        status: Status::Err(TaskError {
            kind,
            message,
            engine,
        }),
        started_us: 0,
        elapsed_us: 0,
    }
}

/// How a finished task reads in a dependent's error message.
fn describe(outcome: &TaskOutcome) -> String {
    match &outcome.status {
        Status::Ok => "succeeded".to_owned(),
        Status::Err(e) => format!("failed ({}: {})", e.kind, e.message),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
