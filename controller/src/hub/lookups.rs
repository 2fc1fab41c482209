//! Requests that wait for the task store: what memory no longer holds is looked up on disk
//! ([`Action::Lookup`]), the request waits here under a tag, and the store's answer
//! ([`Core::on_lookup_answer`]) completes it. Also the restart: [`Core::recover`] queues again
//! the tasks a previous controller left unfinished.
//!
//! Which requests wait: a fetch of ids neither unfinished nor among the cached results; a
//! submission that mentions ids memory does not know but the store may (a task of a client of
//! the previous controller, submitted again; a dependency that finished long ago). Found
//! results of a submission enter the result cache, so the submission then proceeds as if they
//! had always been in memory: a finished task is answered, not run again.

use super::results::from_disk;
use super::tasks::{Task, TaskState};
use super::{reply, Action, Core, Route};
use protocol::{RecordState, TaskId, ToClient};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use store::{Answer, Lookup, Query, RecoveredTask};

/// A request waiting for the store.
#[derive(Debug)]
pub(super) enum Deferred {
    /// `FromClient::Fetch`.
    Fetch { route: Route, ids: Vec<TaskId> },
    /// `FromClient::Submit`.
    Submit {
        route: Route,
        requests: Vec<protocol::TaskRequest>,
        payloads: Vec<Vec<u8>>,
    },
    /// `FromClient::History`.
    History { route: Route },
    /// `FromClient::Status`: the report waits for the store's per-function figures.
    Status { route: Route },
    /// `FromClient::Abort`: the answer, made from memory, waits for the store to say which of
    /// the ids memory did not know had finished (their results left memory once delivered).
    Abort { route: Route, answer: AbortAnswer },
}

/// An abort's answer, by list (see `ToClient::Aborted`).
#[derive(Debug, Default)]
pub(super) struct AbortAnswer {
    pub(super) aborted: Vec<TaskId>,
    pub(super) running: Vec<TaskId>,
    pub(super) finished: Vec<TaskId>,
    pub(super) unknown: Vec<TaskId>,
}

impl AbortAnswer {
    /// The reply message.
    pub(super) fn message(self) -> ToClient {
        ToClient::Aborted {
            aborted: self.aborted,
            running: self.running,
            finished: self.finished,
            unknown: self.unknown,
        }
    }
}

impl Deferred {
    /// The client connection the request came from.
    fn route(&self) -> &Route {
        match self {
            Deferred::Fetch { route, .. }
            | Deferred::Submit { route, .. }
            | Deferred::History { route }
            | Deferred::Status { route }
            | Deferred::Abort { route, .. } => route,
        }
    }
}

/// A client message held back behind one of the same client that waits for the store.
type Held = (protocol::FromClient, Vec<Vec<u8>>);

/// The waiting requests, by tag.
#[derive(Debug, Default)]
pub(super) struct Lookups {
    waiting: HashMap<u64, Deferred>,
    /// Messages of clients with a request waiting for the store, in arrival order: a client's
    /// messages are handled in the order it sent them (an abort must not overtake the submit
    /// of the task it aborts).
    held: HashMap<Route, std::collections::VecDeque<Held>>,
    next_tag: u64,
    /// Purges of the last [`PURGE_MEMORY`] (when, which ids; empty: all): the store may
    /// not have committed them yet, so its answers for those ids are not believed.
    purges: std::collections::VecDeque<(Duration, Vec<TaskId>)>,
}

/// How long a purge is remembered against answers the store gives before committing it.
const PURGE_MEMORY: Duration = Duration::from_secs(5);

impl Lookups {
    pub(super) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Remembers a purge made at `now` (`ids` empty: all).
    pub(super) fn purged(&mut self, now: Duration, ids: Vec<TaskId>) {
        while self
            .purges
            .front()
            .is_some_and(|(t, _)| now.saturating_sub(*t) > PURGE_MEMORY)
        {
            self.purges.pop_front();
        }
        self.purges.push_back((now, ids));
    }

    /// Whether `id` was purged lately.
    fn purged_lately(&self, id: TaskId, now: Duration) -> bool {
        self.purges.iter().any(|(t, ids)| {
            now.saturating_sub(*t) <= PURGE_MEMORY && (ids.is_empty() || ids.contains(&id))
        })
    }

    /// Whether a message from `route` must wait behind an earlier one.
    pub(super) fn holds(&self, route: &[u8]) -> bool {
        self.held.contains_key(route) || self.waiting_on(route)
    }

    fn waiting_on(&self, route: &[u8]) -> bool {
        self.waiting.values().any(|d| d.route().as_slice() == route)
    }

    /// Keeps a message from `route` until its earlier requests are answered.
    pub(super) fn hold(&mut self, route: &[u8], held: Held) {
        self.held.entry(route.to_vec()).or_default().push_back(held);
    }

