//! The activity feed: what the hub publishes once a second for the dashboard and `cluster
//! top` ([`Notification::TaskStats`], [`Notification::TaskSamples`],
//! [`Notification::Failures`]), aggregated so that a run of 100k tasks a second costs the
//! subscribers three messages a second and the hub a few counter increments a task.
//!
//! **Per task** the hub only bumps counters: the task's function is interned once, at
//! submission, into a small index kept in the task ([`FuncIdx`]), and every later event
//! counts against that index in a table. A finished task also passes a reservoir (the first
//! [`MAX_SAMPLES`] of a second are kept, later ones replace a random kept one with the
//! right probability), which costs a random number and no allocation. Only the first
//! [`MAX_FAILURES`] failures of a second have their message copied.
//!
//! **Once a second** ([`Core::publish_events`], from `on_tick`) the counters become
//! notifications and start again. The totals finished and failed are the result store's
//! counts, and each engine's figures its own counters, taken as differences from the
//! previous second: those cost nothing per task. The maps in flight are the clients with
//! unfinished tasks, with how many they submitted since they last had none.
//!
//! With `CoreConfig::events` off, nothing is counted or published.

use super::clients::ClientSlot;
use super::Core;
use super::{Action, EngineId};
use protocol::{
    ClientId, EngineActivity, FunctionActivity, MapProgress, Notification, Status, TaskFailure,
    TaskOutcome, TaskSample, TaskStats,
};
use std::collections::HashMap;
use std::time::Duration;

/// A function's (or program's) index in the interned names.
pub(super) type FuncIdx = u32;

/// The index of tasks whose function the hub does not know (held across a restart), and of
/// every name past [`MAX_FUNCTIONS`].
pub(super) const UNKNOWN_FUNC: FuncIdx = 0;

/// How often the feed is published.
pub const EVENTS_PERIOD: Duration = Duration::from_secs(1);
/// Most finished tasks a second that [`Notification::TaskSamples`] lists.
pub const MAX_SAMPLES: usize = 200;
/// Most failures a second that [`Notification::Failures`] lists.
pub const MAX_FAILURES: usize = 10;
/// Most functions listed in a [`TaskStats`].
pub const MAX_LISTED_FUNCTIONS: usize = 32;
/// Most maps in flight followed (and listed) at once.
pub const MAX_MAPS: usize = 32;
/// Distinct names interned; later ones count as [`UNKNOWN_FUNC`] (a bound on memory when
/// every command runs another program).
const MAX_FUNCTIONS: usize = 4096;
/// Bytes of an error message kept in a [`TaskFailure`].
const MAX_MESSAGE: usize = 1000;

/// Counts of one function over the current second.
#[derive(Debug, Default, Clone, Copy)]
struct FnCounts {
    submitted: u64,
    started: u64,
    finished: u64,
    failed: u64,
}

impl FnCounts {
    fn activity(&self) -> u64 {
        self.submitted + self.started + self.finished + self.failed
    }
}

/// A kept sample, its function as an index until publication.
#[derive(Debug, Clone, Copy)]
struct Sample {
    engine: EngineId,
    func: FuncIdx,
    start_us: u64,
    end_us: u64,
    ok: bool,
}

/// A client's run of submissions.
#[derive(Debug)]
struct MapRun {
    slot: ClientSlot,
    client: ClientId,
    func: FuncIdx,
    total: u64,
    since_us: u64,
}

/// The feed's counters. See the module documentation.
#[derive(Debug)]
pub(super) struct Events {
    on: bool,
    names: Vec<String>,
    by_name: HashMap<String, FuncIdx>,
    /// The latest name interned: submissions come in runs of one function.
    last: FuncIdx,
    counts: Vec<FnCounts>,
    /// Indexes of `counts` touched this second.
    touched: Vec<FuncIdx>,
    submitted: u64,
    started: u64,
    samples: Vec<Sample>,
    /// Finished on engines this second (the reservoir's population).
    seen: u64,
    rng: u64,
    failures: Vec<TaskFailure>,
    unlisted: u64,
    maps: Vec<MapRun>,
    /// The result store's (done, failed) at the previous publication.
    last_totals: (u64, u64),
    /// Each engine's (completed, failed) at the previous publication.
    last_engine: HashMap<EngineId, (u64, u64)>,
    next_due: Duration,
    last_published: Duration,
}

