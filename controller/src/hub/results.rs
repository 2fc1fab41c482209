//! The result store and delivery: results coming in from engines, each finished task's
//! outcome counted and stored by task id (until purged), and sent to the client connection
//! that submitted it, grouped so that each client gets one message an event.
//!
//! Results are kept whether or not their client is still there: a client that comes back
//! (or any other client, e.g. `cluster result ID` from another process) fetches them. Results
//! of tasks this controller does not know (they ran for its previous life, before a restart)
//! are stored too, for their clients to find when they submit those tasks again.
//!
//! **With a task store** (`CoreConfig::persist`), every outcome is also emitted as a
//! `Record::Finished` and memory holds only a bounded cache of recent results
//! (`CoreConfig::result_cache_bytes`, oldest out first). A result sent to its connected
//! client is acknowledged (`Record::Acknowledged`): the client protocol has no ack message,
//! and a send to a connected client's connection is as far as the controller can see; the
//! record stays on disk, so a client that lost it fetches it again from there. Fetches and
//! resubmissions of ids no longer in memory become lookups (see `lookups.rs`). Without a store
//! (`db = "none"`) results stay in memory until purged, as before.

use super::clients::ClientSlot;
use super::deps::Failed;
use super::lookups::Deferred;
use super::tasks::TaskState;
use super::{reply, retryable, Action, Core, Payload};
use crate::scheduler::Hwm;
use protocol::{ErrorKind, Status, TaskError, TaskId, TaskOutcome, ToClient};
use std::collections::HashMap;
use std::sync::Arc;
use store::{Lookup, PayloadState, Record};

/// A finished task's outcome and value.
#[derive(Debug)]
pub(super) struct Stored {
    pub(super) outcome: TaskOutcome,
    pub(super) payload: Payload,
}

/// Memory a stored result is counted for besides its payload (the outcome, the map entry).
pub(super) const STORED_OVERHEAD: usize = 320;

/// The result store and the outcome counts.
#[derive(Debug, Default)]
pub(super) struct Results {
    store: HashMap<TaskId, Stored>,
    /// With a bound: ids in the order they were stored (may name entries gone since).
    order: std::collections::VecDeque<TaskId>,
    /// Bytes the stored results are counted for.
    bytes: usize,
    /// At most this many bytes (`None`: keep everything until purged).
    bound: Option<usize>,
    /// Results dropped from memory by the bound (still in the task store).
    evicted: u64,
    /// Tasks that finished well, and badly, in this controller's life.
    done: u64,
    failed: u64,
}

fn cost(stored: &Stored) -> usize {
    STORED_OVERHEAD + stored.payload.len()
}

impl Results {
    /// A store that keeps at most `bound` bytes of results (`None`: all of them).
    pub(super) fn bounded(bound: Option<usize>) -> Results {
        Results {
            bound,
            ..Results::default()
        }
    }

    /// Bytes the results in memory are counted for.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Results the bound dropped from memory so far.
    #[cfg(test)]
    pub(super) fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Puts a result in memory (a cache entry with a bound), dropping the oldest ones past
    /// the bound.
    pub(super) fn keep(&mut self, outcome: TaskOutcome, payload: Payload) {
        let id = outcome.id;
        let stored = Stored { outcome, payload };
        self.bytes += cost(&stored);
        if let Some(old) = self.store.insert(id, stored) {
            self.bytes -= cost(&old);
        }
        let Some(bound) = self.bound else {
            return;
        };
        self.order.push_back(id);
        while self.bytes > bound {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.store.remove(&old) {
                self.bytes -= cost(&gone);
                self.evicted += 1;
            }
        }
        // Stale ids (purged since) would pile up in a store that is never full.
        if self.order.len() > 2 * self.store.len() + 1024 {
            let store = &self.store;
            self.order.retain(|id| store.contains_key(id));
        }
    }

    pub(super) fn get(&self, id: TaskId) -> Option<&Stored> {
        self.store.get(&id)
    }

    pub(super) fn contains(&self, id: TaskId) -> bool {
        self.store.contains_key(&id)
    }

    /// Results stored now.
    pub(super) fn len(&self) -> usize {
        self.store.len()
    }

    /// `(done, failed)`: tasks finished well and badly.
    pub(super) fn counts(&self) -> (u64, u64) {
        (self.done, self.failed)
    }

    /// Counts and stores a finished task.
    fn record(&mut self, outcome: TaskOutcome, payload: Payload) {
        if matches!(outcome.status, Status::Ok) {
            self.done += 1;
        } else {
            self.failed += 1;
        }
        self.keep(outcome, payload);
    }

    /// Forgets the results of `ids`, or all of them when `ids` is empty.
    fn purge(&mut self, ids: Vec<TaskId>) {
        if ids.is_empty() {
            self.store.clear();
            self.order.clear();
            self.bytes = 0;
        } else {
            for id in ids {
                if let Some(gone) = self.store.remove(&id) {
                    self.bytes -= cost(&gone);
                }
            }
        }
    }
}

