//! Engines and their registration: the engine table (by id, uuid and route), joining, coming
//! back under the same id, tasks an engine holds across a controller restart, an engine lost
//! (its tasks retried elsewhere or failed), and the shutdown order.
//!
//! Ids index the table and are never reused within one controller's life. A registration with
//! a uuid seen before gets its id back; one from an engine of an earlier controller may ask
//! for its old id, and the ids in between are kept free for the others of that controller.

use super::queues::{ClassKey, Refusal};
use super::results::Deliveries;
use super::tasks::{Task, TaskState};
use super::{failure, id_list, ms, reply, Action, Core, Route};
use crate::scheduler::{EngineLoad, Hwm, LoadEstimate};
use protocol::{
    Assignment, EngineId, EngineInfo, ErrorKind, LaunchInfo, Notification, Registration, TaskId,
    ToClient, ToEngine,
};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::{Index, IndexMut};
use std::sync::Arc;

/// Largest jump in ids a re-registering engine may ask for (ids index a table).
const MAX_ID_GAP: u32 = 4096;

/// One engine, registered now or earlier.
#[derive(Debug)]
pub(super) struct Engine {
    pub(super) id: EngineId,
    /// Empty for an id kept free for an engine of an earlier controller that may come back.
    pub(super) uuid: String,
    pub(super) host: String,
    pub(super) pid: u32,
    pub(super) function_list: Vec<String>,
    pub(super) functions: HashSet<String>,
    pub(super) slots: u32,
    pub(super) route: Route,
    pub(super) alive: bool,
    /// It said goodbye (`Unregister`): a stray pong does not bring it back.
    pub(super) left: bool,
    pub(super) running: HashSet<TaskId>,
    pub(super) completed: u64,
    pub(super) failed: u64,
    /// When it was last given a task (a stamp of the scheduling order, not a time).
    pub(super) last_assigned: u64,
    pub(super) last_pong_seq: u64,
    pub(super) missed: u32,
    pub(super) estimate: LoadEstimate,
    /// Tasks it may hold at once (`u32::MAX`: unlimited).
    pub(super) limit: u32,
    /// It handed its queue back (a drain) and is about to leave: it gets no more tasks.
    pub(super) draining: bool,
    /// Its rank and batch job, when `mpiexec` or `srun` started it.
    pub(super) launch: Option<LaunchInfo>,
    /// Its latest CPU and memory use, from its heartbeat answers.
    pub(super) usage: Option<protocol::EngineUsage>,
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
            draining: false,
            launch: None,
            usage: None,
        }
    }

    pub(super) fn info(&self) -> EngineInfo {
        EngineInfo {
            id: self.id,
            host: self.host.clone(),
            pid: self.pid,
            functions: self.function_list.clone(),
        }
    }

    pub(super) fn outstanding(&self) -> u32 {
        u32::try_from(self.running.len()).unwrap_or(u32::MAX)
    }

    pub(super) fn load(&self, eligible: bool) -> EngineLoad {
        EngineLoad {
            id: self.id,
            outstanding: self.outstanding(),
            limit: self.limit,
            last_assigned: self.last_assigned,
            eligible,
        }
    }

    /// Whether it offers what tasks of `key` call (commands run anywhere).
    fn offers(&self, key: &ClassKey) -> bool {
        key.function
            .as_ref()
            .is_none_or(|f| self.functions.contains(f))
    }

    /// Recomputes its limit after its settings or its load estimate changed.
    pub(super) fn update_limit(&mut self, hwm: Hwm) {
        self.limit = match hwm {
            _ if self.draining => 0,
            Hwm::Limit(0) => u32::MAX,
            Hwm::Limit(n) => n,
            Hwm::Auto => self.estimate.limit(self.slots),
        };
    }
}

/// The engine table.
#[derive(Debug, Default)]
pub(super) struct Engines {
    /// By id; ids are never reused within one controller's life.
    list: Vec<Engine>,
    by_uuid: HashMap<String, EngineId>,
    by_route: HashMap<Route, EngineId>,
    /// How many are alive.
    alive: usize,
    /// Tasks assigned so far: the stamp of the latest assignment.
    assign_stamp: u64,
}

