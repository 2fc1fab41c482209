//! The activity feed (`events.rs`): what is published once a second, and its bounds.

use super::*;
use crate::hub::events::{MAX_FAILURES, MAX_SAMPLES};
use protocol::{EngineUsage, TaskFailure, TaskSample, TaskStats};

/// The feed of one second: stats, (samples, finished), (failures, unlisted).
type Feed = (
    Option<TaskStats>,
    Option<(Vec<TaskSample>, u64)>,
    Option<(Vec<TaskFailure>, u64)>,
);

/// The feed's three notifications among `actions`.
fn feed(actions: &[Action]) -> Feed {
    let (mut stats, mut samples, mut failures) = (None, None, None);
    for a in actions {
        match a {
            Action::Publish(Notification::TaskStats(s)) => stats = Some((**s).clone()),
            Action::Publish(Notification::TaskSamples {
                samples: s,
                finished,
            }) => samples = Some((s.clone(), *finished)),
            Action::Publish(Notification::Failures {
                failures: f,
                unlisted,
            }) => failures = Some((f.clone(), *unlisted)),
            _ => {}
        }
    }
    (stats, samples, failures)
}

/// Engine `uuid` reports `ids` as run, the i-th from `start_us + i` for 10 µs, failed when
/// `fail` says so.
fn report(
    h: &mut Harness,
    uuid: &str,
    ids: &[TaskId],
    fail: impl Fn(TaskId) -> bool,
) -> Vec<Action> {
    let results = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let mut o = if fail(id) {
                failure(id, None, ErrorKind::Remote, format!("boom {id}"))
            } else {
                TaskOutcome {
                    id,
                    engine: None,
                    status: Status::Ok,
                    started_us: 0,
                    elapsed_us: 0,
                }
            };
            o.started_us = 1_000 + i as u64;
            o.elapsed_us = 10;
            o
        })
        .collect();
    let payloads = ids.iter().map(|_| Vec::new()).collect();
    h.core.on_engine(
        uuid.as_bytes(),
        FromEngine::Results { results },
        payloads,
        h.now,
    )
}

#[test]
fn a_second_of_work_is_published_as_counts_samples_and_failures() {
    let mut h = Harness::new(Hwm::Limit(0));
    let (a, _) = h.register("a", &["f", "g"]);
    let (b, _) = h.register("b", &["f", "g"]);
    let mut reqs: Vec<_> = (1..=6).map(|i| call(i, "f")).collect();
    reqs.extend((7..=8).map(|i| call(i, "g")));
    let to = sent_to(&h.submit(reqs));
    assert_eq!(to.len(), 8);
    h.at(Duration::from_millis(500));
    let on = |e: EngineId| -> Vec<TaskId> {
        to.iter()
            .filter(|(x, _)| *x == e)
            .map(|(_, t)| *t)
            .collect()
    };
    let (on_a, on_b) = (on(a), on(b));
    report(&mut h, "a", &on_a, |_| false);
    // One task of b fails; the last one of b is still running at the end of the second.
    let done_b = &on_b[..on_b.len() - 1];
    report(&mut h, "b", done_b, |t| t == done_b[0]);

    let actions = h.tick(secs(1));
    let (stats, samples, failures) = feed(&actions);
    let stats = stats.expect("task stats every second");
    assert_eq!((stats.submitted, stats.started), (8, 8));
    assert_eq!((stats.finished, stats.failed), (6, 1));
    assert_eq!((stats.queued, stats.running, stats.waiting), (0, 1, 0));
    assert_eq!(stats.interval_ms, 1000);
    let ea = stats.engines.iter().find(|e| e.id == a).unwrap();
    let eb = stats.engines.iter().find(|e| e.id == b).unwrap();
    assert_eq!(
        (ea.finished, ea.failed, ea.outstanding),
        (on_a.len() as u64, 0, 0)
    );
    assert_eq!(
        (eb.finished, eb.failed, eb.outstanding),
        (done_b.len() as u64 - 1, 1, 1)
    );
    // Functions busiest first, with their own counts.
    assert_eq!(stats.functions[0].function, "f");
    assert_eq!(stats.functions[0].submitted, 6);
    let g = stats.functions.iter().find(|f| f.function == "g").unwrap();
    assert_eq!((g.submitted, g.started), (2, 2));
    let f = &stats.functions[0];
    assert_eq!(f.finished + f.failed + g.finished + g.failed, 7);
    // The client's submission is a map in flight: 7 of 8 done.
    assert_eq!(stats.maps.len(), 1);
    assert_eq!((stats.maps[0].total, stats.maps[0].done), (8, 7));
    assert_eq!(stats.maps[0].function, "f");

    let (samples, finished) = samples.expect("samples of the finished tasks");
    assert_eq!((samples.len(), finished), (7, 7));
    let failed_sample = samples
        .iter()
        .find(|s| !s.ok)
        .expect("the failure is sampled");
    assert_eq!(failed_sample.engine, b);
    assert!(samples.iter().all(|s| s.end_us == s.start_us + 10));
    let (failures, unlisted) = failures.expect("the failure, with its message");
    assert_eq!(unlisted, 0);
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].id, done_b[0]);
    assert_eq!(failures[0].engine, Some(b));
    assert_eq!(failures[0].kind, ErrorKind::Remote);
    assert_eq!(failures[0].message, format!("boom {}", done_b[0]));

    // The next second starts from zero: only counts, no samples or failures.
    report(&mut h, "b", &on_b[on_b.len() - 1..], |_| false);
    let (stats, samples, failures) = feed(&h.tick(secs(2)));
    let stats = stats.unwrap();
    assert_eq!(
        (stats.submitted, stats.started, stats.finished, stats.failed),
        (0, 0, 1, 0)
    );
    assert_eq!(samples.map(|s| s.1), Some(1));
    assert!(failures.is_none());
    // The map finished: listed once more, complete...
    assert_eq!((stats.maps[0].total, stats.maps[0].done), (8, 8));
    assert!(stats.functions.iter().all(|f| f.submitted == 0));
    // ...then no more.
    let (stats, samples, _) = feed(&h.tick(secs(3)));
    let stats = stats.unwrap();
    assert!(stats.maps.is_empty());
    assert!(stats.functions.is_empty());
    assert!(samples.is_none());
}

