//! `cluster bench store`: what the task store costs. Task rates with `db = "memory"` and
//! `db = "sqlite"` measured side by side (two clusters up at once, rounds interleaved, the
//! order swapped each round, medians and their ratio; one-item and chunked maps), the
//! controller's resident memory as one-item tasks pile up in a SQLite store, and the time
//! from a restart to serving with that many records in the database.
//!
//! The machine may be shared: the load average before and after is part of the report.

use super::TempCluster;
use crate::launch::{self, EngineLaunch};
use anyhow::{Context as _, Result};
use serde::Serialize;
use std::time::{Duration, Instant};

/// Figures printed by `cluster bench store`.
#[derive(Debug, Default, Serialize)]
pub struct StoreReport {
    /// Engines used.
    pub engines: usize,
    /// One-item tasks of each rate figure (the chunked map has a hundred times as many
    /// items: fewer would end within milliseconds).
    pub items: usize,
    /// Rounds of the rate figures.
    pub runs: usize,
    /// `/proc/loadavg` (1, 5, 15 min) before the rates.
    pub load_before: [f64; 3],
    /// `/proc/loadavg` after the rates.
    pub load_after: [f64; 3],
    /// Median rates with `db = "memory"`.
    pub memory: Rates,
    /// Median rates with `db = "sqlite"`.
    pub sqlite: Rates,
    /// Every round, in order: (memory, sqlite).
    pub rounds: Vec<(Rates, Rates)>,
    /// Median over the rounds of sqlite's rate over memory's in the same round (one-item,
    /// chunked): steadier than the ratio of the medians when the machine's load drifts.
    pub paired_ratio: Rates,
    /// Controller memory with `db = "sqlite"` as one-item tasks pile up, the first entry
    /// before any task.
    pub checkpoints: Vec<Checkpoint>,
    /// Records in the database at the restart.
    pub restart_records: u64,
    /// Seconds from `start` on the same profile to the controller answering a status
    /// request (the database read included).
    pub restart_to_serving_s: f64,
    /// Seconds from `start` to its engines ready.
    pub restart_engines_ready_s: f64,
}

/// Task rates on one kind of store.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Rates {
    /// map(noop), one item a task: tasks per second.
    pub map_chunk1_tasks_per_s: f64,
    /// map(noop), automatic chunks: items per second.
    pub map_auto_items_per_s: f64,
}

/// The controller's memory after some one-item tasks, read once it has been idle for a
/// moment (it gives freed memory back when a burst is over).
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Checkpoint {
    /// One-item tasks run so far (in maps of at most 100k).
    pub tasks: u64,
    /// `VmRSS` (KiB).
    pub rss_kib: u64,
    /// `VmHWM` (KiB): the peak so far, during a map.
    pub hwm_kib: u64,
    /// Seconds since the first task.
    pub elapsed_s: f64,
}

/// How long the controller is left idle before its memory is read.
const SETTLE: Duration = Duration::from_millis(1500);

