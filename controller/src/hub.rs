//! The controller's sans-IO core: every rule of the hub, with no sockets and no clock.
//!
//! Events go in through the `on_*` methods, each given the current time as a [`Duration`]
//! since some fixed start (a fake clock in tests); effects come out as a list of [`Action`]s
//! for the socket loop to perform. The loop calls [`Core::on_tick`] when [`Core::next_tick`]
//! is due (heartbeats, task time limits).
//!
//! A task's life: *waiting* for its dependencies (`after`, `follow`), *queued* for an engine,
//! *running* on one, then finished: its outcome is stored and delivered. Failures on an engine
//! and engine deaths send it back to the queue, blacklisting that engine, while its `retries`
//! last.
//!
//! Queued tasks wait in *classes*: one FIFO per distinct (function, targets, blacklist), so a
//! scheduling pass looks at each class's head only and never scans the queue. Engines that
//! can take more work sit in indexes that make each scheduler's choice cheap: an ordered set
//! keyed by `(outstanding, last assigned, id)` (exactly `leastload`'s order of preference, so
//! the first eligible member is the choice), one keyed by `(last assigned, id)` for `lru`, and
//! a list to draw from for the random schemes. A pass runs after each event that can free a
//! slot or add work, and everything it gives one engine goes out as one `Tasks` message.
//! Aborted and timed-out tasks leave their queue entry behind; a pass skips such entries.

use crate::scheduler::{self, EngineLoad, Hwm, LoadEstimate, SchedulerKind};
use protocol::{
    Assignment, ClientId, ControllerStatus, DropCounts, EngineId, EngineInfo, EngineQueue,
    EngineStatus, ErrorKind, FromClient, FromEngine, Heartbeat, Notification, QueueStatus,
    Registration, Status, StatusReport, TaskCounts, TaskError, TaskId, TaskOutcome, TaskRequest,
    ToClient, ToEngine, Work,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use security::Addresses;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// A ZeroMQ routing id: which peer of a router socket a message came from or goes to.
pub type Route = Vec<u8>;

/// A payload frame, shared rather than copied between the result store and the message that
/// forwards it (and between a retryable task and the engine it is sent to).
pub type Payload = Arc<Vec<u8>>;

/// The client connection of a task no client has submitted to this controller: one an engine
/// held or finished across a controller restart. Its result is stored, not sent, until the
/// client submits the task again.
const NO_ROUTE: u32 = u32::MAX;

/// How long past its run-time limit, counted from the start its engine reported, a task is
/// failed (or retried) by the controller when the engine has not reported back: engines
/// enforce the limit themselves and should report first.
pub const RUN_TIMEOUT_GRACE: Duration = Duration::from_secs(2);

/// Largest jump in ids a re-registering engine may ask for (ids index a table).
const MAX_ID_GAP: u32 = 4096;

/// Failures that another engine may not repeat, and so are worth a retry.
fn retryable(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Remote | ErrorKind::Timeout | ErrorKind::CommandFailed | ErrorKind::EngineLost
    )
}

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
        }
    }
}

#[derive(Debug)]
struct Engine {
    id: EngineId,
    /// Empty for an id kept free for an engine of an earlier controller that may come back.
    uuid: String,
    host: String,
    pid: u32,
    function_list: Vec<String>,
    functions: HashSet<String>,
    slots: u32,
    route: Route,
    alive: bool,
    /// It said goodbye (`Unregister`): a stray pong does not bring it back.
    left: bool,
    running: HashSet<TaskId>,
    completed: u64,
    failed: u64,
    last_assigned: u64,
    last_pong_seq: u64,
    missed: u32,
    estimate: LoadEstimate,
    limit: u32,
    /// Its keys in the free-engine indexes while it can take more tasks.
    free_key: Option<FreeKey>,
    lru_key: Option<(u64, EngineId)>,
    free_pos: Option<usize>,
}

impl Engine {
    fn blank(id: EngineId) -> Engine {
        Engine {
            id,
            uuid: String::new(),
            host: String::new(),
            pid: 0,
            function_list: Vec::new(),
            functions: HashSet::new(),
            slots: 1,
            route: Vec::new(),
            alive: false,
            left: false,
            running: HashSet::new(),
            completed: 0,
            failed: 0,
            last_assigned: 0,
            last_pong_seq: 0,
            missed: 0,
            estimate: LoadEstimate::default(),
            limit: 1,
            free_key: None,
            lru_key: None,
            free_pos: None,
        }
    }

    fn info(&self) -> EngineInfo {
        EngineInfo {
            id: self.id,
            host: self.host.clone(),
            pid: self.pid,
            functions: self.function_list.clone(),
        }
    }

    fn outstanding(&self) -> u32 {
        u32::try_from(self.running.len()).unwrap_or(u32::MAX)
    }

    fn load(&self, eligible: bool) -> EngineLoad {
        EngineLoad {
            id: self.id,
            outstanding: self.outstanding(),
            limit: self.limit,
            last_assigned: self.last_assigned,
            eligible,
        }
    }
}

/// Why tasks of a class can never run: the error kind and message their outcome gets.
type Refusal = (ErrorKind, String);

/// `(outstanding, last assigned, id)`: leastload's order of preference.
type FreeKey = (u32, u64, EngineId);

/// What tasks of one queue have in common, and so which engines may run them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClassKey {
    /// Function the engine must offer (`None` for commands, which run anywhere).
    function: Option<String>,
    /// Allowed engines, sorted (any when empty).
    targets: Vec<EngineId>,
    /// Engines it failed or was lost on, sorted.
    excluded: Vec<EngineId>,
}

