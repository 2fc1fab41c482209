//! Human-readable output.

use protocol::StatusReport;
use std::fmt::Write;

/// `cluster status` for a person.
pub fn status(report: &StatusReport) -> String {
    let c = &report.controller;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "controller  pid {} on {}, scheduler {}, hwm {}, up {:.1} s, {} client(s)",
        c.pid, c.host, c.scheduler, c.hwm, c.uptime_s, c.clients
    );
    let _ = writeln!(
        out,
        "  clients {}   notify {}\n  engines {}   heartbeat {}",
        c.client_address, c.notify_address, c.engine_address, c.heartbeat_address
    );
    let _ = writeln!(out, "engines ({}):", report.engines.len());
    if !report.engines.is_empty() {
        let _ = writeln!(
            out,
            "  {:>4}  {:<20} {:>8}  {:<13} {:>11} {:>10} {:>5}",
            "ID", "HOST", "PID", "STATE", "OUTSTANDING", "DONE", "HWM"
        );
        for e in &report.engines {
            let _ = writeln!(
                out,
                "  {:>4}  {:<20} {:>8}  {:<13} {:>11} {:>10} {:>5}",
                e.id.0, e.host, e.pid, e.state, e.outstanding, e.completed, e.hwm
            );
        }
    }
    let t = &report.tasks;
    let _ = writeln!(
        out,
        "tasks: {} queued, {} running, {} done, {} failed, {} results stored",
        t.queued, t.running, t.done, t.failed, t.stored
    );
    if let Some(store) = &report.store {
        let _ = writeln!(out, "store: {store}");
    }
    if let Some(functions) = report.functions.as_ref().filter(|f| !f.is_empty()) {
        let _ = writeln!(
            out,
            "  {:<24} {:>8} {:>8} {:>10} {:>8} {:>10} {:>10}",
            "FUNCTION", "QUEUED", "RUNNING", "OK", "FAILED", "P50", "P99"
        );
        for f in functions {
            let _ = writeln!(
                out,
                "  {:<24} {:>8} {:>8} {:>10} {:>8} {:>10} {:>10}",
                f.function,
                f.queued,
                f.running,
                f.ok,
                f.failed,
                run_time(f.p50_us),
                run_time(f.p99_us)
            );
        }
    }
    let d = &report.dropped;
    let _ = write!(
        out,
        "dropped messages: {} (bad signature {}, replayed {}, stale {}, malformed {}, oversized {}, wrong version {})",
        d.total(),
        d.bad_signature,
        d.replayed,
        d.stale,
        d.malformed,
        d.oversized,
        d.wrong_version
    );
    out
}

/// A run time in µs for a person (`-` for none).
pub fn run_time(us: Option<u64>) -> String {
    match us {
        None => "-".into(),
        Some(us) if us < 1_000 => format!("{us} µs"),
        Some(us) if us < 1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        Some(us) => format!("{:.2} s", us as f64 / 1e6),
    }
}

/// The queue status for a person: where the unfinished tasks are.
pub fn queue(q: &protocol::QueueStatus) -> String {
    let engines: Vec<String> = q
        .engines
        .iter()
        .map(|e| {
            format!(
                "{}: {} outstanding, {} done, {} failed",
                e.id.0, e.outstanding, e.completed, e.failed
            )
        })
        .collect();
    let mut out = format!(
        "queue: {} unassigned, {} waiting for dependencies",
        q.unassigned, q.waiting
    );
    for e in engines {
        out.push_str("\n  engine ");
        out.push_str(&e);
    }
    out
}
