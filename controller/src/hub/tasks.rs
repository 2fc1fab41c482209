//! The task table: every task submitted and not finished, with what it needs to run (kept
//! while it may be sent again), its limits and its state. Submission (each task into a queue
//! class, into waiting for its dependencies, or failed at once), retries after a failure or an
//! engine's death (back to the queue with that engine blacklisted), and abort.
//!
//! A finished task leaves this table for the result store (`results.rs`).

use super::clients::{ClientSlot, SlotMap};
use super::deps::{DepRequest, DepVerdict};
use super::events::{FuncIdx, UNKNOWN_FUNC};
use super::lookups::{AbortAnswer, Deferred};
use super::queues::{ClassKey, Refusal};
use super::results::Deliveries;
use super::{failure, function_of, reply, Action, Core, Payload};
use protocol::{Assignment, EngineId, ErrorKind, TaskId, TaskRequest, Work};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use store::Record;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TaskState {
    /// Some of its dependencies have not finished.
    Waiting,
    Queued,
    Running(EngineId),
}

/// An unfinished task.
#[derive(Debug)]
pub(super) struct Task {
    /// Submission order, for fairness between classes.
    pub(super) seq: u64,
    /// The client connection that submitted it (`None`: a task an engine held across a
    /// controller restart, until its client submits it again). Changed only through
    /// [`Tasks::set_client`], which keeps the count of each client's unfinished tasks.
    pub(super) client: Option<ClientSlot>,
    /// Kept until it runs, and while running only if it may be retried.
    pub(super) work: Option<Work>,
    /// Limit on the wait to start (`TaskOptions::timeout_ms`).
    pub(super) timeout_ms: Option<u64>,
    /// When that limit runs out, on the core's clock (set while it waits to start).
    pub(super) start_deadline: Option<Duration>,
    /// Limit on the run on an engine (`run_timeout_ms`, else `timeout_ms`).
    pub(super) run_timeout_ms: Option<u64>,
    /// Allowed engines, sorted; narrowed to one once its `follow` tasks have run.
    pub(super) targets: Vec<EngineId>,
    /// Engines it failed on or was lost with, sorted.
    pub(super) excluded: Vec<EngineId>,
    pub(super) retries: u32,
    /// Like `work`.
    pub(super) payload: Option<Payload>,
    pub(super) state: TaskState,
    /// Dependencies not finished yet.
    pub(super) deps_left: u32,
    /// Whether it has `follow` dependencies, and where they ran (once one has finished).
    pub(super) follows: bool,
    pub(super) follow_engine: Option<EngineId>,
    /// Changes whenever a timer armed for it stops applying (it started running, or went
    /// back to the queue), so such timers are recognised as stale.
    pub(super) epoch: u32,
    /// Its function's index in the activity feed (`events.rs`).
    pub(super) func: FuncIdx,
}

impl Task {
    /// A task an engine holds that this controller was never given (see
    /// `Core::adopt_held`): no client, work or limits until its client submits it again.
    pub(super) fn held(seq: u64, engine: EngineId) -> Task {
        Task {
            seq,
            client: None,
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
            func: UNKNOWN_FUNC,
        }
    }

    /// A task held by an engine (see [`Task::held`]) learns its work, argument and options
    /// from its client's submission, as if it had been submitted here; it keeps running where
    /// it is.
    pub(super) fn fill_in(&mut self, req: TaskRequest, payload: Vec<u8>) {
        let options = req.options;
        let mut targets = options.targets;
        targets.sort_unstable();
        targets.dedup();
        self.work = Some(req.work);
        self.payload = Some(Arc::new(payload));
        self.timeout_ms = options.timeout_ms;
        self.run_timeout_ms = options.run_timeout_ms.or(options.timeout_ms);
        self.targets = targets;
        self.retries = options.retries;
    }