    /// The next held message of `route`, once nothing of it waits for the store.
    fn next_held(&mut self, route: &[u8]) -> Option<Held> {
        if self.waiting_on(route) {
            return None;
        }
        let queue = self.held.get_mut(route)?;
        let next = queue.pop_front();
        if queue.is_empty() {
            self.held.remove(route);
        }
        next
    }

    fn add(&mut self, deferred: Deferred) -> u64 {
        self.next_tag += 1;
        self.waiting.insert(self.next_tag, deferred);
        self.next_tag
    }
}

impl Core {
    /// Asks the store about `ids` for `deferred`, which waits for the answer.
    pub(super) fn look_up(&mut self, ids: Vec<TaskId>, deferred: Deferred, out: &mut Vec<Action>) {
        let tag = self.lookups.add(deferred);
        out.push(Action::Lookup {
            tag,
            query: Query::Lookup(ids),
        });
    }

    /// Asks the store `query` (not a lookup of ids) for `deferred`.
    pub(super) fn ask_store(&mut self, query: Query, deferred: Deferred, out: &mut Vec<Action>) {
        let tag = self.lookups.add(deferred);
        out.push(Action::Lookup { tag, query });
    }

    /// `FromClient::History`: the store's records matching `filter`. Without a store
    /// (`db = "none"`) the answer is an error that says how to get one: memory holds only
    /// unfinished tasks and results, not their history.
    pub(super) fn history(
        &mut self,
        route: &[u8],
        filter: protocol::HistoryFilter,
        out: &mut Vec<Action>,
    ) {
        if !self.config.persist {
            let message = "this controller keeps no task history (db = \"none\"): start it with \
                           db = \"sqlite\" (the default) or db = \"memory\" in cluster.toml \
                           (or CLUSTER_DB)"
                .to_owned();
            super::reply(out, route, ToClient::Error { message }, Vec::new());
            return;
        }
        let query = Query::History(store_filter(filter));
        self.ask_store(
            query,
            Deferred::History {
                route: route.to_vec(),
            },
            out,
        );
    }

    /// The task store answered the lookup `tag`: the request waiting for it completes.
    pub fn on_lookup_answer(&mut self, tag: u64, answer: Answer, now: Duration) -> Vec<Action> {
        let route = self.lookups.waiting.get(&tag).map(|d| d.route().clone());
        let mut out = self.answer_lookup(tag, answer, now);
        // Then what the same client sent meanwhile, in order, until one waits again.
        if let Some(route) = route {
            while let Some((msg, payloads)) = self.lookups.next_held(&route) {
                out.extend(self.client_message(&route, msg, payloads));
            }
        }
        out
    }

    fn answer_lookup(&mut self, tag: u64, answer: Answer, now: Duration) -> Vec<Action> {
        self.advance(now);
        let mut out = Vec::new();
        let Some(deferred) = self.lookups.waiting.remove(&tag) else {
            tracing::debug!("an answer of the task store for no waiting request ({tag}); ignored");
            return out;
        };
        let (deferred, answer) = match (deferred, answer) {
            (Deferred::History { route }, answer) => {
                let msg = match answer {
                    Answer::History(Ok(records)) => ToClient::History {
                        records: records.into_iter().map(history_record).collect(),
                    },
                    Answer::History(Err(e)) => ToClient::Error {
                        message: format!("the task store could not answer: {e}"),
                    },
                    other => ToClient::Error {
                        message: format!("the task store answered {other:?} to a history query"),
                    },
                };
                super::reply(&mut out, &route, msg, Vec::new());
                return out;
            }
            (Deferred::Status { route }, answer) => {
                let mut report = self.status(self.now);
                match answer {
                    Answer::Stats(Ok(stats)) => {
                        report.functions = Some(stats.into_iter().map(function_summary).collect());
                    }
                    Answer::Stats(Err(e)) => {
                        tracing::debug!("task store: no per-function figures for status: {e}")
                    }
                    other => tracing::warn!("unexpected task store answer {other:?} to stats"),
                }
                super::reply(
                    &mut out,
                    &route,
                    ToClient::Status(Box::new(report)),
                    Vec::new(),
                );
                return out;
            }
            (deferred, answer) => (deferred, answer),
        };
        let found: HashMap<TaskId, Lookup> = match answer {
            Answer::Lookup(Ok(found)) => found
                .into_iter()
                .filter(|(id, l)| {
                    !(matches!(l, Lookup::Finished { .. })
                        && self.lookups.purged_lately(*id, self.now))
                })
                .collect(),
            Answer::Lookup(Err(e)) => {
                tracing::warn!("task store lookup failed: {e}; answering from memory only");
                HashMap::new()
            }
            other => {
                tracing::warn!("unexpected task store answer {other:?} to a lookup; ignored");
                HashMap::new()
            }
        };
        match deferred {
            Deferred::Fetch { route, ids } => self.answer_fetch(&route, ids, &found, &mut out),
            Deferred::Abort { route, mut answer } => {
                let (finished, unknown) = std::mem::take(&mut answer.unknown)
                    .into_iter()
                    .partition(|id| matches!(found.get(id), Some(Lookup::Finished { .. })));
                answer.finished.extend::<Vec<TaskId>>(finished);
                answer.unknown = unknown;
                reply(&mut out, &route, answer.message(), Vec::new());
            }
            Deferred::History { .. } | Deferred::Status { .. } => {}
            Deferred::Submit {
                route,
                requests,
                payloads,
            } => {
                for (_, lookup) in found {
                    if let Lookup::Finished {
                        outcome,
                        payload,
                        payload_state,
                    } = lookup
                    {
                        if !self.tasks.contains(outcome.id) {
                            let (outcome, payload) = from_disk(outcome, payload, payload_state);
                            self.results.keep(outcome, payload);
                        }
                    }
                }
                self.submit_now(&route, requests, payloads, &mut out);
            }
        }
        self.flush_records(&mut out);
        out
    }

