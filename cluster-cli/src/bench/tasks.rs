//! `cluster bench tasks` (and `cluster bench` alone): start-up time, load-balanced round
//! trips and task rates on throw-away local clusters, at the default hwm and at hwm 1.

use super::{percentile, TempCluster};
use anyhow::Result;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Figures printed by `cluster bench`.
#[derive(Debug, Default, Serialize)]
pub struct BenchReport {
    /// Engines used for the task figures.
    pub engines: usize,
    /// Seconds from `start -n 4` to 4 engines ready (median of the runs).
    pub start_4_engines_s: f64,
    /// Each run's start time.
    pub start_runs_s: Vec<f64>,
    /// Figures at the default hwm.
    pub default_hwm: TaskFigures,
    /// Figures at hwm 1.
    pub hwm_1: TaskFigures,
}

/// Task figures at one hwm setting.
#[derive(Debug, Default, Serialize)]
pub struct TaskFigures {
    /// hwm setting.
    pub hwm: String,
    /// Load-balanced apply round trip, median, microseconds.
    pub apply_rtt_median_us: f64,
    /// Load-balanced apply round trip, 99th percentile, microseconds.
    pub apply_rtt_p99_us: f64,
    /// map(noop) with one item per task, tasks per second.
    pub map_chunk1_tasks_per_s: f64,
    /// map(noop) with automatic chunking, items per second.
    pub map_auto_items_per_s: f64,
    /// Separate apply submissions then wait, tasks per second.
    pub apply_many_tasks_per_s: f64,
}

fn task_figures(engines: usize, hwm: &str, calls: usize, items: usize) -> Result<TaskFigures> {
    let cluster = TempCluster::start(engines, &[("hwm", hwm.to_owned())])?;
    let client = cluster.client()?;
    let view = client.load_balanced_view();
    let limit = Some(Duration::from_secs(120));
    let mut figures = TaskFigures {
        hwm: hwm.to_owned(),
        ..Default::default()
    };

    // Warm up connections and the adaptive hwm.
    for _ in 0..100 {
        view.apply::<(), ()>("noop", &())?.get(limit)?;
    }
    let mut rtts = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        view.apply::<(), ()>("noop", &())?.get(limit)?;
        rtts.push(t.elapsed().as_secs_f64() * 1e6);
    }
    rtts.sort_by(f64::total_cmp);
    figures.apply_rtt_median_us = percentile(&rtts, 0.5);
    figures.apply_rtt_p99_us = percentile(&rtts, 0.99);

    let t = Instant::now();
    let out: Vec<()> = view
        .clone()
        .chunksize(1)
        .map("noop", std::iter::repeat_n((), items))?
        .get(limit)?;
    figures.map_chunk1_tasks_per_s = out.len() as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    let out: Vec<()> = view
        .map("noop", std::iter::repeat_n((), items))?
        .get(limit)?;
    figures.map_auto_items_per_s = out.len() as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    let pending: Vec<_> = (0..items)
        .map(|_| view.apply::<(), ()>("noop", &()))
        .collect::<Result<_, _>>()?;
    for ar in pending {
        ar.get(limit)?;
    }
    figures.apply_many_tasks_per_s = items as f64 / t.elapsed().as_secs_f64();
    Ok(figures)
}

/// Measures start-up, round trip and task rates on throw-away local clusters.
pub fn bench(
    engines: usize,
    calls: usize,
    items: usize,
    start_runs: usize,
    progress: bool,
) -> Result<BenchReport> {
    let mut report = BenchReport {
        engines,
        ..Default::default()
    };
    for i in 0..start_runs {
        let cluster = TempCluster::start(4, &[])?;
        report.start_runs_s.push(cluster.report.seconds);
        if progress {
            eprintln!("start -n 4, run {}: {:.3} s", i + 1, cluster.report.seconds);
        }
    }
    let mut runs = report.start_runs_s.clone();
    runs.sort_by(f64::total_cmp);
    report.start_4_engines_s = percentile(&runs, 0.5);
    if progress {
        eprintln!("measuring tasks at the default hwm with {engines} engines…");
    }
    report.default_hwm = task_figures(engines, "auto", calls, items)?;
    if progress {
        eprintln!("measuring tasks at hwm 1…");
    }
    report.hwm_1 = task_figures(engines, "1", calls, items)?;
    Ok(report)
}

/// The bench report as a table.
pub fn render_bench(r: &BenchReport, calls: usize, items: usize) -> String {
    let mut s = format!(
        "cluster start -n 4 → 4 engines ready: {:.3} s median ({} runs: {})\n\n",
        r.start_4_engines_s,
        r.start_runs_s.len(),
        r.start_runs_s
            .iter()
            .map(|x| format!("{x:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    s.push_str(&format!(
        "{} engines                                  {:>14} {:>14}\n",
        r.engines, "hwm auto", "hwm 1"
    ));
    let rows: [(&str, f64, f64); 5] = [
        (
            &format!("apply round trip median (µs, {calls} calls)"),
            r.default_hwm.apply_rtt_median_us,
            r.hwm_1.apply_rtt_median_us,
        ),
        (
            "apply round trip p99 (µs)",
            r.default_hwm.apply_rtt_p99_us,
            r.hwm_1.apply_rtt_p99_us,
        ),
        (
            &format!("map(noop) x{items}, chunk 1 (tasks/s)"),
            r.default_hwm.map_chunk1_tasks_per_s,
            r.hwm_1.map_chunk1_tasks_per_s,
        ),
        (
            &format!("map(noop) x{items}, auto chunks (items/s)"),
            r.default_hwm.map_auto_items_per_s,
            r.hwm_1.map_auto_items_per_s,
        ),
        (
            &format!("apply x{items} then wait (tasks/s)"),
            r.default_hwm.apply_many_tasks_per_s,
            r.hwm_1.apply_many_tasks_per_s,
        ),
    ];
    for (name, a, b) in rows {
        s.push_str(&format!("{name:<42} {a:>14.0} {b:>14.0}\n"));
    }
    s
}
