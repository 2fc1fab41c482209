//! Ctrl-C while tasks are out: abort what has not started, say so, and exit.
//!
//! Without this, interrupting `cluster map` killed only the client: every queued task still
//! ran on the engines, keeping the cluster busy for work nobody waits for. Tasks already
//! running are not stopped (the controller cannot stop them); the message says how many.

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Runs `body`; if SIGINT or SIGTERM arrives meanwhile, runs `abort` (which asks the
/// controller to drop the queued tasks and returns a line for the user), prints that line
/// on stderr and exits with 128 + the signal number, as shells expect of an interrupted
/// program. A second signal while `abort` runs exits at once.
pub fn abort_on_interrupt<T>(
    abort: impl Fn() -> String + Sync,
    body: impl FnOnce() -> T,
) -> std::io::Result<T> {
    let aborting = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&aborting))?;
    }
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let handle = signals.handle();
    let abort = &abort;
    let out = std::thread::scope(|s| {
        let aborting = Arc::clone(&aborting);
        s.spawn(move || {
            if let Some(sig) = signals.forever().next() {
                aborting.store(true, std::sync::atomic::Ordering::SeqCst);
                let line = abort();
                // A progress bar may be on the line: clear it first.
                let clear = if crate::progress::is_terminal(2) {
                    "\r\x1b[2K"
                } else {
                    ""
                };
                eprintln!("{clear}{line}");
                std::process::exit(128 + sig);
            }
        });
        let out = body();
        handle.close();
        out
    });
    Ok(out)
}

/// The line printed after an interrupt, from the controller's answer to the abort request.
pub fn summary(what: &str, report: Result<client::AbortReport, client::Error>) -> String {
    match report {
        Ok(r) => {
            let mut parts = Vec::new();
            if !r.aborted.is_empty() {
                parts.push(format!("{} queued task(s) aborted", r.aborted.len()));
            }
            if !r.running.is_empty() {
                parts.push(format!(
                    "{} already running will finish on their engines",
                    r.running.len()
                ));
            }
            if parts.is_empty() {
                parts.push("nothing was left to abort".into());
            }
            format!("{what}: interrupted; {}", parts.join(", "))
        }
        Err(e) => format!("{what}: interrupted; could not abort the queued tasks: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{ClientId, TaskId};

    #[test]
    fn the_summary_counts_what_was_aborted_and_what_still_runs() {
        let id = |n| TaskId::new(ClientId(1), n);
        let report = |aborted: Vec<TaskId>, running: Vec<TaskId>| client::AbortReport {
            aborted,
            running,
            finished: vec![],
            unknown: vec![],
        };
        assert_eq!(
            summary("cluster map", Ok(report(vec![id(1), id(2)], vec![]))),
            "cluster map: interrupted; 2 queued task(s) aborted"
        );
        assert_eq!(
            summary("cluster map", Ok(report(vec![id(1)], vec![id(2)]))),
            "cluster map: interrupted; 1 queued task(s) aborted, 1 already running will finish on their engines"
        );
        assert_eq!(
            summary("cluster call", Ok(report(vec![], vec![id(1)]))),
            "cluster call: interrupted; 1 already running will finish on their engines"
        );
    }

    #[test]
    fn without_a_signal_the_body_runs_and_nothing_is_aborted() {
        let aborted = AtomicBool::new(false);
        let out = abort_on_interrupt(
            || {
                aborted.store(true, std::sync::atomic::Ordering::SeqCst);
                String::new()
            },
            || 7,
        )
        .unwrap();
        assert_eq!(out, 7);
        assert!(!aborted.load(std::sync::atomic::Ordering::SeqCst));
    }
}