    /// Queues again the tasks a previous controller left queued or running (from the task
    /// store, in submission order), so that each runs (again: at least once). They have no
    /// client connection until their client submits them again or fetches their results;
    /// their dependencies are not waited for (they had been met, or are recovered too). A task
    /// whose argument the store did not keep cannot run and is left to its client. Returns how
    /// many were queued.
    pub fn recover(&mut self, tasks: Vec<RecoveredTask>) -> usize {
        let mut queued = 0;
        for rec in tasks {
            let Some(argument) = rec.argument else {
                tracing::warn!(
                    "task {} was unfinished but the store kept no argument ({} bytes); it runs again only if its client submits it again",
                    rec.request.id,
                    rec.argument_size
                );
                continue;
            };
            let tid = rec.request.id;
            if self.tasks.contains(tid) {
                continue;
            }
            self.clients.avoid(rec.client);
            let seq = self.tasks.next_seq();
            let mut task = Task::held(seq, protocol::EngineId(0));
            task.fill_in(rec.request, Arc::unwrap_or_clone(argument));
            task.move_to(TaskState::Queued);
            match self.queues.class_for(&task.class_key(), &self.engines) {
                Ok(cid) => {
                    self.arm_start_timer(tid, &mut task);
                    self.tasks.insert(tid, task);
                    self.queues.push(cid, tid, seq);
                    queued += 1;
                }
                Err((_, message)) => {
                    tracing::warn!("recovered task {tid} cannot be queued: {message}");
                }
            }
        }
        queued
    }
}

/// A client's history filter in the store's terms.
fn store_filter(f: protocol::HistoryFilter) -> store::HistoryFilter {
    store::HistoryFilter {
        state: f.state.map(|s| match s {
            RecordState::Queued => store::TaskState::Queued,
            RecordState::Running => store::TaskState::Running,
            RecordState::Ok => store::TaskState::Ok,
            RecordState::Failed => store::TaskState::Failed,
        }),
        function: f.function,
        engine: f.engine,
        client: f.client,
        since_us: f.since_us,
        limit: f.limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
    }
}

/// A store record as a client sees it.
fn history_record(r: store::TaskRecord) -> protocol::HistoryRecord {
    protocol::HistoryRecord {
        id: r.id,
        client: r.client,
        work: r.work,
        function: r.function,
        state: match r.state {
            store::TaskState::Queued => RecordState::Queued,
            store::TaskState::Running => RecordState::Running,
            store::TaskState::Ok => RecordState::Ok,
            store::TaskState::Failed => RecordState::Failed,
        },
        submitted_us: r.submitted_us,
        started_us: r.started_us,
        completed_us: r.completed_us,
        elapsed_us: r.elapsed_us,
        engine: r.engine,
        error: r.error,
        argument_size: r.argument_size,
        result_size: r.result_size,
        result: match r.result {
            store::PayloadState::Kept => "kept",
            store::PayloadState::TooLarge => "too_large",
            store::PayloadState::Backlog => "backlog",
            store::PayloadState::Absent => "absent",
        }
        .to_owned(),
    }
}

/// A function's figures as `cluster status` shows them.
fn function_summary(s: store::FunctionStats) -> protocol::FunctionSummary {
    protocol::FunctionSummary {
        function: s.function,
        queued: s.queued,
        running: s.running,
        ok: s.ok,
        failed: s.failed,
        p50_us: s.p50_us,
        p99_us: s.p99_us,
    }
}
