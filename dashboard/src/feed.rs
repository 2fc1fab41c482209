//! The controller's activity feed as the dashboard keeps it: the notifications of a
//! [`client::Subscriber`] (task counts, samples of finished tasks, failures, maps in
//! flight) folded into a bounded [`Feed`], and the [`FeedView`] of it that goes into each
//! snapshot.
//!
//! Plain data with no clock or socket, like [`crate::snapshot`]: the poller hands it each
//! notification with the time it arrived.

use protocol::{FunctionActivity, MapProgress, Notification, TaskFailure, TaskSample};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};

/// Seconds of finished tasks the task stream shows.
pub const STREAM_SECONDS: f64 = 30.0;
/// Most bars the task stream keeps (the newest): 30 s at the controller's 200 a second.
pub const MAX_BARS: usize = 6000;
/// Failures the page lists (the newest).
pub const MAX_FAILURES: usize = 50;
/// How long a finished map stays listed, seconds.
const DONE_MAP_SECONDS: f64 = 10.0;
/// Without a `TaskStats` for this long, the feed counts as off.
const QUIET_SECONDS: f64 = 3.0;

/// One bar of the task stream, compact for JSON: engine id, index into
/// [`Stream::functions`], start and end in ms since [`Stream::t0_ms`], and whether it
/// succeeded (1) or failed (0).
pub type Bar = [u64; 5];

/// The task stream: sampled finished tasks of the last [`STREAM_SECONDS`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stream {
    /// Time zero of the bars, ms since the Unix epoch.
    pub t0_ms: u64,
    /// Function names the bars point into.
    pub functions: Vec<String>,
    /// The bars, oldest first.
    pub bars: Vec<Bar>,
    /// Tasks that finished on engines over that time (the bars are a sample of them).
    pub finished: u64,
}

/// One map in flight (or just finished).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapRow {
    /// The submitting client's id.
    pub client: u32,
    /// Its function (or program).
    pub function: String,
    /// Tasks in it.
    pub total: u64,
    /// Of those, finished.
    pub done: u64,
    /// When it began, ms since the Unix epoch.
    pub since_ms: u64,
}

/// One failure in the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureRow {
    /// When the controller saw it, ms since the Unix epoch.
    pub t_ms: u64,
    /// The task id (`CLIENT:SEQ`).
    pub task: String,
    /// The engine it failed on, if it ran.
    pub engine: Option<u32>,
    /// Function or program.
    pub function: String,
    /// Error kind.
    pub kind: String,
    /// The message.
    pub message: String,
}

/// What the page and `cluster top` get of the feed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FeedView {
    /// Whether the controller publishes its feed (a `TaskStats` came in the last seconds).
    pub live: bool,
    /// The task stream.
    pub stream: Stream,
    /// Maps in flight, and those finished in the last seconds.
    pub maps: Vec<MapRow>,
    /// The newest failures, newest first.
    pub failures: Vec<FailureRow>,
    /// Failures the controller counted but did not list (more than 10 in a second).
    pub failures_unlisted: u64,
    /// The busiest functions of the last second.
    pub functions: Vec<FunctionActivity>,
}

/// The feed as received so far. See the module documentation.
#[derive(Debug, Default)]
pub struct Feed {
    /// (arrival time in s, how many finished in that second, its samples).
    seconds: VecDeque<(f64, u64, Vec<TaskSample>)>,
    bars: usize,
    failures: VecDeque<TaskFailure>,
    unlisted: u64,
    maps: Vec<MapProgress>,
    /// Finished maps and when they were first seen finished.
    done_maps: Vec<(f64, MapProgress)>,
    functions: Vec<FunctionActivity>,
    last_stats: Option<f64>,
}

impl Feed {
    /// An empty feed.
    pub fn new() -> Feed {
        Feed::default()
    }

    /// Takes one notification, received at `t` (seconds since the epoch).
    pub fn on_notification(&mut self, t: f64, note: Notification) {
        match note {
            Notification::TaskStats(stats) => {
                self.last_stats = Some(t);
                self.functions = stats.functions;
                let (done, running): (Vec<_>, Vec<_>) =
                    stats.maps.into_iter().partition(|m| m.done >= m.total);
                for m in done {
                    if !self.done_maps.iter().any(|(_, d)| same_map(d, &m)) {
                        self.done_maps.push((t, m));
                    }
                }
                self.maps = running;
                self.done_maps.retain(|(at, _)| t - at < DONE_MAP_SECONDS);
            }
            Notification::TaskSamples { samples, finished } => {
                self.bars += samples.len();
                self.seconds.push_back((t, finished, samples));
                self.trim(t);
            }
            Notification::Failures { failures, unlisted } => {
                self.unlisted += unlisted;
                for f in failures {
                    if self.failures.len() == MAX_FAILURES {
                        self.failures.pop_front();
                    }
                    self.failures.push_back(f);
                }
            }
            Notification::EngineJoined(_) | Notification::EngineLeft { .. } => {}
        }
    }

    /// Drops seconds older than the stream's window, and the oldest past [`MAX_BARS`].
    fn trim(&mut self, t: f64) {
        while let Some((at, _, samples)) = self.seconds.front() {
            if t - at <= STREAM_SECONDS && self.bars <= MAX_BARS {
                break;
            }
            self.bars -= samples.len();
            self.seconds.pop_front();
        }
    }

