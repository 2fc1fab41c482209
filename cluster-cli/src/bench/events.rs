//! `cluster bench tasks --events-cost ROUNDS`: what the controller's activity feed (the
//! dashboard's task counts, samples and failures, `events = true`) costs the task rate.
//!
//! Each round starts two throw-away clusters in turn (alternating which goes first), the
//! same but for `events`, both with `db = "none"` so that the hub's own per-task work is all
//! there is to slow down (the task store would hide a small cost behind its own), each with
//! a subscriber reading every notification as a dashboard would; each runs a one-item map
//! and an auto-chunked map of no-ops. Medians over rounds are compared. A fresh pair of
//! clusters a round matters: two long-lived clusters with the same settings differ by 10-25%
//! here (an A/A run), from where their processes happen to sit. Rates on a shared machine swing with its load, so the controller's own CPU
//! time per one-item task (utime + stime from `/proc`) is reported too: that is what the
//! feed adds to the hub's work, and what bounds the rate when the controller is the
//! bottleneck.

use super::{Spread, TempCluster};
use anyhow::Result;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Figures printed by `cluster bench tasks --events-cost`.
#[derive(Debug, Default, Serialize)]
pub struct EventsReport {
    /// Engines in each cluster.
    pub engines: usize,
    /// One-item tasks a round (the chunked map has ten times as many items).
    pub items: usize,
    /// Rounds.
    pub rounds: usize,
    /// One-item map, tasks/s, `events = true` (one value a round).
    pub chunk1_on: Vec<f64>,
    /// One-item map, tasks/s, `events = false`.
    pub chunk1_off: Vec<f64>,
    /// Auto-chunked map, items/s, `events = true`.
    pub auto_on: Vec<f64>,
    /// Auto-chunked map, items/s, `events = false`.
    pub auto_off: Vec<f64>,
    /// Controller CPU (user + system) per one-item task, µs, `events = true`.
    pub cpu_us_on: Vec<f64>,
    /// Controller CPU per one-item task, µs, `events = false`.
    pub cpu_us_off: Vec<f64>,
    /// Notifications the subscribers of the `events = true` clusters received.
    pub notifications: u64,
}

/// CPU time (user + system) of process `pid` so far, µs.
fn cpu_us(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    Some(ticks as f64 * 1e6 / hz as f64)
}

/// One round on a fresh cluster with `events` on or off: (one-item tasks/s, chunked
/// items/s, controller CPU µs per one-item task, notifications heard).
fn round(engines: usize, items: usize, events: bool) -> Result<(f64, f64, f64, u64)> {
    let cluster = TempCluster::start(
        engines,
        &[("db", "none".to_owned()), ("events", events.to_string())],
    )?;
    // A dashboard's worth of subscriber on the feed.
    let stop = Arc::new(AtomicBool::new(false));
    let heard = Arc::new(AtomicU64::new(0));
    let mut sub = client::Subscriber::connect_file(cluster.profile.client_file())?;
    let reader = {
        let (stop, heard) = (stop.clone(), heard.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(Some(_)) = sub.next(Duration::from_millis(100)) {
                    heard.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    // Warm up the connections and the adaptive hwm.
    cluster.one_item_rate(items.min(5000))?;
    let pid = cluster.report.controller_pid;
    let cpu0 = cpu_us(pid);
    let a = cluster.one_item_rate(items)?;
    let cpu = cpu_us(pid)
        .zip(cpu0)
        .map_or(0.0, |(t1, t0)| (t1 - t0) / items as f64);
    let b = cluster.chunked_rate(items * 10)?;
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    Ok((a, b, cpu, heard.load(Ordering::Relaxed)))
}

/// Runs the comparison: `rounds` rounds, each on a fresh cluster with the feed on and one
/// with it off, in alternating order (so that neither keeps a lucky process placement and
/// drift in the machine's load hits both alike).
pub fn bench_events(
    engines: usize,
    items: usize,
    rounds: usize,
    progress: bool,
) -> Result<EventsReport> {
    let mut r = EventsReport {
        engines,
        items,
        rounds,
        ..Default::default()
    };
    for i in 0..rounds {
        let order = if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for events in order {
            let (a, b, cpu, heard) = round(engines, items, events)?;
            if events {
                r.chunk1_on.push(a);
                r.auto_on.push(b);
                r.cpu_us_on.push(cpu);
                r.notifications += heard;
            } else {
                r.chunk1_off.push(a);
                r.auto_off.push(b);
                r.cpu_us_off.push(cpu);
            }
        }
        if progress {
            eprintln!(
                "round {}: one-item on {:.0}/s off {:.0}/s (controller {:.2} / {:.2} µs CPU a task); chunked on {:.0}/s off {:.0}/s",
                i + 1,
                r.chunk1_on[i],
                r.chunk1_off[i],
                r.cpu_us_on[i],
                r.cpu_us_off[i],
                r.auto_on[i],
                r.auto_off[i]
            );
        }
    }
    Ok(r)
}

/// The report as a table: medians, and the change with the feed on.
pub fn render_events(r: &EventsReport) -> String {
    let median = |v: &[f64]| Spread::of(v.to_vec()).median;
    let pct = |on: f64, off: f64| {
        if off > 0.0 {
            (on / off - 1.0) * 100.0
        } else {
            0.0
        }
    };
    let mut s = format!(
        "{} engines, db = none, {} interleaved rounds (medians)   {:>12} {:>12} {:>8}\n",
        r.engines, r.rounds, "events on", "events off", "change"
    );
    for (name, on, off) in [
        (
            format!("map noop, 1 item a task ({}) tasks/s", r.items),
            median(&r.chunk1_on),
            median(&r.chunk1_off),
        ),
        (
            format!("map noop, auto chunks ({}) items/s", r.items * 10),
            median(&r.auto_on),
            median(&r.auto_off),
        ),
    ] {
        s.push_str(&format!(
            "{name:<55} {on:>12.0} {off:>12.0} {:>7.1}%\n",
            pct(on, off)
        ));
    }
    let (on, off) = (median(&r.cpu_us_on), median(&r.cpu_us_off));
    s.push_str(&format!(
        "{:<55} {on:>12.2} {off:>12.2} {:>7.1}%\n",
        "controller CPU per one-item task (µs)",
        pct(on, off)
    ));
    s.push_str(&format!(
        "notifications received by the subscribers of the events-on clusters: {}\n",
        r.notifications
    ));
    s
}