/// A field (KiB) of `/proc/<pid>/status`: `VmRSS`, `VmHWM`.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Controller resident memory in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// The load average (1, 5, 15 minutes), zeros where it cannot be read.
fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text.split_whitespace().map(|v| v.parse().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs the figures: rates on both stores (`runs` rounds, interleaved), then one-item maps
/// on a SQLite store up to each of `checkpoints` tasks (memory after each), then a restart
/// on that database.
pub fn bench_store(
    engines: usize,
    items: usize,
    runs: usize,
    checkpoints: &[u64],
    progress: bool,
) -> Result<StoreReport> {
    let mut report = StoreReport {
        engines,
        items,
        runs,
        load_before: load_average(),
        ..Default::default()
    };
    if progress {
        eprintln!("task rates with db = memory and db = sqlite, {runs} interleaved round(s)…");
    }
    let memory = TempCluster::start(engines, &[("db", "memory".to_owned())])?;
    let sqlite = TempCluster::start(engines, &[("db", "sqlite".to_owned())])?;
    // Warm up the connections and the adaptive hwm.
    for c in [&memory, &sqlite] {
        c.one_item_rate(1000)?;
        c.chunked_rate(100_000)?;
    }
    for round in 0..runs {
        // Each round swaps which store goes first, so that a drift of the machine's load
        // does not favour one.
        let order: [(&TempCluster, bool); 2] = if round % 2 == 0 {
            [(&memory, true), (&sqlite, false)]
        } else {
            [(&sqlite, false), (&memory, true)]
        };
        let (mut m, mut s) = (Rates::default(), Rates::default());
        for &(c, is_memory) in &order {
            let slot = if is_memory { &mut m } else { &mut s };
            slot.map_chunk1_tasks_per_s = c.one_item_rate(items)?;
        }
        for &(c, is_memory) in &order {
            let slot = if is_memory { &mut m } else { &mut s };
            slot.map_auto_items_per_s = c.chunked_rate(items * 100)?;
        }
        if progress {
            eprintln!(
                "round {}: one-item {:.0}/s (memory) {:.0}/s (sqlite), chunked {:.0}/s {:.0}/s",
                round + 1,
                m.map_chunk1_tasks_per_s,
                s.map_chunk1_tasks_per_s,
                m.map_auto_items_per_s,
                s.map_auto_items_per_s
            );
        }
        report.rounds.push((m, s));
    }
    drop(memory);
    drop(sqlite);
    report.load_after = load_average();
    let med = |f: fn(&Rates) -> f64, pick: fn(&(Rates, Rates)) -> &Rates| {
        median(report.rounds.iter().map(|r| f(pick(r))).collect())
    };
    report.memory = Rates {
        map_chunk1_tasks_per_s: med(|r| r.map_chunk1_tasks_per_s, |r| &r.0),
        map_auto_items_per_s: med(|r| r.map_auto_items_per_s, |r| &r.0),
    };
    report.sqlite = Rates {
        map_chunk1_tasks_per_s: med(|r| r.map_chunk1_tasks_per_s, |r| &r.1),
        map_auto_items_per_s: med(|r| r.map_auto_items_per_s, |r| &r.1),
    };

    let ratio = |f: fn(&Rates) -> f64| {
        median(
            report
                .rounds
                .iter()
                .filter(|(m, _)| f(m) > 0.0)
                .map(|(m, s)| f(s) / f(m))
                .collect(),
        )
    };
    report.paired_ratio = Rates {
        map_chunk1_tasks_per_s: ratio(|r| r.map_chunk1_tasks_per_s),
        map_auto_items_per_s: ratio(|r| r.map_auto_items_per_s),
    };

    let overrides = [("db", "sqlite".to_owned())];
    let cluster = TempCluster::start(engines, &overrides)?;
    let pid = cluster.report.controller_pid;
    let read = |tasks: u64, elapsed_s: f64| Checkpoint {
        tasks,
        rss_kib: rss_kib(pid).unwrap_or(0),
        hwm_kib: status_kib(pid, "VmHWM").unwrap_or(0),
        elapsed_s,
    };
    report.checkpoints.push(read(0, 0.0));
    let started = Instant::now();
    let mut done = 0u64;
    for &target in checkpoints {
        while done < target {
            let n = (target - done).min(100_000);
            cluster.one_item_rate(n as usize)?;
            done += n;
        }
        let elapsed = started.elapsed().as_secs_f64();
        std::thread::sleep(SETTLE);
        let point = read(done, elapsed);
        if progress {
            eprintln!(
                "{done} one-item tasks after {elapsed:.0} s: controller VmRSS {} MiB (peak {} MiB)",
                point.rss_kib / 1024,
                point.hwm_kib / 1024
            );
        }
        report.checkpoints.push(point);
    }
    // Let the last commit land, then restart on the same database.
    std::thread::sleep(Duration::from_millis(500));
    report.restart_records = done;
    launch::stop(&cluster.profile, Duration::from_secs(10)).context("stopping for the restart")?;
    let launch = EngineLaunch {
        count: engines,
        program: launch::EngineProgram::Settings,
        timeout: Duration::from_secs(300),
    };
    let t = Instant::now();
    let again = launch::start(&cluster.profile, &overrides, &launch)?;
    report.restart_engines_ready_s = again.seconds;
    let client = cluster.client()?;
    client.status()?;
    report.restart_to_serving_s = t.elapsed().as_secs_f64();
    if progress {
        eprintln!(
            "restart with {} records: serving after {:.3} s",
            report.restart_records, report.restart_to_serving_s
        );
    }
    Ok(report)
}

/// The report as a table.
pub fn render_store(r: &StoreReport) -> String {
    let pct = |a: f64, b: f64| if a > 0.0 { (b / a - 1.0) * 100.0 } else { 0.0 };
    let mut s = format!(
        "{} engines, median of {} interleaved round(s) {:>10} {:>14} {:>8}\n",
        r.engines, r.runs, "db = memory", "db = sqlite", "change"
    );
    s.push_str(&format!(
        "map noop, 1 item a task ({:>8} tasks)  {:>12.0}/s {:>12.0}/s {:>7.1}%\n",
        r.items,
        r.memory.map_chunk1_tasks_per_s,
        r.sqlite.map_chunk1_tasks_per_s,
        pct(
            r.memory.map_chunk1_tasks_per_s,
            r.sqlite.map_chunk1_tasks_per_s
        )
    ));
    s.push_str(&format!(
        "map noop, auto chunks ({:>8} items)    {:>12.0}/s {:>12.0}/s {:>7.1}%\n",
        r.items * 100,
        r.memory.map_auto_items_per_s,
        r.sqlite.map_auto_items_per_s,
        pct(r.memory.map_auto_items_per_s, r.sqlite.map_auto_items_per_s)
    ));
    let paired = |x: f64| (x - 1.0) * 100.0;
    s.push_str(&format!(
        "sqlite against memory in the same round (median): one-item {:+.1}%, chunked {:+.1}%\n",
        paired(r.paired_ratio.map_chunk1_tasks_per_s),
        paired(r.paired_ratio.map_auto_items_per_s)
    ));
    let load = |l: &[f64; 3]| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]);
    s.push_str(&format!(
        "load average before {}, after {}\n\n",
        load(&r.load_before),
        load(&r.load_after)
    ));
    s.push_str("controller memory with db = sqlite (VmRSS once idle; VmHWM: the peak so far):\n");
    for c in &r.checkpoints {
        s.push_str(&format!(
            "  after {:>9} one-item tasks ({:>6.0} s): {:>7.1} MiB, peak {:>7.1} MiB\n",
            c.tasks,
            c.elapsed_s,
            c.rss_kib as f64 / 1024.0,
            c.hwm_kib as f64 / 1024.0
        ));
    }
    s.push_str(&format!(
        "restart with {} records: serving after {:.3} s, engines ready after {:.3} s\n",
        r.restart_records, r.restart_to_serving_s, r.restart_engines_ready_s
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_the_table() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
        let r = StoreReport {
            engines: 2,
            items: 1000,
            runs: 3,
            memory: Rates {
                map_chunk1_tasks_per_s: 100.0,
                map_auto_items_per_s: 1000.0,
            },
            sqlite: Rates {
                map_chunk1_tasks_per_s: 95.0,
                map_auto_items_per_s: 990.0,
            },
            checkpoints: vec![Checkpoint {
                tasks: 100_000,
                rss_kib: 2048,
                hwm_kib: 4096,
                elapsed_s: 1.0,
            }],
            ..Default::default()
        };
        let text = render_store(&r);
        assert!(text.contains("-5.0%"), "{text}");
        assert!(text.contains("-1.0%"), "{text}");
        assert!(text.contains("2.0 MiB, peak     4.0 MiB"), "{text}");
    }
}