impl Index<EngineId> for Engines {
    type Output = Engine;

    /// Only for ids the core handed out (they index the table).
    fn index(&self, id: EngineId) -> &Engine {
        &self.list[id.0 as usize]
    }
}

impl IndexMut<EngineId> for Engines {
    fn index_mut(&mut self, id: EngineId) -> &mut Engine {
        &mut self.list[id.0 as usize]
    }
}

impl Engines {
    pub(super) fn get(&self, id: EngineId) -> Option<&Engine> {
        self.list.get(id.0 as usize)
    }

    pub(super) fn get_mut(&mut self, id: EngineId) -> Option<&mut Engine> {
        self.list.get_mut(id.0 as usize)
    }

    /// The engine whose task socket is `route`.
    pub(super) fn at_route(&self, route: &[u8]) -> Option<EngineId> {
        self.by_route.get(route).copied()
    }

    /// The engine with this uuid.
    pub(super) fn with_uuid(&self, uuid: &str) -> Option<EngineId> {
        self.by_uuid.get(uuid).copied()
    }

    /// Every engine, by id, including ids kept free and engines gone.
    pub(super) fn all(&self) -> impl Iterator<Item = &Engine> {
        self.list.iter()
    }

    /// The engines alive now, by id.
    pub(super) fn alive(&self) -> impl Iterator<Item = &Engine> {
        self.list.iter().filter(|e| e.alive)
    }

    pub(super) fn alive_mut(&mut self) -> impl Iterator<Item = &mut Engine> {
        self.list.iter_mut().filter(|e| e.alive)
    }

    pub(super) fn alive_count(&self) -> usize {
        self.alive
    }

    /// The id of the engine `uuid`, its slot made (and the uuid recorded) if it is new.
    /// `hint` is the id an engine of an earlier controller asks for.
    fn id_for(&mut self, uuid: &str, hint: Option<EngineId>) -> Option<EngineId> {
        if let Some(id) = self.with_uuid(uuid) {
            return Some(id);
        }
        let id = self.new_id(hint)?;
        self[id].uuid = uuid.to_owned();
        self.by_uuid.insert(uuid.to_owned(), id);
        Some(id)
    }

    /// The id for a registration of a uuid not seen in this controller's life.
    fn new_id(&mut self, hint: Option<EngineId>) -> Option<EngineId> {
        let len = u32::try_from(self.list.len()).ok()?;
        if let Some(h) = hint {
            if h.0 < len && self.list[h.0 as usize].uuid.is_empty() {
                return Some(h);
            }
            if h.0 >= len && h.0 - len <= MAX_ID_GAP {
                // Keep the ids in between for engines of the earlier controller.
                for n in len..=h.0 {
                    self.list.push(Engine::blank(EngineId(n)));
                }
                return Some(h);
            }
            tracing::info!(
                "engine id {h} asked for by a returning engine is taken; giving it a new one"
            );
        }
        self.list.push(Engine::blank(EngineId(len)));
        Some(EngineId(len))
    }

    /// Engine `id` now speaks from `route` on the task socket.
    fn set_route(&mut self, id: EngineId, route: &[u8]) {
        let e = &mut self.list[id.0 as usize];
        if e.route != route {
            if self.by_route.get(&e.route) == Some(&id) {
                self.by_route.remove(&e.route);
            }
            e.route = route.to_vec();
        }
        self.by_route.insert(route.to_vec(), id);
    }

    /// Marks `id` alive; false if there is no such engine.
    fn set_alive(&mut self, id: EngineId) -> bool {
        let Some(e) = self.list.get_mut(id.0 as usize) else {
            return false;
        };
        if !e.alive {
            e.alive = true;
            self.alive += 1;
        }
        true
    }

    /// Marks `id` gone; false if it was not alive.
    fn set_gone(&mut self, id: EngineId, left: bool) -> bool {
        let Some(e) = self.list.get_mut(id.0 as usize) else {
            return false;
        };
        if !e.alive {
            return false;
        }
        e.alive = false;
        e.left = left;
        e.missed = 0;
        self.alive -= 1;
        true
    }

