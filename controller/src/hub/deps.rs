//! Dependencies between tasks: `after` (run once these succeeded) and `follow` (run where
//! these ran). A task with unfinished dependencies *waits*, listed here under each task it
//! waits for; when the last one succeeds it is released into a queue class, and when one fails
//! (or a `follow` can no longer be met) it fails in turn, and so do the tasks waiting for it.
//! Dependencies that can never be met (on itself, on a task this controller does not know, on
//! a task that failed) fail the task at submission.

use super::clients::ClientSlot;
use super::tasks::{Task, TaskState};
use super::{describe, failure, function_of, id_list, queues::ClassKey, Core, Payload};
use protocol::{EngineId, ErrorKind, Status, TaskId, TaskOutcome};
use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::Arc;

/// Waiting tasks by the task they wait for.
#[derive(Debug, Default)]
pub(super) struct Deps {
    /// Waiting tasks by the task they wait for (and whether they follow it).
    dependents: HashMap<TaskId, Vec<(TaskId, bool)>>,
    /// Tasks waiting for dependencies.
    waiting: u64,
}

impl Deps {
    /// Tasks waiting now.
    pub(super) fn waiting(&self) -> u64 {
        self.waiting
    }

    /// Whether a waiting task `tid` is listed under some task in `unfinished`.
    #[cfg(test)]
    pub(super) fn is_listed(&self, tid: TaskId, unfinished: impl Fn(TaskId) -> bool) -> bool {
        self.dependents
            .iter()
            .any(|(d, list)| unfinished(*d) && list.iter().any(|(w, _)| *w == tid))
    }

    /// Tasks that have waiting dependents, for tests that check nothing leaks.
    #[cfg(test)]
    pub(super) fn waited_for(&self) -> usize {
        self.dependents.len()
    }

    /// Task `tid` waits for `pending` (each with whether it follows it).
    fn wait_for(&mut self, tid: TaskId, pending: Vec<(TaskId, bool)>) {
        for (dep, follow) in pending {
            self.dependents.entry(dep).or_default().push((tid, follow));
        }
        self.waiting += 1;
    }

    /// A waiting task stopped waiting (released, failed, aborted or timed out).
    pub(super) fn stopped_waiting(&mut self) {
        self.waiting = self.waiting.saturating_sub(1);
    }

    /// The tasks that waited for `done`, which finished.
    pub(super) fn take_dependents(&mut self, done: TaskId) -> Option<Vec<(TaskId, bool)>> {
        self.dependents.remove(&done)
    }
}

/// A new task's dependencies as submitted.
pub(super) struct DepRequest {
    pub(super) after: Vec<TaskId>,
    pub(super) follow: Vec<TaskId>,
}

/// What became of a new task with dependencies.
pub(super) enum DepVerdict {
    /// It waits (recorded, counted, and in the task table).
    Waits,
    /// They have all finished: it goes on to be queued.
    Met(Box<Task>),
    /// They can never be met: it fails with this message.
    Fails(String),
}

impl Core {
    /// Records the dependencies of new task `tid`: it waits for the unfinished ones, goes on
    /// when all have finished, or fails when they can never be met.
    pub(super) fn depend(&mut self, tid: TaskId, mut task: Task, deps: DepRequest) -> DepVerdict {
        match self.dependencies(tid, &mut task, deps) {
            Err(message) => DepVerdict::Fails(message),
            Ok(pending) if !pending.is_empty() => {
                task.state = TaskState::Waiting;
                task.deps_left = u32::try_from(pending.len()).unwrap_or(u32::MAX);
                self.deps.wait_for(tid, pending);
                self.arm_start_timer(tid, &mut task);
                self.tasks.insert(tid, task);
                DepVerdict::Waits
            }
            Ok(_) => DepVerdict::Met(Box::new(task)),
        }
    }