    /// Moves it to `state`, so that the timers armed for it so far no longer apply.
    pub(super) fn move_to(&mut self, state: TaskState) {
        self.state = state;
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// The key of the class it queues in.
    pub(super) fn class_key(&self) -> ClassKey {
        ClassKey {
            function: self.work.as_ref().and_then(function_of).map(str::to_owned),
            targets: self.targets.clone(),
            excluded: self.excluded.clone(),
        }
    }
}

/// The unfinished tasks.
#[derive(Debug, Default)]
pub(super) struct Tasks {
    table: HashMap<TaskId, Task>,
    /// The latest submission seq handed out.
    last_seq: u64,
    /// How many tasks of the table each client connection has.
    per_client: ClientCounts,
}

/// How many unfinished tasks each client has. Tasks come and go in runs from one client, so
/// the latest client's count is kept aside and changes without a lookup; the others are in a
/// map, which lists none at zero.
#[derive(Debug, Default)]
struct ClientCounts {
    hot: Option<(ClientSlot, u32)>,
    others: SlotMap<u32>,
}

impl ClientCounts {
    /// One task more (`up`) or fewer for `client`.
    fn change(&mut self, client: ClientSlot, up: bool) {
        let step = |n: u32| {
            if up {
                n.saturating_add(1)
            } else {
                n.saturating_sub(1)
            }
        };
        match &mut self.hot {
            Some((slot, n)) if *slot == client => *n = step(*n),
            hot => {
                if let Some((slot, n)) = hot.take() {
                    if n > 0 {
                        self.others.insert(slot, n);
                    }
                }
                let n = self.others.remove(&client).unwrap_or(0);
                *hot = Some((client, step(n)));
            }
        }
    }

    fn of(&self, client: ClientSlot) -> u32 {
        match self.hot {
            Some((slot, n)) if slot == client => n,
            _ => self.others.get(&client).copied().unwrap_or(0),
        }
    }

    /// Every client with unfinished tasks, and how many.
    #[cfg(test)]
    fn all(&self) -> SlotMap<u32> {
        let mut all = self.others.clone();
        if let Some((slot, n)) = self.hot.filter(|&(_, n)| n > 0) {
            all.insert(slot, n);
        }
        all
    }
}

impl Tasks {
    pub(super) fn get(&self, id: TaskId) -> Option<&Task> {
        self.table.get(&id)
    }

    pub(super) fn get_mut(&mut self, id: TaskId) -> Option<&mut Task> {
        self.table.get_mut(&id)
    }

    pub(super) fn contains(&self, id: TaskId) -> bool {
        self.table.contains_key(&id)
    }

    pub(super) fn insert(&mut self, id: TaskId, task: Task) {
        self.count(task.client, true);
        if let Some(old) = self.table.insert(id, task) {
            self.count(old.client, false);
        }
    }

    pub(super) fn remove(&mut self, id: TaskId) -> Option<Task> {
        let task = self.table.remove(&id)?;
        self.count(task.client, false);
        Some(task)
    }

    /// Task `id`'s result now goes to `client`.
    pub(super) fn set_client(&mut self, id: TaskId, client: ClientSlot) {
        let Some(task) = self.table.get_mut(&id) else {
            return;
        };
        let old = task.client.replace(client);
        self.count(old, false);
        self.count(Some(client), true);
    }

    /// How many unfinished tasks `client` submitted.
    pub(super) fn unfinished_of(&self, client: ClientSlot) -> u32 {
        self.per_client.of(client)
    }

    /// Whether the per-client counts agree with the table.
    #[cfg(test)]
    pub(super) fn counts_agree(&self) -> bool {
        let mut counted: SlotMap<u32> = SlotMap::default();
        for client in self.table.values().filter_map(|t| t.client) {
            *counted.entry(client).or_default() += 1;
        }
        counted == self.per_client.all()
    }

    /// Clients with unfinished tasks, for tests that check nothing leaks.
    #[cfg(test)]
    pub(super) fn clients_with_tasks(&self) -> usize {
        self.per_client.all().len()
    }

    fn count(&mut self, client: Option<ClientSlot>, up: bool) {
        if let Some(client) = client {
            self.per_client.change(client, up);
        }
    }