#[derive(Debug)]
struct Class {
    key: ClassKey,
    /// `(task, its submission seq)`; an entry whose task is no longer queued with that seq
    /// (aborted, timed out) is skipped.
    queue: VecDeque<(TaskId, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskState {
    /// Some of its dependencies have not finished.
    Waiting,
    Queued,
    Running(EngineId),
}

#[derive(Debug)]
struct Task {
    /// Submission order, for fairness between classes.
    seq: u64,
    /// Index into `Core::routes` of the client connection that submitted it.
    route: u32,
    /// Kept until it runs, and while running only if it may be retried.
    work: Option<Work>,
    /// Limit on the wait to start (`TaskOptions::timeout_ms`).
    timeout_ms: Option<u64>,
    /// When that limit runs out, on the core's clock (set while it waits to start).
    start_deadline: Option<Duration>,
    /// Limit on the run on an engine (`run_timeout_ms`, else `timeout_ms`).
    run_timeout_ms: Option<u64>,
    /// Allowed engines, sorted; narrowed to one once its `follow` tasks have run.
    targets: Vec<EngineId>,
    excluded: Vec<EngineId>,
    retries: u32,
    /// Like `work`.
    payload: Option<Payload>,
    state: TaskState,
    /// Dependencies not finished yet.
    deps_left: u32,
    /// Whether it has `follow` dependencies, and where they ran (once one has finished).
    follows: bool,
    follow_engine: Option<EngineId>,
    /// Changes whenever a timer armed for it stops applying (it started running, or went
    /// back to the queue), so such timers are recognised as stale.
    epoch: u32,
}

impl Task {
    /// A task an engine holds that this controller was never given (see
    /// [`Core::adopt_held`]): no client, work or limits until its client submits it again.
    fn held(seq: u64, engine: EngineId) -> Task {
        Task {
            seq,
            route: NO_ROUTE,
            work: None,
            timeout_ms: None,
            start_deadline: None,
            run_timeout_ms: None,
            targets: Vec::new(),
            excluded: Vec::new(),
            retries: 0,
            payload: None,
            state: TaskState::Running(engine),
            deps_left: 0,
            follows: false,
            follow_engine: None,
            epoch: 0,
        }
    }
}

#[derive(Debug)]
struct Stored {
    outcome: TaskOutcome,
    payload: Payload,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// Not started within its time limit of being submitted (or sent back to the queue).
    Start,
    /// Running past its limit without the engine reporting.
    Run,
}

/// `(when, task, task epoch when armed, kind)`.
type Timer = (Duration, TaskId, u32, TimerKind);

/// Finished tasks of one event, grouped by client connection so that each gets one message.
#[derive(Debug, Default)]
struct Deliveries {
    by_route: Vec<(u32, Vec<TaskOutcome>, Vec<Payload>)>,
}

impl Deliveries {
    fn push(&mut self, route: u32, outcome: TaskOutcome, payload: Payload) {
        // Nearly always one client per message: check the latest group first.
        let idx = match self.by_route.iter().rposition(|(r, _, _)| *r == route) {
            Some(i) => i,
            None => {
                self.by_route.push((route, Vec::new(), Vec::new()));
                self.by_route.len() - 1
            }
        };
        let (_, outcomes, payloads) = &mut self.by_route[idx];
        outcomes.push(outcome);
        payloads.push(payload);
    }
}

/// The controller's state machine. See the module documentation.
#[derive(Debug)]
pub struct Core {
    config: CoreConfig,
    started: Duration,
    /// The latest time an event carried.
    now: Duration,
    rng: SmallRng,
    /// By id; ids are never reused within one controller's life.
    engines: Vec<Engine>,
    by_uuid: HashMap<String, EngineId>,
    by_route: HashMap<Route, EngineId>,
    /// Engines below their limit, in leastload's order.
    free: BTreeSet<FreeKey>,
    /// The same engines in lru's order (kept for `lru` only).
    free_lru: BTreeSet<(u64, EngineId)>,
    /// The same engines in no order, to draw from (kept for the random schemes only).
    free_list: Vec<EngineId>,
    alive: usize,
    assign_stamp: u64,

    tasks: HashMap<TaskId, Task>,
    next_seq: u64,
    classes: Vec<Option<Class>>,
    class_index: HashMap<ClassKey, usize>,
    spare_classes: Vec<usize>,
    /// Tasks queued (live entries of the classes).
    queued: u64,
    /// Tasks waiting for dependencies.
    waiting: u64,
    /// Waiting tasks by the task they wait for (and whether they follow it).
    dependents: HashMap<TaskId, Vec<(TaskId, bool)>>,
    timers: BinaryHeap<Reverse<Timer>>,

    store: HashMap<TaskId, Stored>,
    done: u64,
    failed: u64,

    clients: HashMap<Route, ClientId>,
    next_client: u32,
    /// Client connections by index; `None` once a send to it failed.
    routes: Vec<Option<Route>>,
    route_index: HashMap<Route, u32>,

    ping_seq: u64,
    next_ping: Duration,
    dropped: DropCounts,
}

fn id_list(ids: impl IntoIterator<Item = EngineId>) -> String {
    let list: Vec<String> = ids.into_iter().map(|i| i.to_string()).collect();
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}

fn function_of(work: &Work) -> Option<&str> {
    match work {
        Work::Call { function } | Work::Map { function } => Some(function),
        Work::Command(_) => None,
    }
}

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

impl Core {
    /// A core with no engines, clients or tasks, started at `now`.
    pub fn new(mut config: CoreConfig, now: Duration) -> Core {
        config.heartbeat_period = config.heartbeat_period.max(Duration::from_millis(1));
        config.heartbeat_misses = config.heartbeat_misses.max(1);
        config.first_client_id = config.first_client_id.clamp(1, (1 << 23) - 1);
        let next_ping = now + config.heartbeat_period;
        Core {
            rng: SmallRng::seed_from_u64(config.seed),
            next_client: config.first_client_id,
            config,
            started: now,
            now,
            engines: Vec::new(),
            by_uuid: HashMap::new(),
            by_route: HashMap::new(),
            free: BTreeSet::new(),
            free_lru: BTreeSet::new(),
            free_list: Vec::new(),
            alive: 0,
            assign_stamp: 0,
            tasks: HashMap::new(),
            next_seq: 0,
            classes: Vec::new(),
            class_index: HashMap::new(),
            spare_classes: Vec::new(),
            queued: 0,
            waiting: 0,
            dependents: HashMap::new(),
            timers: BinaryHeap::new(),
            store: HashMap::new(),
            done: 0,
            failed: 0,
            clients: HashMap::new(),
            routes: Vec::new(),
            route_index: HashMap::new(),
            ping_seq: 0,
            next_ping,
            dropped: DropCounts::default(),
        }
    }

    /// When [`Core::on_tick`] is next due: the next heartbeat round or task time limit.
    pub fn next_tick(&self) -> Duration {
        match self.timers.peek() {
            Some(Reverse((when, ..))) => self.next_ping.min(*when),
            None => self.next_ping,
        }
    }

    /// Records the sockets' drop counters, for status reports.
    pub fn set_dropped(&mut self, dropped: DropCounts) {
        self.dropped = dropped;
    }

    fn advance(&mut self, now: Duration) {
        self.now = self.now.max(now);
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
            FromEngine::Results { results } => self.results(route, results, payloads, &mut out),
            FromEngine::Unregister => match self.by_route.get(route).copied() {
                Some(id) => self.lose_engine(id, "unregistered", &mut out),
                None => tracing::warn!("unregister from an unknown engine; ignored"),
            },
            FromEngine::Started { ids } => self.on_started(route, &ids),
        }
        out
    }

    /// Arms the safety timer of tasks with a run-time limit that `route`'s engine started:
    /// if the engine neither stops such a task nor reports within the limit and a grace
    /// period, the controller fails (or retries) it.
    fn on_started(&mut self, route: &[u8], ids: &[TaskId]) {
        let Some(engine) = self.by_route.get(route).copied() else {
            return;
        };
        for &tid in ids {
            let Some(task) = self.tasks.get(&tid) else {
                continue;
            };
            let (TaskState::Running(on), Some(limit)) = (task.state, task.run_timeout_ms) else {
                continue;
            };
            if on == engine {
                let when = self.now + Duration::from_millis(limit) + RUN_TIMEOUT_GRACE;
                self.timers
                    .push(Reverse((when, tid, task.epoch, TimerKind::Run)));
            }
        }
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
        let mut out = Vec::new();
        self.revive_route(route);
        let reply = |out: &mut Vec<Action>, msg: ToClient, payloads: Vec<Payload>| {
            out.push(Action::ToClient {
                route: route.to_vec(),
                msg,
                payloads,
            })
        };
        match msg {
            FromClient::Hello => {
                let client_id = match self.clients.get(route) {
                    Some(id) => *id,
                    None => {
                        let id = ClientId(self.next_client);
                        self.next_client += 1;
                        self.clients.insert(route.to_vec(), id);
                        tracing::debug!("client {} said hello", id.0);
                        id
                    }
                };
                let engines = self
                    .engines
                    .iter()
                    .filter(|e| e.alive)
                    .map(Engine::info)
                    .collect();
                reply(
                    &mut out,
                    ToClient::Welcome {
                        client_id,
                        engines,
                        instance: self.config.instance,
                    },
                    Vec::new(),
                );
            }
            FromClient::Submit { tasks } => self.submit(route, tasks, payloads, &mut out),
            FromClient::Status => reply(
                &mut out,
                ToClient::Status(Box::new(self.status(now))),
                Vec::new(),
            ),
            FromClient::QueueStatus => reply(
                &mut out,
                ToClient::QueueStatus(self.queue_status()),
                Vec::new(),
            ),
            FromClient::Abort { ids } => self.abort(route, ids, &mut out),
            FromClient::Fetch { ids } => {
                let mut results = Vec::new();
                let mut found = Vec::new();
                let mut pending = Vec::new();
                let mut unknown = Vec::new();
                for id in ids {
                    if let Some(stored) = self.store.get(&id) {
                        results.push(stored.outcome.clone());
                        found.push(stored.payload.clone());
                    } else if self.tasks.contains_key(&id) {
                        pending.push(id);
                    } else {
                        unknown.push(id);
                    }
                }
                if !results.is_empty() {
                    reply(&mut out, ToClient::Results { results }, found);
                }
                reply(&mut out, ToClient::Pending { pending, unknown }, Vec::new());
            }
            FromClient::Purge { ids } => {
                if ids.is_empty() {
                    self.store.clear();
                } else {
                    for id in ids {
                        self.store.remove(&id);
                    }
                }
                reply(&mut out, ToClient::Ack, Vec::new());
            }
            FromClient::Shutdown { controller } => {
                tracing::info!(
                    "shutdown requested by a client (controller too: {controller}); stopping {} engine(s)",
                    self.alive
                );
                for e in self.engines.iter().filter(|e| e.alive) {
                    out.push(Action::ToEngine {
                        engine: e.id,
                        route: e.route.clone(),
                        msg: ToEngine::Shutdown,
                        payloads: Vec::new(),
                    });
                }
                reply(&mut out, ToClient::Ack, Vec::new());
                if controller {
                    out.push(Action::Stop);
                }
            }
        }
        out
    }

    /// A message on the heartbeat socket, sent from `route`.
    pub fn on_heartbeat(&mut self, route: &[u8], msg: Heartbeat, now: Duration) -> Vec<Action> {
        self.advance(now);
        let Heartbeat::Pong { seq, uuid } = msg else {
            tracing::debug!("ping received by the controller; ignored");
            return Vec::new();
        };
        let id = self.by_uuid.get(&uuid).copied().or_else(|| {
            std::str::from_utf8(route)
                .ok()
                .and_then(|u| self.by_uuid.get(u).copied())
        });
        let mut out = Vec::new();
        if let Some(e) = id.and_then(|id| self.engines.get_mut(id.0 as usize)) {
            // A pong from the future is forged or from another controller's life.
            if seq > self.ping_seq {
                return out;
            }
            if e.alive {
                e.last_pong_seq = e.last_pong_seq.max(seq);
                e.missed = 0;
            } else if !e.left && e.pid != 0 {
                // Declared dead by heartbeat, yet it answers (it was stopped, or cut off, for
                // a while): it is back, under its id. Its old tasks went elsewhere already.
                let id = e.id;
                tracing::info!("engine {id} answers heartbeats again; taking it back");
                self.admit(id, "came back", &mut out);
            }
        }
        out
    }

    /// Time passes: sends heartbeat pings when due, declares silent engines dead, and fails
    /// tasks past their time limits.
    pub fn on_tick(&mut self, now: Duration) -> Vec<Action> {
        self.advance(now);
        let mut out = Vec::new();
        if now >= self.next_ping {
            self.heartbeat_round(now, &mut out);
        }
        self.expire_timers(now, &mut out);
        out
    }

    fn heartbeat_round(&mut self, now: Duration, out: &mut Vec<Action>) {
        let period = self.config.heartbeat_period;
        self.next_ping += period;
        if self.next_ping <= now {
            // The loop was held up; do not fire a burst of pings to catch up.
            self.next_ping = now + period;
        }
        let misses = u64::from(self.config.heartbeat_misses);
        let mut dead = Vec::new();
        for e in self.engines.iter_mut().filter(|e| e.alive) {
            let unanswered = self.ping_seq.saturating_sub(e.last_pong_seq);
            e.missed = u32::try_from(unanswered).unwrap_or(u32::MAX);
            if unanswered >= misses {
                dead.push(e.id);
            } else if unanswered > 0 {
                tracing::debug!("engine {} missed {unanswered} heartbeat(s)", e.id);
            }
        }
        for id in dead {
            self.lose_engine(id, "heartbeat", out);
        }
        self.ping_seq += 1;
        for e in self.engines.iter().filter(|e| e.alive) {
            out.push(Action::Ping {
                engine: e.id,
                route: e.uuid.as_bytes().to_vec(),
                seq: self.ping_seq,
            });
        }
    }

    /// A send to `engine` failed because it is no longer connected: it is gone.
    pub fn on_engine_unreachable(&mut self, engine: EngineId, now: Duration) -> Vec<Action> {
        self.on_engine_lost(engine, "unreachable", now)
    }

    /// The connection of the engine at `route` (on the engine socket) closed: the process
    /// died or the network cut it. The engine is gone; if it lives, it registers again.
    pub fn on_engine_disconnected(&mut self, route: &[u8], now: Duration) -> Vec<Action> {
        match self.by_route.get(route).copied() {
            Some(id) => self.on_engine_lost(id, "disconnected", now),
            None => Vec::new(),
        }
    }

    /// `engine` is gone for `reason`: its tasks are retried elsewhere or failed.
    pub fn on_engine_lost(&mut self, engine: EngineId, reason: &str, now: Duration) -> Vec<Action> {
        self.advance(now);
        let mut out = Vec::new();
        self.lose_engine(engine, reason, &mut out);
        out
    }

    /// A send to the client at `route` failed: stop sending it results (they stay stored, so
    /// the client can fetch them when it comes back).
    pub fn on_client_unreachable(&mut self, route: &[u8]) {
        if let Some(&idx) = self.route_index.get(route) {
            if let Some(slot) = self.routes.get_mut(idx as usize) {
                if slot.take().is_some() {
                    tracing::warn!(
                        "a client disconnected; its results are kept for fetching later"
                    );
                }
            }
        }
    }

    /// The status report as of `now`.
    pub fn status(&self, now: Duration) -> StatusReport {
        let a = &self.config.addresses;
        let controller = ControllerStatus {
            pid: self.config.pid,
            host: self.config.host.clone(),
            scheduler: self.config.scheduler.name().to_owned(),
            hwm: self.config.hwm.to_string(),
            engine_address: a.engine.clone().unwrap_or_default(),
            client_address: a.client.clone().unwrap_or_default(),
            heartbeat_address: a.heartbeat.clone().unwrap_or_default(),
            notify_address: a.notify.clone().unwrap_or_default(),
            uptime_s: now.saturating_sub(self.started).as_secs_f64(),
            clients: u32::try_from(self.clients.len()).unwrap_or(u32::MAX),
            instance: self.config.instance,
        };
        // Engines are stored by id, so this is already sorted.
        let engines = self
            .engines
            .iter()
            .filter(|e| e.alive)
            .map(|e| EngineStatus {
                id: e.id,
                host: e.host.clone(),
                pid: e.pid,
                state: if e.missed == 0 {
                    "alive"
                } else {
                    "unresponsive"
                }
                .to_owned(),
                outstanding: e.outstanding(),
                completed: e.completed,
                hwm: if e.limit == u32::MAX { 0 } else { e.limit },
            })
            .collect();
        let running: u64 = self.engines.iter().map(|e| e.running.len() as u64).sum();
        StatusReport {
            controller,
            engines,
            tasks: TaskCounts {
                queued: self.queued,
                running,
                done: self.done,
                failed: self.failed,
                stored: self.store.len() as u64,
                waiting: self.waiting,
            },
            dropped: self.dropped.clone(),
        }
    }

    /// Where the unfinished tasks are: per engine, queued for one, waiting on dependencies.
    pub fn queue_status(&self) -> QueueStatus {
        QueueStatus {
            engines: self
                .engines
                .iter()
                .filter(|e| e.alive)
                .map(|e| EngineQueue {
                    id: e.id,
                    outstanding: e.outstanding(),
                    completed: e.completed,
                    failed: e.failed,
                })
                .collect(),
            unassigned: self.queued,
            waiting: self.waiting,
        }
    }

    // ----- engines -----

    /// The id for a registration of a uuid not seen in this controller's life.
    fn new_engine_id(&mut self, hint: Option<EngineId>) -> Option<EngineId> {
        let len = u32::try_from(self.engines.len()).ok()?;
        if let Some(h) = hint {
            if h.0 < len && self.engines[h.0 as usize].uuid.is_empty() {
                return Some(h);
            }
            if h.0 >= len && h.0 - len <= MAX_ID_GAP {
                // Keep the ids in between for engines of the earlier controller.
                for n in len..=h.0 {
                    self.engines.push(Engine::blank(EngineId(n)));
                }
                return Some(h);
            }
            tracing::info!(
                "engine id {h} asked for by a returning engine is taken; giving it a new one"
            );
        }
        self.engines.push(Engine::blank(EngineId(len)));
        Some(EngineId(len))
    }

    fn register(&mut self, route: &[u8], reg: Registration, out: &mut Vec<Action>) {
        if reg.uuid.is_empty() {
            tracing::warn!("refused an engine registration with an empty uuid");
            out.push(Action::ToEngine {
                engine: EngineId(u32::MAX),
                route: route.to_vec(),
                msg: ToEngine::Refused {
                    reason: "the registration has an empty uuid; an engine must send a unique id"
                        .to_owned(),
                },
                payloads: Vec::new(),
            });
            return;
        }
        let id = match self.by_uuid.get(&reg.uuid) {
            Some(id) => *id,
            None => {
                let Some(id) = self.new_engine_id(reg.engine_id) else {
                    return;
                };
                self.engines[id.0 as usize].uuid = reg.uuid.clone();
                self.by_uuid.insert(reg.uuid.clone(), id);
                id
            }
        };
        let ping_seq = self.ping_seq;
        let hwm = self.config.hwm;
        let period_ms = ms(self.config.heartbeat_period);
        let e = &mut self.engines[id.0 as usize];
        let registered = ToEngine::Registered {
            engine_id: id,
            heartbeat_period_ms: period_ms,
        };
        if e.alive && e.route == route {
            // A repeated registration (an engine that lost sight of us for a while sends
            // one now and then): same session, nothing changes but the acknowledgement.
            tracing::debug!("engine {id} registered again; acknowledged");
            e.last_pong_seq = ping_seq;
            e.missed = 0;
            out.push(Action::ToEngine {
                engine: id,
                route: route.to_vec(),
                msg: registered,
                payloads: Vec::new(),
            });
            self.adopt_held(id, reg.held);
            self.update_free(id);
            return;
        }
        if e.route != route {
            if self.by_route.get(&e.route) == Some(&id) {
                self.by_route.remove(&e.route);
            }
            e.route = route.to_vec();
        }
        self.by_route.insert(route.to_vec(), id);
        let again = if e.alive {
            "re-registered"
        } else if e.pid != 0 || reg.engine_id == Some(id) {
            "came back"
        } else {
            "joined"
        };
        e.host = reg.host;
        e.pid = reg.pid;
        e.functions = reg.functions.iter().cloned().collect();
        e.function_list = reg.functions;
        e.slots = reg.slots.max(1);
        e.limit = limit_for(hwm, &e.estimate, e.slots);
        out.push(Action::ToEngine {
            engine: id,
            route: route.to_vec(),
            msg: registered,
            payloads: Vec::new(),
        });
        // Before `admit` schedules: what the engine holds counts towards its limit.
        self.adopt_held(id, reg.held);
        self.admit(id, again, out);
    }

    /// Counts the tasks engine `engine` says it holds in its own queue as running there: after
    /// a controller restart they are unknown here (placeholders until their client submits
    /// them again), or were submitted again and wait in the queue; either way they must not be
    /// handed to a second engine.
    fn adopt_held(&mut self, engine: EngineId, held: Vec<TaskId>) {
        if held.is_empty() || self.engines.get(engine.0 as usize).is_none() {
            return;
        }
        let mut adopted = 0usize;
        for tid in held {
            if self.store.contains_key(&tid) {
                // Finished already: the engine's second result will be ignored.
                continue;
            }
            match self.tasks.get_mut(&tid) {
                Some(task) if task.state == TaskState::Queued => {
                    task.state = TaskState::Running(engine);
                    task.epoch = task.epoch.wrapping_add(1);
                    self.queued = self.queued.saturating_sub(1);
                }
                // Running elsewhere (the first result counts) or waiting: leave it.
                Some(_) => continue,
                None => {
                    // A client of the previous life keeps its id; new clients must not get it.
                    self.next_client = self.next_client.max(tid.client().0.saturating_add(1));
                    self.next_seq += 1;
                    self.tasks.insert(tid, Task::held(self.next_seq, engine));
                }
            }
            self.engines[engine.0 as usize].running.insert(tid);
            adopted += 1;
        }
        if adopted > 0 {
            tracing::info!("engine {engine} holds {adopted} task(s) from before a controller restart; they run there");
        }
    }

    /// Makes engine `id` (whose registration details are recorded) alive and schedulable,
    /// and announces it.
    fn admit(&mut self, id: EngineId, how: &str, out: &mut Vec<Action>) {
        let ping_seq = self.ping_seq;
        let Some(e) = self.engines.get_mut(id.0 as usize) else {
            return;
        };
        if !e.alive {
            e.alive = true;
            self.alive += 1;
        }
        e.left = false;
        // Registration counts as an answer to every ping sent so far.
        e.last_pong_seq = ping_seq;
        e.missed = 0;
        tracing::info!(
            "engine {id} {how}: {} pid {} ({} function(s), {} slot(s))",
            e.host,
            e.pid,
            e.function_list.len(),
            e.slots
        );
        out.push(Action::Publish(Notification::EngineJoined(e.info())));
        self.update_free(id);
        // Tasks that waited for any engine at all may turn out impossible on this one.
        let mut deliveries = Deliveries::default();
        self.recheck_classes(&mut deliveries);
        self.schedule(out);
        self.deliver(deliveries, out);
    }

    fn results(
        &mut self,
        route: &[u8],
        results: Vec<TaskOutcome>,
        payloads: Vec<Vec<u8>>,
        out: &mut Vec<Action>,
    ) {
        let Some(id) = self.by_route.get(route).copied() else {
            // An engine of this controller's previous life, not registered again yet: its
            // results wait in the store for their clients to submit the tasks again.
            let mut deliveries = Deliveries::default();
            let mut kept = 0usize;
            for (outcome, payload) in results.into_iter().zip(payloads) {
                if self.keep_orphan(outcome, Arc::new(payload), &mut deliveries) {
                    kept += 1;
                }
            }
            tracing::info!(
                "kept {kept} result(s) from an engine not registered (yet) for their clients"
            );
            self.deliver(deliveries, out);
            return;
        };
        if !self.engines[id.0 as usize].alive {
            tracing::warn!(
                "dropped {} result(s) from engine {id}, which was declared gone (its tasks were retried or failed)",
                results.len()
            );
            return;
        }
        let track = matches!(self.config.hwm, Hwm::Auto);
        let mut deliveries = Deliveries::default();
        let mut payloads = payloads.into_iter();
        for mut outcome in results {
            // A short message is the engine's bug; its missing values read as empty.
            let payload = Arc::new(payloads.next().unwrap_or_default());
            let tid = outcome.id;
            match self.tasks.get(&tid).map(|t| t.state) {
                Some(TaskState::Running(on)) if on == id => {}
                // Unknown: it ran for this controller's previous life.
                None => {
                    outcome.engine = Some(id);
                    self.keep_orphan(outcome, payload, &mut deliveries);
                    continue;
                }
                _ => {
                    // Retried elsewhere or failed after this engine was thought lost, or a
                    // duplicate: the client already has (or will get) exactly one answer.
                    tracing::debug!("ignored a late result for task {tid} from engine {id}");
                    continue;
                }
            }
            let e = &mut self.engines[id.0 as usize];
            e.running.remove(&tid);
            if track {
                e.estimate.observe(outcome.elapsed_us);
            }
            outcome.engine = Some(id);
            if let Status::Err(err) = &outcome.status {
                e.failed += 1;
                if retryable(err.kind) && self.try_retry(tid, id) {
                    tracing::info!(
                        "task {tid} failed on engine {id} ({}); retrying it on another engine",
                        err.kind
                    );
                    continue;
                }
            } else {
                e.completed += 1;
            }
            let Some(task) = self.tasks.remove(&tid) else {
                continue;
            };
            self.finish(task.route, outcome, payload, &mut deliveries);
        }
        let e = &mut self.engines[id.0 as usize];
        e.limit = limit_for(self.config.hwm, &e.estimate, e.slots);
        self.update_free(id);
        // New work for the engine first: it idles while the results travel.
        self.schedule(out);
        self.deliver(deliveries, out);
    }

    /// Stores the result of a task this controller does not know (it ran for the previous
    /// life of the controller) until its client submits it again; false when it is known.
    fn keep_orphan(
        &mut self,
        outcome: TaskOutcome,
        payload: Payload,
        deliveries: &mut Deliveries,
    ) -> bool {
        let tid = outcome.id;
        if self.tasks.contains_key(&tid) || self.store.contains_key(&tid) {
            return false;
        }
        self.next_client = self.next_client.max(tid.client().0.saturating_add(1));
        self.finish(NO_ROUTE, outcome, payload, deliveries);
        true
    }

    fn lose_engine(&mut self, id: EngineId, reason: &str, out: &mut Vec<Action>) {
        let Some(e) = self.engines.get_mut(id.0 as usize) else {
            return;
        };
        if !e.alive {
            return;
        }
        e.alive = false;
        e.left = reason == "unregistered";
        e.missed = 0;
        self.alive -= 1;
        let host = e.host.clone();
        let mut lost: Vec<TaskId> = e.running.drain().collect();
        if reason == "unregistered" {
            tracing::info!("engine {id} on {host} left ({reason})");
        } else {
            tracing::warn!(
                "engine {id} on {host} lost ({reason}) with {} task(s) running",
                lost.len()
            );
        }
        self.update_free(id);
        // Requeue in submission order so that retries keep their relative order.
        lost.sort_by_key(|t| self.tasks.get(t).map_or(0, |t| t.seq));
        let mut deliveries = Deliveries::default();
        for tid in lost {
            if self.try_retry(tid, id) {
                tracing::info!("task {tid} will be retried on another engine");
                continue;
            }
            let Some(task) = self.tasks.remove(&tid) else {
                continue;
            };
            let message = if task.retries > 0 {
                format!(
                    "engine {id} on {host} was lost ({reason}) while running task {tid}, and no other registered engine can run it (already tried on: {})",
                    id_list(task.excluded.iter().copied().chain([id]))
                )
            } else {
                format!(
                    "engine {id} on {host} was lost ({reason}) while running task {tid}; submit it with retries > 0 to have it re-run elsewhere"
                )
            };
            let outcome = failure(tid, Some(id), ErrorKind::EngineLost, message);
            self.finish(task.route, outcome, Arc::default(), &mut deliveries);
        }
        out.push(Action::Publish(Notification::EngineLeft {
            id,
            reason: reason.to_owned(),
        }));
        // Fewer engines: some queued tasks may now have nowhere to run.
        self.recheck_classes(&mut deliveries);
        self.schedule(out);
        self.deliver(deliveries, out);
    }

    /// Sends `tid`, which failed on or was lost with `engine`, back to the queue with that
    /// engine blacklisted, if its retries allow and another engine can run it. False when
    /// it cannot be retried (nothing changed; the caller fails it).
    fn try_retry(&mut self, tid: TaskId, engine: EngineId) -> bool {
        let Some(task) = self.tasks.get(&tid) else {
            return false;
        };
        if task.retries == 0 || task.work.is_none() || task.payload.is_none() {
            return false;
        }
        let mut excluded = task.excluded.clone();
        if let Err(i) = excluded.binary_search(&engine) {
            excluded.insert(i, engine);
        }
        let key = ClassKey {
            function: task.work.as_ref().and_then(function_of).map(str::to_owned),
            targets: task.targets.clone(),
            excluded,
        };
        if self.check(&key).is_err() {
            return false;
        }
        let Ok(cid) = self.class_for(&key) else {
            return false;
        };
        let now = self.now;
        let Some(task) = self.tasks.get_mut(&tid) else {
            return false;
        };
        task.retries -= 1;
        task.excluded = key.excluded;
        task.state = TaskState::Queued;
        task.epoch = task.epoch.wrapping_add(1);
        let seq = task.seq;
        if let Some(limit) = task.timeout_ms {
            // Back in the queue: the start limit applies afresh.
            task.start_deadline = Some(now + Duration::from_millis(limit));
            let entry = (
                now + Duration::from_millis(limit),
                tid,
                task.epoch,
                TimerKind::Start,
            );
            self.timers.push(Reverse(entry));
        }
        if let Some(class) = self.classes[cid].as_mut() {
            class.queue.push_back((tid, seq));
            self.queued += 1;
        }
        true
    }

    fn update_free(&mut self, id: EngineId) {
        let Some(e) = self.engines.get_mut(id.0 as usize) else {
            return;
        };
        if let Some(key) = e.free_key.take() {
            self.free.remove(&key);
        }
        if let Some(key) = e.lru_key.take() {
            self.free_lru.remove(&key);
        }
        let outstanding = e.outstanding();
        let free = e.alive && outstanding < e.limit;
        if free {
            let key = (outstanding, e.last_assigned, id);
            self.free.insert(key);
            e.free_key = Some(key);
            if self.config.scheduler == SchedulerKind::Lru {
                let key = (e.last_assigned, id);
                self.free_lru.insert(key);
                e.lru_key = Some(key);
            }
        }
        if self.config.scheduler.is_random() {
            match (free, e.free_pos) {
                (true, None) => {
                    e.free_pos = Some(self.free_list.len());
                    self.free_list.push(id);
                }
                (false, Some(pos)) => {
                    e.free_pos = None;
                    self.free_list.swap_remove(pos);
                    if let Some(&moved) = self.free_list.get(pos) {
                        self.engines[moved.0 as usize].free_pos = Some(pos);
                    }
                }
                _ => {}
            }
        }
    }

    // ----- tasks -----

    fn submit(
        &mut self,
        route: &[u8],
        requests: Vec<TaskRequest>,
        payloads: Vec<Vec<u8>>,
        out: &mut Vec<Action>,
    ) {
        let route_idx = self.route_for(route);
        if !self.clients.contains_key(route) {
            // A client of this controller's previous life (it keeps its id across a restart
            // on the same ports): learn its id so that new clients get other ones.
            if let Some(req) = requests.first() {
                let id = req.id.client();
                self.clients.insert(route.to_vec(), id);
                self.next_client = self.next_client.max(id.0.saturating_add(1));
            }
        }
        let mut deliveries = Deliveries::default();
        let count_ok = payloads.len() == requests.len();
        let n_payloads = payloads.len();
        let mut payloads = payloads.into_iter();
        // Consecutive tasks nearly always share a class; look it up once per run of them.
        let mut cached: Option<(ClassKey, Result<usize, Refusal>)> = None;
        for req in requests {
            let payload = payloads.next().unwrap_or_default();
            let tid = req.id;
            if let Some(task) = self.tasks.get_mut(&tid) {
                // Submitted again: held by an engine across a controller restart (no client
                // yet), or sent twice by a client that could not tell whether the first one
                // arrived. It runs once; its result goes to the latest submitter.
                task.route = route_idx;
                continue;
            }
            if let Some(stored) = self.store.get(&tid) {
                // Finished already (for this controller's previous life, or asked again):
                // the stored result is the answer.
                deliveries.push(route_idx, stored.outcome.clone(), stored.payload.clone());
                continue;
            }
            if !count_ok {
                let message = format!(
                    "the submit message had {n_payloads} payload frame(s) for its tasks; each task needs exactly one (a client bug)"
                );
                let outcome = failure(tid, None, ErrorKind::BadArguments, message);
                self.finish(route_idx, outcome, Arc::default(), &mut deliveries);
                continue;
            }
            let mut targets = req.options.targets;
            targets.sort_unstable();
            targets.dedup();
            self.next_seq += 1;
            let mut task = Task {
                seq: self.next_seq,
                route: route_idx,
                work: Some(req.work),
                timeout_ms: req.options.timeout_ms,
                start_deadline: None,
                run_timeout_ms: req.options.run_timeout_ms.or(req.options.timeout_ms),
                targets,
                excluded: Vec::new(),
                retries: req.options.retries,
                payload: Some(Arc::new(payload)),
                state: TaskState::Queued,
                deps_left: 0,
                follows: !req.options.follow.is_empty(),
                follow_engine: None,
                epoch: 0,
            };
            if !req.options.after.is_empty() || !req.options.follow.is_empty() {
                match self.dependencies(tid, &mut task, req.options.after, req.options.follow) {
                    Err(message) => {
                        let outcome = failure(tid, None, ErrorKind::Dependency, message);
                        self.finish(route_idx, outcome, Arc::default(), &mut deliveries);
                        continue;
                    }
                    Ok(pending) if !pending.is_empty() => {
                        task.state = TaskState::Waiting;
                        task.deps_left = u32::try_from(pending.len()).unwrap_or(u32::MAX);
                        for (dep, follow) in pending {
                            self.dependents.entry(dep).or_default().push((tid, follow));
                        }
                        self.waiting += 1;
                        self.arm_start_timer(tid, &mut task);
                        self.tasks.insert(tid, task);
                        continue;
                    }
                    Ok(_) => {}
                }
            }
            if task.follows {
                // Every task it follows had finished already.
                self.arm_start_timer(tid, &mut task);
                self.tasks.insert(tid, task);
                if let Err(outcome) = self.release(tid) {
                    let outcome = *outcome;
                    self.tasks.remove(&tid);
                    self.finish(route_idx, outcome, Arc::default(), &mut deliveries);
                }
                continue;
            }
            let function = task.work.as_ref().and_then(function_of);
            let hit = matches!(&cached, Some((k, _)) if k.function.as_deref() == function && k.targets == task.targets);
            if !hit {
                let key = ClassKey {
                    function: function.map(str::to_owned),
                    targets: task.targets.clone(),
                    excluded: Vec::new(),
                };
                let class = self.class_for(&key);
                cached = Some((key, class));
            }
            let Some((_, class)) = &cached else {
                continue;
            };
            match class {
                Ok(cid) => {
                    let cid = *cid;
                    let seq = task.seq;
                    self.arm_start_timer(tid, &mut task);
                    self.tasks.insert(tid, task);
                    if let Some(class) = self.classes.get_mut(cid).and_then(Option::as_mut) {
                        class.queue.push_back((tid, seq));
                        self.queued += 1;
                    }
                }
                Err((kind, message)) => {
                    let outcome = failure(tid, None, *kind, message.clone());
                    self.finish(route_idx, outcome, Arc::default(), &mut deliveries);
                }
            }
        }
        self.schedule(out);
        self.deliver(deliveries, out);
    }

    /// Checks the dependencies of a new task: the ones not finished yet (with whether the
    /// task follows them), or why they can never be met.
    fn dependencies(
        &self,
        tid: TaskId,
        task: &mut Task,
        after: Vec<TaskId>,
        follow: Vec<TaskId>,
    ) -> Result<Vec<(TaskId, bool)>, String> {
        let mut deps: Vec<(TaskId, bool)> = after
            .into_iter()
            .map(|d| (d, false))
            .chain(follow.into_iter().map(|d| (d, true)))
            .collect();
        // One entry per task, following it if any mention does.
        deps.sort_unstable_by_key(|&(d, f)| (d, Reverse(f)));
        deps.dedup_by_key(|(d, _)| *d);
        let mut pending = Vec::new();
        for (dep, follows) in deps {
            let how = if follows { "follows" } else { "runs after" };
            if dep == tid {
                return Err(format!("task {tid} depends on itself"));
            }
            if let Some(stored) = self.store.get(&dep) {
                if !matches!(stored.outcome.status, Status::Ok) {
                    return Err(format!(
                        "task {tid} {how} task {dep}, which {}",
                        describe(&stored.outcome)
                    ));
                }
                if follows {
                    note_follow(tid, task, dep, stored.outcome.engine)?;
                }
            } else if self.tasks.contains_key(&dep) {
                pending.push((dep, follows));
            } else {
                return Err(format!(
                    "task {tid} {how} task {dep}, which this controller does not know (never submitted, purged, or sent to an earlier controller)"
                ));
            }
        }
        Ok(pending)
    }

    /// Queues a task whose dependencies have all finished (narrowing it to the engine its
    /// `follow` tasks ran on). The error is the outcome it fails with instead.
    fn release(&mut self, tid: TaskId) -> Result<(), Box<TaskOutcome>> {
        let Some(task) = self.tasks.get(&tid) else {
            return Ok(());
        };
        let mut targets = task.targets.clone();
        if task.follows {
            let Some(engine) = task.follow_engine else {
                let message =
                    format!("task {tid} follows tasks that did not report where they ran");
                return Err(Box::new(failure(tid, None, ErrorKind::Dependency, message)));
            };
            if !targets.is_empty() && targets.binary_search(&engine).is_err() {
                let message = format!(
                    "task {tid} follows tasks that ran on engine {engine}, which is not among its targets ({})",
                    id_list(targets.iter().copied())
                );
                return Err(Box::new(failure(tid, None, ErrorKind::Dependency, message)));
            }
            if !self.engines.get(engine.0 as usize).is_some_and(|e| e.alive) {
                let message = format!(
                    "task {tid} follows tasks that ran on engine {engine}, which is no longer registered"
                );
                return Err(Box::new(failure(tid, None, ErrorKind::Dependency, message)));
            }
            targets = vec![engine];
        }
        let key = ClassKey {
            function: task.work.as_ref().and_then(function_of).map(str::to_owned),
            targets,
            excluded: task.excluded.clone(),
        };
        match self.class_for(&key) {
            Ok(cid) => {
                let Some(task) = self.tasks.get_mut(&tid) else {
                    return Ok(());
                };
                task.targets = key.targets;
                task.state = TaskState::Queued;
                let seq = task.seq;
                if let Some(class) = self.classes[cid].as_mut() {
                    class.queue.push_back((tid, seq));
                    self.queued += 1;
                }
                Ok(())
            }
            Err((kind, message)) => Err(Box::new(failure(tid, None, kind, message))),
        }
    }

    fn arm_start_timer(&mut self, tid: TaskId, task: &mut Task) {
        if let Some(limit) = task.timeout_ms {
            let when = self.now + Duration::from_millis(limit);
            task.start_deadline = Some(when);
            self.timers
                .push(Reverse((when, tid, task.epoch, TimerKind::Start)));
        }
    }

    /// Fails the tasks whose time limits passed.
    fn expire_timers(&mut self, now: Duration, out: &mut Vec<Action>) {
        let mut deliveries = Deliveries::default();
        let mut freed = false;
        while let Some(&Reverse((when, tid, epoch, kind))) = self.timers.peek() {
            if when > now {
                break;
            }
            self.timers.pop();
            let Some(task) = self.tasks.get(&tid) else {
                continue;
            };
            if task.epoch != epoch {
                continue;
            }
            let limit = match kind {
                TimerKind::Start => task.timeout_ms,
                TimerKind::Run => task.run_timeout_ms,
            }
            .unwrap_or(0);
            match (kind, task.state) {
                (TimerKind::Start, TaskState::Waiting | TaskState::Queued) => {
                    let state = task.state;
                    let Some(task) = self.tasks.remove(&tid) else {
                        continue;
                    };
                    let why = if state == TaskState::Waiting {
                        self.waiting = self.waiting.saturating_sub(1);
                        "its dependencies had not finished"
                    } else {
                        self.queued = self.queued.saturating_sub(1);
                        "no engine could take it"
                    };
                    let message = format!(
                        "task {tid} did not start within its time limit of {limit} ms ({why})"
                    );
                    let outcome = failure(tid, None, ErrorKind::Timeout, message);
                    self.finish(task.route, outcome, Arc::default(), &mut deliveries);
                }
                (TimerKind::Run, TaskState::Running(engine)) => {
                    if let Some(e) = self.engines.get_mut(engine.0 as usize) {
                        e.running.remove(&tid);
                        e.failed += 1;
                    }
                    self.update_free(engine);
                    freed = true;
                    if self.try_retry(tid, engine) {
                        tracing::warn!("task {tid} ran past its time limit on engine {engine}, which did not report; retrying it elsewhere");
                        continue;
                    }
                    let Some(task) = self.tasks.remove(&tid) else {
                        continue;
                    };
                    let message = format!(
                        "task {tid} ran longer than its time limit of {limit} ms on engine {engine}, which did not stop it or report back"
                    );
                    let outcome = failure(tid, Some(engine), ErrorKind::Timeout, message);
                    self.finish(task.route, outcome, Arc::default(), &mut deliveries);
                }
                _ => {}
            }
        }
        if freed || !deliveries.by_route.is_empty() {
            self.schedule(out);
        }
        self.deliver(deliveries, out);
    }

    fn abort(&mut self, route: &[u8], ids: Vec<TaskId>, out: &mut Vec<Action>) {
        let mut aborted = Vec::new();
        let mut running = Vec::new();
        let mut finished = Vec::new();
        let mut unknown = Vec::new();
        let mut deliveries = Deliveries::default();
        for id in ids {
            match self.tasks.get(&id).map(|t| t.state) {
                Some(TaskState::Running(_)) => running.push(id),
                Some(state) => {
                    let Some(task) = self.tasks.remove(&id) else {
                        continue;
                    };
                    // Its queue entry stays behind and is skipped.
                    if state == TaskState::Waiting {
                        self.waiting = self.waiting.saturating_sub(1);
                    } else {
                        self.queued = self.queued.saturating_sub(1);
                    }
                    let message = format!("task {id} was aborted before it started");
                    let outcome = failure(id, None, ErrorKind::Aborted, message);
                    self.finish(task.route, outcome, Arc::default(), &mut deliveries);
                    aborted.push(id);
                }
                None if self.store.contains_key(&id) => finished.push(id),
                None => unknown.push(id),
            }
        }
        if !aborted.is_empty() {
            tracing::info!("aborted {} queued task(s)", aborted.len());
        }
        out.push(Action::ToClient {
            route: route.to_vec(),
            msg: ToClient::Aborted {
                aborted,
                running,
                finished,
                unknown,
            },
            payloads: Vec::new(),
        });
        self.deliver(deliveries, out);
    }

    /// The class for `key`, created if needed; an error when no registered engine can ever
    /// run its tasks.
    fn class_for(&mut self, key: &ClassKey) -> Result<usize, Refusal> {
        if let Some(&cid) = self.class_index.get(key) {
            return Ok(cid);
        }
        self.check(key)?;
        let class = Class {
            key: key.clone(),
            queue: VecDeque::new(),
        };
        let cid = match self.spare_classes.pop() {
            Some(cid) => {
                self.classes[cid] = Some(class);
                cid
            }
            None => {
                self.classes.push(Some(class));
                self.classes.len() - 1
            }
        };
        self.class_index.insert(key.clone(), cid);
        Ok(cid)
    }

    fn remove_class(&mut self, cid: usize) {
        if let Some(class) = self.classes.get_mut(cid).and_then(Option::take) {
            self.class_index.remove(&class.key);
            self.spare_classes.push(cid);
        }
    }

    /// Whether tasks of `key` can ever run on the engines registered now. With no engine
    /// registered at all they wait (engines may be starting).
    fn check(&self, key: &ClassKey) -> Result<(), Refusal> {
        if self.alive == 0 {
            return Ok(());
        }
        let alive = || self.engines.iter().filter(|e| e.alive);
        let pool: Vec<&Engine> = if key.targets.is_empty() {
            alive().collect()
        } else {
            alive()
                .filter(|e| key.targets.binary_search(&e.id).is_ok())
                .collect()
        };
        if pool.is_empty() {
            return Err((
                ErrorKind::Unschedulable,
                format!(
                    "target engine(s) {} are not registered (registered engines: {})",
                    id_list(key.targets.iter().copied()),
                    id_list(alive().map(|e| e.id))
                ),
            ));
        }
        let offers = |e: &Engine| {
            key.function
                .as_ref()
                .is_none_or(|f| e.functions.contains(f))
        };
        if let Some(f) = &key.function {
            if !pool.iter().any(|e| offers(e)) {
                let offered: BTreeSet<&str> = pool
                    .iter()
                    .flat_map(|e| e.function_list.iter().map(String::as_str))
                    .collect();
                let offered = if offered.is_empty() {
                    "none (only commands)".to_owned()
                } else {
                    offered.into_iter().collect::<Vec<_>>().join(", ")
                };
                let message = if key.targets.is_empty() {
                    format!("no registered engine offers function {f:?}; offered: {offered}")
                } else {
                    format!(
                        "none of the target engines {} offers function {f:?}; they offer: {offered}",
                        id_list(pool.iter().map(|e| e.id))
                    )
                };
                return Err((ErrorKind::UnknownFunction, message));
            }
        }
        if !pool
            .iter()
            .any(|e| offers(e) && key.excluded.binary_search(&e.id).is_err())
        {
            return Err((
                ErrorKind::EngineLost,
                format!(
                    "it already failed on or lost engine(s) {}, and no other registered engine can run it",
                    id_list(key.excluded.iter().copied())
                ),
            ));
        }
        Ok(())
    }

    /// Fails the queued tasks of every class that can no longer run anywhere.
    fn recheck_classes(&mut self, deliveries: &mut Deliveries) {
        for cid in 0..self.classes.len() {
            let Some(class) = &self.classes[cid] else {
                continue;
            };
            let Err((kind, message)) = self.check(&class.key) else {
                continue;
            };
            let Some(class) = self.classes[cid].take() else {
                continue;
            };
            self.class_index.remove(&class.key);
            self.spare_classes.push(cid);
            for (tid, seq) in class.queue {
                if !self.is_queued(tid, seq) {
                    continue;
                }
                self.queued = self.queued.saturating_sub(1);
                if let Some(task) = self.tasks.remove(&tid) {
                    let engine = task.excluded.last().copied();
                    let message = format!("task {tid} cannot run: {message}");
                    let outcome = failure(tid, engine, kind, message);
                    self.finish(task.route, outcome, Arc::default(), deliveries);
                }
            }
        }
    }

    /// Whether a queue entry `(tid, seq)` still stands for a queued task.
    fn is_queued(&self, tid: TaskId, seq: u64) -> bool {
        matches!(self.tasks.get(&tid), Some(t) if t.seq == seq && t.state == TaskState::Queued)
    }

    /// Whether engine `id` may run tasks of `key` (ignoring its load).
    fn eligible(&self, id: EngineId, key: &ClassKey) -> bool {
        let Some(e) = self.engines.get(id.0 as usize) else {
            return false;
        };
        e.alive
            && (key.targets.is_empty() || key.targets.binary_search(&id).is_ok())
            && key.excluded.binary_search(&id).is_err()
            && key
                .function
                .as_ref()
                .is_none_or(|f| e.functions.contains(f))
    }

    /// A free engine eligible for `key`, uniformly at random: a few draws from the free list
    /// (exact whenever one hits), then an exact draw among all of them.
    fn draw_free(&mut self, key: &ClassKey) -> Option<EngineId> {
        if self.free_list.is_empty() {
            return None;
        }
        for _ in 0..8 {
            let id = self.free_list[self.rng.random_range(0..self.free_list.len())];
            if self.eligible(id, key) {
                return Some(id);
            }
        }
        let candidates = self.free_candidates(key);
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[self.rng.random_range(0..candidates.len())])
    }