    /// The view as of `t`.
    pub fn view(&mut self, t: f64) -> FeedView {
        self.trim(t);
        let live = self.last_stats.is_some_and(|at| t - at < QUIET_SECONDS);
        let t0_ms = ((t - STREAM_SECONDS).max(0.0) * 1000.0) as u64;
        let mut names: HashMap<&str, u64> = HashMap::new();
        let mut functions = Vec::new();
        let mut bars = Vec::with_capacity(self.bars);
        let mut finished = 0;
        for (_, n, samples) in &self.seconds {
            finished += n;
            for s in samples {
                let f = *names.entry(&s.function).or_insert_with(|| {
                    functions.push(s.function.clone());
                    functions.len() as u64 - 1
                });
                let start = (s.start_us / 1000).saturating_sub(t0_ms);
                let end = (s.end_us / 1000).saturating_sub(t0_ms).max(start);
                bars.push([u64::from(s.engine.0), f, start, end, u64::from(s.ok)]);
            }
        }
        let maps = self
            .maps
            .iter()
            .chain(self.done_maps.iter().map(|(_, m)| m))
            .map(|m| MapRow {
                client: m.client.0,
                function: m.function.clone(),
                total: m.total,
                done: m.done,
                since_ms: m.since_us / 1000,
            })
            .collect();
        let failures = self
            .failures
            .iter()
            .rev()
            .map(|f| FailureRow {
                t_ms: f.time_us / 1000,
                task: f.id.to_string(),
                engine: f.engine.map(|e| e.0),
                function: f.function.clone(),
                kind: f.kind.to_string(),
                message: f.message.clone(),
            })
            .collect();
        FeedView {
            live,
            stream: Stream {
                t0_ms,
                functions,
                bars,
                finished,
            },
            maps,
            failures,
            failures_unlisted: self.unlisted,
            functions: if live {
                self.functions.clone()
            } else {
                Vec::new()
            },
        }
    }

    /// A new controller (another instance): its maps and counts are not the old one's.
    pub fn on_restart(&mut self) {
        self.maps.clear();
        self.functions.clear();
    }
}

fn same_map(a: &MapProgress, b: &MapProgress) -> bool {
    a.client == b.client && a.since_us == b.since_us
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{ClientId, EngineId, ErrorKind, TaskId, TaskStats};

    fn sample(engine: u32, f: &str, start_ms: u64, ok: bool) -> TaskSample {
        TaskSample {
            engine: EngineId(engine),
            function: f.into(),
            start_us: start_ms * 1000,
            end_us: (start_ms + 5) * 1000,
            ok,
        }
    }

    fn map(client: u32, total: u64, done: u64) -> MapProgress {
        MapProgress {
            client: ClientId(client),
            function: "f".into(),
            total,
            done,
            since_us: 7,
        }
    }

    fn stats(maps: Vec<MapProgress>) -> Notification {
        Notification::TaskStats(Box::new(TaskStats {
            maps,
            ..TaskStats::default()
        }))
    }

    #[test]
    fn samples_become_bars_of_the_last_seconds() {
        let mut feed = Feed::new();
        feed.on_notification(
            100.0,
            Notification::TaskSamples {
                samples: vec![sample(0, "f", 99_000, true), sample(1, "g", 99_500, false)],
                finished: 10,
            },
        );
        feed.on_notification(100.5, stats(vec![]));
        let v = feed.view(101.0);
        assert!(v.live);
        assert_eq!(v.stream.functions, ["f", "g"]);
        assert_eq!(v.stream.t0_ms, 71_000);
        assert_eq!(
            v.stream.bars,
            [[0, 0, 28_000, 28_005, 1], [1, 1, 28_500, 28_505, 0]]
        );
        assert_eq!(v.stream.finished, 10);
        // Past the window they are gone, and without stats the feed is off.
        let v = feed.view(100.0 + STREAM_SECONDS + 1.0);
        assert!(v.stream.bars.is_empty());
        assert!(!v.live);
    }

    #[test]
    fn bars_and_failures_are_bounded() {
        let mut feed = Feed::new();
        for i in 0..100 {
            let samples = (0..200).map(|j| sample(j, "f", i * 10, true)).collect();
            feed.on_notification(
                1000.0 + i as f64 * 0.01,
                Notification::TaskSamples {
                    samples,
                    finished: 500,
                },
            );
        }
        assert!(feed.view(1001.0).stream.bars.len() <= MAX_BARS);
        let failure = |i: u64| TaskFailure {
            id: TaskId(i),
            engine: None,
            function: "f".into(),
            kind: ErrorKind::Remote,
            message: format!("boom {i}"),
            time_us: i,
        };
        for i in 0..20 {
            feed.on_notification(
                1.0,
                Notification::Failures {
                    failures: (0..10).map(|j| failure(i * 10 + j)).collect(),
                    unlisted: 1,
                },
            );
        }
        let v = feed.view(1001.0);
        assert_eq!(v.failures.len(), MAX_FAILURES);
        assert_eq!(v.failures[0].message, "boom 199", "newest first");
        assert_eq!(v.failures_unlisted, 20);
    }

    #[test]
    fn a_finished_map_stays_listed_for_a_while() {
        let mut feed = Feed::new();
        feed.on_notification(1.0, stats(vec![map(3, 10, 4)]));
        assert_eq!(feed.view(1.0).maps[0].done, 4);
        feed.on_notification(2.0, stats(vec![map(3, 10, 10)]));
        feed.on_notification(3.0, stats(vec![]));
        let v = feed.view(3.0);
        assert_eq!((v.maps.len(), v.maps[0].done), (1, 10));
        feed.on_notification(20.0, stats(vec![]));
        assert!(feed.view(20.0).maps.is_empty());
    }
}