    /// Every unfinished task.
    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = (&TaskId, &Task)> {
        self.table.iter()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// The seq of a new submission.
    pub(super) fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    /// Whether a queue entry `(tid, seq)` still stands for a queued task.
    pub(super) fn is_queued(&self, tid: TaskId, seq: u64) -> bool {
        matches!(self.table.get(&tid), Some(t) if t.seq == seq && t.state == TaskState::Queued)
    }
}

/// The class of the latest new task of a submission: consecutive tasks nearly always share
/// one, so it is looked up once per run of them.
#[derive(Default)]
struct ClassCache(Option<(ClassKey, Result<usize, Refusal>)>);

impl Core {
    /// `FromClient::Submit` from `route`: each task is queued, waits for its dependencies, or
    /// fails at once; a task submitted again is not run twice.
    pub(super) fn submit(
        &mut self,
        route: &[u8],
        requests: Vec<TaskRequest>,
        payloads: Vec<Vec<u8>>,
        out: &mut Vec<Action>,
    ) {
        if requests.is_empty() {
            return;
        }
        if self.config.persist {
            let missing = self.unknown_to_memory(&requests);
            if !missing.is_empty() {
                let deferred = Deferred::Submit {
                    route: route.to_vec(),
                    requests,
                    payloads,
                };
                self.look_up(missing, deferred, out);
                return;
            }
        }
        self.submit_now(route, requests, payloads, out);
    }

    /// Ids a submission mentions that memory does not hold but the task store may: tasks of
    /// clients of a previous controller (submitted again: finished already?) and
    /// dependencies (finished long ago?).
    fn unknown_to_memory(&self, requests: &[TaskRequest]) -> Vec<TaskId> {
        let upto = self.config.stored_clients_upto;
        let known = |id: TaskId| self.tasks.contains(id) || self.results.contains(id);
        let mut missing = Vec::new();
        for req in requests {
            if req.id.client().0 <= upto && !known(req.id) {
                missing.push(req.id);
            }
            let deps = req.options.after.iter().chain(&req.options.follow);
            missing.extend(deps.copied().filter(|&d| !known(d)));
        }
        missing.sort_unstable();
        missing.dedup();
        missing
    }

    /// A submission whose ids memory knows about (or the store was asked for).
    pub(super) fn submit_now(
        &mut self,
        route: &[u8],
        requests: Vec<TaskRequest>,
        payloads: Vec<Vec<u8>>,
        out: &mut Vec<Action>,
    ) {
        let Some(first) = requests.first() else {
            return;
        };
        let client = self.clients.submitter(route, first.id.client(), self.now);
        let mut deliveries = Deliveries::default();
        let count_ok = payloads.len() == requests.len();
        let n_payloads = payloads.len();
        let mut payloads = payloads.into_iter();
        let mut cache = ClassCache::default();
        let (client_id, first_func) = (first.id.client(), first.work.name());
        let first_func = self.events.intern(first_func);
        let mut fresh = 0u64;
        for req in requests {
            let payload = payloads.next().unwrap_or_default();
            let tid = req.id;
            if let Some(task) = self.tasks.get_mut(tid) {
                // Submitted again: held by an engine across a controller restart (no client
                // yet), or sent twice by a client that could not tell whether the first one
                // arrived. It runs once; its result goes to the latest submitter.
                if task.client.is_none() && count_ok {
                    // A held task learns what it is, so that it can be retried elsewhere.
                    task.fill_in(req, payload);
                }
                self.tasks.set_client(tid, client);
                continue;
            }
            if let Some(stored) = self.results.get(tid) {
                // Finished already (for this controller's previous life, or asked again):
                // the stored result is the answer.
                let (outcome, payload) = (stored.outcome.clone(), stored.payload.clone());
                deliveries.push(Some(client), outcome, payload);
                continue;
            }
            if !count_ok {
                let message = format!(
                    "the submit message had {n_payloads} payload frame(s) for its tasks; each task needs exactly one (a client bug)"
                );
                let outcome = failure(tid, None, ErrorKind::BadArguments, message);
                self.finish(Some(client), outcome, Arc::default(), &mut deliveries);
                continue;
            }
            fresh += 1;
            self.submit_new(client, req, payload, &mut cache, &mut deliveries);
        }
        let time_us = self.wall_us();
        self.events
            .submission(client, client_id, first_func, fresh, time_us);
        self.schedule(out);
        self.deliver(deliveries, out);
    }

