//! The scheduling pass: hands queued tasks to engines with room, and sends each engine its
//! share as one `Tasks` message.
//!
//! A pass runs after every event that can add work or free a slot. It takes the queue classes'
//! heads oldest first (by submission seq, so classes are served in submission order), asks the
//! free-engine indexes for the configured scheduler's choice among the engines that may run
//! that class (`free.rs`), and stops when no engine is free. Capacity only shrinks during a
//! pass, so a class no engine can take now is left until the next one.

use super::tasks::TaskState;
use super::{Action, Core, Payload};
use protocol::{Assignment, EngineId, TaskId, ToEngine};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// What one pass gives each engine, in the order engines were first chosen.
#[derive(Default)]
struct Batches {
    list: Vec<(EngineId, Vec<Assignment>, Vec<Payload>)>,
    of: HashMap<EngineId, usize>,
}

impl Batches {
    fn push(&mut self, engine: EngineId, assignment: Assignment, payload: Payload) {
        let list = &mut self.list;
        let b = *self.of.entry(engine).or_insert_with(|| {
            list.push((engine, Vec::new(), Vec::new()));
            list.len() - 1
        });
        self.list[b].1.push(assignment);
        self.list[b].2.push(payload);
    }
}

impl Core {
    /// One scheduling pass (see the module documentation).
    pub(super) fn schedule(&mut self, out: &mut Vec<Action>) {
        if self.queues.queued() == 0 || self.free.is_empty() {
            return;
        }
        let mut heads = self.queues.heads();
        let mut batches = Batches::default();
        while let Some(Reverse((_, cid))) = heads.pop() {
            if self.free.is_empty() {
                break;
            }
            if !self.head_is_next(cid, &mut heads) {
                continue;
            }
            let chosen = match self.queues.key(cid) {
                Some(key) => self.free.pick(key, &self.engines, &mut self.rng),
                None => None,
            };
            let Some(eid) = chosen else {
                continue;
            };
            let Some(((tid, _), next)) = self.queues.pop_front(cid) else {
                continue;
            };
            if let Some(next) = next {
                heads.push(Reverse((next, cid)));
            }
            if let Some((assignment, payload)) = self.assign(tid, eid) {
                batches.push(eid, assignment, payload);
            }
        }
        for (eid, tasks, payloads) in batches.list {
            out.push(Action::ToEngine {
                engine: eid,
                route: self.engines[eid].route.clone(),
                msg: ToEngine::Tasks { tasks },
                payloads,
            });
        }
    }

    /// Whether class `cid`, just taken from `heads`, should be served now: drops the entries
    /// left behind at its head (aborted, timed out), and puts it back in `heads` if that
    /// moved it behind another class. False when it is empty (it is removed) or put back.
    fn head_is_next(&mut self, cid: usize, heads: &mut BinaryHeap<Reverse<(u64, usize)>>) -> bool {
        while let Some((tid, seq)) = self.queues.front(cid) {
            if self.tasks.is_queued(tid, seq) {
                break;
            }
            self.queues.drop_front(cid);
        }
        let Some((_, head_seq)) = self.queues.front(cid) else {
            self.queues.remove_class(cid);
            return false;
        };
        if heads.peek().is_some_and(|Reverse((s, _))| *s < head_seq) {
            // Skipping moved this class behind another; take its turn in order.
            heads.push(Reverse((head_seq, cid)));
            return false;
        }
        true
    }

    /// Task `tid`, just taken from its queue, runs on `eid`: what the engine is sent.
    fn assign(&mut self, tid: TaskId, eid: EngineId) -> Option<(Assignment, Payload)> {
        let now = self.now;
        let task = self.tasks.get_mut(tid)?;
        // Keep a copy only if it may have to be sent again.
        let (work, payload) = if task.retries > 0 {
            (task.work.clone(), task.payload.clone())
        } else {
            (task.work.take(), task.payload.take())
        };
        let work = work?;
        task.move_to(TaskState::Running(eid));
        self.events.started(task.func);
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
        if self.config.persist {
            let time_us = self.wall_us();
            self.records.push(store::Record::Started {
                id: tid,
                engine: eid,
                time_us,
            });
        }
        self.engines.assign(eid, tid);
        self.free.update(&self.engines[eid]);
        Some((assignment, payload.unwrap_or_default()))
    }
}