    /// Every free engine eligible for `key` (scanning only the targets when it has some).
    fn free_candidates(&self, key: &ClassKey) -> Vec<EngineId> {
        let free = |id: &EngineId| {
            self.engines
                .get(id.0 as usize)
                .is_some_and(|e| e.free_pos.is_some() || e.free_key.is_some())
        };
        if key.targets.is_empty() {
            self.free_list
                .iter()
                .copied()
                .filter(|&id| self.eligible(id, key))
                .collect()
        } else {
            key.targets
                .iter()
                .copied()
                .filter(|id| free(id) && self.eligible(*id, key))
                .collect()
        }
    }

    /// `weighted`'s draw: by rejection against the lightest free load (exact when it
    /// accepts), else exactly among all candidates.
    fn draw_weighted(&mut self, key: &ClassKey) -> Option<EngineId> {
        let lightest = self.free.first()?.0;
        let bound = scheduler::weight(lightest);
        for _ in 0..16 {
            let id = self.draw_free(key)?;
            let w = scheduler::weight(self.engines[id.0 as usize].outstanding());
            if self.rng.random::<f64>() * bound < w {
                return Some(id);
            }
        }
        let candidates = self.free_candidates(key);
        let weights: Vec<f64> = candidates
            .iter()
            .map(|id| scheduler::weight(self.engines[id.0 as usize].outstanding()))
            .collect();
        scheduler::weighted_index(&weights, &mut self.rng).map(|i| candidates[i])
    }