    /// A task this controller has not seen: into the table and its queue class (or waiting
    /// for its dependencies), or failed when it can never run.
    fn submit_new(
        &mut self,
        client: ClientSlot,
        req: TaskRequest,
        payload: Vec<u8>,
        cache: &mut ClassCache,
        deliveries: &mut Deliveries,
    ) {
        let payload = Arc::new(payload);
        let func = self.events.intern(req.work.name());
        self.events.submitted(func);
        if self.config.persist {
            let record = Record::submitted(
                req.clone(),
                req.id.client(),
                self.wall_us(),
                payload.clone(),
            );
            self.records.push(record);
        }
        let TaskRequest {
            id: tid,
            work,
            options,
        } = req;
        let mut targets = options.targets;
        targets.sort_unstable();
        targets.dedup();
        let mut task = Task {
            seq: self.tasks.next_seq(),
            client: Some(client),
            work: Some(work),
            timeout_ms: options.timeout_ms,
            start_deadline: None,
            run_timeout_ms: options.run_timeout_ms.or(options.timeout_ms),
            targets,
            excluded: Vec::new(),
            retries: options.retries,
            payload: Some(payload),
            state: TaskState::Queued,
            deps_left: 0,
            follows: !options.follow.is_empty(),
            follow_engine: None,
            epoch: 0,
            func,
        };
        if !options.after.is_empty() || !options.follow.is_empty() {
            let deps = DepRequest {
                after: options.after,
                follow: options.follow,
            };
            task = match self.depend(tid, task, deps) {
                DepVerdict::Waits => return,
                DepVerdict::Met(task) => *task,
                DepVerdict::Fails(message) => {
                    let outcome = failure(tid, None, ErrorKind::Dependency, message);
                    self.events.finished(func, &outcome, false, self.wall_us());
                    self.finish(Some(client), outcome, Arc::default(), deliveries);
                    return;
                }
            };
        }
        if task.follows {
            // Every task it follows had finished already.
            self.arm_start_timer(tid, &mut task);
            self.tasks.insert(tid, task);
            if let Err(outcome) = self.release(tid) {
                self.tasks.remove(tid);
                self.finish(Some(client), *outcome, Arc::default(), deliveries);
            }
            return;
        }
        match self.class_of_new(&task, cache) {
            Ok(cid) => {
                let seq = task.seq;
                self.arm_start_timer(tid, &mut task);
                self.tasks.insert(tid, task);
                self.queues.push(cid, tid, seq);
            }
            Err((kind, message)) => {
                let outcome = failure(tid, None, kind, message);
                self.events.finished(func, &outcome, false, self.wall_us());
                self.finish(Some(client), outcome, Arc::default(), deliveries);
            }
        }
    }

    /// The class a new task (no blacklist yet) queues in, through `cache`.
    fn class_of_new(&mut self, task: &Task, cache: &mut ClassCache) -> Result<usize, Refusal> {
        let function = task.work.as_ref().and_then(function_of);
        if let Some((k, class)) = &cache.0 {
            if k.function.as_deref() == function && k.targets == task.targets {
                return class.clone();
            }
        }
        let key = task.class_key();
        let class = self.queues.class_for(&key, &self.engines);
        cache.0 = Some((key, class.clone()));
        class
    }

    /// Sends `tid`, which failed on or was lost with `engine`, back to the queue with that
    /// engine blacklisted, if its retries allow and another engine can run it. False when
    /// it cannot be retried (nothing changed; the caller fails it).
    pub(super) fn try_retry(&mut self, tid: TaskId, engine: EngineId) -> bool {
        let Some(task) = self.tasks.get(tid) else {
            return false;
        };
        if task.retries == 0 || task.work.is_none() || task.payload.is_none() {
            return false;
        }
        let mut key = task.class_key();
        if let Err(i) = key.excluded.binary_search(&engine) {
            key.excluded.insert(i, engine);
        }
        if self.engines.check(&key).is_err() {
            return false;
        }
        let Ok(cid) = self.queues.class_for(&key, &self.engines) else {
            return false;
        };
        let now = self.now;
        let Some(task) = self.tasks.get_mut(tid) else {
            return false;
        };
        task.retries -= 1;
        task.excluded = key.excluded;
        task.move_to(TaskState::Queued);
        let seq = task.seq;
        // Back in the queue: the start limit applies afresh.
        if let Some(timer) = task.start_timer(tid, now) {
            self.timers.arm(timer);
        }
        self.queues.push(cid, tid, seq);
        if self.config.persist {
            self.records.push(Record::Requeued { id: tid });
        }
        true
    }