impl Events {
    /// A feed that publishes first at `now + EVENTS_PERIOD`, or never when `on` is false.
    pub(super) fn new(on: bool, now: Duration, seed: u64) -> Events {
        Events {
            on,
            names: vec![String::new()],
            by_name: HashMap::new(),
            last: UNKNOWN_FUNC,
            counts: vec![FnCounts::default()],
            touched: Vec::new(),
            submitted: 0,
            started: 0,
            samples: Vec::with_capacity(if on { MAX_SAMPLES } else { 0 }),
            seen: 0,
            rng: seed | 1,
            failures: Vec::new(),
            unlisted: 0,
            maps: Vec::new(),
            last_totals: (0, 0),
            last_engine: HashMap::new(),
            next_due: if on {
                now + EVENTS_PERIOD
            } else {
                Duration::MAX
            },
            last_published: now,
        }
    }

    /// When the feed is next published (`Duration::MAX` when it is off).
    pub(super) fn next_due(&self) -> Duration {
        self.next_due
    }

    /// The index of `name` (an allocation only the first time a name is seen).
    pub(super) fn intern(&mut self, name: &str) -> FuncIdx {
        if !self.on {
            return UNKNOWN_FUNC;
        }
        if self.names[self.last as usize] == name {
            return self.last;
        }
        let idx = match self.by_name.get(name) {
            Some(&i) => i,
            None if self.names.len() < MAX_FUNCTIONS => {
                let i = self.names.len() as FuncIdx;
                self.names.push(name.to_owned());
                self.counts.push(FnCounts::default());
                self.by_name.insert(name.to_owned(), i);
                i
            }
            None => UNKNOWN_FUNC,
        };
        self.last = idx;
        idx
    }

    fn name(&self, func: FuncIdx) -> &str {
        self.names.get(func as usize).map_or("", String::as_str)
    }

    fn count(&mut self, func: FuncIdx) -> &mut FnCounts {
        let i = (func as usize).min(self.counts.len() - 1);
        let c = &mut self.counts[i];
        if c.activity() == 0 {
            self.touched.push(i as FuncIdx);
        }
        &mut self.counts[i]
    }

    /// A new task of `func` was submitted.
    pub(super) fn submitted(&mut self, func: FuncIdx) {
        if self.on {
            self.submitted += 1;
            self.count(func).submitted += 1;
        }
    }

    /// A task of `func` was given to an engine.
    pub(super) fn started(&mut self, func: FuncIdx) {
        if self.on {
            self.started += 1;
            self.count(func).started += 1;
        }
    }