    /// Engine `id` is given task `tid`.
    pub(super) fn assign(&mut self, id: EngineId, tid: TaskId) {
        self.assign_stamp += 1;
        let e = &mut self.list[id.0 as usize];
        e.running.insert(tid);
        e.last_assigned = self.assign_stamp;
    }

    /// Whether engine `id` may run tasks of `key` (ignoring its load).
    pub(super) fn eligible(&self, id: EngineId, key: &ClassKey) -> bool {
        let Some(e) = self.get(id) else {
            return false;
        };
        e.alive
            && (key.targets.is_empty() || key.targets.binary_search(&id).is_ok())
            && key.excluded.binary_search(&id).is_err()
            && e.offers(key)
    }

    /// Every engine's load as the scheduler sees it for tasks of `key` (the input of the
    /// pure schedulers; the core uses its indexes instead).
    #[cfg(test)]
    pub(super) fn loads(&self, key: &ClassKey) -> Vec<EngineLoad> {
        self.list
            .iter()
            .map(|e| e.load(self.eligible(e.id, key)))
            .collect()
    }

    /// Whether tasks of `key` can ever run on the engines registered now. With no engine
    /// registered at all they wait (engines may be starting).
    pub(super) fn check(&self, key: &ClassKey) -> Result<(), Refusal> {
        if self.alive == 0 {
            return Ok(());
        }
        let pool: Vec<&Engine> = if key.targets.is_empty() {
            self.alive().collect()
        } else {
            self.alive()
                .filter(|e| key.targets.binary_search(&e.id).is_ok())
                .collect()
        };
        if pool.is_empty() {
            return Err((
                ErrorKind::Unschedulable,
                format!(
                    "target engine(s) {} are not registered (registered engines: {})",
                    id_list(key.targets.iter().copied()),
                    id_list(self.alive().map(|e| e.id))
                ),
            ));
        }
        if let Some(f) = &key.function {
            if !pool.iter().any(|e| e.offers(key)) {
                return Err((ErrorKind::UnknownFunction, not_offered(f, key, &pool)));
            }
        }
        if !pool
            .iter()
            .any(|e| e.offers(key) && key.excluded.binary_search(&e.id).is_err())
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
}

/// Why no engine of `pool` can run function `f`: what they offer instead.
fn not_offered(f: &str, key: &ClassKey, pool: &[&Engine]) -> String {
    let offered: BTreeSet<&str> = pool
        .iter()
        .flat_map(|e| e.function_list.iter().map(String::as_str))
        // Engines' built-in `__*` functions are plumbing, not what a user meant to call.
        .filter(|f| !protocol::builtin::is_builtin(f))
        .collect();
    let offered = if offered.is_empty() {
        "none (only commands)".to_owned()
    } else {
        offered.into_iter().collect::<Vec<_>>().join(", ")
    };
    if key.targets.is_empty() {
        format!("no registered engine offers function {f:?}; offered: {offered}")
    } else {
        format!(
            "none of the target engines {} offers function {f:?}; they offer: {offered}",
            id_list(pool.iter().map(|e| e.id))
        )
    }
}

impl Core {
    /// An engine registers (or registers again) from `route`.
    pub(super) fn register(&mut self, route: &[u8], reg: Registration, out: &mut Vec<Action>) {
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
        let Some(id) = self.engines.id_for(&reg.uuid, reg.engine_id) else {
            return;
        };
        let ping_seq = self.heartbeats.seq();
        let registered = Action::ToEngine {
            engine: id,
            route: route.to_vec(),
            msg: ToEngine::Registered {
                engine_id: id,
                heartbeat_period_ms: ms(self.config.heartbeat_period),
            },
            payloads: Vec::new(),
        };
        let e = &mut self.engines[id];
        if e.alive && e.route == route {
            // A repeated registration (an engine that lost sight of us for a while sends
            // one now and then): same session, nothing changes but the acknowledgement.
            tracing::debug!("engine {id} registered again; acknowledged");
            e.last_pong_seq = ping_seq;
            e.missed = 0;
            out.push(registered);
            self.adopt_held(id, reg.held);
            self.free.update(&self.engines[id]);
            return;
        }
        self.engines.set_route(id, route);
        let e = &mut self.engines[id];
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
        e.draining = false;
        e.launch = reg.launch;
        e.update_limit(self.config.hwm);
        out.push(registered);
        // Before `admit` schedules: what the engine holds counts towards its limit.
        self.adopt_held(id, reg.held);
        self.admit(id, again, out);
    }