    /// Checks the dependencies of a new task: the ones not finished yet (with whether the
    /// task follows them), or why they can never be met.
    fn dependencies(
        &self,
        tid: TaskId,
        task: &mut Task,
        deps: DepRequest,
    ) -> Result<Vec<(TaskId, bool)>, String> {
        let mut deps: Vec<(TaskId, bool)> = deps
            .after
            .into_iter()
            .map(|d| (d, false))
            .chain(deps.follow.into_iter().map(|d| (d, true)))
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
            if let Some(stored) = self.results.get(dep) {
                if !matches!(stored.outcome.status, Status::Ok) {
                    return Err(format!(
                        "task {tid} {how} task {dep}, which {}",
                        describe(&stored.outcome)
                    ));
                }
                if follows {
                    note_follow(tid, task, dep, stored.outcome.engine)?;
                }
            } else if self.tasks.contains(dep) {
                pending.push((dep, follows));
            } else {
                return Err(format!(
                    "task {tid} {how} task {dep}, which this controller does not know (never submitted, purged, or sent to an earlier controller)"
                ));
            }
        }
        Ok(pending)
    }

    /// Dependency `done` of waiting task `tid` finished: counts it down, and queues the task
    /// when it was the last. Returns the task's client and failure when it can no longer run.
    pub(super) fn settle(
        &mut self,
        tid: TaskId,
        done: &TaskOutcome,
        follows: bool,
    ) -> Option<Failed> {
        let task = self.tasks.get_mut(tid)?;
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
        self.deps.stopped_waiting();
        let outcome = match verdict {
            Err(message) => failure(tid, None, ErrorKind::Dependency, message),
            Ok(()) => match self.release(tid) {
                Ok(()) => return None,
                Err(outcome) => *outcome,
            },
        };
        let task = self.tasks.remove(tid)?;
        Some((task.client, outcome, Arc::default()))
    }

    /// Queues a task whose dependencies have all finished (narrowing it to the engine its
    /// `follow` tasks ran on). The error is the outcome it fails with instead.
    pub(super) fn release(&mut self, tid: TaskId) -> Result<(), Box<TaskOutcome>> {
        let Some(task) = self.tasks.get(tid) else {
            return Ok(());
        };
        let fail = |message: String| -> Result<(), Box<TaskOutcome>> {
            Err(Box::new(failure(tid, None, ErrorKind::Dependency, message)))
        };
        let mut targets = task.targets.clone();
        if task.follows {
            let Some(engine) = task.follow_engine else {
                return fail(format!(
                    "task {tid} follows tasks that did not report where they ran"
                ));
            };
            if !targets.is_empty() && targets.binary_search(&engine).is_err() {
                return fail(format!(
                    "task {tid} follows tasks that ran on engine {engine}, which is not among its targets ({})",
                    id_list(targets.iter().copied())
                ));
            }
            if !self.engines.get(engine).is_some_and(|e| e.alive) {
                return fail(format!(
                    "task {tid} follows tasks that ran on engine {engine}, which is no longer registered"
                ));
            }
            targets = vec![engine];
        }
        let key = ClassKey {
            function: task.work.as_ref().and_then(function_of).map(str::to_owned),
            targets,
            excluded: task.excluded.clone(),
        };
        match self.queues.class_for(&key, &self.engines) {
            Ok(cid) => {
                let Some(task) = self.tasks.get_mut(tid) else {
                    return Ok(());
                };
                task.targets = key.targets;
                // Not `move_to`: the start limit armed at submission still counts.
                task.state = TaskState::Queued;
                let seq = task.seq;
                self.queues.push(cid, tid, seq);
                Ok(())
            }
            Err((kind, message)) => Err(Box::new(failure(tid, None, kind, message))),
        }
    }

    /// Settles the tasks that waited for `done`, which finished; those that can no longer run
    /// join `failed`.
    pub(super) fn settle_dependents(&mut self, done: &TaskOutcome, failed: &mut Vec<Failed>) {
        if let Some(dependents) = self.deps.take_dependents(done.id) {
            for (dependent, follows) in dependents {
                if let Some(f) = self.settle(dependent, done, follows) {
                    failed.push(f);
                }
            }
        }
    }
}

/// A task that can no longer run: its client, outcome and (empty) value.
pub(super) type Failed = (Option<ClientSlot>, TaskOutcome, Payload);

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
