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
        // Rank and batch job only when some engine was started by mpiexec or srun.
        let launched = report
            .engines
            .iter()
            .any(|e| e.rank.is_some() || e.job.is_some());
        // CPU and memory only when some engine reports them (older engines do not).
        let measured = report.engines.iter().any(|e| e.usage.is_some());
        let _ = write!(
            out,
            "  {:>4}  {:<20} {:>8}  {:<13} {:>11} {:>10} {:>5}",
            "ID", "HOST", "PID", "STATE", "OUTSTANDING", "DONE", "HWM"
        );
        if measured {
            let _ = write!(out, " {:>6} {:>9}", "CPU%", "MEMORY");
        }
        if launched {
            let _ = write!(out, " {:>5}  {:<10}", "RANK", "JOB");
        }
        out.push('\n');
        for e in &report.engines {
            let _ = write!(
                out,
                "  {:>4}  {:<20} {:>8}  {:<13} {:>11} {:>10} {:>5}",
                e.id.0, e.host, e.pid, e.state, e.outstanding, e.completed, e.hwm
            );
            if measured {
                match e.usage {
                    Some(u) => {
                        let _ =
                            write!(out, " {:>6.1} {:>9}", u.cpu_percent, mebibytes(u.rss_bytes));
                    }
                    None => {
                        let _ = write!(out, " {:>6} {:>9}", "-", "-");
                    }
                }
            }
            if launched {
                let rank = e.rank.map_or("-".to_owned(), |r| r.to_string());
                let _ = write!(out, " {:>5}  {:<10}", rank, e.job.as_deref().unwrap_or("-"));
            }
            out.truncate(out.trim_end_matches(' ').len());
            out.push('\n');
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

/// Resident memory for a person: `17.4 MiB`.
fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{EngineId, EngineStatus};

    fn engine(id: u32, rank: Option<u32>, job: Option<&str>) -> EngineStatus {
        EngineStatus {
            id: EngineId(id),
            host: "n1".into(),
            pid: 10 + id,
            state: "alive".into(),
            outstanding: 0,
            completed: 3,
            hwm: 1,
            rank,
            job: job.map(str::to_owned),
            usage: None,
        }
    }

    /// A report with these engines; the rest from JSON, so that fields added later (with
    /// serde defaults) need no change here.
    fn report(engines: Vec<EngineStatus>) -> StatusReport {
        let mut report: StatusReport = serde_json::from_value(serde_json::json!({
            "controller": {
                "pid": 1, "host": "h", "scheduler": "leastload", "hwm": "auto",
                "engine_address": "", "client_address": "", "heartbeat_address": "",
                "notify_address": "", "uptime_s": 1.0, "clients": 1, "instance": 1
            },
            "engines": [],
            "tasks": {"queued": 0, "running": 0, "done": 0, "failed": 0, "stored": 0},
            "dropped": {
                "bad_signature": 0, "replayed": 0, "stale": 0, "malformed": 0,
                "oversized": 0, "wrong_version": 0
            }
        }))
        .expect("a status report");
        report.engines = engines;
        report
    }

    #[test]
    fn cpu_and_memory_columns_only_when_an_engine_reports_them() {
        let plain = status(&report(vec![engine(0, None, None)]));
        assert!(!plain.contains("CPU%"), "{plain}");
        let mut measured = engine(0, None, None);
        measured.usage = Some(protocol::EngineUsage {
            cpu_percent: 12.5,
            rss_bytes: 17 * 1024 * 1024 + 400 * 1024,
        });
        let text = status(&report(vec![measured, engine(1, None, None)]));
        assert!(text.contains("HWM   CPU%    MEMORY"), "{text}");
        let rows: Vec<&str> = text.lines().filter(|l| l.contains(" n1 ")).collect();
        assert!(rows[0].ends_with("  12.5  17.4 MiB"), "{:?}", rows[0]);
        assert!(rows[1].ends_with("      -         -"), "{:?}", rows[1]);
    }

    #[test]
    fn rank_and_job_columns_only_when_an_engine_has_them() {
        let plain = status(&report(vec![engine(0, None, None)]));
        assert!(!plain.contains("RANK") && !plain.contains("JOB"), "{plain}");
        let text = status(&report(vec![
            engine(0, Some(1), Some("77")),
            engine(1, None, None),
        ]));
        assert!(text.contains("RANK  JOB"), "{text}");
        let rows: Vec<&str> = text.lines().filter(|l| l.contains(" n1 ")).collect();
        assert!(rows[0].ends_with("    1  77"), "{:?}", rows[0]);
        assert!(rows[1].ends_with("    -  -"), "{:?}", rows[1]);
    }
}