    /// The engine the scheduler picks for the head of class `cid`, if any can take it now.
    fn pick_for(&mut self, cid: usize) -> Option<EngineId> {
        let key = self.classes.get(cid)?.as_ref()?.key.clone();
        let load = |core: &Core, id: EngineId| core.engines[id.0 as usize].load(true);
        let chosen = match self.config.scheduler {
            // The indexes are in each scheme's order of preference: the first eligible wins.
            SchedulerKind::LeastLoad => self
                .free
                .iter()
                .map(|&(_, _, id)| id)
                .find(|&id| self.eligible(id, &key)),
            SchedulerKind::Lru => self
                .free_lru
                .iter()
                .map(|&(_, id)| id)
                .find(|&id| self.eligible(id, &key)),
            SchedulerKind::PlainRandom => self.draw_free(&key),
            SchedulerKind::TwoBin => {
                let a = self.draw_free(&key)?;
                let b = self.draw_free(&key)?;
                Some(scheduler::twobin_choice(&load(self, a), &load(self, b)))
            }
            SchedulerKind::Weighted => {
                let a = self.draw_weighted(&key)?;
                let b = self.draw_weighted(&key)?;
                Some(scheduler::weighted_choice(&load(self, a), &load(self, b)))
            }
        };
        #[cfg(test)]
        {
            // The fast paths must agree with the pure definitions.
            let loads = self.loads(&key);
            if self.config.scheduler.is_random() {
                let any = loads.iter().any(EngineLoad::can_take);
                assert_eq!(chosen.is_some(), any, "{:?}", self.config.scheduler);
                if let Some(id) = chosen {
                    assert!(loads[id.0 as usize].can_take());
                }
            } else {
                let mut rng = SmallRng::seed_from_u64(0);
                assert_eq!(chosen, self.config.scheduler.pick(&loads, &mut rng));
            }
        }
        chosen
    }

