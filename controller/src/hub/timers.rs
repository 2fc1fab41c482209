//! Task time limits. A task's `timeout` bounds its wait to start, counted from submission
//! (and afresh when a retry sends it back to the queue); what is left of it travels with the
//! task, for the engine's own queue. Its run-time limit is enforced by the engine, counted
//! from the start the engine reports (`Started`); the controller arms a safety timer then, and
//! fails (or retries) the task if the engine has not reported [`RUN_TIMEOUT_GRACE`] after the
//! limit.
//!
//! Timers are never cancelled: each carries the task's *epoch* when it was armed, and a task
//! changes epoch whenever a timer armed for it stops applying (it started running, or went back
//! to the queue), so a stale timer is recognised when it fires and ignored.

use super::results::Deliveries;
use super::tasks::{Task, TaskState};
use super::{failure, Action, Core, RUN_TIMEOUT_GRACE};
use protocol::{ErrorKind, TaskId};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

/// Which limit a timer enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKind {
    /// Not started within its time limit of being submitted (or sent back to the queue).
    Start,
    /// Running past its limit without the engine reporting.
    Run,
}

/// A time limit of one task. Ordered by `when` first (the fields' order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Timer {
    /// When it fires, on the core's clock.
    pub(super) when: Duration,
    pub(super) task: TaskId,
    /// The task's epoch when it was armed: it applies only while the task keeps it.
    pub(super) epoch: u32,
    pub(super) kind: TimerKind,
}

/// Armed timers, soonest first.
#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<Timer>>,
}

impl Timers {
    pub(super) fn arm(&mut self, timer: Timer) {
        self.heap.push(Reverse(timer));
    }

    /// Timers armed, for tests that check nothing leaks.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }

    /// When the soonest timer fires.
    pub(super) fn next_due(&self) -> Option<Duration> {
        self.heap.peek().map(|Reverse(t)| t.when)
    }

    /// Takes out the soonest timer if it is due at `now`.
    fn pop_due(&mut self, now: Duration) -> Option<Timer> {
        if self.next_due()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse(t)| t)
    }
}

impl Task {
    /// Its start limit (this is task `tid`) counted from `now`, if it has one, recorded as its
    /// deadline.
    pub(super) fn start_timer(&mut self, tid: TaskId, now: Duration) -> Option<Timer> {
        let when = now + Duration::from_millis(self.timeout_ms?);
        self.start_deadline = Some(when);
        Some(Timer {
            when,
            task: tid,
            epoch: self.epoch,
            kind: TimerKind::Start,
        })
    }
}

impl Core {
    /// Arms the start limit of `task` (id `tid`), if it has one, from now.
    pub(super) fn arm_start_timer(&mut self, tid: TaskId, task: &mut Task) {
        if let Some(timer) = task.start_timer(tid, self.now) {
            self.timers.arm(timer);
        }
    }

    /// `FromEngine::Started`: arms the safety timer of tasks with a run-time limit that
    /// `route`'s engine started: if the engine neither stops such a task nor reports within
    /// the limit and a grace period, the controller fails (or retries) it.
    pub(super) fn on_started(&mut self, route: &[u8], ids: &[TaskId]) {
        let Some(engine) = self.engines.at_route(route) else {
            return;
        };
        for &tid in ids {
            let Some(task) = self.tasks.get(tid) else {
                continue;
            };
            let (TaskState::Running(on), Some(limit)) = (task.state, task.run_timeout_ms) else {
                continue;
            };
            if on == engine {
                self.timers.arm(Timer {
                    when: self.now + Duration::from_millis(limit) + RUN_TIMEOUT_GRACE,
                    task: tid,
                    epoch: task.epoch,
                    kind: TimerKind::Run,
                });
            }
        }
    }

    /// Fails the tasks whose time limits passed.
    pub(super) fn expire_timers(&mut self, now: Duration, out: &mut Vec<Action>) {
        let mut deliveries = Deliveries::default();
        let mut freed = false;
        while let Some(timer) = self.timers.pop_due(now) {
            let tid = timer.task;
            let Some(task) = self.tasks.get(tid) else {
                continue;
            };
            if task.epoch != timer.epoch {
                continue;
            }
            match (timer.kind, task.state) {
                (TimerKind::Start, TaskState::Waiting | TaskState::Queued) => {
                    self.start_expired(tid, &mut deliveries);
                }
                (TimerKind::Run, TaskState::Running(_)) => {
                    self.run_expired(tid, &mut deliveries);
                    freed = true;
                }
                _ => {}
            }
        }
        if freed || !deliveries.is_empty() {
            self.schedule(out);
        }
        self.deliver(deliveries, out);
    }

    /// Waiting or queued task `tid` did not start within its limit: it fails.
    fn start_expired(&mut self, tid: TaskId, deliveries: &mut Deliveries) {
        let Some(task) = self.tasks.remove(tid) else {
            return;
        };
        // Its queue entry or dependency listing stays behind and is skipped.
        let why = if task.state == TaskState::Waiting {
            self.deps.stopped_waiting();
            "its dependencies had not finished"
        } else {
            self.queues.left_queue();
            "no engine could take it"
        };
        let limit = task.timeout_ms.unwrap_or(0);
        let message =
            format!("task {tid} did not start within its time limit of {limit} ms ({why})");
        let outcome = failure(tid, None, ErrorKind::Timeout, message);
        self.events
            .finished(task.func, &outcome, false, self.wall_us());
        self.finish(task.client, outcome, Arc::default(), deliveries);
    }

    /// Running task `tid` ran past its limit and its engine did not report: it is retried
    /// elsewhere or fails; its engine's slot counts as free again.
    fn run_expired(&mut self, tid: TaskId, deliveries: &mut Deliveries) {
        let Some(task) = self.tasks.get(tid) else {
            return;
        };
        let TaskState::Running(engine) = task.state else {
            return;
        };
        let limit = task.run_timeout_ms.unwrap_or(0);
        if let Some(e) = self.engines.get_mut(engine) {
            e.running.remove(&tid);
            e.failed += 1;
            self.free.update(e);
        }
        if self.try_retry(tid, engine) {
            tracing::warn!("task {tid} ran past its time limit on engine {engine}, which did not report; retrying it elsewhere");
            return;
        }
        let Some(task) = self.tasks.remove(tid) else {
            return;
        };
        let message = format!(
            "task {tid} ran longer than its time limit of {limit} ms on engine {engine}, which did not stop it or report back"
        );
        let outcome = failure(tid, Some(engine), ErrorKind::Timeout, message);
        self.events
            .finished(task.func, &outcome, false, self.wall_us());
        self.finish(task.client, outcome, Arc::default(), deliveries);
    }
}
