//! The controller's sans-IO core: every rule of the hub, with no sockets and no clock.
//!
//! Events go in through the `on_*` methods, each given the current time as a [`Duration`]
//! since some fixed start (a fake clock in tests); effects come out as a list of [`Action`]s
//! for the socket loop to perform. The loop calls [`Core::on_tick`] when [`Core::next_tick`]
//! is due.
//!
//! Queued tasks wait in *classes*: one FIFO per distinct (function, targets, blacklist), so a
//! scheduling pass looks at each class's head only and never scans the queue. Engines that
//! can take more work sit in an ordered set keyed by `(outstanding, last assigned, id)`, which
//! is exactly `leastload`'s order of preference: the first eligible member is the choice.
//! A pass runs after each event that can free a slot or add work, and everything it gives one
//! engine goes out as one `Tasks` message.

#[cfg(test)]
use crate::scheduler::EngineLoad;
use crate::scheduler::{Hwm, LoadEstimate, SchedulerKind};
use protocol::{
    Assignment, ClientId, ControllerStatus, DropCounts, EngineId, EngineInfo, EngineStatus,
    ErrorKind, FromClient, FromEngine, Heartbeat, Notification, Registration, Status, StatusReport,
    TaskCounts, TaskError, TaskId, TaskOutcome, TaskRequest, ToClient, ToEngine, Work,
};
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
        }
    }
}

#[derive(Debug)]
struct Engine {
    id: EngineId,
    uuid: String,
    host: String,
    pid: u32,
    function_list: Vec<String>,
    functions: HashSet<String>,
    slots: u32,
    route: Route,
    alive: bool,
    running: HashSet<TaskId>,
    completed: u64,
    last_assigned: u64,
    last_pong_seq: u64,
    missed: u32,
    estimate: LoadEstimate,
    limit: u32,
    /// Its key in `Core::free` while it can take more tasks.
    free_key: Option<FreeKey>,
}

impl Engine {
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
    /// Engines it was lost on, sorted.
    excluded: Vec<EngineId>,
}

#[derive(Debug)]
struct Class {
    key: ClassKey,
    queue: VecDeque<TaskId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskState {
    Queued,
    Running(EngineId),
}

#[derive(Debug)]
struct Task {
    /// Submission order, for fairness between classes.
    seq: u64,
    /// Index into `Core::routes` of the client connection that submitted it.
    route: u32,
    /// Kept while queued, and while running only if it may be retried.
    work: Option<Work>,
    timeout_ms: Option<u64>,
    targets: Vec<EngineId>,
    excluded: Vec<EngineId>,
    retries: u32,
    /// Like `work`.
    payload: Option<Payload>,
    state: TaskState,
}

#[derive(Debug)]
struct Stored {
    outcome: TaskOutcome,
    payload: Payload,
}

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
    engines: Vec<Engine>,
    by_uuid: HashMap<String, EngineId>,
    by_route: HashMap<Route, EngineId>,
    free: BTreeSet<FreeKey>,
    alive: usize,
    assign_stamp: u64,

    tasks: HashMap<TaskId, Task>,
    next_seq: u64,
    classes: Vec<Option<Class>>,
    class_index: HashMap<ClassKey, usize>,
    spare_classes: Vec<usize>,
    queued: u64,

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

impl Core {
    /// A core with no engines, clients or tasks, started at `now`.
    pub fn new(mut config: CoreConfig, now: Duration) -> Core {
        config.heartbeat_period = config.heartbeat_period.max(Duration::from_millis(1));
        config.heartbeat_misses = config.heartbeat_misses.max(1);
        let next_ping = now + config.heartbeat_period;
        Core {
            config,
            started: now,
            engines: Vec::new(),
            by_uuid: HashMap::new(),
            by_route: HashMap::new(),
            free: BTreeSet::new(),
            alive: 0,
            assign_stamp: 0,
            tasks: HashMap::new(),
            next_seq: 0,
            classes: Vec::new(),
            class_index: HashMap::new(),
            spare_classes: Vec::new(),
            queued: 0,
            store: HashMap::new(),
            done: 0,
            failed: 0,
            clients: HashMap::new(),
            next_client: 1,
            routes: Vec::new(),
            route_index: HashMap::new(),
            ping_seq: 0,
            next_ping,
            dropped: DropCounts::default(),
        }
    }

