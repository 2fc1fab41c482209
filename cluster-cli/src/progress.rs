//! The progress bar of maps: done/failed/total, rate and ETA on one line of stderr.
//!
//! A thread of its own redraws it ten times a second once the map has taken more than half
//! a second, so that the main thread can block on results. Output blocks take the same lock
//! ([`Progress::hold`]) and wipe the bar first, so the two never mix on the terminal. It is
//! only drawn when stderr is a terminal: logs and pipes never see it.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// True when file descriptor `fd` is a terminal.
pub fn is_terminal(fd: i32) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// True when this process's stdout is a pipe whose reader has gone (`| head` exited), found
/// without writing to it.
pub fn stdout_gone() -> bool {
    let mut fd = libc::pollfd {
        fd: 1,
        events: 0,
        revents: 0,
    };
    // SAFETY: poll(2) on one valid pollfd with a zero timeout.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n == 1 && fd.revents & libc::POLLERR != 0
}

#[derive(Debug)]
struct Bar {
    /// Whether the bar is on the terminal now.
    drawn: Mutex<bool>,
    done: AtomicUsize,
    failed: AtomicUsize,
    stop: AtomicBool,
    total: usize,
    start: Instant,
}

impl Bar {
    fn draw_loop(&self) {
        std::thread::sleep(Duration::from_millis(500));
        while !self.stop.load(Ordering::Relaxed) {
            let line = progress_line(
                self.done.load(Ordering::Relaxed),
                self.failed.load(Ordering::Relaxed),
                self.total,
                self.start.elapsed(),
            );
            {
                let mut drawn = self.drawn.lock().unwrap_or_else(|p| p.into_inner());
                if self.stop.load(Ordering::Relaxed) {
                    break;
                }
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[K{line}");
                let _ = err.flush();
                *drawn = true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn hold(&self) -> MutexGuard<'_, bool> {
        let mut drawn = self.drawn.lock().unwrap_or_else(|p| p.into_inner());
        if *drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
            *drawn = false;
        }
        drawn
    }
}

/// A progress bar, or nothing when not wanted or stderr is not a terminal.
#[derive(Debug)]
pub struct Progress {
    bar: Option<Arc<Bar>>,
    drawer: Option<std::thread::JoinHandle<()>>,
}

/// Counts a finished task into the bar from any thread (a result callback).
#[derive(Debug, Clone)]
pub struct Counter(Option<Arc<Bar>>);

impl Counter {
    /// One more task done.
    pub fn done(&self) {
        if let Some(b) = &self.0 {
            b.done.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sets the count of tasks done.
    pub fn set_done(&self, n: usize) {
        if let Some(b) = &self.0 {
            b.done.store(n, Ordering::Relaxed);
        }
    }
}

impl Progress {
    /// A bar over `total` tasks, drawn when `wanted` and stderr is a terminal.
    pub fn start(total: usize, wanted: bool) -> Progress {
        if !wanted || !is_terminal(2) {
            return Progress {
                bar: None,
                drawer: None,
            };
        }
        let bar = Arc::new(Bar {
            drawn: Mutex::new(false),
            done: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            total,
            start: Instant::now(),
        });
        let drawer = {
            let bar = Arc::clone(&bar);
            std::thread::spawn(move || bar.draw_loop())
        };
        Progress {
            bar: Some(bar),
            drawer: Some(drawer),
        }
    }

    /// True when the bar is drawn.
    pub fn shown(&self) -> bool {
        self.bar.is_some()
    }

    /// A handle that counts finished tasks.
    pub fn counter(&self) -> Counter {
        Counter(self.bar.clone())
    }

    /// One more task failed.
    pub fn failed(&self) {
        if let Some(b) = &self.bar {
            b.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Holds the terminal: the bar is wiped and stays away until the guard is dropped.
    pub fn hold(&self) -> Option<MutexGuard<'_, bool>> {
        self.bar.as_ref().map(|b| b.hold())
    }

    /// Stops and wipes the bar.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.stop.store(true, Ordering::Relaxed);
            if let Some(d) = self.drawer.take() {
                let _ = d.join();
            }
            drop(bar.hold());
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The text of the progress bar.
pub fn progress_line(done: usize, failed: usize, total: usize, elapsed: Duration) -> String {
    const WIDTH: usize = 30;
    let filled = (done * WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH)
        .min(WIDTH);
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rate = done as f64 / secs;
    let eta = if done == 0 {
        "?".to_owned()
    } else {
        let left = (total - done.min(total)) as f64 / rate;
        format!("{left:.0} s")
    };
    format!(
        "[{}{}] {done}/{total} done, {failed} failed, {rate:.0}/s, ETA {eta}",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_text() {
        let line = progress_line(50, 1, 100, Duration::from_secs(2));
        assert!(
            line.contains("50/100 done, 1 failed, 25/s, ETA 2 s"),
            "{line}"
        );
        assert!(progress_line(0, 0, 0, Duration::ZERO).contains("0/0"));
    }

    #[test]
    fn without_a_terminal_nothing_is_drawn() {
        let p = Progress::start(10, false);
        assert!(!p.shown());
        p.counter().done();
        p.failed();
        assert!(p.hold().is_none());
        p.finish();
    }
}
