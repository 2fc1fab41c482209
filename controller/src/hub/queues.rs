//! Queue classes: the queued tasks, one FIFO per distinct (function, targets, blacklist), so
//! that a scheduling pass looks at each class's head only and never scans the queue.
//!
//! A class exists while it has entries. Entries are `(task, its submission seq)`; a task that
//! leaves the queue other than through the pass (aborted, timed out, claimed by an engine that
//! holds it) leaves its entry behind, and the entry is skipped once it reaches the head. The
//! count of *live* entries is kept here too. A class is refused when no registered engine can
//! ever run its tasks (see [`Engines::check`]); classes are checked again whenever engines
//! come or go.

use super::engines::Engines;
use super::results::Deliveries;
use super::{failure, Core};
use protocol::{EngineId, ErrorKind, TaskId};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

/// Why tasks of a class can never run: the error kind and message their outcome gets.
pub(super) type Refusal = (ErrorKind, String);

/// What tasks of one queue have in common, and so which engines may run them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ClassKey {
    /// Function the engine must offer (`None` for commands, which run anywhere).
    pub(super) function: Option<String>,
    /// Allowed engines, sorted (any when empty).
    pub(super) targets: Vec<EngineId>,
    /// Engines it failed or was lost on, sorted.
    pub(super) excluded: Vec<EngineId>,
}

/// One queue.
#[derive(Debug)]
pub(super) struct Class {
    pub(super) key: ClassKey,
    /// `(task, its submission seq)`; an entry whose task is no longer queued with that seq
    /// (aborted, timed out) is skipped.
    pub(super) queue: VecDeque<(TaskId, u64)>,
}

/// The queue classes, by index (an index is reused once its class is gone).
#[derive(Debug, Default)]
pub(super) struct Queues {
    classes: Vec<Option<Class>>,
    index: HashMap<ClassKey, usize>,
    spare: Vec<usize>,
    /// Tasks queued (live entries of the classes).
    queued: u64,
}

impl Queues {
    /// Tasks queued now.
    pub(super) fn queued(&self) -> u64 {
        self.queued
    }

    /// Every class.
    #[cfg(test)]
    pub(super) fn classes(&self) -> impl Iterator<Item = &Class> {
        self.classes.iter().flatten()
    }

    /// The class for `key`, created if needed; an error when no registered engine can ever
    /// run its tasks.
    pub(super) fn class_for(
        &mut self,
        key: &ClassKey,
        engines: &Engines,
    ) -> Result<usize, Refusal> {
        if let Some(&cid) = self.index.get(key) {
            return Ok(cid);
        }
        engines.check(key)?;
        let class = Class {
            key: key.clone(),
            queue: VecDeque::new(),
        };
        let cid = match self.spare.pop() {
            Some(cid) => {
                self.classes[cid] = Some(class);
                cid
            }
            None => {
                self.classes.push(Some(class));
                self.classes.len() - 1
            }
        };
        self.index.insert(key.clone(), cid);
        Ok(cid)
    }

    /// Queues task `tid` (submitted as `seq`) at the back of class `cid`.
    pub(super) fn push(&mut self, cid: usize, tid: TaskId, seq: u64) {
        if let Some(class) = self.classes.get_mut(cid).and_then(Option::as_mut) {
            class.queue.push_back((tid, seq));
            self.queued += 1;
        }
    }

    /// A queued task left the queue without being taken from it; its entry stays behind.
    pub(super) fn left_queue(&mut self) {
        self.queued = self.queued.saturating_sub(1);
    }

    /// The key of class `cid`.
    pub(super) fn key(&self, cid: usize) -> Option<&ClassKey> {
        Some(&self.classes.get(cid)?.as_ref()?.key)
    }

    /// The entry at the head of class `cid`.
    pub(super) fn front(&self, cid: usize) -> Option<(TaskId, u64)> {
        self.classes.get(cid)?.as_ref()?.queue.front().copied()
    }

    /// Takes the head of class `cid` out, counting it; the class goes once it is empty.
    /// Returns the entry and the seq of the next head.
    pub(super) fn pop_front(&mut self, cid: usize) -> Option<((TaskId, u64), Option<u64>)> {
        let class = self.classes.get_mut(cid)?.as_mut()?;
        let entry = class.queue.pop_front()?;
        let next = class.queue.front().map(|&(_, seq)| seq);
        if next.is_none() {
            self.remove_class(cid);
        }
        self.queued = self.queued.saturating_sub(1);
        Some((entry, next))
    }

    /// Drops the head of class `cid`, an entry left behind (not counted).
    pub(super) fn drop_front(&mut self, cid: usize) {
        if let Some(class) = self.classes.get_mut(cid).and_then(Option::as_mut) {
            class.queue.pop_front();
        }
    }

    pub(super) fn remove_class(&mut self, cid: usize) {
        if let Some(class) = self.classes.get_mut(cid).and_then(Option::take) {
            self.index.remove(&class.key);
            self.spare.push(cid);
        }
    }

    /// Each class's head as `(seq, class)`, oldest first.
    pub(super) fn heads(&self) -> BinaryHeap<Reverse<(u64, usize)>> {
        self.classes
            .iter()
            .enumerate()
            .filter_map(|(cid, c)| {
                let (_, seq) = c.as_ref()?.queue.front()?;
                Some(Reverse((*seq, cid)))
            })
            .collect()
    }

    /// Takes out every class the engines registered now can never run, with why.
    fn take_unrunnable(&mut self, engines: &Engines) -> Vec<(Class, Refusal)> {
        let mut taken = Vec::new();
        for cid in 0..self.classes.len() {
            let Some(class) = &self.classes[cid] else {
                continue;
            };
            let Err(refusal) = engines.check(&class.key) else {
                continue;
            };
            if let Some(class) = self.classes[cid].take() {
                self.index.remove(&class.key);
                self.spare.push(cid);
                taken.push((class, refusal));
            }
        }
        taken
    }
}

impl Core {
    /// Fails the queued tasks of every class that can no longer run anywhere.
    pub(super) fn recheck_classes(&mut self, deliveries: &mut Deliveries) {
        // Failing a task fails only its dependents (nothing is queued meanwhile), so the
        // classes can be taken out first.
        for (class, (kind, message)) in self.queues.take_unrunnable(&self.engines) {
            for (tid, seq) in class.queue {
                if !self.tasks.is_queued(tid, seq) {
                    continue;
                }
                self.queues.left_queue();
                if let Some(task) = self.tasks.remove(tid) {
                    let engine = task.excluded.last().copied();
                    let message = format!("task {tid} cannot run: {message}");
                    let outcome = failure(tid, engine, kind, message);
                    self.finish(task.client, outcome, Arc::default(), deliveries);
                }
            }
        }
    }
}