    /// When [`Core::on_tick`] is next due.
    pub fn next_tick(&self) -> Duration {
        self.next_ping
    }

    /// Records the sockets' drop counters, for status reports.
    pub fn set_dropped(&mut self, dropped: DropCounts) {
        self.dropped = dropped;
    }

    /// A message from an engine's task socket, sent from `route`.
    pub fn on_engine(
        &mut self,
        route: &[u8],
        msg: FromEngine,
        payloads: Vec<Vec<u8>>,
        now: Duration,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        match msg {
            FromEngine::Register(reg) => self.register(route, reg, &mut out),
            FromEngine::Results { results } => self.results(route, results, payloads, &mut out),
            FromEngine::Unregister => match self.by_route.get(route).copied() {
                Some(id) => self.lose_engine(id, "unregistered", &mut out),
                None => tracing::warn!("unregister from an unknown engine; ignored"),
            },
        }
        // `now` is part of every event for symmetry; task timeouts will use it.
        let _ = now;
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
                    ToClient::Welcome { client_id, engines },
                    Vec::new(),
                );
            }
            FromClient::Submit { tasks } => self.submit(route, tasks, payloads, &mut out),
            FromClient::Status => reply(
                &mut out,
                ToClient::Status(Box::new(self.status(now))),
                Vec::new(),
            ),
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
        let _ = now;
        let Heartbeat::Pong { seq, uuid } = msg else {
            tracing::debug!("ping received by the controller; ignored");
            return Vec::new();
        };
        let id = self.by_uuid.get(&uuid).copied().or_else(|| {
            std::str::from_utf8(route)
                .ok()
                .and_then(|u| self.by_uuid.get(u).copied())
        });
        if let Some(e) = id.and_then(|id| self.engines.get_mut(id.0 as usize)) {
            // A pong from the future is forged or from another controller's life.
            if e.alive && seq <= self.ping_seq {
                e.last_pong_seq = e.last_pong_seq.max(seq);
                e.missed = 0;
            }
        }
        Vec::new()
    }

    /// Time passes: sends heartbeat pings when due and declares silent engines dead.
    pub fn on_tick(&mut self, now: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        if now < self.next_ping {
            return out;
        }
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
            self.lose_engine(id, "heartbeat", &mut out);
        }
        self.ping_seq += 1;
        for e in self.engines.iter().filter(|e| e.alive) {
            out.push(Action::Ping {
                engine: e.id,
                route: e.uuid.as_bytes().to_vec(),
                seq: self.ping_seq,
            });
        }
        out
    }

    /// A send to `engine` failed because it is no longer connected: it is gone.
    pub fn on_engine_unreachable(&mut self, engine: EngineId, now: Duration) -> Vec<Action> {
        self.on_engine_lost(engine, "unreachable", now)
    }

    /// `engine` is gone for `reason` (a socket monitor's disconnect event, for example): its
    /// tasks are retried elsewhere or failed.
    pub fn on_engine_lost(&mut self, engine: EngineId, reason: &str, now: Duration) -> Vec<Action> {
        let _ = now;
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
            },
            dropped: self.dropped.clone(),
        }
    }

    // ----- engines -----

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
                let Ok(n) = u32::try_from(self.engines.len()) else {
                    return;
                };
                let id = EngineId(n);
                self.engines.push(Engine {
                    id,
                    uuid: reg.uuid.clone(),
                    host: String::new(),
                    pid: 0,
                    function_list: Vec::new(),
                    functions: HashSet::new(),
                    slots: 1,
                    route: Vec::new(),
                    alive: false,
                    running: HashSet::new(),
                    completed: 0,
                    last_assigned: 0,
                    last_pong_seq: 0,
                    missed: 0,
                    estimate: LoadEstimate::default(),
                    limit: 1,
                    free_key: None,
                });
                self.by_uuid.insert(reg.uuid.clone(), id);
                id
            }
        };
        let ping_seq = self.ping_seq;
        let hwm = self.config.hwm;
        let e = &mut self.engines[id.0 as usize];
        if e.route != route {
            if self.by_route.get(&e.route) == Some(&id) {
                self.by_route.remove(&e.route);
            }
            e.route = route.to_vec();
        }
        self.by_route.insert(route.to_vec(), id);
        let again = if e.alive { "re-registered" } else { "joined" };
        if !e.alive {
            e.alive = true;
            self.alive += 1;
        }
        e.host = reg.host;
        e.pid = reg.pid;
        e.functions = reg.functions.iter().cloned().collect();
        e.function_list = reg.functions;
        e.slots = reg.slots.max(1);
        // Registration counts as an answer to every ping sent so far.
        e.last_pong_seq = ping_seq;
        e.missed = 0;
        e.limit = limit_for(hwm, &e.estimate, e.slots);
        tracing::info!(
            "engine {id} {again}: {} pid {} ({} function(s), {} slot(s))",
            e.host,
            e.pid,
            e.function_list.len(),
            e.slots
        );
        let info = e.info();
        out.push(Action::ToEngine {
            engine: id,
            route: route.to_vec(),
            msg: ToEngine::Registered {
                engine_id: id,
                heartbeat_period_ms: u64::try_from(self.config.heartbeat_period.as_millis())
                    .unwrap_or(u64::MAX),
            },
            payloads: Vec::new(),
        });
        out.push(Action::Publish(Notification::EngineJoined(info)));
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
            tracing::warn!(
                "dropped {} result(s) from an engine that is not registered",
                results.len()
            );
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
            match self.tasks.get(&tid) {
                Some(t) if t.state == TaskState::Running(id) => {}
                _ => {
                    // Retried elsewhere or failed after this engine was thought lost, or a
                    // duplicate: the client already has (or will get) exactly one answer.
                    tracing::debug!("ignored a late result for task {tid} from engine {id}");
                    continue;
                }
            }
            let Some(task) = self.tasks.remove(&tid) else {
                continue;
            };
            let e = &mut self.engines[id.0 as usize];
            e.running.remove(&tid);
            e.completed += 1;
            if track {
                e.estimate.observe(outcome.elapsed_us);
            }
            outcome.engine = Some(id);
            self.finish(task.route, outcome, payload, &mut deliveries);
        }
        let e = &mut self.engines[id.0 as usize];
        e.limit = limit_for(self.config.hwm, &e.estimate, e.slots);
        self.update_free(id);
        // New work for the engine first: it idles while the results travel.
        self.schedule(out);
        self.deliver(deliveries, out);
    }

    fn lose_engine(&mut self, id: EngineId, reason: &str, out: &mut Vec<Action>) {
        let Some(e) = self.engines.get_mut(id.0 as usize) else {
            return;
        };
        if !e.alive {
            return;
        }
        e.alive = false;
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
            let Some(task) = self.tasks.get_mut(&tid) else {
                continue;
            };
            let retryable = task.retries > 0 && task.work.is_some() && task.payload.is_some();
            if retryable {
                task.retries -= 1;
                task.excluded.push(id);
                task.excluded.sort_unstable();
                task.excluded.dedup();
                task.state = TaskState::Queued;
                let key = ClassKey {
                    function: task.work.as_ref().and_then(function_of).map(str::to_owned),
                    targets: task.targets.clone(),
                    excluded: task.excluded.clone(),
                };
                tracing::info!("task {tid} will be retried on another engine");
                self.enqueue(tid, key);
            } else if let Some(task) = self.tasks.remove(&tid) {
                let message = format!(
                    "engine {id} on {host} was lost ({reason}) while running task {tid}; submit it with retries > 0 to have it re-run elsewhere"
                );
                let outcome = failure(tid, Some(id), ErrorKind::EngineLost, message);
                self.finish(task.route, outcome, Arc::default(), &mut deliveries);
            }
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

    fn update_free(&mut self, id: EngineId) {
        let Some(e) = self.engines.get_mut(id.0 as usize) else {
            return;
        };
        if let Some(key) = e.free_key.take() {
            self.free.remove(&key);
        }
        let outstanding = e.outstanding();
        if e.alive && outstanding < e.limit {
            let key = (outstanding, e.last_assigned, id);
            self.free.insert(key);
            e.free_key = Some(key);
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
        let mut deliveries = Deliveries::default();
        let mut duplicates = Vec::new();
        let count_ok = payloads.len() == requests.len();
        let n_payloads = payloads.len();
        let mut payloads = payloads.into_iter();
        // Consecutive tasks nearly always share a class; look it up once per run of them.
        let mut cached: Option<(ClassKey, Result<usize, Refusal>)> = None;
        for req in requests {
            let payload = payloads.next().unwrap_or_default();
            let tid = req.id;
            if self.tasks.contains_key(&tid) || self.store.contains_key(&tid) {
                duplicates.push(tid);
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
            let function = function_of(&req.work);
            let hit = matches!(&cached, Some((k, _)) if k.function.as_deref() == function && k.targets == targets);
            if !hit {
                let key = ClassKey {
                    function: function.map(str::to_owned),
                    targets: targets.clone(),
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
                    self.next_seq += 1;
                    self.tasks.insert(
                        tid,
                        Task {
                            seq: self.next_seq,
                            route: route_idx,
                            work: Some(req.work),
                            timeout_ms: req.options.timeout_ms,
                            targets,
                            excluded: Vec::new(),
                            retries: req.options.retries,
                            payload: Some(Arc::new(payload)),
                            state: TaskState::Queued,
                        },
                    );
                    if let Some(class) = self.classes.get_mut(*cid).and_then(Option::as_mut) {
                        class.queue.push_back(tid);
                        self.queued += 1;
                    }
                }
                Err((kind, message)) => {
                    let outcome = failure(tid, None, *kind, message.clone());
                    self.finish(route_idx, outcome, Arc::default(), &mut deliveries);
                }
            }
        }
        if !duplicates.is_empty() {
            let ids: Vec<String> = duplicates.iter().map(|t| t.to_string()).collect();
            tracing::warn!("refused {} task(s) with ids already in use", ids.len());
            out.push(Action::ToClient {
                route: route.to_vec(),
                msg: ToClient::Error {
                    message: format!(
                        "task id(s) {} are already in use (queued, running or stored) and were not submitted again; purge them first to reuse an id",
                        ids.join(", ")
                    ),
                },
                payloads: Vec::new(),
            });
        }
        self.schedule(out);
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

    /// Puts a known task at the back of its class's queue. A class that cannot run anywhere
    /// fails the task at once.
    fn enqueue(&mut self, tid: TaskId, key: ClassKey) {
        match self.class_for(&key) {
            Ok(cid) => {
                if let Some(class) = self.classes[cid].as_mut() {
                    class.queue.push_back(tid);
                    self.queued += 1;
                }
            }
            // Only retried tasks reach here with an impossible class; the recheck that
            // follows every engine loss fails them, so keep them in a class until then.
            Err(_) => {
                let cid = self.classes.len();
                self.classes.push(Some(Class {
                    key: key.clone(),
                    queue: VecDeque::from([tid]),
                }));
                self.class_index.insert(key, cid);
                self.queued += 1;
            }
        }
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
                    "engine(s) {} were lost while running this task and no other registered engine can run it",
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
            for tid in class.queue {
                self.queued = self.queued.saturating_sub(1);
                if let Some(task) = self.tasks.remove(&tid) {
                    let engine = task.excluded.last().copied();
                    let outcome = failure(tid, engine, kind, message.clone());
                    self.finish(task.route, outcome, Arc::default(), deliveries);
                }
            }
        }
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

    /// The engine the scheduler picks for the head of class `cid`, if any can take it now.
    fn pick_for(&self, cid: usize) -> Option<EngineId> {
        let key = &self.classes.get(cid)?.as_ref()?.key;
        let chosen = match self.config.scheduler {
            // `free` is in leastload's order of preference: the first eligible member wins.
            SchedulerKind::LeastLoad => self
                .free
                .iter()
                .map(|&(_, _, id)| id)
                .find(|&id| self.eligible(id, key)),
        };
        #[cfg(test)]
        {
            // The fast path must agree with the pure definition.
            assert_eq!(chosen, self.config.scheduler.pick(&self.loads(key)));
        }
        chosen
    }

    /// Every engine's load as the scheduler sees it for tasks of `key` (the input of the
    /// pure schedulers; `leastload` uses the ordered `free` set instead).
    #[cfg(test)]
    fn loads(&self, key: &ClassKey) -> Vec<EngineLoad> {
        self.engines
            .iter()
            .map(|e| EngineLoad {
                id: e.id,
                outstanding: e.outstanding(),
                limit: e.limit,
                last_assigned: e.last_assigned,
                eligible: self.eligible(e.id, key),
            })
            .collect()
    }

    /// One scheduling pass: hands queued tasks to engines with room, oldest head first, and
    /// sends each engine its share as one message.
    fn schedule(&mut self, out: &mut Vec<Action>) {
        if self.queued == 0 || self.free.is_empty() {
            return;
        }
        let seq_of =
            |tasks: &HashMap<TaskId, Task>, tid: &TaskId| tasks.get(tid).map_or(0, |t| t.seq);
        let mut heads: BinaryHeap<Reverse<(u64, usize)>> = self
            .classes
            .iter()
            .enumerate()
            .filter_map(|(cid, c)| {
                let head = c.as_ref()?.queue.front()?;
                Some(Reverse((seq_of(&self.tasks, head), cid)))
            })
            .collect();
        let mut batches: Vec<(EngineId, Vec<Assignment>, Vec<Payload>)> = Vec::new();
        let mut batch_of: HashMap<EngineId, usize> = HashMap::new();
        while let Some(Reverse((_, cid))) = heads.pop() {
            if self.free.is_empty() {
                break;
            }
            // Capacity only shrinks during a pass, so a class with no engine now is done.
            let Some(eid) = self.pick_for(cid) else {
                continue;
            };
            let Some(class) = self.classes[cid].as_mut() else {
                continue;
            };
            let Some(tid) = class.queue.pop_front() else {
                continue;
            };
            match class.queue.front().copied() {
                Some(next) => heads.push(Reverse((seq_of(&self.tasks, &next), cid))),
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
            let assignment = Assignment {
                id: tid,
                work,
                timeout_ms: task.timeout_ms,
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

    /// Records a finished task: counted, stored, and queued for delivery to its client.
    fn finish(
        &mut self,
        route: u32,
        outcome: TaskOutcome,
        payload: Payload,
        deliveries: &mut Deliveries,
    ) {
        match outcome.status {
            Status::Ok => self.done += 1,
            Status::Err(_) => self.failed += 1,
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

fn limit_for(hwm: Hwm, estimate: &LoadEstimate, slots: u32) -> u32 {
    match hwm {
        Hwm::Limit(0) => u32::MAX,
        Hwm::Limit(n) => n,
        Hwm::Auto => estimate.limit(slots),
    }
}

#[cfg(test)]
mod tests;