    /// Counts the tasks engine `engine` says it holds in its own queue as running there: after
    /// a controller restart they are unknown here (placeholders until their client submits
    /// them again), or were submitted again and wait in the queue; either way they must not be
    /// handed to a second engine.
    fn adopt_held(&mut self, engine: EngineId, held: Vec<TaskId>) {
        if held.is_empty() || self.engines.get(engine).is_none() {
            return;
        }
        let mut adopted = 0usize;
        for tid in held {
            if self.results.contains(tid) {
                // Finished already: the engine's second result will be ignored.
                continue;
            }
            match self.tasks.get_mut(tid) {
                Some(task) if task.state == TaskState::Queued => {
                    task.move_to(TaskState::Running(engine));
                    self.queues.left_queue();
                }
                // Running elsewhere (the first result counts) or waiting: leave it.
                Some(_) => continue,
                None => {
                    // A client of the previous life keeps its id; new clients must not get it.
                    self.clients.avoid(tid.client());
                    let seq = self.tasks.next_seq();
                    self.tasks.insert(tid, Task::held(seq, engine));
                }
            }
            self.engines[engine].running.insert(tid);
            adopted += 1;
        }
        if adopted > 0 {
            tracing::info!("engine {engine} holds {adopted} task(s) from before a controller restart; they run there");
        }
    }

    /// Makes engine `id` (whose registration details are recorded) alive and schedulable,
    /// and announces it.
    pub(super) fn admit(&mut self, id: EngineId, how: &str, out: &mut Vec<Action>) {
        if !self.engines.set_alive(id) {
            return;
        }
        let e = &mut self.engines[id];
        e.left = false;
        // Registration counts as an answer to every ping sent so far.
        e.last_pong_seq = self.heartbeats.seq();
        e.missed = 0;
        tracing::info!(
            "engine {id} {how}: {} pid {} ({} function(s), {} slot(s))",
            e.host,
            e.pid,
            e.function_list.len(),
            e.slots
        );
        out.push(Action::Publish(Notification::EngineJoined(e.info())));
        self.free.update(&self.engines[id]);
        // Tasks that waited for any engine at all may turn out impossible on this one.
        let mut deliveries = Deliveries::default();
        self.recheck_classes(&mut deliveries);
        self.schedule(out);
        self.deliver(deliveries, out);
    }