    /// Every engine's load as the scheduler sees it for tasks of `key` (the input of the
    /// pure schedulers; the core uses its indexes instead).
    #[cfg(test)]
    fn loads(&self, key: &ClassKey) -> Vec<EngineLoad> {
        self.engines
            .iter()
            .map(|e| e.load(self.eligible(e.id, key)))
            .collect()
    }

    /// One scheduling pass: hands queued tasks to engines with room, oldest head first, and
    /// sends each engine its share as one message.
    fn schedule(&mut self, out: &mut Vec<Action>) {
        if self.queued == 0 || self.free.is_empty() {
            return;
        }
        let mut heads: BinaryHeap<Reverse<(u64, usize)>> = self
            .classes
            .iter()
            .enumerate()
            .filter_map(|(cid, c)| {
                let (_, seq) = c.as_ref()?.queue.front()?;
                Some(Reverse((*seq, cid)))
            })
            .collect();
        let mut batches: Vec<(EngineId, Vec<Assignment>, Vec<Payload>)> = Vec::new();
        let mut batch_of: HashMap<EngineId, usize> = HashMap::new();
        let now = self.now;
        while let Some(Reverse((_, cid))) = heads.pop() {
            if self.free.is_empty() {
                break;
            }
            // Skip entries of tasks no longer queued (aborted, timed out).
            while let Some(&(tid, seq)) = self.classes[cid].as_ref().and_then(|c| c.queue.front()) {
                if self.is_queued(tid, seq) {
                    break;
                }
                if let Some(class) = self.classes[cid].as_mut() {
                    class.queue.pop_front();
                }
            }
            let Some(&(_, head_seq)) = self.classes[cid].as_ref().and_then(|c| c.queue.front())
            else {
                self.remove_class(cid);
                continue;
            };
            if heads.peek().is_some_and(|Reverse((s, _))| *s < head_seq) {
                // Skipping moved this class behind another; take its turn in order.
                heads.push(Reverse((head_seq, cid)));
                continue;
            }
            // Capacity only shrinks during a pass, so a class with no engine now is done.
            let Some(eid) = self.pick_for(cid) else {
                continue;
            };
            let Some(class) = self.classes[cid].as_mut() else {
                continue;
            };
            let Some((tid, _)) = class.queue.pop_front() else {
                continue;
            };
            match class.queue.front().copied() {
                Some((_, next)) => heads.push(Reverse((next, cid))),
                None => self.remove_class(cid),
            }
            self.queued = self.queued.saturating_sub(1);
            let Some(task) = self.tasks.get_mut(&tid) else {
                continue;
            };
            // Keep a copy only if it may have to be sent again.
            let (work, payload) = if task.retries > 0 {
                (task.work.clone(), task.payload.clone())
            } else {
                (task.work.take(), task.payload.take())
            };
            let Some(work) = work else {
                continue;
            };
            task.state = TaskState::Running(eid);
            task.epoch = task.epoch.wrapping_add(1);
            // The run timer is armed when the engine reports the start (`on_started`): the
            // task may first wait in the engine's own queue, for as long as the task ahead runs.
            let start_within_ms = task.start_deadline.map(|deadline| {
                let left = deadline.saturating_sub(now).as_millis();
                u64::try_from(left).unwrap_or(u64::MAX).max(1)
            });
            let assignment = Assignment {
                id: tid,
                work,
                timeout_ms: task.run_timeout_ms,
                start_within_ms,
            };
            self.assign_stamp += 1;
            let e = &mut self.engines[eid.0 as usize];
            e.running.insert(tid);
            e.last_assigned = self.assign_stamp;
            self.update_free(eid);
            let b = *batch_of.entry(eid).or_insert_with(|| {
                batches.push((eid, Vec::new(), Vec::new()));
                batches.len() - 1
            });
            batches[b].1.push(assignment);
            batches[b].2.push(payload.unwrap_or_default());
        }
        for (eid, tasks, payloads) in batches {
            out.push(Action::ToEngine {
                engine: eid,
                route: self.engines[eid.0 as usize].route.clone(),
                msg: ToEngine::Tasks { tasks },
                payloads,
            });
        }
    }

