//! What the dashboard shows: a [`Snapshot`] of the controller made from one status report and
//! one queue report, and the [`History`] of counters that turns their deltas into rates.
//!
//! Both are plain data with no clock or socket: the poller feeds them a time and the reports,
//! and the tests feed them made-up ones.

use crate::feed::FeedView;
use protocol::{QueueStatus, StatusReport, TaskCounts};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};

/// How many points the history keeps: one a second, ten minutes.
pub const HISTORY_POINTS: usize = 600;

/// One engine's row in the engines table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineRow {
    /// Engine id.
    pub id: u32,
    /// Host name.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// `alive` or `unresponsive`.
    pub state: String,
    /// Tasks assigned and not finished.
    pub outstanding: u32,
    /// Tasks finished successfully on it.
    pub done: u64,
    /// Tasks that failed on it.
    pub failed: u64,
    /// Its current limit on outstanding tasks.
    pub hwm: u32,
    /// CPU use over the last second, percent of one core (`None`: not reported).
    pub cpu_percent: Option<f32>,
    /// Resident memory, bytes (`None`: not reported).
    pub rss_bytes: Option<u64>,
}

/// The controller line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControllerRow {
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Scheduler name.
    pub scheduler: String,
    /// Seconds since it started.
    pub uptime_s: f64,
    /// Clients connected.
    pub clients: u32,
    /// Random number of this controller process (changes when it restarts).
    pub instance: u64,
    /// The task store's state, if it has one.
    pub store: Option<String>,
}

/// One second of history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Seconds since the Unix epoch.
    pub t: f64,
    /// Tasks finished successfully per second since the previous point.
    pub done_per_s: f64,
    /// Tasks failed per second since the previous point.
    pub failed_per_s: f64,
    /// Tasks queued (ready, waiting for an engine) at this point.
    pub queued: u64,
    /// Tasks running at this point.
    pub running: u64,
}

/// Everything the page and `cluster top` draw, as of one poll.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// Seconds since the Unix epoch when it was taken.
    pub t: f64,
    /// Whether the last poll reached the controller.
    pub connected: bool,
    /// Why not, when it did not.
    pub error: Option<String>,
    /// The controller, as of the last successful poll.
    pub controller: Option<ControllerRow>,
    /// Task counters, as of the last successful poll.
    pub tasks: TaskCounts,
    /// Engines, by id.
    pub engines: Vec<EngineRow>,
    /// Rates and queue depth, oldest first.
    pub history: Vec<Point>,
    /// The controller's activity feed: task stream, maps in flight, failures.
    pub feed: FeedView,
}

impl Snapshot {
    /// A snapshot before the first poll.
    pub fn empty() -> Snapshot {
        Snapshot {
            t: 0.0,
            connected: false,
            error: Some("not polled yet".into()),
            controller: None,
            tasks: TaskCounts::default(),
            engines: Vec::new(),
            history: Vec::new(),
            feed: FeedView::default(),
        }
    }

    /// The latest throughput (done + failed per second), 0 without history.
    pub fn throughput(&self) -> f64 {
        self.history
            .last()
            .map_or(0.0, |p| p.done_per_s + p.failed_per_s)
    }
}

/// The counters of previous polls, and the points made from their deltas.
#[derive(Debug, Default)]
pub struct History {
    last: Option<(f64, u64, u64, u64)>,
    points: VecDeque<Point>,
    latest: Option<Snapshot>,
}

impl History {
    /// An empty history.
    pub fn new() -> History {
        History::default()
    }

    /// Takes one poll's reports at time `t` (seconds) and returns the snapshot to show.
    ///
    /// Rates come from the deltas of the done and failed counters. A controller that
    /// restarted (another `instance`) or counters that went down start the deltas afresh
    /// rather than showing a negative or a huge rate.
    pub fn on_poll(&mut self, t: f64, status: &StatusReport, queue: &QueueStatus) -> Snapshot {
        let tasks = &status.tasks;
        let instance = status.controller.instance;
        if let Some((t0, inst0, done0, failed0)) = self.last {
            let dt = t - t0;
            if inst0 == instance && tasks.done >= done0 && tasks.failed >= failed0 && dt > 0.0 {
                self.push(Point {
                    t,
                    done_per_s: (tasks.done - done0) as f64 / dt,
                    failed_per_s: (tasks.failed - failed0) as f64 / dt,
                    queued: tasks.queued,
                    running: tasks.running,
                });
            } else {
                self.push(Point {
                    t,
                    done_per_s: 0.0,
                    failed_per_s: 0.0,
                    queued: tasks.queued,
                    running: tasks.running,
                });
            }
        }
        self.last = Some((t, instance, tasks.done, tasks.failed));
        let failed: HashMap<u32, u64> = queue.engines.iter().map(|e| (e.id.0, e.failed)).collect();
        let mut engines: Vec<EngineRow> = status
            .engines
            .iter()
            .map(|e| EngineRow {
                id: e.id.0,
                host: e.host.clone(),
                pid: e.pid,
                state: e.state.clone(),
                outstanding: e.outstanding,
                done: e.completed,
                failed: failed.get(&e.id.0).copied().unwrap_or(0),
                hwm: e.hwm,
                cpu_percent: e.usage.map(|u| u.cpu_percent),
                rss_bytes: e.usage.map(|u| u.rss_bytes),
            })
            .collect();
        engines.sort_by_key(|e| e.id);
        let c = &status.controller;
        let snapshot = Snapshot {
            t,
            connected: true,
            error: None,
            controller: Some(ControllerRow {
                host: c.host.clone(),
                pid: c.pid,
                scheduler: c.scheduler.clone(),
                uptime_s: c.uptime_s,
                clients: c.clients,
                instance,
                store: status.store.clone(),
            }),
            tasks: tasks.clone(),
            engines,
            history: self.points.iter().copied().collect(),
            feed: FeedView::default(),
        };
        self.latest = Some(snapshot.clone());
        snapshot
    }