/// Finished tasks of one event, grouped by client connection so that each gets one message.
#[derive(Debug, Default)]
pub(super) struct Deliveries {
    by_client: Vec<(Option<ClientSlot>, Vec<TaskOutcome>, Vec<Payload>)>,
}

impl Deliveries {
    /// Adds a finished task for `client` (`None`: nobody to tell yet).
    pub(super) fn push(
        &mut self,
        client: Option<ClientSlot>,
        outcome: TaskOutcome,
        payload: Payload,
    ) {
        // Nearly always one client per message: check the latest group first.
        let idx = match self.by_client.iter().rposition(|(c, _, _)| *c == client) {
            Some(i) => i,
            None => {
                self.by_client.push((client, Vec::new(), Vec::new()));
                self.by_client.len() - 1
            }
        };
        let (_, outcomes, payloads) = &mut self.by_client[idx];
        outcomes.push(outcome);
        payloads.push(payload);
    }

    /// Whether any task finished.
    pub(super) fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }
}

impl Core {
    /// `FromEngine::Results` from `route`: finished tasks are stored and delivered, failures
    /// retried while their retries last, and the engine gets new work.
    pub(super) fn on_results(
        &mut self,
        route: &[u8],
        results: Vec<TaskOutcome>,
        payloads: Vec<Vec<u8>>,
        out: &mut Vec<Action>,
    ) {
        // A short message is the engine's bug; its missing values read as empty.
        let mut payloads = payloads.into_iter();
        let mut next_payload = move || Arc::new(payloads.next().unwrap_or_default());
        let Some(id) = self.engines.at_route(route) else {
            // An engine of this controller's previous life, not registered again yet: its
            // results wait in the store for their clients to submit the tasks again.
            let mut deliveries = Deliveries::default();
            let mut kept = 0usize;
            for outcome in results {
                if self.keep_orphan(outcome, next_payload(), &mut deliveries) {
                    kept += 1;
                }
            }
            tracing::info!(
                "kept {kept} result(s) from an engine not registered (yet) for their clients"
            );
            self.deliver(deliveries, out);
            return;
        };
        if !self.engines[id].alive {
            tracing::warn!(
                "dropped {} result(s) from engine {id}, which was declared gone (its tasks were retried or failed)",
                results.len()
            );
            return;
        }
        let track = matches!(self.config.hwm, Hwm::Auto);
        let mut deliveries = Deliveries::default();
        for mut outcome in results {
            let payload = next_payload();
            let tid = outcome.id;
            outcome.engine = Some(id);
            match self.tasks.get(tid).map(|t| t.state) {
                Some(TaskState::Running(on)) if on == id => {}
                // Unknown: it ran for this controller's previous life.
                None => {
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
            let e = &mut self.engines[id];
            e.running.remove(&tid);
            if track {
                e.estimate.observe(outcome.elapsed_us);
            }
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
            let Some(task) = self.tasks.remove(tid) else {
                continue;
            };
            self.events
                .finished(task.func, &outcome, true, self.wall_us());
            self.finish(task.client, outcome, payload, &mut deliveries);
        }
        let e = &mut self.engines[id];
        e.update_limit(self.config.hwm);
        self.free.update(e);
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
        if self.results.contains(tid) {
            return false;
        }
        if let Some(task) = self.tasks.get(tid) {
            if task.state != TaskState::Queued {
                return false;
            }
            // Queued again after a restart (from the task store) and finished meanwhile by
            // an engine of the previous life: that result is the answer; it does not run twice.
            let Some(task) = self.tasks.remove(tid) else {
                return false;
            };
            self.queues.left_queue();
            self.finish(task.client, outcome, payload, deliveries);
            return true;
        }
        self.clients.avoid(tid.client());
        self.finish(None, outcome, payload, deliveries);
        true
    }

    /// Records a finished task: counted, stored, and queued for delivery to its client; then
    /// settles the tasks waiting for it (a failure fails them in turn).
    pub(super) fn finish(
        &mut self,
        client: Option<ClientSlot>,
        outcome: TaskOutcome,
        payload: Payload,
        deliveries: &mut Deliveries,
    ) {
        let mut pending: Vec<Failed> = vec![(client, outcome, payload)];
        while let Some((client, outcome, payload)) = pending.pop() {
            self.settle_dependents(&outcome, &mut pending);
            if self.config.persist {
                let record = Record::finished(outcome.clone(), self.wall_us(), payload.clone());
                self.records.push(record);
            }
            self.results.record(outcome.clone(), payload.clone());
            deliveries.push(client, outcome, payload);
        }
    }

    /// Sends each client its finished tasks.
    pub(super) fn deliver(&mut self, deliveries: Deliveries, out: &mut Vec<Action>) {
        for (client, results, payloads) in deliveries.by_client {
            // Clients that went away get nothing; their results stay in the store.
            if let Some(route) = client.and_then(|c| self.clients.route(c)).cloned() {
                if self.config.persist {
                    let time_us = self.wall_us();
                    self.records.extend(
                        results
                            .iter()
                            .map(|o| Record::Acknowledged { id: o.id, time_us }),
                    );
                }
                out.push(Action::ToClient {
                    route,
                    msg: ToClient::Results { results },
                    payloads,
                });
            }
        }
    }

    /// `FromClient::Fetch`: the stored results among `ids`, then which are still running
    /// (or waiting) and which are unknown; always answered, if only with the second. With a
    /// task store, ids not in memory are looked up there first.
    pub(super) fn fetch(&mut self, route: &[u8], ids: Vec<TaskId>, out: &mut Vec<Action>) {
        if self.config.persist {
            let missing: Vec<TaskId> = ids
                .iter()
                .copied()
                .filter(|&id| !self.results.contains(id) && !self.tasks.contains(id))
                .collect();
            if !missing.is_empty() {
                let route = route.to_vec();
                self.look_up(missing, Deferred::Fetch { route, ids }, out);
                return;
            }
        }
        self.answer_fetch(route, ids, &HashMap::new(), out);
    }

    /// Answers a fetch from memory and from `found`, the store's answers for the ids memory
    /// did not hold.
    pub(super) fn answer_fetch(
        &self,
        route: &[u8],
        ids: Vec<TaskId>,
        found_on_disk: &HashMap<TaskId, Lookup>,
        out: &mut Vec<Action>,
    ) {
        let mut results = Vec::new();
        let mut found = Vec::new();
        let mut pending = Vec::new();
        let mut unknown = Vec::new();
        for id in ids {
            if let Some(stored) = self.results.get(id) {
                results.push(stored.outcome.clone());
                found.push(stored.payload.clone());
            } else if self.tasks.contains(id) {
                pending.push(id);
            } else {
                match found_on_disk.get(&id) {
                    Some(Lookup::Finished {
                        outcome,
                        payload,
                        payload_state,
                    }) => {
                        let (outcome, payload) =
                            from_disk(outcome.clone(), payload.clone(), *payload_state);
                        results.push(outcome);
                        found.push(payload);
                    }
                    Some(Lookup::Unfinished(_)) => pending.push(id),
                    _ => unknown.push(id),
                }
            }
        }
        if !results.is_empty() {
            reply(out, route, ToClient::Results { results }, found);
        }
        reply(
            out,
            route,
            ToClient::Pending { pending, unknown },
            Vec::new(),
        );
    }

    /// `FromClient::Purge`: forgets stored results (all of them when `ids` is empty).
    pub(super) fn purge(&mut self, route: &[u8], ids: Vec<TaskId>, out: &mut Vec<Action>) {
        if self.config.persist {
            let purge = if ids.is_empty() {
                store::Purge::All
            } else {
                store::Purge::Ids(ids.clone())
            };
            self.records.push(Record::Purged(purge));
            self.lookups.purged(self.now, ids.clone());
        }
        self.results.purge(ids);
        reply(out, route, ToClient::Ack, Vec::new());
    }
}

impl Core {
    /// `FromClient::PurgeBefore`: forgets the results of tasks submitted before `before_us`
    /// (wall clock, µs since the epoch). The store deletes by submission time; memory, which
    /// does not keep that time, drops the results of tasks that started before it (a task
    /// starts after its submission, so none submitted before is kept) and those that never
    /// ran.
    pub(super) fn purge_before(&mut self, route: &[u8], before_us: u64, out: &mut Vec<Action>) {
        if self.config.persist {
            self.records
                .push(Record::Purged(store::Purge::Before(before_us)));
        }
        let old: Vec<TaskId> = self
            .results
            .store
            .values()
            .filter(|s| s.outcome.started_us < before_us)
            .map(|s| s.outcome.id)
            .collect();
        if !old.is_empty() {
            if self.config.persist {
                self.lookups.purged(self.now, old.clone());
            }
            self.results.purge(old);
        }
        reply(out, route, ToClient::Ack, Vec::new());
    }
}

/// A result read back from the task store: its outcome and payload, or, when the store kept
/// no payload (too large, or dropped while the disk failed), a failure that says so.
pub(super) fn from_disk(
    outcome: TaskOutcome,
    payload: Option<Payload>,
    state: PayloadState,
) -> (TaskOutcome, Payload) {
    match payload {
        Some(p) => (outcome, p),
        None if !matches!(outcome.status, Status::Ok) => (outcome, Payload::default()),
        None => {
            let why = match state {
                PayloadState::TooLarge => "it was larger than store_payload_max_bytes",
                PayloadState::Backlog => "the store dropped it while it could not write",
                _ => "it was not kept",
            };
            let message = format!(
                "task {} succeeded, but the task store has no copy of its result: {why}",
                outcome.id
            );
            let failed = TaskOutcome {
                status: Status::Err(TaskError {
                    kind: ErrorKind::Remote,
                    message,
                    engine: outcome.engine,
                }),
                ..outcome
            };
            (failed, Payload::default())
        }
    }
}