#[test]
fn samples_and_failures_stay_within_their_bounds_and_are_drawn_from_the_whole_second() {
    let mut h = Harness::new(Hwm::Limit(0));
    let (a, _) = h.register("a", &["f"]);
    let (b, _) = h.register("b", &["f"]);
    let n = 4000u64;
    let to = sent_to(&h.submit((1..=n).map(|i| call(i, "f")).collect()));
    let on = |e: EngineId| -> Vec<TaskId> {
        to.iter()
            .filter(|(x, _)| *x == e)
            .map(|(_, t)| *t)
            .collect()
    };
    // Engine a reports all its tasks first, then b: a sample of only the first ones would
    // hold engine a alone.
    report(&mut h, "a", &on(a), |t| t.0 % 7 == 0);
    report(&mut h, "b", &on(b), |t| t.0 % 7 == 0);
    let (stats, samples, failures) = feed(&h.tick(secs(1)));
    let stats = stats.unwrap();
    assert_eq!(stats.finished + stats.failed, n);
    let (samples, finished) = samples.unwrap();
    assert_eq!(samples.len(), MAX_SAMPLES);
    assert_eq!(finished, n);
    let from_b = samples.iter().filter(|s| s.engine == b).count();
    assert!((60..=140).contains(&from_b), "about half from b: {from_b}");
    let (failures, unlisted) = failures.unwrap();
    assert_eq!(failures.len(), MAX_FAILURES);
    assert_eq!(failures.len() as u64 + unlisted, stats.failed);
}

#[test]
fn failures_that_never_ran_are_listed_with_their_function() {
    let mut h = Harness::new(Hwm::Limit(1));
    h.register("a", &["f"]);
    // Nobody offers `nope`: it fails at once.
    h.submit(vec![call(1, "nope")]);
    let (stats, samples, failures) = feed(&h.tick(secs(1)));
    assert_eq!(stats.unwrap().failed, 1);
    assert!(
        samples.is_none(),
        "it never ran: nothing for the task stream"
    );
    let (failures, _) = failures.unwrap();
    assert_eq!(failures[0].function, "nope");
    assert_eq!(failures[0].engine, None);
    assert!(
        failures[0].message.contains("nope"),
        "{}",
        failures[0].message
    );
}

#[test]
fn engines_report_cpu_and_memory_in_status_and_in_the_feed() {
    let mut h = Harness::new(Hwm::Auto);
    let (a, _) = h.register("a", &[]);
    let actions = h.tick(secs(1));
    assert!(
        feed(&actions).0.unwrap().engines[0].usage.is_none(),
        "none reported yet"
    );
    let usage = EngineUsage {
        cpu_percent: 12.5,
        rss_bytes: 7 << 20,
    };
    h.core.on_heartbeat(
        b"a",
        Heartbeat::Pong {
            seq: 1,
            uuid: "a".into(),
            usage: Some(usage),
        },
        h.now,
    );
    assert_eq!(h.engine_status(a.0).usage, Some(usage));
    let stats = feed(&h.tick(secs(2))).0.unwrap();
    assert_eq!(stats.engines[0].usage, Some(usage));
    // A pong without figures (an older engine) keeps the last ones.
    h.pong("a", 2);
    assert_eq!(h.engine_status(a.0).usage, Some(usage));
}