    /// A poll that failed at time `t`: the last known numbers stay, marked as stale, and
    /// the next successful poll starts the rates afresh.
    pub fn on_error(&mut self, t: f64, error: String) -> Snapshot {
        self.last = None;
        let mut snapshot = self.latest.clone().unwrap_or_else(Snapshot::empty);
        snapshot.t = t;
        snapshot.connected = false;
        snapshot.error = Some(error);
        snapshot.history = self.points.iter().copied().collect();
        snapshot
    }

    fn push(&mut self, point: Point) {
        if self.points.len() == HISTORY_POINTS {
            self.points.pop_front();
        }
        self.points.push_back(point);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use protocol::{ControllerStatus, DropCounts, EngineId, EngineQueue, EngineStatus};

    /// A status report with `engines` engines and the given counters.
    pub(crate) fn report(engines: u32, instance: u64, done: u64, failed: u64) -> StatusReport {
        StatusReport {
            controller: ControllerStatus {
                pid: 42,
                host: "hub".into(),
                scheduler: "lru".into(),
                hwm: "auto".into(),
                engine_address: String::new(),
                client_address: String::new(),
                heartbeat_address: String::new(),
                notify_address: String::new(),
                uptime_s: 3.0,
                clients: 1,
                instance,
            },
            engines: (0..engines)
                .rev()
                .map(|i| EngineStatus {
                    id: EngineId(i),
                    host: format!("node{i}"),
                    pid: 1000 + i,
                    state: "alive".into(),
                    outstanding: i % 3,
                    completed: u64::from(i) * 10,
                    hwm: 4,
                    rank: None,
                    job: None,
                    usage: None,
                })
                .collect(),
            tasks: TaskCounts {
                queued: 7,
                running: 2,
                done,
                failed,
                stored: 0,
                waiting: 0,
            },
            dropped: DropCounts::default(),
            store: None,
            functions: None,
        }
    }

    pub(crate) fn queue(engines: u32) -> QueueStatus {
        QueueStatus {
            engines: (0..engines)
                .map(|i| EngineQueue {
                    id: EngineId(i),
                    outstanding: 0,
                    completed: 0,
                    failed: u64::from(i),
                })
                .collect(),
            unassigned: 7,
            waiting: 0,
        }
    }

    #[test]
    fn rates_come_from_counter_deltas() {
        let mut h = History::new();
        let s = h.on_poll(10.0, &report(3, 1, 100, 0), &queue(3));
        assert!(s.history.is_empty());
        assert_eq!(
            s.engines.iter().map(|e| e.id).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(s.engines[2].failed, 2);
        let s = h.on_poll(12.0, &report(3, 1, 300, 4), &queue(3));
        assert_eq!(s.history.len(), 1);
        assert_eq!(s.history[0].done_per_s, 100.0);
        assert_eq!(s.history[0].failed_per_s, 2.0);
        assert_eq!(s.throughput(), 102.0);
        assert_eq!(s.history[0].queued, 7);
    }

    #[test]
    fn a_restarted_controller_gives_no_negative_rate() {
        let mut h = History::new();
        h.on_poll(1.0, &report(1, 1, 500, 0), &queue(1));
        let s = h.on_poll(2.0, &report(1, 2, 3, 0), &queue(1));
        assert_eq!(s.history[0].done_per_s, 0.0);
        let s = h.on_poll(3.0, &report(1, 2, 13, 0), &queue(1));
        assert_eq!(s.history[1].done_per_s, 10.0);
    }

    #[test]
    fn an_error_keeps_the_last_numbers_marked_stale() {
        let mut h = History::new();
        h.on_poll(1.0, &report(2, 1, 5, 0), &queue(2));
        let s = h.on_error(2.0, "controller gone".into());
        assert!(!s.connected);
        assert_eq!(s.engines.len(), 2);
        assert_eq!(s.error.as_deref(), Some("controller gone"));
        // After the error, rates restart: no point spanning the outage.
        let s = h.on_poll(9.0, &report(2, 1, 50, 0), &queue(2));
        assert!(s.history.is_empty());
    }

    #[test]
    fn history_is_bounded() {
        let mut h = History::new();
        for i in 0..(HISTORY_POINTS as u64 + 50) {
            h.on_poll(i as f64, &report(0, 1, i, 0), &queue(0));
        }
        assert_eq!(h.points.len(), HISTORY_POINTS);
    }
}
