//! `cluster bench store`: what the task store costs. Task rates with `db = "memory"` and
//! `db = "sqlite"` in the same run (one-item and chunked maps), the controller's resident
//! memory as one-item tasks pile up in a SQLite store, and the time from a restart to serving
//! with that many records in the database.

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
    /// One-item tasks of each rate figure (the chunked map has ten times as many items).
    pub items: usize,
    /// Rates with `db = "memory"`.
    pub memory: Rates,
    /// Rates with `db = "sqlite"`.
    pub sqlite: Rates,
    /// Controller VmRSS (KiB) with `db = "sqlite"`: (one-item tasks run so far, KiB), the
    /// first entry before any task.
    pub rss_kib: Vec<(u64, u64)>,
    /// Records in the database at the restart.
    pub restart_records: u64,
    /// Seconds from `start` on the same profile to the controller answering a status
    /// request (the database read included).
    pub restart_to_serving_s: f64,
    /// Seconds from `start` to its engines ready.
    pub restart_engines_ready_s: f64,
}

/// Task rates on one kind of store.
#[derive(Debug, Default, Serialize)]
pub struct Rates {
    /// map(noop), one item a task: tasks per second (best of the runs).
    pub map_chunk1_tasks_per_s: f64,
    /// map(noop), automatic chunks: items per second (best of the runs).
    pub map_auto_items_per_s: f64,
}

/// Controller resident memory in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn one_item_map(cluster: &TempCluster, n: usize) -> Result<f64> {
    let client = cluster.client()?;
    let t = Instant::now();
    let out: Vec<()> = client
        .load_balanced_view()
        .chunksize(1)
        .map("noop", std::iter::repeat_n((), n))?
        .get(Some(Duration::from_secs(600)))?;
    Ok(out.len() as f64 / t.elapsed().as_secs_f64())
}

fn rates(engines: usize, db: &str, items: usize, runs: usize) -> Result<Rates> {
    let cluster = TempCluster::start(engines, &[("db", db.to_owned())])?;
    let client = cluster.client()?;
    let view = client.load_balanced_view();
    let limit = Some(Duration::from_secs(600));
    let mut r = Rates::default();
    // Warm up the connections and the adaptive hwm.
    let _: Vec<()> = view
        .clone()
        .chunksize(1)
        .map("noop", std::iter::repeat_n((), 1000))?
        .get(limit)?;
    for _ in 0..runs {
        r.map_chunk1_tasks_per_s = r.map_chunk1_tasks_per_s.max(one_item_map(&cluster, items)?);
        let t = Instant::now();
        let out: Vec<()> = view
            .map("noop", std::iter::repeat_n((), items * 10))?
            .get(limit)?;
        r.map_auto_items_per_s = r
            .map_auto_items_per_s
            .max(out.len() as f64 / t.elapsed().as_secs_f64());
    }
    Ok(r)
}

/// Runs the figures: rates on both stores (`runs` each, interleaved memory, sqlite), then
/// one-item maps on a SQLite store up to each of `checkpoints` tasks (VmRSS after each),
/// then a restart on that database.
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
        ..Default::default()
    };
    if progress {
        eprintln!("task rates with db = memory…");
    }
    report.memory = rates(engines, "memory", items, runs)?;
    if progress {
        eprintln!("task rates with db = sqlite…");
    }
    report.sqlite = rates(engines, "sqlite", items, runs)?;
    let overrides = [("db", "sqlite".to_owned())];
    let cluster = TempCluster::start(engines, &overrides)?;
    let pid = cluster.report.controller_pid;
    report.rss_kib.push((0, rss_kib(pid).unwrap_or(0)));
    let mut done = 0u64;
    for &target in checkpoints {
        while done < target {
            let n = (target - done).min(100_000);
            one_item_map(&cluster, n as usize)?;
            done += n;
        }
        let rss = rss_kib(pid).unwrap_or(0);
        if progress {
            eprintln!("{done} one-item tasks: controller VmRSS {} MiB", rss / 1024);
        }
        report.rss_kib.push((done, rss));
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
        "{} engines                         {:>14} {:>14} {:>8}\n",
        r.engines, "db = memory", "db = sqlite", "change"
    );
    s.push_str(&format!(
        "map noop, 1 item a task ({:>7})  {:>11.0}/s {:>11.0}/s {:>7.1}%\n",
        r.items,
        r.memory.map_chunk1_tasks_per_s,
        r.sqlite.map_chunk1_tasks_per_s,
        pct(
            r.memory.map_chunk1_tasks_per_s,
            r.sqlite.map_chunk1_tasks_per_s
        )
    ));
    s.push_str(&format!(
        "map noop, auto chunks ({:>8})  {:>11.0}/s {:>11.0}/s {:>7.1}%\n\n",
        r.items * 10,
        r.memory.map_auto_items_per_s,
        r.sqlite.map_auto_items_per_s,
        pct(r.memory.map_auto_items_per_s, r.sqlite.map_auto_items_per_s)
    ));
    s.push_str("controller VmRSS with db = sqlite:\n");
    for (n, kib) in &r.rss_kib {
        s.push_str(&format!(
            "  after {n:>9} one-item tasks: {:>7.1} MiB\n",
            *kib as f64 / 1024.0
        ));
    }
    s.push_str(&format!(
        "restart with {} records: serving after {:.3} s, engines ready after {:.3} s\n",
        r.restart_records, r.restart_to_serving_s, r.restart_engines_ready_s
    ));
    s
}