#[test]
fn with_events_off_nothing_is_published_and_ticks_follow_heartbeats_only() {
    let mut h = Harness::with_config(
        CoreConfig {
            hwm: Hwm::Limit(0),
            events: false,
            ..Default::default()
        },
        Duration::ZERO,
    );
    h.register("a", &["f"]);
    let to = sent_to(&h.submit((1..=10).map(|i| call(i, "f")).collect()));
    let ids: Vec<TaskId> = to.iter().map(|(_, t)| *t).collect();
    report(&mut h, "a", &ids, |_| false);
    for n in 1..=3 {
        let actions = h.tick(secs(n));
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Publish(_))),
            "{actions:?}"
        );
    }
    assert_eq!(h.core.next_tick(), secs(4));
}

#[test]
fn the_feed_is_due_once_a_second_and_a_late_loop_does_not_burst() {
    let mut h = Harness::with_config(
        CoreConfig {
            heartbeat_period: secs(10),
            ..Default::default()
        },
        Duration::ZERO,
    );
    assert_eq!(h.core.next_tick(), secs(1));
    assert!(feed(&h.tick(secs(1))).0.is_some());
    assert_eq!(h.core.next_tick(), secs(2));
    // The loop was away for 5 s: one publication, then a second from now.
    let stats = feed(&h.tick(secs(7))).0.unwrap();
    assert_eq!(stats.interval_ms, 6000);
    assert_eq!(h.core.next_tick(), secs(8));
    assert!(feed(&h.tick(Duration::from_millis(7500))).0.is_none());
}

/// What the feed costs the core per task, in process (no sockets): one-item tasks submitted
/// 64 a message to two engines that answer at once, with `events` off and on, interleaved,
/// medians printed. Time is this thread's CPU time (`/proc/thread-self/schedstat`, in ns),
/// so that other processes on a busy machine count less. A benchmark, not a timed
/// assertion: run it optimised with
/// `cargo test --release -p cluster-controller -- --ignored feed_cost --nocapture`.
#[test]
#[ignore]
fn feed_cost_per_task_in_the_core() {
    fn cpu_ns() -> Option<f64> {
        let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        text.split_whitespace().next()?.parse().ok()
    }
    fn run(events: bool, n: u64) -> f64 {
        let mut h = Harness::with_config(
            CoreConfig {
                hwm: Hwm::Limit(0),
                events,
                ..Default::default()
            },
            Duration::ZERO,
        );
        h.register("a", &["noop"]);
        h.register("b", &["noop"]);
        let start = std::time::Instant::now();
        let cpu0 = cpu_ns();
        let mut seq = 1;
        while seq <= n {
            let reqs: Vec<_> = (seq..seq + 64).map(|i| call(i, "noop")).collect();
            seq += 64;
            h.now += Duration::from_micros(100);
            let now = h.now;
            for (engine, ids, _) in sent(&h.submit(reqs)) {
                let uuid = if engine.0 == 0 { "a" } else { "b" };
                h.finish(uuid, &ids, 1);
            }
            if now >= h.core.next_tick() {
                h.core.on_tick(now);
            }
            // Results stay in memory without a store: purge them so that the table does
            // not grow through the run.
            h.client(CLIENT, FromClient::Purge { ids: Vec::new() });
        }
        let wall = start.elapsed().as_secs_f64() * 1e9;
        cpu_ns().zip(cpu0).map_or(wall, |(b, a)| b - a) / n as f64
    }
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for i in 0..15 {
        if i % 2 == 0 {
            off.push(run(false, 200_000));
            on.push(run(true, 200_000));
        } else {
            on.push(run(true, 200_000));
            off.push(run(false, 200_000));
        }
    }
    on.sort_by(f64::total_cmp);
    off.sort_by(f64::total_cmp);
    let (m_on, m_off) = (on[on.len() / 2], off[off.len() / 2]);
    println!(
        "core, ns a task (median of 15): events off {m_off:.0}, on {m_on:.0} ({:+.1}%); fastest off {:.0}, on {:.0}",
        (m_on / m_off - 1.0) * 100.0,
        off[0],
        on[0]
    );
}