    /// Sends `assignment`'s task, which engine `engine` handed back without running it, back
    /// to its queue unchanged (no retry spent, no engine blacklisted), restoring its work and
    /// argument from what the engine returned when this table no longer kept them. A task no
    /// engine can run any more fails as it would if submitted now. False when it is not
    /// running there (nothing changed).
    pub(super) fn queue_again(
        &mut self,
        assignment: Assignment,
        payload: Vec<u8>,
        engine: EngineId,
        deliveries: &mut Deliveries,
    ) -> bool {
        let tid = assignment.id;
        let Some(task) = self.tasks.get_mut(tid) else {
            return false;
        };
        if task.state != TaskState::Running(engine) {
            return false;
        }
        if task.work.is_none() {
            task.work = Some(assignment.work);
        }
        if task.payload.is_none() {
            task.payload = Some(Arc::new(payload));
        }
        self.requeue_unrun(tid, engine, deliveries)
    }

    /// Sends `tid`, which is counted as running on `engine` but never ran there (handed
    /// back, or sent to a draining engine after it handed back its queue), back to its queue
    /// unchanged, as [`Core::queue_again`] does. False when it is not running there or its
    /// work was not kept (nothing changed).
    pub(super) fn requeue_unrun(
        &mut self,
        tid: TaskId,
        engine: EngineId,
        deliveries: &mut Deliveries,
    ) -> bool {
        let Some(task) = self.tasks.get(tid) else {
            return false;
        };
        if task.state != TaskState::Running(engine) || task.work.is_none() || task.payload.is_none()
        {
            return false;
        }
        let key = task.class_key();
        if let Some(e) = self.engines.get_mut(engine) {
            e.running.remove(&tid);
        }
        let cid = match self.queues.class_for(&key, &self.engines) {
            Ok(cid) => cid,
            Err((kind, message)) => {
                if let Some(task) = self.tasks.remove(tid) {
                    let message = format!("task {tid} was handed back by draining engine {engine} and cannot run elsewhere: {message}");
                    let outcome = failure(tid, Some(engine), kind, message);
                    self.finish(task.client, outcome, Arc::default(), deliveries);
                }
                return true;
            }
        };
        let now = self.now;
        let Some(task) = self.tasks.get_mut(tid) else {
            return false;
        };
        task.move_to(TaskState::Queued);
        let seq = task.seq;
        // Back in the queue: the start limit applies afresh, as after a retry.
        if let Some(timer) = task.start_timer(tid, now) {
            self.timers.arm(timer);
        }
        self.queues.push(cid, tid, seq);
        if self.config.persist {
            self.records.push(Record::Requeued { id: tid });
        }
        true
    }

    /// `FromClient::Abort`: tasks not started yet (queued or waiting) fail as aborted, and
    /// their submitters hear so; the asker learns what became of each id.
    pub(super) fn abort(&mut self, route: &[u8], ids: Vec<TaskId>, out: &mut Vec<Action>) {
        let mut answer = AbortAnswer::default();
        let AbortAnswer {
            aborted,
            running,
            finished,
            unknown,
        } = &mut answer;
        let mut deliveries = Deliveries::default();
        for id in ids {
            match self.tasks.get(id).map(|t| t.state) {
                Some(TaskState::Running(_)) => running.push(id),
                Some(state) => {
                    let Some(task) = self.tasks.remove(id) else {
                        continue;
                    };
                    // Its queue entry stays behind and is skipped.
                    if state == TaskState::Waiting {
                        self.deps.stopped_waiting();
                    } else {
                        self.queues.left_queue();
                    }
                    let message = format!("task {id} was aborted before it started");
                    let outcome = failure(id, None, ErrorKind::Aborted, message);
                    self.finish(task.client, outcome, Arc::default(), &mut deliveries);
                    aborted.push(id);
                }
                None if self.results.contains(id) => finished.push(id),
                None => unknown.push(id),
            }
        }
        if !aborted.is_empty() {
            tracing::info!("aborted {} queued task(s)", aborted.len());
        }
        self.deliver(deliveries, out);
        // A finished task's result leaves memory once delivered: ask the store about ids
        // memory does not know before calling them unknown.
        if self.config.persist && !answer.unknown.is_empty() {
            let ids = answer.unknown.clone();
            let route = route.to_vec();
            self.look_up(ids, Deferred::Abort { route, answer }, out);
            return;
        }
        reply(out, route, answer.message(), Vec::new());
    }
}