    /// Records a finished task: counted, stored, and queued for delivery to its client; then
    /// settles the tasks waiting for it (a failure fails them in turn).
    fn finish(
        &mut self,
        route: u32,
        outcome: TaskOutcome,
        payload: Payload,
        deliveries: &mut Deliveries,
    ) {
        let mut pending = vec![(route, outcome, payload)];
        while let Some((route, outcome, payload)) = pending.pop() {
            let ok = matches!(outcome.status, Status::Ok);
            if ok {
                self.done += 1;
            } else {
                self.failed += 1;
            }
            if let Some(dependents) = self.dependents.remove(&outcome.id) {
                for (dependent, follows) in dependents {
                    if let Some(failed) = self.settle(dependent, &outcome, follows) {
                        pending.push(failed);
                    }
                }
            }
            self.store.insert(
                outcome.id,
                Stored {
                    outcome: outcome.clone(),
                    payload: payload.clone(),
                },
            );
            deliveries.push(route, outcome, payload);
        }
    }

    /// Dependency `done` of waiting task `tid` finished: counts it down, and queues the task
    /// when it was the last. Returns the task's failure when it can no longer run.
    fn settle(
        &mut self,
        tid: TaskId,
        done: &TaskOutcome,
        follows: bool,
    ) -> Option<(u32, TaskOutcome, Payload)> {
        let task = self.tasks.get_mut(&tid)?;
        if task.state != TaskState::Waiting {
            return None;
        }
        let how = if follows { "follows" } else { "runs after" };
        let mut verdict = if matches!(done.status, Status::Ok) {
            Ok(())
        } else {
            Err(format!(
                "task {tid} {how} task {}, which {}",
                done.id,
                describe(done)
            ))
        };
        if verdict.is_ok() && follows {
            verdict = note_follow(tid, task, done.id, done.engine);
        }
        if verdict.is_ok() {
            task.deps_left = task.deps_left.saturating_sub(1);
            if task.deps_left > 0 {
                return None;
            }
        }
        self.waiting = self.waiting.saturating_sub(1);
        let outcome = match verdict {
            Err(message) => failure(tid, None, ErrorKind::Dependency, message),
            Ok(()) => match self.release(tid) {
                Ok(()) => return None,
                Err(outcome) => *outcome,
            },
        };
        let task = self.tasks.remove(&tid)?;
        Some((task.route, outcome, Arc::default()))
    }