    /// A task of `func` finished (well or not) at `time_us`, as `outcome` says; `ran` when
    /// its times are an engine's (then it may be sampled for the task stream).
    pub(super) fn finished(
        &mut self,
        func: FuncIdx,
        outcome: &TaskOutcome,
        ran: bool,
        time_us: u64,
    ) {
        if !self.on {
            return;
        }
        let ok = matches!(outcome.status, Status::Ok);
        let c = self.count(func);
        if ok {
            c.finished += 1;
        } else {
            c.failed += 1;
        }
        if let Status::Err(e) = &outcome.status {
            if self.failures.len() < MAX_FAILURES {
                self.failures.push(TaskFailure {
                    id: outcome.id,
                    engine: outcome.engine,
                    function: self.names[(func as usize).min(self.names.len() - 1)].clone(),
                    kind: e.kind,
                    message: truncate(&e.message, MAX_MESSAGE).to_owned(),
                    time_us,
                });
            } else {
                self.unlisted += 1;
            }
        }
        let Some(engine) = outcome.engine.filter(|_| ran) else {
            return;
        };
        self.seen += 1;
        let sample = Sample {
            engine,
            func,
            start_us: outcome.started_us,
            end_us: outcome.started_us.saturating_add(outcome.elapsed_us),
            ok,
        };
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(sample);
        } else {
            // Reservoir sampling: the n-th replaces a kept one with probability MAX / n.
            let j = self.random() % self.seen;
            if let Some(slot) = self.samples.get_mut(j as usize) {
                *slot = sample;
            }
        }
    }

    /// A client submitted `fresh` new tasks, the first of `func`, at `time_us`.
    pub(super) fn submission(
        &mut self,
        slot: ClientSlot,
        client: ClientId,
        func: FuncIdx,
        fresh: u64,
        time_us: u64,
    ) {
        if !self.on || fresh == 0 {
            return;
        }
        if let Some(run) = self.maps.iter_mut().find(|m| m.slot == slot) {
            run.total += fresh;
        } else if self.maps.len() < MAX_MAPS {
            self.maps.push(MapRun {
                slot,
                client,
                func,
                total: fresh,
                since_us: time_us,
            });
        }
    }

    /// xorshift64*: cheap, and good enough to pick samples.
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Core {
    /// Publishes the second's feed when it is due: [`Notification::TaskStats`], then the
    /// samples and the failures when there are any; then the counters start again.
    pub(super) fn publish_events(&mut self, now: Duration, out: &mut Vec<Action>) {
        if now < self.events.next_due {
            return;
        }
        let time_us = self.wall_us();
        let ev = &mut self.events;
        let interval = now.saturating_sub(ev.last_published);
        ev.last_published = now;
        // Next due a period after this one was due; a late loop starts again from now
        // rather than publish a burst to catch up.
        let next = ev.next_due.saturating_add(EVENTS_PERIOD);
        ev.next_due = if next <= now {
            now + EVENTS_PERIOD
        } else {
            next
        };

        let (done, failed) = self.results.counts();
        let (last_done, last_failed) = std::mem::replace(&mut ev.last_totals, (done, failed));
        let mut engines = Vec::new();
        let mut running = 0u64;
        for e in self.engines.alive() {
            running += e.running.len() as u64;
            let (c0, f0) = ev
                .last_engine
                .insert(e.id, (e.completed, e.failed))
                .unwrap_or((0, 0));
            engines.push(EngineActivity {
                id: e.id,
                outstanding: e.outstanding(),
                finished: e.completed.saturating_sub(c0),
                failed: e.failed.saturating_sub(f0),
                usage: e.usage,
            });
        }
        if ev.last_engine.len() > 2 * engines.len() + 64 {
            let engines_now = &self.engines;
            ev.last_engine
                .retain(|id, _| engines_now.get(*id).is_some_and(|e| e.alive));
        }

        let mut touched = std::mem::take(&mut ev.touched);
        touched.sort_by_key(|&i| std::cmp::Reverse(ev.counts[i as usize].activity()));
        let functions = touched
            .iter()
            .take(MAX_LISTED_FUNCTIONS)
            .map(|&i| {
                let c = ev.counts[i as usize];
                FunctionActivity {
                    function: ev.name(i).to_owned(),
                    submitted: c.submitted,
                    started: c.started,
                    finished: c.finished,
                    failed: c.failed,
                }
            })
            .collect();
        for &i in &touched {
            ev.counts[i as usize] = FnCounts::default();
        }
        touched.clear();
        ev.touched = touched;

        let mut maps = Vec::with_capacity(ev.maps.len());
        let tasks = &self.tasks;
        let names = &ev.names;
        ev.maps.retain(|run| {
            let unfinished = u64::from(tasks.unfinished_of(run.slot));
            maps.push(MapProgress {
                client: run.client,
                function: names.get(run.func as usize).cloned().unwrap_or_default(),
                total: run.total,
                done: run.total.saturating_sub(unfinished),
                since_us: run.since_us,
            });
            // A finished run is listed once more, complete, then forgotten.
            unfinished > 0
        });

        let stats = TaskStats {
            time_us,
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            submitted: std::mem::take(&mut ev.submitted),
            started: std::mem::take(&mut ev.started),
            finished: done.saturating_sub(last_done),
            failed: failed.saturating_sub(last_failed),
            queued: self.queues.queued(),
            running,
            waiting: self.deps.waiting(),
            engines,
            functions,
            maps,
        };
        out.push(Action::Publish(Notification::TaskStats(Box::new(stats))));
        if !ev.samples.is_empty() {
            let samples = ev
                .samples
                .drain(..)
                .map(|s| TaskSample {
                    engine: s.engine,
                    function: ev.names[s.func as usize].clone(),
                    start_us: s.start_us,
                    end_us: s.end_us,
                    ok: s.ok,
                })
                .collect();
            out.push(Action::Publish(Notification::TaskSamples {
                samples,
                finished: ev.seen,
            }));
        }
        ev.seen = 0;
        if !ev.failures.is_empty() {
            out.push(Action::Publish(Notification::Failures {
                failures: std::mem::take(&mut ev.failures),
                unlisted: std::mem::take(&mut ev.unlisted),
            }));
        }
        ev.unlisted = 0;
    }
}