    /// Engine `id` is gone for `reason` (`unregistered` when it said goodbye): its running
    /// tasks are retried on other engines or fail with `EngineLost`.
    pub(super) fn lose_engine(&mut self, id: EngineId, reason: &str, out: &mut Vec<Action>) {
        let left = reason == "unregistered";
        if !self.engines.set_gone(id, left) {
            return;
        }
        let e = &mut self.engines[id];
        let host = e.host.clone();
        // A draining engine runs nothing after its hand-back: what it still holds when it
        // leaves was sent to it too late, and never ran.
        let unrun = left && e.draining;
        let mut lost: Vec<TaskId> = e.running.iter().copied().collect();
        if left {
            tracing::info!("engine {id} on {host} left ({reason})");
        } else {
            tracing::warn!(
                "engine {id} on {host} lost ({reason}) with {} task(s) running",
                lost.len()
            );
        }
        // Requeue in submission order so that retries keep their relative order.
        lost.sort_by_key(|&t| self.tasks.get(t).map_or(0, |t| t.seq));
        let mut deliveries = Deliveries::default();
        if unrun {
            lost.retain(|&tid| !self.requeue_unrun(tid, id, &mut deliveries));
        }
        self.engines[id].running.clear();
        self.free.update(&self.engines[id]);
        for tid in lost {
            if self.try_retry(tid, id) {
                tracing::info!("task {tid} will be retried on another engine");
                continue;
            }
            let Some(task) = self.tasks.remove(tid) else {
                continue;
            };
            let message = if task.retries > 0 {
                format!(
                    "engine {id} on {host} was lost ({reason}) while running task {tid}, and no other registered engine can run it (already tried on: {})",
                    id_list(task.excluded.iter().copied().chain([id]))
                )
            } else if !task.excluded.is_empty() {
                // Each retry blacklisted the engine it left, so these are the retries used.
                let used = task.excluded.len();
                format!(
                    "engine {id} on {host} was lost ({reason}) while running task {tid}, after its {used} {} had been used up (it had failed or been lost on engine(s) {}); submit it with more retries to have it re-run elsewhere",
                    if used == 1 { "retry" } else { "retries" },
                    id_list(task.excluded.iter().copied())
                )
            } else {
                format!(
                    "engine {id} on {host} was lost ({reason}) while running task {tid}; submit it with retries > 0 to have it re-run elsewhere"
                )
            };
            let outcome = failure(tid, Some(id), ErrorKind::EngineLost, message);
            self.events
                .finished(task.func, &outcome, false, self.wall_us());
            self.finish(task.client, outcome, Arc::default(), &mut deliveries);
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

    /// `FromEngine::HandBack`: the engine at `route` is draining and will not run `tasks`,
    /// which were waiting in its own queue. Each one still counted as running there goes back
    /// to the queue as it was (its retries and blacklist untouched: it never ran), with its
    /// work and argument restored from what the engine sent back (a task without retries
    /// kept neither here). The engine gets no more tasks; its `Unregister` follows.
    pub(super) fn on_hand_back(
        &mut self,
        route: &[u8],
        tasks: Vec<Assignment>,
        payloads: Vec<Vec<u8>>,
        out: &mut Vec<Action>,
    ) {
        let Some(id) = self.engines.at_route(route) else {
            tracing::warn!(
                "{} task(s) handed back by an unknown engine; ignored",
                tasks.len()
            );
            return;
        };
        if !self.engines[id].alive {
            tracing::warn!(
                "{} task(s) handed back by engine {id}, which was declared gone (its tasks were retried or failed); ignored",
                tasks.len()
            );
            return;
        }
        let e = &mut self.engines[id];
        e.draining = true;
        e.update_limit(self.config.hwm);
        // A short message is the engine's bug: a missing payload is empty, as on `Tasks`.
        let mut payloads = payloads.into_iter();
        let mut queued = 0usize;
        let mut deliveries = Deliveries::default();
        for assignment in tasks {
            let payload = payloads.next().unwrap_or_default();
            if !self.engines[id].running.contains(&assignment.id) {
                // Finished, failed or timed out meanwhile: nothing to give back.
                continue;
            }
            if self.queue_again(assignment, payload, id, &mut deliveries) {
                queued += 1;
            }
        }
        tracing::info!("engine {id} is draining: {queued} task(s) it held go back to the queue");
        self.free.update(&self.engines[id]);
        self.recheck_classes(&mut deliveries);
        self.schedule(out);
        self.deliver(deliveries, out);
    }

    /// `FromClient::Shutdown`: tells every engine to stop, and the loop too when `controller`.
    pub(super) fn shutdown(&mut self, route: &[u8], controller: bool, out: &mut Vec<Action>) {
        tracing::info!(
            "shutdown requested by a client (controller too: {controller}); stopping {} engine(s)",
            self.engines.alive_count()
        );
        for e in self.engines.alive() {
            out.push(Action::ToEngine {
                engine: e.id,
                route: e.route.clone(),
                msg: ToEngine::Shutdown,
                payloads: Vec::new(),
            });
        }
        reply(out, route, ToClient::Ack, Vec::new());
        if controller {
            out.push(Action::Stop);
        }
    }
}