    fn deliver(&self, deliveries: Deliveries, out: &mut Vec<Action>) {
        for (idx, results, payloads) in deliveries.by_route {
            // Clients that went away get nothing; their results stay in the store.
            if let Some(Some(route)) = self.routes.get(idx as usize) {
                out.push(Action::ToClient {
                    route: route.clone(),
                    msg: ToClient::Results { results },
                    payloads,
                });
            }
        }
    }

    /// A client connection whose sends failed and that speaks again is reachable again.
    fn revive_route(&mut self, route: &[u8]) {
        if let Some(&idx) = self.route_index.get(route) {
            if let Some(slot @ None) = self.routes.get_mut(idx as usize) {
                *slot = Some(route.to_vec());
            }
        }
    }

    /// The index of the client connection `route`, registered if new.
    fn route_for(&mut self, route: &[u8]) -> u32 {
        if let Some(&idx) = self.route_index.get(route) {
            return idx;
        }
        let idx = u32::try_from(self.routes.len()).unwrap_or(u32::MAX);
        self.routes.push(Some(route.to_vec()));
        self.route_index.insert(route.to_vec(), idx);
        idx
    }
}

/// Records that `task` (id `tid`) follows `dep`, which ran on `engine`: all the tasks it
/// follows must have run on one engine.
fn note_follow(
    tid: TaskId,
    task: &mut Task,
    dep: TaskId,
    engine: Option<EngineId>,
) -> Result<(), String> {
    let Some(engine) = engine else {
        return Err(format!(
            "task {tid} follows task {dep}, which did not run on any engine"
        ));
    };
    match task.follow_engine {
        None => {
            task.follow_engine = Some(engine);
            Ok(())
        }
        Some(e) if e == engine => Ok(()),
        Some(e) => Err(format!(
            "task {tid} follows tasks that ran on different engines ({e} and {engine}), so no engine can run it"
        )),
    }
}

fn limit_for(hwm: Hwm, estimate: &LoadEstimate, slots: u32) -> u32 {
    match hwm {
        Hwm::Limit(0) => u32::MAX,
        Hwm::Limit(n) => n,
        Hwm::Auto => estimate.limit(slots),
    }
}

#[cfg(test)]
mod tests;
